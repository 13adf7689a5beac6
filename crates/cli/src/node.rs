//! The local node of `berth up`: the agent, talking to the control plane in the same process
//! through the agent protocol's messages (the [`Backend`] trait), so that the agent cannot
//! tell whether its control plane is here or across the network. Also how a node (this one or
//! `berth agent`'s) starts and stops: a graceful stop with no task left removes the node's
//! network (bridge, rules, the mount of its namespace files), so nothing of it outlives berth.

use std::path::Path;
use std::sync::Arc;

use berth_agent::backend::{Backend, BackendError, Inbound, TaskNetworkReport};
use berth_agent::{Agent, AgentConfig};
use berth_client::RegistryAuth;
use berth_control::agent::FeedMessage;
use berth_control::{Control, ControlError};
use berth_model::wire::acs::{AckRequest, IAMRoleCredentialsAckRequest};
use berth_model::wire::ecs::{
    ContainerInstance, RegisterContainerInstanceRequest, SubmitContainerStateChangeRequest,
    SubmitTaskStateChangeRequest,
};
use berth_model::wire::tcs::{PublishHealthRequest, PublishMetricsRequest};
use tokio::sync::mpsc;

use crate::config::Config;

struct InProcess {
    control: Arc<Control>,
}

fn be(e: ControlError) -> BackendError {
    BackendError {
        code: e.code().to_string(),
        message: e.to_string(),
    }
}

#[async_trait::async_trait]
impl Backend for InProcess {
    async fn register(
        &self,
        req: RegisterContainerInstanceRequest,
    ) -> Result<ContainerInstance, BackendError> {
        let r = self
            .control
            .register_container_instance(req)
            .await
            .map_err(be)?;
        r.container_instance.ok_or_else(|| BackendError {
            code: "ServerException".into(),
            message: "no container instance in the response".into(),
        })
    }

    async fn messages(
        &self,
        cluster: &str,
        instance_arn: &str,
    ) -> Result<mpsc::Receiver<Inbound>, BackendError> {
        // In session like a remote agent: present while the agent holds the feed.
        let session = self
            .control
            .session_opened(cluster, instance_arn)
            .await
            .map_err(be)?;
        let mut feed = self
            .control
            .agent_feed(cluster, instance_arn)
            .await
            .map_err(be)?;
        let (tx, rx) = mpsc::channel(16);
        let mut beat = tokio::time::interval(self.control.liveness().heartbeat_interval);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = feed.recv() => {
                        let Some(m) = m else { break };
                        // The local node reconciles from the first payload; manifests are
                        // for the ECS agent.
                        let m = match m {
                            FeedMessage::Payload(p) => Inbound::Payload(Box::new(p)),
                            FeedMessage::Credentials(c) => Inbound::Credentials(Box::new(c)),
                            FeedMessage::Manifest(_) => continue,
                        };
                        if tx.send(m).await.is_err() {
                            break;
                        }
                    }
                    _ = beat.tick() => session.heard(),
                    _ = tx.closed() => break,
                }
            }
        });
        Ok(rx)
    }

    async fn ack(&self, _ack: AckRequest) {}

    /// Nothing to tell: the control plane here hands credentials over in-process.
    async fn ack_credentials(&self, _ack: IAMRoleCredentialsAckRequest) {}

    async fn submit_task_state_change(
        &self,
        req: SubmitTaskStateChangeRequest,
    ) -> Result<(), BackendError> {
        self.control
            .submit_task_state_change(req)
            .await
            .map(|_| ())
            .map_err(be)
    }

    async fn submit_container_state_change(
        &self,
        req: SubmitContainerStateChangeRequest,
    ) -> Result<(), BackendError> {
        self.control
            .submit_container_state_change(req)
            .await
            .map(|_| ())
            .map_err(be)
    }

    async fn publish_health(&self, req: PublishHealthRequest) -> Result<(), BackendError> {
        self.control.publish_health(req).await.map_err(be)
    }

    async fn publish_metrics(&self, req: PublishMetricsRequest) -> Result<(), BackendError> {
        let m = req.metadata.clone().unwrap_or_default();
        self.control
            .publish_metrics(
                m.cluster.as_deref().unwrap_or_default(),
                m.container_instance.as_deref().unwrap_or_default(),
                &req,
            )
            .map_err(be)
    }

    async fn report_task_network(&self, r: TaskNetworkReport) -> Result<(), BackendError> {
        self.control
            .report_task_network(
                &r.cluster,
                &r.task_arn,
                &berth_control::agent::TaskNetwork {
                    private_ipv4: r.private_ipv4,
                    mac: r.mac,
                    subnet: r.subnet,
                },
            )
            .await
            .map_err(be)
    }
}

