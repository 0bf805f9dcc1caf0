//! CONFIG GET replies (name and value on alternate lines, as `redis-cli` prints them):
//! parsed, then every `diagnose` check that reads the configuration, against the real
//! INFO and CLIENT LIST of the fixtures.
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_trace::diagnose::check_redis;
use redis_trace::sources::redis::parse_config;
use redis_trace_fuzz::{config_pairs, fixture_clients, fixture_info};

fuzz_target!(|data: &[u8]| {
    let cfg = parse_config(&config_pairs(&String::from_utf8_lossy(data)));
    let _ = check_redis(&cfg, fixture_info(), Some(fixture_clients()), None, None);
});
