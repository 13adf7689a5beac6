//! What nodes report on the telemetry session (TCS `PublishMetrics`): each running
//! container's CPU and memory use, kept as Prometheus gauges on the front door's `/metrics`
//! (`berth_container_cpu_percent`, `berth_container_memory_mib`, labelled by cluster, task id
//! and container). A node's report replaces its previous one: containers it no longer lists
//! leave the gauges. Memory only — these are readings, not acknowledged state.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;

use berth_model::wire::tcs::PublishMetricsRequest;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Control;
use crate::error::{ControlError, Result};
use crate::view::instance_id_of;

type Labels = [(String, String); 3];
type FGauge = Gauge<f64, AtomicU64>;

/// The gauges and what each node last reported into them.
#[derive(Default)]
pub struct Telemetry {
    cpu: Family<Labels, FGauge>,
    memory: Family<Labels, FGauge>,
    reports: Counter,
    /// (cluster, instance id) → the label sets of its last report.
    last: Mutex<HashMap<(String, String), HashSet<Labels>>>,
}

impl Telemetry {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "container_cpu_percent",
            "CPU used by a running container over the node's last telemetry interval, percent of one CPU",
            self.cpu.clone(),
        );
        registry.register(
            "container_memory_mib",
            "Memory in use by a running container at the node's last telemetry report, MiB",
            self.memory.clone(),
        );
        registry.register(
            "telemetry_reports",
            "PublishMetrics reports received from nodes",
            self.reports.clone(),
        );
    }
}

/// The average of a statistics set (`sum / sampleCount`).
fn mean(s: Option<&berth_model::wire::tcs::CWStatsSet>) -> Option<f64> {
    let s = s?;
    let n = s.sample_count.filter(|n| *n > 0)?;
    Some(s.sum? / f64::from(n))
}

impl Control {
    /// A node's `PublishMetrics`: the gauges of the tasks placed on that instance. Reports
    /// about tasks placed elsewhere are ignored.
    pub fn publish_metrics(
        &self,
        cluster: &str,
        instance_arn: &str,
        req: &PublishMetricsRequest,
    ) -> Result<()> {
        let cname = self.cluster_name_of(Some(cluster))?.to_string();
        let inst = instance_id_of(instance_arn)
            .ok_or_else(|| ControlError::invalid("containerInstance is required."))?
            .to_string();
        let mut now: HashSet<Labels> = HashSet::new();
        {
            let d = self.view.data.read();
            let tasks = d.tasks().get(&cname);
            for tm in req.task_metrics.iter().flatten() {
                let Some(id) = tm.task_arn.as_deref().and_then(|a| a.rsplit('/').next()) else {
                    continue;
                };
                let here = tasks
                    .and_then(|m| m.get(id))
                    .is_some_and(|e| e.summary.instance_id.as_deref() == Some(inst.as_str()));
                if !here {
                    continue;
                }
                for cm in tm.container_metrics.iter().flatten() {
                    let Some(name) = cm.container_name.clone() else {
                        continue;
                    };
                    let labels: Labels = [
                        ("cluster".into(), cname.clone()),
                        ("task".into(), id.to_string()),
                        ("container".into(), name),
                    ];
                    if let Some(v) = mean(cm.cpu_stats_set.as_ref()) {
                        self.telemetry.cpu.get_or_create(&labels).set(v);
                    }
                    if let Some(v) = mean(cm.memory_stats_set.as_ref()) {
                        self.telemetry.memory.get_or_create(&labels).set(v);
                    }
                    now.insert(labels);
                }
            }
        }
        let mut last = self.telemetry.last.lock();
        let before = last.insert((cname, inst), now.clone()).unwrap_or_default();
        for gone in before.difference(&now) {
            self.telemetry.cpu.remove(gone);
            self.telemetry.memory.remove(gone);
        }
        self.telemetry.reports.inc();
        Ok(())
    }
}
