//! `--redact`: the report of captures with client addresses, names and process names
//! replaced. An input is capture JSON lines (as for `report_jsonl`), then optionally a NUL
//! byte and free text; the text goes through the redactor as risk findings (title,
//! evidence lines, fix), against the input's captures or, when they do not parse, against
//! a real capture of the fixtures.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use redis_trace::diagnose::finding::{Finding, Severity};
use redis_trace::report::{ReportOptions, parse_capture};
use redis_trace_fuzz::{CAPTURE, render_checked, split_captures};

fuzz_target!(|data: &[u8]| {
    let (jsonl, text) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(String::from_utf8_lossy(&data[i + 1..]))),
        None => (data, None),
    };
    let parsed: Result<Vec<_>, _> = split_captures(jsonl)
        .into_iter()
        .enumerate()
        .map(|(i, part)| parse_capture(Path::new(&format!("capture-{i}.jsonl")), part))
        .collect();
    let caps = match parsed {
        Ok(caps) => caps,
        Err(_) if text.is_some() => {
            vec![parse_capture(Path::new("fixture.jsonl"), CAPTURE.as_bytes()).expect("fixture")]
        }
        Err(_) => return,
    };
    let findings: Vec<Finding> = text
        .map(|t| {
            let mut lines = t.lines();
            let title = lines.next().unwrap_or_default().to_string();
            let evidence = lines.map(str::to_string).collect::<Vec<_>>();
            vec![Finding {
                severity: Severity::Warning,
                title,
                fix: t.to_string(),
                evidence,
            }]
        })
        .unwrap_or_default();
    let opts = ReportOptions {
        redact: true,
        chart_name: "report.svg".into(),
        findings: Some(&findings),
    };
    render_checked(&caps, &opts, data.len());
});
