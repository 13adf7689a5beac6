//! berth-clock: berth's one source of time. A [`Clock`] is tokio's clock plus an epoch: the
//! machine's wall-clock time is read once, when the clock is made, and from then on the clock
//! advances with `tokio::time::Instant`. Every part that needs the time (the control plane, the
//! registry, the front door, the agent and its drivers) is handed a clock and asks it — nothing
//! else in berth reads `SystemTime`, `Instant` or `OffsetDateTime::now_utc` (clippy's
//! `disallowed-methods` in `clippy.toml` holds the line; this crate is the one exception, and
//! the few places that truly need the machine's time say why with an `allow`).
//!
//! Why tokio's clock: under `#[tokio::test(start_paused = true)]` it stands still until the
//! test advances it (`tokio::time::advance`, or a sleep the runtime skips through when it is
//! idle), so timeouts, grace periods, renewals and expiries are tested in no real time at all,
//! and the wall-clock [`Timestamp`]s the parts write move in step with their timers.
//!
//! The wall time therefore follows the monotonic clock after start: a step of the system clock
//! (an NTP correction) is not seen until the process restarts. Time stored in records and
//! compared against another process's clock (tokens, credentials) tolerates the small drift
//! that gives.
//!
//! Owns: reading the machine's clocks. Must not: sleep, spawn, or hold any other state.

use std::time::Duration;

pub use berth_model::Timestamp;
pub use tokio::time::Instant;

/// Wall-clock and monotonic time for one process. Cheap to copy; all copies read the same.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The wall time at `start`, since the Unix epoch.
    epoch: Duration,
    start: Instant,
}

impl Clock {
    /// The machine's clock: the wall time read now, advancing with tokio's clock.
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place berth reads the system's wall clock"
    )]
    pub fn system() -> Clock {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            epoch,
            start: Self::tokio_now(),
        }
    }

    /// A clock that reads `at` now and advances with tokio's clock (for tests that want a
    /// known time as well as a paused one).
    pub fn starting_at(at: Timestamp) -> Clock {
        Clock {
            epoch: at.unix_duration(),
            start: Self::tokio_now(),
        }
    }

    /// The wall-clock time now.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_unix_duration(self.epoch + self.elapsed(self.start))
    }

    /// The monotonic time now (tokio's clock): for timers, deadlines and durations.
    pub fn instant(&self) -> Instant {
        Self::tokio_now()
    }

    /// How long ago `earlier` was (zero if it is not in the past).
    pub fn elapsed(&self, earlier: Instant) -> Duration {
        Self::tokio_now().saturating_duration_since(earlier)
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "the one place berth reads tokio's clock"
    )]
    fn tokio_now() -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_time_moves_with_tokios_clock_only() {
        let c = Clock::starting_at(Timestamp::from_secs(1_000));
        let i = c.instant();
        assert_eq!(c.now(), Timestamp::from_secs(1_000));
        // Paused: real time passing does not move it.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.now(), Timestamp::from_secs(1_000));
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(c.now(), Timestamp::from_millis(1_001_500));
        assert_eq!(c.elapsed(i), Duration::from_millis(1_500));
        // A sleep on an idle runtime skips ahead, and the wall time with it.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(c.now(), Timestamp::from_millis(4_601_500));
        // Copies read the same clock.
        let copy = c;
        assert_eq!(copy.now(), c.now());
        assert_eq!(
            c.elapsed(c.instant() + Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[tokio::test]
    async fn the_system_clock_starts_at_the_wall_time() {
        let c = Clock::system();
        let t = c.now();
        // After 2020 and before 2100: the epoch was read from the machine, in milliseconds.
        assert!(t > Timestamp::from_secs(1_577_836_800), "{t:?}");
        assert!(t < Timestamp::from_secs(4_102_444_800), "{t:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(c.now().duration_since(t) >= Duration::from_millis(20));
    }
}
