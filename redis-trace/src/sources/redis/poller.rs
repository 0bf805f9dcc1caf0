//! The background poller of a capture: a thread that keeps a [`Session`] and sends
//! [`PollerMsg`]s, pacing CLIENT LIST (see the module above).
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::parse::RedisConfig;
use super::session::{IO_TIMEOUT, Session, Snapshot};
use super::target::Target;

/// What the [`Poller`] reports.
#[derive(Debug)]
// A few messages a second at most: their size does not matter, the plain fields do.
#[allow(clippy::large_enum_variant)]
pub enum PollerMsg {
    /// (Re)connected: the configuration and the first INFO.
    Connected {
        config: RedisConfig,
        info: HashMap<String, String>,
    },
    Snapshot(Snapshot),
    /// Cannot reach or read Redis; sent when it goes down and when the reason changes.
    Down {
        error: String,
    },
}

/// Background poller: a thread that keeps a [`Session`] (reconnecting with backoff
/// 0.5 s .. 5 s) and sends [`PollerMsg`]s.
pub struct Poller {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    rx: Receiver<PollerMsg>,
}

/// Messages held for a reader that does not keep up; snapshots beyond it are dropped.
const CHANNEL_CAPACITY: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Above this many connected clients, CLIENT LIST at most every [`MANY_CLIENTS_GAP`].
const MANY_CLIENTS: u64 = 10_000;
/// Up to this many, the first CLIENT LIST is taken at once (~5 ms of Redis's main thread
/// for 10,000 clients): a storm in the capture's first seconds, which is when it is
/// started, needs each client's idle time. Beyond, the first waits the gap too.
const MANY_CLIENTS_AT_START: u64 = 50_000;
const MANY_CLIENTS_GAP: Duration = Duration::from_secs(10);
/// CLIENT LIST may take at most 1/this of the time between two of them.
const CLIENT_LIST_DUTY: u32 = 100;

impl Poller {
    /// Starts polling: INFO every `interval`; CLIENT LIST only while `clients_wanted`, at most
    /// once per `interval`, never more often than 100x its own last duration, and at most
    /// every 10 s with more than 10 000 connected clients.
    pub fn start(target: Target, interval: Duration, clients_wanted: Arc<AtomicBool>) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_CAPACITY);
        let interval = interval.max(Duration::from_millis(10));
        let worker = PollWorker {
            target,
            interval,
            wanted: clients_wanted,
            stop: stop.clone(),
            tx,
        };
        let handle = std::thread::Builder::new()
            .name("redis-poller".into())
            .spawn(move || worker.run());
        let handle = match handle {
            Ok(h) => Some(h),
            Err(e) => {
                // No thread: report it as the poller's only message.
                let (tx, rx2) = std::sync::mpsc::sync_channel(1);
                let _ = tx.try_send(PollerMsg::Down {
                    error: format!("cannot start the Redis poller thread: {e}"),
                });
                return Poller {
                    handle: None,
                    stop,
                    rx: rx2,
                };
            }
        };
        Poller { handle, stop, rx }
    }

    /// The next message, without waiting.
    pub fn try_recv(&self) -> Option<PollerMsg> {
        self.rx.try_recv().ok()
    }

    /// Stops the thread and waits for it at most ~2 s (a Redis call in flight times out
    /// within 2 s; past the wait the thread is left to finish on its own).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let deadline = Instant::now() + IO_TIMEOUT;
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct PollWorker {
    target: Target,
    interval: Duration,
    wanted: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tx: SyncSender<PollerMsg>,
}

/// Whether CLIENT LIST may run now. `last`: when the previous one started and how long it
/// took. The interval gets a 10% tolerance (ticks jitter); the 100x and 10 s rules none.
fn client_list_due(
    now: Instant,
    last: Option<(Instant, Duration)>,
    interval: Duration,
    connected_clients: Option<u64>,
) -> bool {
    let Some((at, took)) = last else {
        return true;
    };
    let elapsed = now.saturating_duration_since(at);
    let mut strict = took.saturating_mul(CLIENT_LIST_DUTY);
    if connected_clients.is_some_and(|n| n > MANY_CLIENTS) {
        strict = strict.max(MANY_CLIENTS_GAP);
    }
    elapsed >= strict && elapsed + interval / 10 >= interval
}

