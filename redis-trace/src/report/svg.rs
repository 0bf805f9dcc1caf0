//! The chart beside the report: connection ends over time, stacked by cause, with markers
//! for OOM kills, Redis restarts and fatal signals. Hand-written SVG; every text from a
//! capture is XML-escaped.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::model::{Model, ranked_causes, secs_between};
use super::text::visible;
use crate::cause::Cause;
use crate::schema::ProcessEventKind;

const W: f64 = 960.0;
const H: f64 = 440.0;
const X0: f64 = 64.0;
const X1: f64 = W - 250.0;
const Y0: f64 = 64.0;
const Y1: f64 = H - 64.0;
/// About this many buckets over the window.
const BUCKETS: f64 = 60.0;

pub(super) fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in visible(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn clock(t: SystemTime, with_ms: bool) -> String {
    let s = crate::time::rfc3339_millis(t);
    let end = if with_ms { 23 } else { 19 };
    s.get(11..end).unwrap_or(&s).to_string()
}

/// A bucket length that reads well: 1 s, 2 s, 5 s, 10 s, ... 1 day, 1 week, then whole
/// weeks: never so short that the window holds many more than [`BUCKETS`] of them (a
/// capture spanning years must not become a chart of a million bars and ticks).
fn bucket_len(window_s: f64) -> f64 {
    const WEEK: f64 = 604800.0;
    const NICE: [f64; 22] = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
        3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0, WEEK,
    ];
    // Up to 10% more buckets than asked, so that a 10 min capture gets 10 s buckets.
    let want = window_s / BUCKETS / 1.1;
    NICE.iter()
        .copied()
        .find(|b| *b >= want)
        .unwrap_or_else(|| (want / WEEK).ceil() * WEEK)
}

fn bucket_words(b: f64) -> String {
    if b < 1.0 {
        format!("{} ms", (b * 1000.0).round())
    } else if b < 60.0 {
        format!("{b} s")
    } else if b < 3600.0 {
        format!("{} min", b / 60.0)
    } else if b < 86400.0 {
        format!("{} h", b / 3600.0)
    } else {
        format!("{} d", b / 86400.0)
    }
}

/// A y-axis step giving at most 6 ticks: 1, 2, 5 × 10^k.
fn y_step(max: u64) -> u64 {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if max.div_ceil(step * m) <= 6 {
                return step * m;
            }
        }
        step *= 10;
    }
}

struct Marker {
    t: SystemTime,
    kind: &'static str,
    label: String,
    detail: String,
}

fn markers(m: &Model) -> Vec<Marker> {
    let mut out = Vec::new();
    for p in &m.procs {
        let Some(t) = p.time else { continue };
        let who = match p.pid {
            Some(pid) => format!("{} (pid {pid})", p.comm),
            None => p.comm.clone(),
        };
        if p.event == ProcessEventKind::OomKill {
            out.push(Marker {
                t,
                kind: "oom",
                label: "OOM".into(),
                detail: format!("OOM kill of {who} at {}", clock(t, true)),
            });
        } else if p.is_fatal_signal() {
            // The OOM killer's own SIGKILL is the OOM marker already.
            let oom_kill = m.procs.iter().any(|q| {
                q.event == ProcessEventKind::OomKill
                    && q.pid == p.pid
                    && q.time.is_some_and(|qt| secs_between(t, qt).abs() < 1.0)
            });
            if oom_kill {
                continue;
            }
            let sig = p
                .signal
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            let from = p
                .signal
                .as_ref()
                .and_then(|s| s.sender.as_ref())
                .map(|s| format!(" from {}", s.comm))
                .unwrap_or_default();
            out.push(Marker {
                t,
                kind: "signal",
                label: sig.clone(),
                detail: format!("{sig} to {who}{from} at {}", clock(t, true)),
            });
        }
    }
    for s in m.statuses.iter().filter(|s| s.restarted) {
        let Some(t) = s.time else { continue };
        out.push(Marker {
            t,
            kind: "restart",
            label: "restart".into(),
            detail: format!(
                "Redis restart seen on port {} at {} (pid {})",
                s.port,
                clock(t, true),
                s.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
            ),
        });
    }
    out.sort_by_key(|k| k.t);
    out
}

