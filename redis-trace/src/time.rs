//! RFC 3339 times that never panic.
//!
//! humantime panics on a time before 1970 or after 9999, and such times can be made from
//! what Redis says (a huge `uptime_in_seconds`) or from a crafted capture given to
//! `report`. Every time printed goes through here and is clamped into that range first.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59.999999Z, the last instant humantime prints.
fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_000)
}

/// `t` within what can be printed.
pub fn clamp(t: SystemTime) -> SystemTime {
    t.clamp(UNIX_EPOCH, latest())
}

pub fn rfc3339_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(clamp(t)).to_string()
}

pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(clamp(t)).to_string()
}

pub fn rfc3339_micros(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(clamp(t)).to_string()
}

/// `secs` seconds as a Duration, None when negative, NaN or too large.
pub fn secs_f64(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_times_print_clamped() {
        let before = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(rfc3339_seconds(before), "1970-01-01T00:00:00Z");
        let after = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339_millis(after), "9999-12-31T23:59:59.999Z");
        assert_eq!(secs_f64(-1.0), None);
        assert_eq!(secs_f64(f64::NAN), None);
        assert_eq!(secs_f64(1e300), None);
        assert_eq!(secs_f64(1.5), Some(Duration::from_millis(1500)));
    }
}