impl PollWorker {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps until `until`, waking every 50 ms to check the stop flag. False if stopped.
    fn sleep_until(&self, until: Instant) -> bool {
        loop {
            if self.stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }

    /// Sends a message; a snapshot is dropped when the reader is behind, the others wait
    /// for room (until stopped). False when the reader is gone or we were stopped.
    fn send(&self, msg: PollerMsg) -> bool {
        let droppable = matches!(msg, PollerMsg::Snapshot(_));
        let mut msg = msg;
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(_)) if droppable => return true,
                Err(TrySendError::Full(m)) => {
                    if !self.sleep_until(Instant::now() + Duration::from_millis(50)) {
                        return false;
                    }
                    msg = m;
                }
            }
        }
    }

    fn run(self) {
        // This thread is the server's only client: it lives in the server's namespace.
        if let Some(ns) = &self.target.netns
            && let Err(e) = ns.enter_on_this_thread()
        {
            let _ = self.send(PollerMsg::Down {
                error: format!("{e:#}: Redis's own view is not read, kernel evidence only"),
            });
            return;
        }
        let mut backoff = BACKOFF_MIN;
        let mut last_down: Option<String> = None;
        while !self.stopped() {
            let connected = Session::connect(&self.target).and_then(|mut s| {
                let config = s.config()?;
                let snap = s.snapshot(false)?;
                Ok((s, config, snap.info))
            });
            let (mut session, config, info) = match connected {
                Ok(c) => c,
                Err(e) => {
                    let error = format!("{e:#}");
                    if last_down.as_deref() != Some(error.as_str()) {
                        if !self.send(PollerMsg::Down {
                            error: error.clone(),
                        }) {
                            return;
                        }
                        last_down = Some(error);
                    }
                    if !self.sleep_until(Instant::now() + backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            let mut connected_clients = parse_u64(&info, "connected_clients");
            if !self.send(PollerMsg::Connected { config, info }) {
                return;
            }
            // A Redis with very many clients does not get a CLIENT LIST (O(clients), on
            // its main thread) the moment we connect, in the middle of its incident: the
            // first waits the same gap as the ones after it.
            let mut last_client_list: Option<(Instant, Duration)> = connected_clients
                .filter(|n| *n > MANY_CLIENTS_AT_START)
                .map(|_| (Instant::now(), Duration::ZERO));
            // The first snapshot right away: a capture wants its baseline at once.
            let mut next_tick = Instant::now();
            loop {
                if !self.sleep_until(next_tick) {
                    return;
                }
                let now = Instant::now();
                next_tick += self.interval;
                if next_tick <= now {
                    // Fell behind (a slow Redis): no burst to catch up.
                    next_tick = now + self.interval;
                }
                let with_clients = self.wanted.load(Ordering::Relaxed)
                    && client_list_due(now, last_client_list, self.interval, connected_clients);
                match session.snapshot(with_clients) {
                    Ok(snap) => {
                        if with_clients {
                            // A refused CLIENT LIST (no duration) counts as a short one.
                            last_client_list =
                                Some((now, snap.client_list_duration.unwrap_or_default()));
                        }
                        connected_clients =
                            parse_u64(&snap.info, "connected_clients").or(connected_clients);
                        if !self.send(PollerMsg::Snapshot(snap)) {
                            return;
                        }
                    }
                    Err(e) => {
                        let error = format!("{e:#}");
                        if !self.send(PollerMsg::Down {
                            error: error.clone(),
                        }) {
                            return;
                        }
                        last_down = Some(error);
                        if !self.sleep_until(Instant::now() + BACKOFF_MIN) {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    }
}

fn parse_u64(info: &HashMap<String, String>, key: &str) -> Option<u64> {
    info.get(key).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_client_client_list_pacing() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert!(client_list_due(t0, None, s(1), None));
        // Once per interval (with 10% tolerance for tick jitter).
        assert!(!client_list_due(
            t0 + ms(500),
            Some((t0, ms(1))),
            s(1),
            None
        ));
        assert!(client_list_due(t0 + ms(995), Some((t0, ms(1))), s(1), None));
        // Never more often than 100x its own duration: 30 ms -> 3 s.
        assert!(!client_list_due(t0 + s(2), Some((t0, ms(30))), s(1), None));
        assert!(client_list_due(t0 + s(3), Some((t0, ms(30))), s(1), None));
        // Over 10 000 clients: every 10 s at most.
        assert!(!client_list_due(
            t0 + s(9),
            Some((t0, ms(1))),
            s(1),
            Some(10_001)
        ));
        assert!(client_list_due(
            t0 + s(10),
            Some((t0, ms(1))),
            s(1),
            Some(10_001)
        ));
        assert!(client_list_due(
            t0 + s(1),
            Some((t0, ms(1))),
            s(1),
            Some(10_000)
        ));
    }
}
