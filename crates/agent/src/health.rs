//! Container health checks as Docker runs them for ECS: every `interval` the command runs
//! inside the container (`CMD` exec form, `CMD-SHELL` through `/bin/sh -c`) with a `timeout`;
//! exit 0 is a success. A success makes the container HEALTHY; `retries` consecutive
//! failures make it UNHEALTHY, except that failures during `startPeriod` do not count (a
//! success during it still counts). Until the first verdict the status is UNKNOWN. The
//! command runs through the driver's `exec`, with the container's own confinement. Time is
//! the agent's clock (`berth_clock`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use berth_clock::{Clock, Instant};
use berth_runtime::Driver;

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub args: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

impl HealthCheck {
    /// None for `NONE` or an empty command.
    pub fn from_ecs(h: &berth_model::wire::ecs::HealthCheck) -> Option<HealthCheck> {
        let cmd = h.command.clone().unwrap_or_default();
        let args = match cmd.first().map(String::as_str) {
            Some("CMD") => cmd[1..].to_vec(),
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), cmd[1..].join(" ")],
            Some("NONE") | None => return None,
            // Docker takes a bare command list as CMD.
            Some(_) => cmd,
        };
        if args.is_empty() {
            return None;
        }
        let secs = |v: Option<i32>, d: u64| Duration::from_secs(v.map_or(d, |x| x.max(0) as u64));
        Some(HealthCheck {
            args,
            interval: secs(h.interval, 30),
            timeout: secs(h.timeout, 5),
            retries: h.retries.unwrap_or(3).max(1) as u32,
            start_period: secs(h.start_period, 0),
        })
    }
}

/// The verdict logic, apart from running commands.
#[derive(Debug)]
pub struct Verdicts {
    failures: u32,
    started: Instant,
}

impl Verdicts {
    pub fn new(started: Instant) -> Verdicts {
        Verdicts {
            failures: 0,
            started,
        }
    }

    /// Fold one probe result in; returns the new status if there is a verdict.
    pub fn record(&mut self, hc: &HealthCheck, ok: bool, at: Instant) -> Option<&'static str> {
        if ok {
            self.failures = 0;
            return Some("HEALTHY");
        }
        if at.duration_since(self.started) < hc.start_period {
            return None;
        }
        self.failures += 1;
        (self.failures >= hc.retries).then_some("UNHEALTHY")
    }
}

/// Probe container `runtime_id` (init `pid`) until aborted, calling `report` with every
/// status change. The start period runs from now on `clock`.
pub(crate) async fn health_loop<F, Fut>(
    hc: HealthCheck,
    clock: Clock,
    driver: Arc<dyn Driver>,
    runtime_id: String,
    pid: i32,
    report: F,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut v = Verdicts::new(clock.instant());
    let mut last: Option<&'static str> = None;
    loop {
        tokio::time::sleep(hc.interval).await;
        let ok = match driver.exec(&runtime_id, pid, &hc.args, hc.timeout).await {
            Ok((code, _)) => code == 0,
            Err(e) => {
                tracing::debug!(container = %runtime_id, "health check: {e}");
                false
            }
        };
        if let Some(s) = v.record(&hc, ok, clock.instant())
            && last != Some(s)
        {
            last = Some(s);
            report(s.to_string()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(cmd: &[&str]) -> berth_model::wire::ecs::HealthCheck {
        berth_model::wire::ecs::HealthCheck {
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            interval: Some(5),
            timeout: Some(2),
            retries: Some(2),
            start_period: Some(10),
        }
    }

    #[test]
    fn command_forms() {
        let h =
            HealthCheck::from_ecs(&hc(&["CMD-SHELL", "wget -q -O- localhost || exit 1"])).unwrap();
        assert_eq!(h.args, ["/bin/sh", "-c", "wget -q -O- localhost || exit 1"]);
        let h = HealthCheck::from_ecs(&hc(&["CMD", "/bin/true", "x"])).unwrap();
        assert_eq!(h.args, ["/bin/true", "x"]);
        assert!(HealthCheck::from_ecs(&hc(&["NONE"])).is_none());
        assert!(HealthCheck::from_ecs(&hc(&[])).is_none());
        assert_eq!(h.interval, Duration::from_secs(5));
        assert_eq!(h.retries, 2);
    }

    #[test]
    fn start_period_and_retries() {
        let h = HealthCheck::from_ecs(&hc(&["CMD", "x"])).unwrap();
        let t0 = Clock::system().instant();
        let mut v = Verdicts::new(t0);
        // failures inside the start period do not count
        assert_eq!(v.record(&h, false, t0 + Duration::from_secs(5)), None);
        assert_eq!(v.record(&h, false, t0 + Duration::from_secs(9)), None);
        // after it, `retries` consecutive failures make it unhealthy
        assert_eq!(v.record(&h, false, t0 + Duration::from_secs(11)), None);
        assert_eq!(
            v.record(&h, false, t0 + Duration::from_secs(16)),
            Some("UNHEALTHY")
        );
        // one success heals and resets the count
        assert_eq!(
            v.record(&h, true, t0 + Duration::from_secs(21)),
            Some("HEALTHY")
        );
        assert_eq!(v.record(&h, false, t0 + Duration::from_secs(26)), None);
        // a success inside the start period counts
        let mut v = Verdicts::new(t0);
        assert_eq!(
            v.record(&h, true, t0 + Duration::from_secs(1)),
            Some("HEALTHY")
        );
    }
}
