//! JSON lines given to `redis-trace report`: one or more capture files (separated by a
//! line holding only a form feed), each read as `report` reads a file, then the whole
//! report rendered (the timeline model, both ends merged, the Markdown and the SVG).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use redis_trace::report::{ReportOptions, parse_capture, render};
use redis_trace_fuzz::{MAX_SVG_BASE, split_captures};

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
    if let Ok(r) = render(&caps, &opts) {
        // The chart has about 60 bars and 8 ticks whatever the window: it grows with the
        // records (markers, legend), never with the time they span.
        assert!(
            r.svg.len() <= MAX_SVG_BASE + 32 * data.len(),
            "{} bytes of SVG from {} bytes of input",
            r.svg.len(),
            data.len()
        );
    }
});
