//! A CLIENT LIST reply: parsed, then the `diagnose` checks on clients (idle clients,
//! output buffers, keepalive), against the real CONFIG GET and INFO of the fixtures.
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_trace::diagnose::check_redis;
use redis_trace::sources::redis::parse_client_list;
use redis_trace_fuzz::{fixture_config, fixture_info};

fuzz_target!(|data: &[u8]| {
    let clients = parse_client_list(&String::from_utf8_lossy(data));
    let _ = check_redis(fixture_config(), fixture_info(), Some(&clients), None, None);
});
