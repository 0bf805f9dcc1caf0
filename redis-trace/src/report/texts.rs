//! Words the report uses for Redis's settings and client classes. (What each cause
//! means and its usual fix belong to the cause: `Cause::text`.)

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
