//! The kernel log (/dev/kmsg records, dmesg and journalctl lines): the OOM kills of Redis
//! found in it, then the finding `diagnose` makes of them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_trace::diagnose::{RedisStart, check_oom_kills, parse_oom_kills};

fuzz_target!(|data: &[u8]| {
    let kills = parse_oom_kills(&String::from_utf8_lossy(data));
    let start = RedisStart {
        pid: 4242,
        at_s: 3030.0,
        cgroup: Some("/system.slice/redis-server.service".into()),
    };
    let _ = check_oom_kills(&kills, "/dev/kmsg", Some(3100.0), Some(&start));
    let _ = check_oom_kills(&kills, "dmesg", None, None);
});
