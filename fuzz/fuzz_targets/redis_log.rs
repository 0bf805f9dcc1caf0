//! Redis's log: each line alone, the whole text in order (shutdown attribution), then the
//! summary `diagnose` makes of it and the checks that read that summary.
#![no_main]
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use redis_trace::diagnose::{check_redis, summarize_log};
use redis_trace::sources::redis_log::{parse_line, parse_lines};
use redis_trace_fuzz::{fixture_config, fixture_info};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = parse_line(line);
    }
    let events = parse_lines(&text);
    // The fixtures' logs were written on 25 Nov 2026.
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    for window in [Duration::from_secs(86_400), Duration::MAX] {
        let summary = summarize_log("redis.log", &events, now, window);
        let _ = check_redis(fixture_config(), fixture_info(), None, None, Some(&summary));
    }
    let _ = summarize_log("redis.log", &events, SystemTime::UNIX_EPOCH, Duration::ZERO);
});
