//! Time: the kernel's clock mapped to wall time, and RFC 3339 times that never panic.
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

/// Seconds from `a` to `b` (negative when `b` is earlier).
pub fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the kernel programs' clock (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Maps kernel time (CLOCK_MONOTONIC ns) to wall time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_zero: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        let mono = monotonic_ns();
        let now = SystemTime::now();
        Self {
            wall_at_zero: now
                .checked_sub(Duration::from_nanos(mono))
                .unwrap_or(UNIX_EPOCH),
        }
    }

    /// A clock whose kernel time 0 is `wall_at_zero` (for tests and offline use).
    pub fn fixed(wall_at_zero: SystemTime) -> Self {
        Self { wall_at_zero }
    }

    pub fn wall(&self, ts_ns: u64) -> SystemTime {
        self.wall_at_zero + Duration::from_nanos(ts_ns)
    }

    /// Kernel time of a wall time (0 before the clock's zero).
    pub fn mono(&self, t: SystemTime) -> u64 {
        t.duration_since(self.wall_at_zero)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// serde for a time written as RFC 3339 with microseconds (`"time"` fields).
pub mod micros {
    use serde::{Deserialize as _, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339_micros(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// serde for a time written as RFC 3339 with milliseconds.
pub mod millis {
    use serde::{Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        super::micros::deserialize(d)
    }
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
