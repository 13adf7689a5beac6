//! [`Timestamp`]: a point in wall-clock time as berth passes it around — milliseconds since
//! the Unix epoch. The model never reads a clock; whoever needs "now" asks the clock
//! (`berth-clock`) and hands the answer in. The AWS JSON protocols carry timestamps as epoch
//! seconds with a fraction, and the store's records keep them so; [`Timestamp::as_secs_f64`]
//! gives that form (millisecond precision, the precision ECS answers with).

use std::time::Duration;

/// A point in wall-clock time: whole milliseconds since 1970-01-01T00:00:00Z. Times before the
/// epoch are not represented (they clamp to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    pub const fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs.saturating_mul(1000))
    }

    /// The time `d` after the epoch (truncated to the millisecond).
    pub fn from_unix_duration(d: Duration) -> Timestamp {
        Timestamp(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Epoch seconds as the JSON protocols carry them; negative or unrepresentable values
    /// clamp to the epoch, fractions are rounded to the millisecond.
    pub fn from_secs_f64(secs: f64) -> Timestamp {
        if secs.is_finite() && secs > 0.0 {
            Timestamp((secs * 1000.0).round() as u64)
        } else {
            Timestamp(0)
        }
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down), as tokens and IAM's `aws:EpochTime`
    /// count them.
    pub const fn as_secs(self) -> i64 {
        (self.0 / 1000) as i64
    }

    /// Seconds since the epoch with a millisecond fraction: the JSON protocols' timestamps.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// The time since the epoch.
    pub const fn unix_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// How long after `earlier` this is; zero when it is not after it.
    pub const fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_seconds_keep_milliseconds() {
        let t = Timestamp::from_millis(1_700_000_000_123);
        assert_eq!(t.as_secs_f64(), 1_700_000_000.123);
        assert_eq!(t.as_secs(), 1_700_000_000);
        assert_eq!(Timestamp::from_secs_f64(t.as_secs_f64()), t);
        assert_eq!(Timestamp::from_secs_f64(-5.0), Timestamp::UNIX_EPOCH);
        assert_eq!(Timestamp::from_secs_f64(f64::NAN), Timestamp::UNIX_EPOCH);
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Timestamp::from_secs(10);
        assert_eq!(
            t + Duration::from_millis(1500),
            Timestamp::from_millis(11_500)
        );
        assert_eq!(t - Duration::from_secs(11), Timestamp::UNIX_EPOCH);
        assert_eq!(
            t.duration_since(Timestamp::from_secs(4)),
            Duration::from_secs(6)
        );
        assert_eq!(Timestamp::from_secs(4).duration_since(t), Duration::ZERO);
        assert_eq!(
            Timestamp::from_millis(u64::MAX - 1) + Duration::from_secs(1),
            Timestamp::from_millis(u64::MAX)
        );
    }
}
