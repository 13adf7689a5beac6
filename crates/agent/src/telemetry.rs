//! The node's metrics reports (TCS `PublishMetrics`): every [`AgentConfig::telemetry_interval`]
//! the CPU and memory each running container used, as its driver reads them (the native one:
//! from its cgroup), go to the control plane — over the telemetry session for a remote node,
//! directly for `berth up`'s own. CPU is the percentage of one CPU used since the previous
//! reading; memory is MiB in use.
//!
//! [`AgentConfig::telemetry_interval`]: crate::AgentConfig::telemetry_interval

use std::collections::HashMap;
use std::sync::Arc;

use berth_clock::Instant;
use berth_model::status::{NodeContainerStatus, TaskStatus};
use berth_model::wire::tcs::{
    CWStatsSet, ContainerMetric, MetricsMetadata, PublishMetricsRequest, TaskMetric,
};

use crate::Inner;

/// One reading as a statistics set of one sample.
fn one(v: f64) -> CWStatsSet {
    CWStatsSet {
        min: Some(v),
        max: Some(v),
        sample_count: Some(1),
        sum: Some(v),
    }
}

/// CPU use between two readings, percent of one CPU.
pub fn cpu_percent(prev: (Instant, u64), now: (Instant, u64)) -> f64 {
    let wall = now.0.saturating_duration_since(prev.0).as_nanos() as f64;
    if wall <= 0.0 {
        return 0.0;
    }
    now.1.saturating_sub(prev.1) as f64 * 100.0 / wall
}

/// A running task's containers: name, runtime id, cgroup.
struct RunningTask {
    arn: String,
    cluster_arn: String,
    family: Option<String>,
    version: Option<String>,
    containers: Vec<(String, String, String)>,
}

pub(crate) async fn report(inner: Arc<Inner>) {
    let clock = inner.cfg.clock;
    let mut tick = tokio::time::interval(inner.cfg.telemetry_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Runtime id → the previous CPU reading.
    let mut prev: HashMap<String, (Instant, u64)> = HashMap::new();
    loop {
        tick.tick().await;
        let mut seen: HashMap<String, (Instant, u64)> = HashMap::new();
        // What runs, read first (the records are not held while the driver answers).
        let mut running: Vec<RunningTask> = Vec::new();
        inner.states.each(|st| {
            if st.status != Some(TaskStatus::Running) {
                return;
            }
            let containers: Vec<(String, String, String)> = st
                .containers
                .iter()
                .filter(|c| c.status == NodeContainerStatus::Running)
                .map(|c| {
                    let rel = format!("/berth/{}/{}", st.id(), c.name);
                    (c.name.clone(), c.runtime_id.clone(), rel)
                })
                .collect();
            if !containers.is_empty() {
                running.push(RunningTask {
                    arn: st.arn.clone(),
                    cluster_arn: st.cluster_arn.clone(),
                    family: st.payload.family.clone(),
                    version: st.payload.version.clone(),
                    containers,
                });
            }
        });
        let mut tasks = Vec::new();
        for t in running {
            let mut containers = Vec::new();
            for (name, rid, rel) in t.containers {
                let Some(s) = inner.driver.stats(&rid, &rel).await else {
                    continue;
                };
                let at = clock.instant();
                let cpu = prev.get(&rid).map(|p| cpu_percent(*p, (at, s.cpu_ns)));
                seen.insert(rid, (at, s.cpu_ns));
                containers.push(ContainerMetric {
                    container_name: Some(name),
                    // The first reading of a container has nothing to compare with.
                    cpu_stats_set: cpu.map(one),
                    memory_stats_set: Some(one(s.memory_bytes as f64 / (1024.0 * 1024.0))),
                    ..Default::default()
                });
            }
            if containers.is_empty() {
                continue;
            }
            tasks.push(TaskMetric {
                task_arn: Some(t.arn),
                cluster_arn: Some(t.cluster_arn),
                task_definition_family: t.family,
                task_definition_version: t.version,
                container_metrics: Some(containers),
                ..Default::default()
            });
        }
        prev = seen;
        let instance = inner.instance_arn.lock().clone();
        let req = PublishMetricsRequest {
            metadata: Some(MetricsMetadata {
                cluster: Some(inner.cfg.cluster.clone()),
                container_instance: Some(instance),
                message_id: Some(berth_model::arn::new_uuid()),
                idle: Some(tasks.is_empty()),
                fin: Some(true),
            }),
            instance_metrics: None,
            task_metrics: Some(tasks),
            timestamp: Some(inner.now()),
        };
        if let Err(e) = inner.backend.publish_metrics(req).await {
            tracing::debug!("metrics report not sent: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let t = berth_clock::Clock::system().instant();
        let p = cpu_percent((t, 0), (t + Duration::from_secs(2), 1_000_000_000));
        assert!((p - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent((t, 5), (t, 10)), 0.0);
        // A counter that went back (a restarted container) is no use, not negative.
        assert_eq!(cpu_percent((t, 10), (t + Duration::from_secs(1), 5)), 0.0);
    }
}
