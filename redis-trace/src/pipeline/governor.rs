//! The uprobes' cost to Redis, kept bounded: paused in a storm of connection ends,
//! resumed once it is calm.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::kernel::uprobes;

/// Keeps the uprobes' cost to Redis bounded: each freed client costs Redis a uprobe
/// trap (~2 µs here), so above this many connection ends a second the uprobes are
/// paused (causes then rest on the other evidence), and resumed once it is calm.
const UPROBE_MAX_ENDS_PER_S: f64 = 1000.0;
const UPROBE_CALM_FOR: Duration = Duration::from_secs(10);

pub struct UprobeGovernor {
    pub paused: bool,
    /// Redis pids to probe again when resuming.
    pub pending: Vec<u32>,
    last: Instant,
    last_closes: u64,
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
            last_closes: 0,
            calm_since: None,
        }
    }

    /// Once a second: pauses or resumes the uprobes; says what it did.
    pub fn tick(
        &mut self,
        closes: u64,
        links: &mut HashMap<u32, Vec<uprobes::Link>>,
        ebpf: &mut aya::Ebpf,
    ) -> Option<String> {
        let elapsed = self.last.elapsed();
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        let rate = closes.saturating_sub(self.last_closes) as f64 / elapsed.as_secs_f64();
        self.last = Instant::now();
        self.last_closes = closes;
        if !self.paused {
            if rate <= UPROBE_MAX_ENDS_PER_S || links.is_empty() {
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
                "uprobes paused: {rate:.0} connection ends/s (above {UPROBE_MAX_ENDS_PER_S:.0}/s, \
                 each costs Redis a uprobe trap); code paths resume when it calms down"
            ));
        }
        if rate > UPROBE_MAX_ENDS_PER_S / 5.0 {
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
