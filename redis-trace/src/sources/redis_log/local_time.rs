//! The timestamps of Redis's log as points in time: local dates and times (Redis formats
//! them with its own localtime) through mktime(3) in this host's time zone, ISO 8601
//! with a zone by calendar arithmetic.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::parse::parse_digits;

pub(super) fn month_number(mon: &str) -> Option<i32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS
        .iter()
        .position(|m| *m == mon)
        .and_then(|i| i32::try_from(i).ok())
}

/// "HH:MM:SS.fff" -> (h, m, s, nanoseconds).
fn parse_clock(s: &str) -> Option<(i32, i32, i32, u32)> {
    let (hms, frac) = match s.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (s, ""),
    };
    let mut it = hms.split(':');
    let h = parse_digits::<i32>(it.next()?)?;
    let m = parse_digits::<i32>(it.next()?)?;
    let sec = parse_digits::<i32>(it.next()?)?;
    if it.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 {
            return None;
        }
        let v = parse_digits::<u32>(frac)?;
        v * 10u32.pow(9 - frac.len() as u32)
    };
    Some((h, m, sec, nanos))
}

/// A local date and time (as Redis writes it) to a point in time, via mktime(3) in this
/// host's time zone. Without a year (Redis 3.x), the most recent such date that is not more
/// than a day ahead of now.
pub(super) fn parse_legacy_stamp(
    day: &str,
    mon: &str,
    year: Option<i32>,
    clock: &str,
) -> Option<SystemTime> {
    let day = parse_digits::<i32>(day)?;
    let mon = month_number(mon)?;
    let (h, m, s, nanos) = parse_clock(clock)?;
    if !(1..=31).contains(&day) {
        return None;
    }
    let to_time = |year: i32| local_to_system_time(year, mon, day, h, m, s, nanos);
    match year {
        Some(y) => to_time(y),
        None => {
            let now = SystemTime::now();
            let this_year = local_year(now)?;
            let t = to_time(this_year)?;
            if t > now + Duration::from_secs(86_400) {
                to_time(this_year - 1)
            } else {
                Some(t)
            }
        }
    }
}

fn local_to_system_time(
    year: i32,
    mon0: i32,
    day: i32,
    h: i32,
    m: i32,
    s: i32,
    nanos: u32,
) -> Option<SystemTime> {
    // SAFETY: an all-zero `tm` is valid (integers and a null tm_zone that mktime ignores).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = mon0;
    tm.tm_mday = day;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    tm.tm_isdst = -1; // let the zone rules decide
    // SAFETY: `tm` is a valid, exclusively borrowed struct tm; mktime only reads the zone
    // data it loads itself.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 {
        return None;
    }
    let secs = u64::try_from(t).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn local_year(t: SystemTime) -> Option<i32> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    // time_t, inferred from localtime_r (naming it is deprecated on musl).
    let secs = secs.try_into().ok()?;
    // SAFETY: as above, an all-zero `tm` is valid; localtime_r writes only into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    let r = unsafe { libc::localtime_r(&secs, &mut tm) };
    if r.is_null() {
        return None;
    }
    Some(tm.tm_year + 1900)
}

/// "2026-11-25T16:47:02.552+01:00" (also "Z", "+0100", "+01"; without a zone: local time).
pub(super) fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let year = parse_digits::<i32>(d.next()?)?;
    let mon = parse_digits::<i32>(d.next()?)?;
    let day = parse_digits::<i32>(d.next()?)?;
    if d.next().is_some() || !(1..=12).contains(&mon) || !(1..=31).contains(&day) {
        return None;
    }
    let zone_at = rest.find(['Z', '+', '-']);
    let (clock, zone) = match zone_at {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (h, m, sec, nanos) = parse_clock(clock)?;
    let offset_secs: i64 = match zone {
        None => return local_to_system_time(year, mon - 1, day, h, m, sec, nanos),
        Some("Z") => 0,
        Some(z) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
            let (oh, om) = match digits.len() {
                2 => (parse_digits::<i64>(&digits)?, 0),
                // `get`: four bytes need not be four characters ("€1").
                4 => (
                    parse_digits::<i64>(digits.get(..2)?)?,
                    parse_digits::<i64>(digits.get(2..)?)?,
                ),
                _ => return None,
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(i64::from(year), i64::from(mon), i64::from(day));
    let secs =
        days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(sec) - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use crate::sources::redis_log::{LogKind, parse_line};

    #[test]
    fn redis_log_iso8601_zone_of_multibyte_characters_does_not_panic() {
        // Found while fuzzing the log parser (reproduced with the redis_log target): a zone
        // "+€1" is four bytes, and was sliced through the '€' as if it were "+HHMM".
        for zone in ["+€1", "-1€", "+é12", "+1é2"] {
            let line = format!("123:M 2026-11-25T16:47:02.552{zone} * Evicting client: id=1");
            let e = parse_line(&line).expect("still the event");
            assert_eq!((e.time, e.kind), (None, LogKind::ClientEviction), "{zone}");
        }
        let logfmt = "pid=1 role=primary timestamp=\"2026-11-25T16:47:02.552+€1\" level=notice \
                      message=\"Evicting client: id=1\"";
        assert_eq!(parse_line(logfmt).expect("logfmt").time, None);
    }
}
