//! Simulated nodes: many real agents in one process (`berth agent --simulate N`), each a
//! container instance with its own registration, ACS and telemetry sessions, task runners,
//! hooks and state records — the code a real node runs — on a fake driver
//! (`berth_runtime::fake`), a fake image store and a fake network per node ([`crate::fake`]).
//! Containers start after `start_delay` and run until stopped.
//!
//! What is shared, to fit thousands of nodes in one process: one HTTP connection pool with a
//! bound on ECS calls in flight and on sessions being opened ([`Limits`]), one driver and one
//! image store. Task records are kept in memory (the modelled containers die with the process
//! anyway); each node keeps its instance ARN, as a real one does, under `root/node-<i>`. The
//! binary gives every run a root of its own: a restarted simulator registers new instances.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_client::AwsClient;
use berth_runtime::Driver;
use berth_runtime::fake::{Behaviour, FakeDriver};
use futures::StreamExt;

use crate::fake::{FakeImages, FakeNetwork};
use crate::images::Images;
use crate::session::{Limits, RemoteBackend};
use crate::state::StateDir;
use crate::{Agent, AgentConfig, AgentError, NodeParts};

/// How the simulated nodes look and behave.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub endpoint: String,
    pub region: String,
    pub creds: berth_auth::Credentials,
    /// The servers trusted for `https://` / `wss://`.
    pub trust: berth_client::TlsTrust,
    pub cluster: String,
    /// How many nodes.
    pub count: usize,
    /// CPU units and MiB of each node.
    pub cpu: i32,
    pub memory: i32,
    /// `ecs.availability-zone` values, given round-robin.
    pub zones: Vec<String>,
    /// `ecs.instance-type` values, given round-robin.
    pub instance_types: Vec<String>,
    /// Time a modelled container takes to start.
    pub start_delay: Duration,
    /// ECS calls (registrations, state reports) in flight at once, over all nodes.
    pub report_concurrency: usize,
    /// SIGTERM → SIGKILL grace of every node.
    pub stop_timeout: Duration,
    /// How often each node reports its containers' CPU and memory over a telemetry session
    /// of its own; None: no telemetry sessions, no metrics reports (health goes over the ACS
    /// session).
    pub telemetry_interval: Option<Duration>,
    /// Where each node keeps its instance ARN (`root/node-<i>`).
    pub root: PathBuf,
}

/// Running simulated nodes.
pub struct Sim {
    pub agents: Vec<Agent>,
    pub driver: FakeDriver,
}

impl Sim {
    /// Tasks the nodes run now.
    pub fn tasks(&self) -> usize {
        self.agents.iter().map(Agent::task_count).sum()
    }

    /// Leave the control plane (the modelled containers go with the process).
    pub fn stop(self) {
        for a in self.agents {
            a.shutdown();
        }
    }
}

/// Sessions opened at once, over all nodes.
const DIALS: usize = 64;

/// Node `i`'s configuration, on `clock` (the one every node of the process shares).
pub fn node_config(cfg: &SimConfig, i: usize, clock: berth_clock::Clock) -> AgentConfig {
    let pick = |v: &[String]| (!v.is_empty()).then(|| v[i % v.len()].clone());
    AgentConfig {
        cluster: cfg.cluster.clone(),
        root: cfg.root.join(format!("node-{i}")),
        shim_exe: PathBuf::new(),
        zone: pick(&cfg.zones),
        pull_policy: berth_runtime::PullPolicy::Default,
        stop_timeout: cfg.stop_timeout,
        reserved_ports: vec![22],
        local_registry: None,
        local_registry_tls: false,
        tls_trust: None,
        network: None,
        attributes: pick(&cfg.instance_types)
            .map(|t| ("ecs.instance-type".to_string(), t))
            .into_iter()
            .collect(),
        favor_dynamic_cgroups: false,
        log_max_size: 10 << 20,
        log_max_files: 5,
        log_retention: Duration::from_secs(3 * 3600),
        image_cleanup_interval: Duration::from_secs(3600),
        image_minimum_age: Duration::from_secs(3600),
        guard: Default::default(),
        telemetry_interval: cfg.telemetry_interval.unwrap_or_default(),
        resources: Some((cfg.cpu, cfg.memory)),
        clock,
    }
}

/// Start `cfg.count` agents (registered with bounded concurrency) and keep them in session,
/// all on `clock`.
pub async fn start(cfg: SimConfig, clock: berth_clock::Clock) -> Result<Sim, AgentError> {
    let aws = Arc::new(AwsClient::with_trust(
        &cfg.endpoint,
        &cfg.region,
        cfg.creds.clone(),
        &cfg.trust,
    ));
    let limits = Limits {
        calls: Some(Arc::new(tokio::sync::Semaphore::new(
            cfg.report_concurrency.max(1),
        ))),
        dials: Some(Arc::new(tokio::sync::Semaphore::new(DIALS))),
    };
    let fake = FakeDriver::new(
        clock,
        Behaviour {
            start_delay: cfg.start_delay,
            ..Default::default()
        },
    );
    let driver: Arc<dyn Driver> = Arc::new(fake.clone());
    let images: Arc<dyn Images> = Arc::new(FakeImages::default());
    let starts = futures::stream::iter(0..cfg.count)
        .map(|i| {
            let mut backend = RemoteBackend::sharing(
                aws.clone(),
                &cfg.region,
                cfg.creds.clone(),
                cfg.trust.clone(),
                limits.clone(),
                clock,
            );
            if cfg.telemetry_interval.is_none() {
                backend = backend.without_telemetry();
            }
            let backend = Arc::new(backend);
            let parts = NodeParts {
                driver: driver.clone(),
                images: images.clone(),
                net: Some(Arc::new(FakeNetwork::default())),
                net_error: None,
                states: StateDir::memory(),
                credentials_endpoint: false,
            };
            Agent::start_with(node_config(&cfg, i, clock), backend, parts)
        })
        .buffer_unordered(cfg.report_concurrency.max(1));
    futures::pin_mut!(starts);
    let mut agents = Vec::with_capacity(cfg.count);
    while let Some(a) = starts.next().await {
        agents.push(a?);
    }
    Ok(Sim {
        agents,
        driver: fake,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_take_turns_over_zones_and_instance_types() {
        let cfg = SimConfig {
            endpoint: "http://127.0.0.1:1".into(),
            region: "us-east-1".into(),
            creds: berth_auth::Credentials {
                access_key_id: "A".into(),
                secret_access_key: "S".into(),
                session_token: None,
            },
            trust: berth_client::TlsTrust::load(&Default::default()).unwrap(),
            cluster: "sim".into(),
            count: 3,
            cpu: 4096,
            memory: 8192,
            zones: vec!["a".into(), "b".into()],
            instance_types: vec!["large".into()],
            start_delay: Duration::ZERO,
            report_concurrency: 4,
            stop_timeout: Duration::from_secs(30),
            telemetry_interval: None,
            root: "/nonexistent".into(),
        };
        let clock = berth_clock::Clock::system();
        let zones: Vec<Option<String>> = (0..3).map(|i| node_config(&cfg, i, clock).zone).collect();
        assert_eq!(
            zones,
            [Some("a".into()), Some("b".into()), Some("a".into())]
        );
        let n = node_config(&cfg, 2, clock);
        assert_eq!(n.attributes, [("ecs.instance-type".into(), "large".into())]);
        assert_eq!(n.resources, Some((4096, 8192)));
        assert_ne!(node_config(&cfg, 0, clock).root, n.root);
    }
}