/// Start the local node's agent, or say plainly why there is none.
pub async fn start(
    cfg: &Config,
    control: Arc<Control>,
    registry_host: &str,
    registry_password: String,
    tls_trust: Option<berth_client::TlsTrust>,
) -> Option<Agent> {
    if !cfg.local_node {
        tracing::info!("no local node (local_node = false): tasks need an agent elsewhere");
        return None;
    }
    if let Err(e) = berth_runtime::native::NativeRuntime::check() {
        tracing::warn!(
            "the local node is not available: {e}. The API and the registry are served; \
             tasks placed here would have no node to run on"
        );
        return None;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("the local node is not available: cannot find the berth binary: {e}");
            return None;
        }
    };
    let registry_tls = tls_trust.is_some();
    // The control plane's clock: one per process.
    let mut agent_cfg = agent_config(
        cfg,
        "default",
        registry_host,
        registry_password,
        registry_tls,
        tls_trust,
        control.clock(),
    );
    agent_cfg.shim_exe = exe;
    match Agent::start(agent_cfg, Arc::new(InProcess { control })).await {
        Ok(a) => {
            tracing::info!(instance = %a.instance_arn(), "local node registered in cluster default");
            Some(a)
        }
        Err(e) => {
            tracing::error!("the local node could not start: {e}");
            None
        }
    }
}

/// The node settings of `cfg` as an agent's configuration, on the process's `clock`. The
/// registry at `registry_host` speaks HTTPS when `registry_tls`; `tls_trust` is what the
/// agent's registry clients trust.
pub fn agent_config(
    cfg: &Config,
    cluster: &str,
    registry_host: &str,
    registry_password: String,
    registry_tls: bool,
    tls_trust: Option<berth_client::TlsTrust>,
    clock: berth_clock::Clock,
) -> AgentConfig {
    let root = cfg.data_dir.join("node");
    AgentConfig {
        cluster: cluster.into(),
        root: root.clone(),
        shim_exe: std::env::current_exe().unwrap_or_else(|_| "berth".into()),
        zone: cfg.zone.clone(),
        pull_policy: cfg.pull_policy,
        stop_timeout: std::time::Duration::from_secs(cfg.container_stop_timeout),
        reserved_ports: vec![22, 2375, 2376, 51678, 51679, cfg.listen.port()],
        local_registry: Some((
            registry_host.to_string(),
            RegistryAuth::Basic {
                user: "AWS".into(),
                password: registry_password,
            },
        )),
        local_registry_tls: registry_tls,
        tls_trust,
        network: Some(net_config(cfg)),
        attributes: vec![],
        favor_dynamic_cgroups: cfg.cgroup_favor_dynmods,
        log_max_size: cfg.log_max_size_mib << 20,
        log_max_files: cfg.log_max_files,
        log_retention: std::time::Duration::from_secs(cfg.log_retention_hours * 3600),
        image_cleanup_interval: std::time::Duration::from_secs(cfg.image_cleanup_interval),
        image_minimum_age: std::time::Duration::from_secs(cfg.image_minimum_cleanup_age),
        telemetry_interval: std::time::Duration::from_secs(cfg.telemetry_interval),
        guard: cfg.guard.clone(),
        resources: None,
        clock,
    }
}

/// The node's container network as `cfg` sets it.
fn net_config(cfg: &Config) -> berth_runtime::net::NetConfig {
    berth_runtime::net::NetConfig {
        bridge: cfg.bridge_name.clone(),
        subnet: cfg.bridge_subnet,
        state_dir: cfg.data_dir.join("node").join("net"),
    }
}

/// Stop a node's agent on a graceful stop (SIGTERM/SIGINT). Containers keep running and the
/// next start re-attaches to them, so while any task is unfinished its network stays as it is
/// (said in the log). With none left, what the node made goes: the bridge and its rules, and the
/// mount of the namespace files, so the data dir can be removed.
pub async fn stop(agent: Agent, cfg: &Config) {
    agent.shutdown();
    let states = match berth_agent::state::StateDir::open(&cfg.data_dir.join("node").join("state"))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("the node's network is left in place: reading its task states: {e}");
            return;
        }
    };
    let unfinished: Vec<String> = states
        .all()
        .into_iter()
        .filter(|t| t.status != Some(berth_model::status::TaskStatus::Stopped))
        .map(|t| t.arn)
        .collect();
    let bridge = &cfg.bridge_name;
    if !unfinished.is_empty() {
        tracing::info!(
            tasks = ?unfinished,
            "{} task(s) still running: their containers, the bridge {bridge} and the network \
             namespaces stay; the next start picks them up",
            unfinished.len()
        );
        return;
    }
    match berth_runtime::net::teardown(net_config(cfg)).await {
        Ok(()) => tracing::info!(
            "no task left: removed the node's network (bridge {bridge}, its rules, the \
             namespace mount)"
        ),
        Err(e) => tracing::warn!("removing the node's network (bridge {bridge}): {e}"),
    }
}

