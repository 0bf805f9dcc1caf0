//! JSON lines given to `redis-trace report`: one or more capture files (separated by a
//! line holding only a form feed), each read as `report` reads a file, then the whole
//! report rendered (the timeline model, both ends merged, the Markdown and the SVG).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use redis_trace::report::{ReportOptions, parse_capture};
use redis_trace_fuzz::{render_checked, split_captures};

fuzz_target!(|data: &[u8]| {
    let mut caps = Vec::new();
    for (i, part) in split_captures(data).into_iter().enumerate() {
        let name = format!("capture-{i}.jsonl");
        match parse_capture(Path::new(&name), part) {
            Ok(c) => caps.push(c),
            Err(_) => return,
        }
    }
    let opts = ReportOptions {
        redact: false,
        chart_name: "report.svg".into(),
        findings: None,
    };
    render_checked(&caps, &opts, data.len());
});
