//! The uprobes' cost to Redis, kept bounded: paused in a storm of connection ends,
//! resumed once it is calm.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::kernel::uprobes;

/// Keeps the uprobes' cost to Redis bounded: each freed client costs Redis a uprobe
/// trap (~2 µs here). Ends that the kernel already explains (the client closed first:
/// a churn of short connections) gain nothing from that trap, so above this many of
/// them a second the uprobes are paused, and resumed once it is calm. Ends that Redis
/// began are what the uprobes are for (an idle-timeout storm frees thousands in a
/// second, and its code path is the best evidence of why): they pause the uprobes only
/// above [`UPROBE_MAX_REDIS_ENDS_PER_S`], where even they would cost Redis too much.
const UPROBE_MAX_ENDS_PER_S: f64 = 1000.0;
const UPROBE_MAX_REDIS_ENDS_PER_S: f64 = 20_000.0;
const UPROBE_CALM_FOR: Duration = Duration::from_secs(10);
/// The rate is judged over at least this long: a storm at start pauses the uprobes
/// within a fifth of a second, not after a whole one.
const WINDOW: Duration = Duration::from_millis(200);

/// Connection ends so far, by whether the uprobes can tell anything about them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ends {
    /// Ends Redis began (its own socket closed first, in its own task).
    pub by_redis: u64,
    /// Every other end (the peer, the network, the kernel).
    pub other: u64,
}

pub struct UprobeGovernor {
    pub paused: bool,
    /// Redis pids to probe again when resuming.
    pub pending: Vec<u32>,
    last: Instant,
    last_ends: Ends,
    calm_since: Option<Instant>,
}

impl Default for UprobeGovernor {
    fn default() -> Self {
        Self::new()
    }
}

impl UprobeGovernor {
    pub fn new() -> Self {
        Self {
            paused: false,
            pending: Vec::new(),
            last: Instant::now(),
            last_ends: Ends::default(),
            calm_since: None,
        }
    }

    /// Every turn of the capture loop: pauses or resumes the uprobes (judging the rate
    /// over [`WINDOW`] at least); says what it did.
    pub fn tick(
        &mut self,
        ends: Ends,
        links: &mut HashMap<u32, Vec<uprobes::Link>>,
        ebpf: &mut aya::Ebpf,
    ) -> Option<String> {
        let elapsed = self.last.elapsed();
        if elapsed < WINDOW {
            return None;
        }
        let secs = elapsed.as_secs_f64();
        let other = ends.other.saturating_sub(self.last_ends.other) as f64 / secs;
        let by_redis = ends.by_redis.saturating_sub(self.last_ends.by_redis) as f64 / secs;
        let rate = other + by_redis;
        self.last = Instant::now();
        self.last_ends = ends;
        if !self.paused {
            if !too_many(other, by_redis) || links.is_empty() {
                return None;
            }
            self.paused = true;
            self.calm_since = None;
            for (pid, l) in links.drain() {
                uprobes::detach(ebpf, l);
                self.pending.push(pid);
            }
            let _ = uprobes::set_enabled(ebpf, false);
            return Some(format!(
                "uprobes paused: {other:.0} connection ends/s the kernel explains without them \
                 and {by_redis:.0}/s begun by Redis (limits {UPROBE_MAX_ENDS_PER_S:.0} and \
                 {UPROBE_MAX_REDIS_ENDS_PER_S:.0}/s: each costs Redis a uprobe trap); code paths \
                 resume when it calms down"
            ));
        }
        if other > UPROBE_MAX_ENDS_PER_S / 5.0 || by_redis > UPROBE_MAX_REDIS_ENDS_PER_S / 5.0 {
            self.calm_since = None;
            return None;
        }
        if self.calm_since.get_or_insert_with(Instant::now).elapsed() < UPROBE_CALM_FOR {
            return None;
        }
        self.paused = false;
        let mut resumed = Vec::new();
        for pid in self.pending.drain(..) {
            if let (_, Some((_, l))) = uprobes::attach(ebpf, pid) {
                links.insert(pid, l);
                resumed.push(pid.to_string());
            }
        }
        Some(format!(
            "uprobes resumed on redis-server pid {} ({rate:.0} connection ends/s)",
            resumed.join(", ")
        ))
    }
}

/// Whether this rate of ends costs Redis more in uprobe traps than they are worth.
fn too_many(other_per_s: f64, by_redis_per_s: f64) -> bool {
    other_per_s > UPROBE_MAX_ENDS_PER_S || by_redis_per_s > UPROBE_MAX_REDIS_ENDS_PER_S
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_churn_pauses_the_uprobes_and_an_idle_timeout_storm_does_not() {
        // redis-benchmark -k 0: 15,000 client-first ends a second.
        assert!(too_many(15_000.0, 0.0));
        // CONFIG SET timeout 2 with 10,000 idle clients: Redis frees them in a second.
        assert!(!too_many(50.0, 10_000.0));
        // Beyond what even Redis's own ends are worth.
        assert!(too_many(0.0, 50_000.0));
        assert!(!too_many(900.0, 0.0));
    }
}