/// `berth agent`: a node that joins a control plane across the network.
pub async fn run_agent(
    cfg: Config,
    server: String,
    cluster: String,
    creds: berth_auth::Credentials,
    trust: berth_client::TlsTrust,
    clock: berth_clock::Clock,
) -> anyhow::Result<()> {
    use anyhow::Context;
    berth_runtime::native::NativeRuntime::check()?;
    let server = server.trim_end_matches('/').to_string();
    let host = server
        .split_once("://")
        .map_or(server.as_str(), |(_, h)| h)
        .to_string();
    let tls = server.starts_with("https://");
    let backend = berth_agent::session::remote(&server, &cfg.region, creds, trust.clone(), clock);
    // The server may be out of reach for a while (restarting, the network not up yet at
    // boot): keep trying, as the ECS agent does, while the containers of a previous run keep
    // running. A refusal (a bad or revoked token) ends the agent.
    let mut delay = std::time::Duration::from_secs(1);
    let password = loop {
        match backend.registry_password().await {
            Ok(p) => break p,
            // An untrusted certificate is a refusal too: waiting will not change it.
            Err(e) if e.code == "ServerException" && !e.message.contains("not trusted") => {
                tracing::warn!(
                    "getting a registry token from {server}: {e}; retrying in {delay:?}"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = crate::shutdown_signal() => return Ok(()),
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("getting a registry token from {server}")));
            }
        }
    };
    // Task states (environment, credential ids) and logs live here: the owner's alone.
    crate::create_private_dir(&cfg.data_dir)?;
    let agent = Agent::start(
        agent_config(&cfg, &cluster, &host, password, tls, Some(trust), clock),
        backend.clone(),
    )
    .await
    .context("starting the agent")?;
    tracing::info!(instance = %agent.instance_arn(), %server, %cluster, "agent registered");
    // ECR tokens last 12 hours: refresh the registry password well before.
    let refresher = {
        let backend = backend.clone();
        let agent_auth = std::sync::Arc::new(agent);
        let a2 = agent_auth.clone();
        let h = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(6 * 3600)).await;
                match backend.registry_password().await {
                    Ok(p) => a2.set_registry_auth(RegistryAuth::Basic {
                        user: "AWS".into(),
                        password: p,
                    }),
                    Err(e) => tracing::warn!("refreshing the registry token: {e}"),
                }
            }
        });
        (h, agent_auth)
    };
    crate::shutdown_signal().await;
    tracing::info!("agent stopping");
    refresher.0.abort();
    // Once the aborted refresher is gone, the agent is ours alone and stops cleanly (its
    // credentials endpoint takes its redirect along).
    let _ = refresher.0.await;
    match std::sync::Arc::try_unwrap(refresher.1) {
        Ok(a) => stop(a, &cfg).await,
        Err(_) => tracing::warn!("the agent is still in use; not stopped cleanly"),
    }
    Ok(())
}

/// `berth agent --simulate N`: simulated nodes (real agents on a fake driver) until
/// SIGINT/SIGTERM, with a line of counters every 10 s.
pub async fn run_simulated(
    cfg: berth_agent::simulate::SimConfig,
    clock: berth_clock::Clock,
) -> anyhow::Result<()> {
    // Every node's data (its instance ARN) is the owner's alone, as a real node's; it lasts
    // as long as this run.
    let root = cfg.root.clone();
    crate::create_private_dir(&root)?;
    let r = simulate(cfg, clock).await;
    if let Err(e) = std::fs::remove_dir_all(&root) {
        tracing::warn!("removing {}: {e}", root.display());
    }
    r
}

async fn simulate(
    cfg: berth_agent::simulate::SimConfig,
    clock: berth_clock::Clock,
) -> anyhow::Result<()> {
    let started = clock.instant();
    let (n, cluster, server) = (cfg.count, cfg.cluster.clone(), cfg.endpoint.clone());
    let sim = tokio::select! {
        s = berth_agent::simulate::start(cfg, clock) => s.map_err(|e| anyhow::anyhow!("simulated nodes: {e}"))?,
        _ = crate::shutdown_signal() => return Ok(()),
    };
    tracing::info!(
        nodes = n, %cluster, %server,
        registered_in_ms = clock.elapsed(started).as_millis() as u64,
        "simulated nodes registered"
    );
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => tracing::info!(
                nodes = sim.agents.len(),
                tasks = sim.tasks(),
                "simulated nodes"
            ),
            _ = &mut shutdown => break,
        }
    }
    sim.stop();
    Ok(())
}

/// The log file of a container of a task run by the local node.
pub fn log_path(data_dir: &Path, task_id: &str, container: &str) -> std::path::PathBuf {
    Agent::log_path(&data_dir.join("node"), task_id, container)
}
