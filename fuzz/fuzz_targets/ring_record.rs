//! Records from the kernel programs' ring buffer: one input is a run of records as the
//! ring hands them over (each as long as its kind's `#[repr(C)]` type, back to back).
//! Each is decoded, then joined per connection by the assembler the capture uses,
//! classified on the kernel's evidence alone, and written as the JSON records the capture
//! writes.
#![no_main]
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use redis_trace::classify::{Facts, classify};
use redis_trace::kernel::assemble::{Assembled, Assembler};
use redis_trace::kernel::decode::{Record, client, comm, ip, server};
use redis_trace::pipeline::record::connection_closed;
use redis_trace::schema::{self, ProcessRef};
use redis_trace::time::Clock;
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
        (0, srv, cli),
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
                let _ = (comm(&p.comm), comm(&p.actor_comm), clock.wall(p.ts_ns));
                (size_of_val(&p), p.ts_ns)
            }
            Record::Packets(p) => {
                let _ = (server(&p.key), client(&p.key));
                asm.push_packets(p);
                (size_of_val(&p), p.ts_ns)
            }
        };
        let _ = asm.pending();
        asm.flush(ts, &mut out);
        rest = &rest[len..];
    }
    asm.flush(u64::MAX, &mut out);
    let facts = Facts {
        redis_pids: &[42],
        proc_events: &[],
        log: &[],
        client: None,
        config: None,
        timeout_changed: None,
        redis_view: Err("not read while fuzzing"),
        first_client_list: None,
        log_view: Err("not read while fuzzing"),
        code_path: None,
        missing_probes: &[],
    };
    for a in out {
        let record = match a {
            Assembled::Closed(c) => {
                let verdict = classify(&c, &facts);
                schema::Record::ConnectionClosed(Box::new(connection_closed(
                    *c, None, verdict, None, None,
                )))
            }
            Assembled::Reset(r) => schema::Record::Reset(r),
        };
        let json = serde_json::to_string(&record).expect("a record serializes");
        // What the capture writes, the report reads back.
        let back: schema::Record = serde_json::from_str(&json).expect("and reads back");
        assert_eq!(
            serde_json::to_string(&back).ok().as_deref(),
            Some(json.as_str())
        );
    }
    if let Some(addr) = data.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        let _ = ip(addr);
    }
});