fn marker_style(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "oom" => ("#c00000", ""),
        "restart" => ("#1f4e9c", " stroke-dasharray=\"6 3\""),
        _ => ("#6a1b9a", " stroke-dasharray=\"2 3\""),
    }
}

pub(super) fn render(m: &Model) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\" role=\"img\" aria-label=\"Connection ends over time, by cause\">"
    );
    let _ = writeln!(o, "<title>Connection ends over time, by cause</title>");
    let _ = writeln!(o, "<rect width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>");

    let times: Vec<SystemTime> = m.conns.iter().filter_map(|c| c.rec.time).collect();
    let marks = markers(m);
    let start = m
        .start
        .into_iter()
        .chain(times.iter().copied())
        .chain(marks.iter().map(|k| k.t))
        .min();
    let end = m
        .end
        .into_iter()
        .chain(times.iter().copied())
        .chain(marks.iter().map(|k| k.t))
        .max();
    let (Some(start), Some(end)) = (start, end) else {
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">No timed records in the capture</text>\n</svg>",
            W / 2.0,
            H / 2.0
        );
        return o;
    };
    let window = secs_between(start, end).max(1.0);
    let b = bucket_len(window);
    // Buckets on round times (a multiple of their length since the epoch).
    let epoch = |t: SystemTime| secs_between(SystemTime::UNIX_EPOCH, t);
    let first = (epoch(start) / b).floor() * b;
    let n = (((epoch(end) - first) / b).floor() as usize + 1).max(1);
    // To the millisecond: bucket edges are round, f64 sums are not.
    let at = |k: f64| {
        SystemTime::UNIX_EPOCH + Duration::from_millis((k.max(0.0) * 1000.0).round() as u64)
    };
    let mut counts: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); n];
    let mut by_cause: BTreeMap<String, u64> = BTreeMap::new();
    for c in &m.conns {
        let Some(t) = c.rec.time else { continue };
        let i = (((epoch(t) - first) / b).floor().max(0.0) as usize).min(n - 1);
        *counts[i].entry(c.cause.as_str().to_string()).or_default() += 1;
        *by_cause.entry(c.cause.as_str().to_string()).or_default() += 1;
    }
    let order: Vec<(Cause, u64)> = ranked_causes(&by_cause);
    let max = counts
        .iter()
        .map(|c| c.values().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let step = y_step(max);
    let top = max.div_ceil(step) * step;
    let y = |v: f64| Y1 - (Y1 - Y0) * v / top as f64;
    let bw = (X1 - X0) / n as f64;
    let x_of = |t: SystemTime| X0 + (epoch(t) - first) / b * bw;

    let _ = writeln!(
        o,
        "<text x=\"{X0}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Connection ends over time, per {}</text>",
        xml(&bucket_words(b))
    );
    let _ = writeln!(
        o,
        "<text x=\"{X0}\" y=\"40\" fill=\"#555555\">{} {} → {} UTC · {} connection ends</text>",
        xml(crate::time::rfc3339_millis(start)
            .to_string()
            .get(..10)
            .unwrap_or("")),
        xml(&clock(start, true)),
        xml(&clock(end, true)),
        times.len()
    );
    // Axes and grid.
    let mut v = 0;
    while v <= top {
        let yy = y(v as f64);
        let _ = writeln!(
            o,
            "<line x1=\"{X0}\" y1=\"{yy:.1}\" x2=\"{X1}\" y2=\"{yy:.1}\" stroke=\"#e6e6e6\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555555\">{v}</text>",
            X0 - 6.0,
            yy + 4.0
        );
        v += step;
    }
    let _ = writeln!(
        o,
        "<line x1=\"{X0}\" y1=\"{Y1}\" x2=\"{X1}\" y2=\"{Y1}\" stroke=\"#333333\"/>\
         <line x1=\"{X0}\" y1=\"{Y0}\" x2=\"{X0}\" y2=\"{Y1}\" stroke=\"#333333\"/>"
    );
    let _ = writeln!(
        o,
        "<text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\" fill=\"#555555\">connection ends per {}</text>",
        (Y0 + Y1) / 2.0,
        xml(&bucket_words(b))
    );
    // Time ticks on round times, about 8 of them.
    let tick = bucket_len(n as f64 * b * BUCKETS / 8.0 * 1.1).max(b);
    let last = first + n as f64 * b;
    let mut k = (first / tick).ceil() * tick;
    while k <= last + 1e-9 {
        let xx = X0 + (k - first) / b * bw;
        let _ = writeln!(
            o,
            "<line x1=\"{xx:.1}\" y1=\"{Y1}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#333333\"/>\
             <text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555555\">{}</text>",
            Y1 + 5.0,
            Y1 + 19.0,
            xml(&clock(at(k), tick < 1.0))
        );
        k += tick;
    }
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555555\">time (UTC)</text>",
        (X0 + X1) / 2.0,
        Y1 + 40.0
    );
    // Stacked bars, the most frequent cause at the bottom.
    for (i, bucket) in counts.iter().enumerate() {
        let xx = X0 + i as f64 * bw + bw * 0.08;
        let w = (bw * 0.84).max(1.0);
        let mut base = 0u64;
        for (cause, _) in &order {
            let Some(&k) = bucket.get(cause.as_str()) else {
                continue;
            };
            let (y_top, y_bot) = (y((base + k) as f64), y(base as f64));
            let _ = writeln!(
                o,
                "<rect x=\"{xx:.1}\" y=\"{y_top:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{}–{}: {k} {}</title></rect>",
                (y_bot - y_top).max(0.5),
                cause.chart_colour(),
                xml(&clock(at(first + i as f64 * b), true)),
                xml(&clock(at(first + (i + 1) as f64 * b), true)),
                xml(cause.as_str())
            );
            base += k;
        }
    }
    // Markers, labels staggered so that close ones stay legible.
    for (i, k) in marks.iter().enumerate() {
        let xx = x_of(k.t).clamp(X0, X1);
        let (stroke, dash) = marker_style(k.kind);
        let ly = Y0 - 6.0 - (i % 2) as f64 * 12.0;
        let _ = writeln!(
            o,
            "<g><title>{}</title><line x1=\"{xx:.1}\" y1=\"{:.1}\" x2=\"{xx:.1}\" y2=\"{Y1}\" stroke=\"{stroke}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{xx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\" font-size=\"10\" fill=\"{stroke}\">{}</text></g>",
            xml(&k.detail),
            ly + 2.0,
            xml(&k.label)
        );
    }
    // Legend.
    let lx = X1 + 24.0;
    let mut ly = Y0;
    let _ = writeln!(
        o,
        "<text x=\"{lx}\" y=\"{:.1}\" font-weight=\"bold\">Cause</text>",
        ly - 8.0
    );
    for (cause, k) in &order {
        let _ = writeln!(
            o,
            "<rect x=\"{lx}\" y=\"{ly:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{} ({k})</text>",
            cause.chart_colour(),
            lx + 18.0,
            ly + 10.0,
            xml(cause.as_str())
        );
        ly += 18.0;
    }
    if order.is_empty() {
        let _ = writeln!(
            o,
            "<text x=\"{lx}\" y=\"{:.1}\" fill=\"#555555\">no connection ends</text>",
            ly + 10.0
        );
        ly += 18.0;
    }
    let mut kinds: Vec<&str> = marks.iter().map(|k| k.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    if !kinds.is_empty() {
        ly += 10.0;
        let _ = writeln!(
            o,
            "<text x=\"{lx}\" y=\"{ly:.1}\" font-weight=\"bold\">Markers</text>"
        );
        ly += 8.0;
        for kind in kinds {
            let (stroke, dash) = marker_style(kind);
            let words = match kind {
                "oom" => "OOM kill",
                "restart" => "Redis restart",
                _ => "fatal signal",
            };
            let _ = writeln!(
                o,
                "<line x1=\"{lx}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{stroke}\" stroke-width=\"2\"{dash}/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{words}</text>",
                ly + 6.0,
                lx + 12.0,
                ly + 6.0,
                lx + 18.0,
                ly + 10.0
            );
            ly += 18.0;
        }
    }
    o.push_str("</svg>\n");
    o
}
