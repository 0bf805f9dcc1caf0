//! /proc/net/tcp and /proc/net/tcp6 tables (a header line, then one row per socket).
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_trace::sources::procinfo::parse_tcp_rows;

fuzz_target!(|data: &[u8]| {
    if let Ok(rows) = parse_tcp_rows(&String::from_utf8_lossy(data)) {
        for r in rows {
            let _ = (
                r.local.port(),
                r.remote.ip().to_canonical(),
                r.listening,
                r.inode,
            );
        }
    }
});
