//! How things are written in the report: text from a capture only inside code spans,
//! escaped; counts, times and durations as people read them; Redis's byte units and
//! client classes in its own words.
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// Control characters as `\xNN`, bidi and line-breaking format characters as `\u{NNNN}`
/// (Trojan Source): what is shown is what was there.
pub(super) fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else if matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        ) {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn code_span(s: &str, in_table: bool) -> String {
    let mut t = visible(s);
    if in_table {
        // GFM splits rows at pipes before anything else, code spans included.
        t = t.replace('|', "\\|");
    }
    if t.is_empty() {
        return "(empty)".into();
    }
    let mut longest = 0;
    let mut run = 0;
    for c in t.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    if t.starts_with('`') || t.ends_with('`') || (t.starts_with(' ') && t.ends_with(' ')) {
        format!("{fence} {t} {fence}")
    } else {
        format!("{fence}{t}{fence}")
    }
}

/// Untrusted text as an inline code span.
pub(super) fn code(s: &str) -> String {
    code_span(s, false)
}

/// Untrusted text as a code span in a table cell.
pub(super) fn cell(s: &str) -> String {
    code_span(s, true)
}

/// Text as plain Markdown: every character that could start markup is escaped.
pub(super) fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in visible(s).chars() {
        if c.is_ascii_punctuation()
            && !matches!(
                c,
                '.' | ',' | ':' | ';' | '\'' | '"' | '/' | '%' | '=' | '?' | '-' | '(' | ')'
            )
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// At most `max` characters: the head and the tail, where a log line says what happened.
pub(super) fn truncate(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let head = max * 5 / 9;
    let tail = max - head - 3;
    let h: String = s.chars().take(head).collect();
    let t: String = s.chars().skip(n - tail).collect();
    format!("{} … {}", h.trim_end(), t.trim_start())
}

pub(super) fn hms(t: SystemTime) -> String {
    let s = crate::time::rfc3339_millis(t);
    s.get(11..23).unwrap_or(&s).to_string()
}

pub(super) fn full(t: SystemTime) -> String {
    let s = crate::time::rfc3339_millis(t);
    format!(
        "{} {}",
        s.get(..10).unwrap_or(""),
        s.get(11..23).unwrap_or(&s)
    )
}

pub(super) fn day(t: SystemTime) -> String {
    let s = crate::time::rfc3339_millis(t);
    s.get(..10).unwrap_or("").to_string()
}

/// How times show in lists: clock time when everything is on one UTC day.
pub(super) struct TimeStyle {
    pub one_day: bool,
}

impl TimeStyle {
    pub fn of(&self, t: Option<SystemTime>) -> String {
        match t {
            Some(t) if self.one_day => hms(t),
            Some(t) => full(t),
            None => "?".into(),
        }
    }
}

/// A duration to the precision people read: "14 days 2 h", "6 min 52 s", "2.7 s".
pub(super) fn span(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match s {
        0..60 => format!("{:.1} s", d.as_secs_f64()),
        60..3600 if sec == 0 => format!("{m} min"),
        60..3600 => format!("{m} min {sec} s"),
        3600..86400 if m == 0 => format!("{h} h"),
        3600..86400 => format!("{h} h {m} min"),
        _ if h == 0 => count(days, "day", "days"),
        _ => format!("{} {h} h", count(days, "day", "days")),
    }
}

pub(super) fn duration_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        crate::time::secs_f64(ms / 1000.0)
            .map(span)
            .unwrap_or_else(|| format!("{ms:.0} ms"))
    }
}

pub(super) fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A byte count in Redis's config units: 33554432 → "32mb".
pub(super) fn redis_bytes(n: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = KB * 1024;
    const GB: u64 = MB * 1024;
    match n {
        0 => "0".into(),
        n if n % GB == 0 => format!("{}gb", n / GB),
        n if n % MB == 0 => format!("{}mb", n / MB),
        n if n % KB == 0 => format!("{}kb", n / KB),
        n => n.to_string(),
    }
}

/// A client class as people say it.
pub(super) fn class_words(class: &str, n: u64) -> String {
    let (one, many) = match class {
        "pubsub" => ("pub/sub subscriber", "pub/sub subscribers"),
        "replica" => ("replica", "replicas"),
        "master" => ("master link", "master links"),
        _ => ("normal client", "normal clients"),
    };
    if n == 1 { one.into() } else { many.into() }
}
