//! What the fuzz targets share: the real fixtures of the repository, parsed once, as the
//! context a fuzzed input is checked against (a fuzzed INFO against the fixture's
//! CONFIG GET and CLIENT LIST, and so on), and small input splitters.
use std::collections::HashMap;
use std::sync::LazyLock;

use redis_trace::kernel::layout::ResetReasons;
use redis_trace::kernel::tracefs::parse_format;
use redis_trace::sources::redis::{
    ClientEntry, RedisConfig, parse_client_list, parse_config, parse_info,
};

const FIXTURES_INFO: &str = include_str!("../../redis-trace/tests/fixtures/redis/info-7.0.15.txt");
const FIXTURES_CONFIG: &str =
    include_str!("../../redis-trace/tests/fixtures/redis/config-get-7.0.15.txt");
const FIXTURES_CLIENTS: &str =
    include_str!("../../redis-trace/tests/fixtures/redis/client-list-7.0.15.txt");
/// `tcp:tcp_send_reset` of kernel 6.18: the reset reasons' names.
const SEND_RESET_FORMAT: &str =
    include_str!("../../redis-trace/tests/fixtures/formats/6.18/tcp__tcp_send_reset.format");
/// A capture seen from both ends' Redis host (a real-shaped capture to redact texts against).
pub const CAPTURE: &str =
    include_str!("../../redis-trace/tests/fixtures/captures/both-ends-redis-host.jsonl");

/// `redis-cli CONFIG GET` output, name and value on alternate lines (as the fixture is
/// written), into the pairs `parse_config` takes; an odd last line is a name without value.
pub fn config_pairs(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|kv| {
            (
                kv[0].to_string(),
                kv.get(1).map_or_else(String::new, |v| (*v).to_string()),
            )
        })
        .collect()
}

/// The fixture's CONFIG GET (redis-server 7.0.15), parsed once.
pub fn fixture_config() -> &'static RedisConfig {
    static CFG: LazyLock<RedisConfig> =
        LazyLock::new(|| parse_config(&config_pairs(FIXTURES_CONFIG)));
    &CFG
}

/// The fixture's INFO, parsed once.
pub fn fixture_info() -> &'static HashMap<String, String> {
    static INFO: LazyLock<HashMap<String, String>> = LazyLock::new(|| parse_info(FIXTURES_INFO));
    &INFO
}

/// The fixture's CLIENT LIST, parsed once.
pub fn fixture_clients() -> &'static [ClientEntry] {
    static CLIENTS: LazyLock<Vec<ClientEntry>> =
        LazyLock::new(|| parse_client_list(FIXTURES_CLIENTS));
    &CLIENTS
}

/// The reset reason names of kernel 6.18's `tcp:tcp_send_reset`, parsed once.
pub fn send_reset_reasons() -> &'static ResetReasons {
    static REASONS: LazyLock<ResetReasons> = LazyLock::new(|| {
        parse_format(SEND_RESET_FORMAT)
            .map(|f| ResetReasons::from_format(&f))
            .unwrap_or_default()
    });
    &REASONS
}

/// Several capture files in one input: separated by a line holding only a form feed
/// (`\x0c`), so that a seed can be two real captures of both ends of one connection.
pub fn split_captures(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(3).position(|w| w == b"\n\x0c\n") {
        out.push(&rest[..=i]);
        rest = &rest[i + 3..];
    }
    out.push(rest);
    out
}

/// The report's chart, whatever the input: up to this much, plus a few bytes per input
/// byte (markers and legend entries grow with the records).
pub const MAX_SVG_BASE: usize = 512 * 1024;

/// Renders `caps` (errors are fine: bad input) and checks that the chart stays bounded: it
/// has about 60 bars and 8 ticks whatever the window, so it grows with the records
/// (markers, legend), never with the time they span.
pub fn render_checked(
    caps: &[redis_trace::report::Capture],
    opts: &redis_trace::report::ReportOptions,
    input_len: usize,
) {
    if let Ok(r) = redis_trace::report::render(caps, opts) {
        assert!(
            r.svg.len() <= MAX_SVG_BASE + 32 * input_len,
            "{} bytes of SVG from {input_len} bytes of input",
            r.svg.len()
        );
    }
}
