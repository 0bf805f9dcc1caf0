//! Records from the kernel programs' ring buffer: one input is a run of records as the
//! ring hands them over (each as long as its kind's `#[repr(C)]` type, back to back).
//! Each is decoded, then joined per connection by the assembler the capture uses and
//! written as the JSON records the capture writes.
#![no_main]
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use redis_trace::pipeline::assemble::{Assembled, Assembler, Clock};
use redis_trace::kernel::decode::{Record, client, comm, ip, server};
use redis_trace::schema::ProcessRef;
use redis_trace_fuzz::send_reset_reasons;

fuzz_target!(|data: &[u8]| {
    // The whole input as one record, as the capture loop decodes each ring item.
    let _ = Record::decode(data);

    let reasons = send_reset_reasons().clone();
    let mut owners = HashMap::new();
    let (srv, cli) = (
        "127.0.0.1:6379".parse().expect("literal"),
        "127.0.0.1:50000".parse().expect("literal"),
    );
    owners.insert(
        (srv, cli),
        ProcessRef {
            pid: 42,
            comm: "redis-server".into(),
        },
    );
    let clock = Clock::fixed(UNIX_EPOCH + Duration::from_secs(1_795_000_000));
    let mut asm = Assembler::new(Duration::from_millis(5), reasons, clock, owners);
    let mut out = Vec::new();
    let mut rest = data;
    while let Ok(rec) = Record::decode(rest) {
        let (len, ts) = match rec {
            Record::Closed(c) => {
                let _ = (server(&c.key), client(&c.key), comm(&c.comm));
                asm.push_closed(c);
                (size_of_val(&c), c.close_ns)
            }
            Record::Sock(s) => {
                let _ = (server(&s.key), client(&s.key), comm(&s.comm));
                asm.push_sock(s);
                (size_of_val(&s), s.ts_ns)
            }
            Record::Proc(p) => {
                let _ = (comm(&p.comm), comm(&p.actor_comm), clock.rfc3339(p.ts_ns));
                (size_of_val(&p), p.ts_ns)
            }
        };
        let _ = asm.pending();
        asm.flush(ts, &mut out);
        rest = &rest[len..];
    }
    asm.flush(u64::MAX, &mut out);
    for a in &out {
        let json = match a {
            Assembled::Closed(c) => serde_json::to_string(c),
            Assembled::Reset(r) => serde_json::to_string(r),
        };
        assert!(json.is_ok());
    }
    if let Some(addr) = data.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        let _ = ip(addr);
    }
});
