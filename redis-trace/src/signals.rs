//! SIGINT and SIGTERM from the first moment of a capture to the end of its report.
//!
//! The handlers are installed before anything is attached, on a thread of their own, so a
//! Ctrl-C while the probes load ends the capture cleanly instead of killing it half set
//! up. The first signal asks the capture to stop (it drains and writes everything); a
//! second one, during the final drain, cuts the drain short (what is held is written at
//! once); any signal once the capture's output is flushed (the `--report` step) ends the
//! tool at once.
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Which signal asked the capture to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Interrupt,
    Terminate,
}

/// Where the tool is, which decides what a signal does.
const CAPTURING: u8 = 0;
const FINISHING: u8 = 1;

/// Exit status after a signal during the report step (128 + SIGINT, as shells do).
const EXIT_ON_SIGNAL: i32 = 130;

/// The signal watcher: counts SIGINT/SIGTERM and tells the capture loop.
#[derive(Clone)]
pub struct Signals {
    count: Arc<AtomicU32>,
    /// 1 = interrupt, 2 = terminate (the first signal's kind).
    first: Arc<AtomicU8>,
    phase: Arc<AtomicU8>,
    changed: watch::Receiver<u32>,
}

impl Signals {
    /// Installs the handlers (returns once they are in place).
    pub fn install() -> Result<Self> {
        let count = Arc::new(AtomicU32::new(0));
        let first = Arc::new(AtomicU8::new(0));
        let phase = Arc::new(AtomicU8::new(CAPTURING));
        let (tx, rx) = watch::channel(0u32);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
        let (c, f, p) = (count.clone(), first.clone(), phase.clone());
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("signal runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let (mut int, mut term) = match (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                    ) {
                        (Ok(i), Ok(t)) => (i, t),
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        let kind = tokio::select! {
                            _ = int.recv() => 1u8,
                            _ = term.recv() => 2u8,
                        };
                        let _ = f.compare_exchange(0, kind, Ordering::SeqCst, Ordering::SeqCst);
                        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                        if p.load(Ordering::SeqCst) == FINISHING {
                            // The capture's records are on disk; nothing is lost by going now.
                            crate::stderr::note("interrupted");
                            std::process::exit(EXIT_ON_SIGNAL);
                        }
                        let _ = tx.send(n);
                    }
                });
            })
            .context("starting the signal thread")?;
        ready_rx
            .recv()
            .context("the signal thread ended before installing its handlers")?
            .map_err(|e| anyhow::anyhow!("installing the SIGINT/SIGTERM handlers: {e}"))?;
        Ok(Self {
            count,
            first,
            phase,
            changed: rx,
        })
    }

    /// How many signals have arrived.
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::SeqCst)
    }

    /// The first signal's kind, once one arrived.
    pub fn first(&self) -> Option<Kind> {
        match self.first.load(Ordering::SeqCst) {
            1 => Some(Kind::Interrupt),
            2 => Some(Kind::Terminate),
            _ => None,
        }
    }

    /// Waits for the first signal (at once if one came already, even before this call).
    pub async fn stopped(&mut self) -> Kind {
        loop {
            if let Some(k) = self.first() {
                return k;
            }
            if self.changed.changed().await.is_err() {
                // The watcher is gone: no signal will ever come.
                std::future::pending::<()>().await;
            }
        }
    }

    /// From now on a signal ends the tool at once: the capture's output is flushed.
    pub fn finishing(&self) {
        self.phase.store(FINISHING, Ordering::SeqCst);
        if self.count() > 1 {
            crate::stderr::note("interrupted");
            std::process::exit(EXIT_ON_SIGNAL);
        }
    }
}
