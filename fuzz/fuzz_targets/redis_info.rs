//! An INFO reply: parsed, then every `diagnose` check that reads it, against the real
//! CONFIG GET and CLIENT LIST of the fixtures (and against an empty configuration).
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_trace::diagnose::check_redis;
use redis_trace::sources::redis::{RedisConfig, parse_info};
use redis_trace_fuzz::{fixture_clients, fixture_config};

fuzz_target!(|data: &[u8]| {
    let info = parse_info(&String::from_utf8_lossy(data));
    let _ = check_redis(fixture_config(), &info, Some(fixture_clients()), None, None);
    let _ = check_redis(&RedisConfig::default(), &info, None, None, None);
});
