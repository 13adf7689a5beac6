//! berth-agent: the node agent — registration of its container instance, the session with the
//! control plane (ACS payloads in, state changes out, through [`backend::Backend`]), and the
//! task runner ([`engine`]) that runs the tasks placed on this node.
//!
//! The node's kernel-facing parts are behind seams ([`NodeParts`]): containers behind
//! `berth_runtime::Driver`, images behind [`images::Images`], the container network behind
//! [`net::Network`], task records in a [`state::StateDir`]. [`Agent::start`] opens the real
//! ones (the native driver, the image store, the berth bridge, a state directory);
//! [`Agent::start_with`] takes any, which is how unit tests run the agent on fakes and how
//! `berth agent --simulate` runs thousands of real agents in one process.
//!
//! - [`container`]: how an ECS container definition and its image's config become the
//!   driver's container spec;
//! - [`engine`]: the per-task state machine; [`hooks`]: what a task needs besides its
//!   containers (images, task cgroup, network, volumes, credentials, health);
//!   [`health`]: container health checks;
//! - [`state`]: what the agent keeps on disk so that restarting it neither kills nor forgets
//!   running containers;
//! - [`images`], [`net`]: the node's images and container network as the runner uses them;
//! - [`session`]: the ACS session with a control plane across the network, and the telemetry
//!   session beside it;
//! - [`telemetry`]: the running containers' CPU and memory, reported every interval;
//! - [`credentials`]: task role credentials (in memory only) and the endpoint containers
//!   fetch them from;
//! - `fake` (tests and the `simulate` feature): a fake image store and network;
//!   `simulate` (the `simulate` feature): many real agents in one process on the fake driver
//!   and those fakes, for scale tests. A feature because it brings in `berth-runtime`'s fake
//!   driver (`test-util`); the `berth` binary enables it.
//!
//! On every (re)connect the agent reconciles with the first payload: what the control plane
//! no longer lists is stopped, what ended unreported is reported, nothing starts twice.
//!
//! Must not: know how the control plane stores things (only the ECS agent protocol's messages
//! cross [`backend::Backend`]).

pub mod backend;
pub mod container;
pub mod credentials;
pub mod engine;
#[cfg(any(test, feature = "simulate"))]
pub mod fake;
pub mod guard;
pub mod health;
mod hooks;
pub mod images;
pub mod net;
pub mod session;
#[cfg(feature = "simulate")]
pub mod simulate;
pub mod state;
pub mod telemetry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_client::RegistryAuth;
use berth_model::wire::acs::{AckRequest, IAMRoleCredentialsMessage, PayloadMessage};
use berth_model::wire::ecs::{
    Attribute, RegisterContainerInstanceRequest, Resource, SubmitTaskStateChangeRequest,
    VersionInfo,
};
use berth_runtime::native::NativeRuntime;
use berth_runtime::{Driver, PullPolicy, RuntimeError};
use parking_lot::Mutex;
use tokio::sync::watch;

use backend::{Backend, Inbound};
use credentials::{CredentialStore, CredentialsEndpoint};
use images::{Images, NodeImages};
use net::{Network, NodeNet};
use state::{StateDir, TaskState};

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cluster: String,
    /// The node's directory: task state, bundles, logs, images, network state.
    pub root: PathBuf,
    /// The `berth` binary (for `berth shim` and `berth nsexec`).
    pub shim_exe: PathBuf,
    /// `ecs.availability-zone`.
    pub zone: Option<String>,
    pub pull_policy: PullPolicy,
    /// Default SIGTERM → SIGKILL grace (`ECS_CONTAINER_STOP_TIMEOUT`; 30 s).
    pub stop_timeout: Duration,
    /// Host TCP ports not offered to tasks.
    pub reserved_ports: Vec<u16>,
    /// berth's own registry (host:port) and how to log in to it; images named with this host
    /// or an ECR registry host are pulled from it.
    pub local_registry: Option<(String, RegistryAuth)>,
    /// Whether that registry speaks HTTPS (else plain HTTP, like the front door by default).
    pub local_registry_tls: bool,
    /// The HTTPS servers the agent's registry clients trust (None: the system's roots and
    /// `AWS_CA_BUNDLE`).
    pub tls_trust: Option<berth_client::TlsTrust>,
    /// The container network (bridge name and subnet); None: only `host` and `none` tasks.
    pub network: Option<berth_runtime::net::NetConfig>,
    /// Extra attributes (`name=value`).
    pub attributes: Vec<(String, String)>,
    /// Set the cgroup v2 `favordynmods` option (faster container starts); see
    /// [`NativeRuntime::favor_dynamic_cgroups`].
    pub favor_dynamic_cgroups: bool,
    /// Container logs are rotated beyond this size (bytes) …
    pub log_max_size: u64,
    /// … keeping this many files per container (the current one included).
    pub log_max_files: u32,
    /// Logs of containers that ended are removed this long after their last write.
    pub log_retention: Duration,
    /// How often unused images are collected …
    pub image_cleanup_interval: Duration,
    /// … once unused for at least this long (ECS's `ECS_IMAGE_MINIMUM_CLEANUP_AGE`).
    pub image_minimum_age: Duration,
    /// What this node refuses to run (privileged containers, host network, …).
    pub guard: guard::Guard,
    /// How often the running containers' CPU and memory go to the telemetry session (the
    /// ECS agent's default is 20 s); zero: never.
    pub telemetry_interval: Duration,
    /// The CPU units and memory (MiB) the node registers; None: this machine's.
    pub resources: Option<(i32, i32)>,
    /// The process's one clock: every time the agent reports (pulls, starts, exits, health,
    /// metrics) and every age it measures (health start periods, CPU use, log and image ages)
    /// is this clock's.
    pub clock: berth_clock::Clock,
}

/// What a node is made of: its driver, image store, container network and task records.
/// [`Agent::start`] opens the real ones; tests and simulated nodes bring their own.
pub struct NodeParts {
    pub driver: Arc<dyn Driver>,
    pub images: Arc<dyn Images>,
    /// The container network; None with `net_error` saying why (None too: not configured).
    pub net: Option<Arc<dyn Network>>,
    pub net_error: Option<String>,
    pub states: StateDir,
    /// Serve task role credentials to containers (listeners on loopback and the bridge).
    pub credentials_endpoint: bool,
}

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("image store: {0}")]
    Images(#[from] berth_runtime::image_store::ImageError),
    #[error("registering the container instance: {0}")]
    Register(backend::BackendError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub(crate) struct Inner {
    pub(crate) cfg: AgentConfig,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) images: Arc<dyn Images>,
    pub(crate) net: Option<Arc<dyn Network>>,
    net_error: Option<String>,
    pub(crate) states: StateDir,
    instance_arn: Mutex<String>,
    /// Desired status of every task this agent runs.
    tasks: Mutex<HashMap<String, watch::Sender<String>>>,
    /// Tasks this agent ran to the end lately (newest last), so that a stale payload never
    /// starts one again.
    finished: Mutex<std::collections::VecDeque<String>>,
    /// The roles' credentials of the tasks this agent runs (memory only).
    pub(crate) credentials: Arc<CredentialStore>,
    /// Where containers reach the credentials endpoint.
    pub(crate) credentials_access: credentials::Access,
}

/// A running agent.
pub struct Agent {
    inner: Arc<Inner>,
    session: tokio::task::JoinHandle<()>,
    /// Housekeeping and telemetry, which end with the agent.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Stops (and removes its redirect) when the agent goes.
    _credentials_endpoint: Option<CredentialsEndpoint>,
}

/// How many ended tasks the agent remembers (see `Inner::finished`).
const FINISHED_KEPT: usize = 4096;

fn node_memory_mib() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next()?.parse::<i64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn cpu_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        a => a,
    }
}

impl Inner {
    pub(crate) fn task_dir(&self, task_id: &str) -> PathBuf {
        self.cfg.root.join("tasks").join(task_id)
    }

    pub(crate) fn volume_dir(&self, task_id: &str, volume: &str) -> PathBuf {
        self.task_dir(task_id).join("volumes").join(volume)
    }

    /// The wall time now as ECS timestamps carry it: epoch seconds, millisecond precision.
    pub(crate) fn now(&self) -> f64 {
        self.cfg.clock.now().as_secs_f64()
    }

    pub(crate) fn no_network_reason(&self) -> String {
        format!(
            "CannotStartContainerError: container networking is not available on this node ({}); use networkMode host or none",
            self.net_error.as_deref().unwrap_or("not configured")
        )
    }

    /// Report a task state change, retrying while the control plane is unavailable; returns
    /// whether it was acknowledged.
    pub(crate) async fn submit_task(&self, req: SubmitTaskStateChangeRequest) -> bool {
        let mut delay = Duration::from_millis(100);
        for _ in 0..8 {
            match self.backend.submit_task_state_change(req.clone()).await {
                Ok(()) => return true,
                Err(e) if !e.retryable() => {
                    tracing::warn!(task = ?req.task, "state change refused: {e}");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(task = ?req.task, "state change not delivered, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        false
    }

    pub(crate) fn forget(&self, arn: &str) {
        self.tasks.lock().remove(arn);
        // Again after the credentials hook: a refresh may have come in while the task ended.
        self.credentials.remove_task(arn);
        let mut f = self.finished.lock();
        f.push_back(arn.to_string());
        if f.len() > FINISHED_KEPT {
            f.pop_front();
        }
    }

    fn spawn_runner(self: &Arc<Self>, st: TaskState) {
        let (tx, rx) = watch::channel(st.desired.clone());
        self.tasks.lock().insert(st.arn.clone(), tx);
        // Every log line of the runner carries its task.
        let span = tracing::info_span!("task", id = %st.id());
        let runner = engine::Runner::new(self.clone(), st, rx);
        tokio::spawn(tracing::Instrument::instrument(runner.run(), span));
    }

    /// The first payload of a session lists every task the control plane wants on this node:
    /// reconcile with what runs here. Tasks it does not list (stopped meanwhile, e.g. after
    /// the node was lost, or unknown to it) are stopped; finished tasks whose final report
    /// did not get through are reported again.
    fn reconcile(self: &Arc<Self>, msg: &PayloadMessage) {
        let listed: std::collections::HashSet<&str> = msg
            .tasks
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.arn.as_deref())
            .collect();
        for (arn, tx) in self.tasks.lock().iter() {
            if !listed.contains(arn.as_str()) && *tx.borrow() != "STOPPED" {
                tracing::warn!(task = %arn, "the control plane no longer runs this task here; stopping it");
                tx.send_replace("STOPPED".into());
            }
        }
        for st in self.states.all() {
            if !self.tasks.lock().contains_key(&st.arn) {
                tracing::info!(task = %st.arn, "reporting a task that ended while disconnected");
                self.spawn_runner(st);
            }
        }
    }

    /// Say (in the background) that a task this agent does not run is STOPPED.
    fn report_stopped(self: &Arc<Self>, cluster_arn: &str, arn: String) {
        let req = SubmitTaskStateChangeRequest {
            cluster: Some(cluster_arn.to_string()),
            task: Some(arn),
            status: Some("STOPPED".into()),
            ..Default::default()
        };
        let me = self.clone();
        tokio::spawn(async move {
            me.submit_task(req).await;
        });
    }

    async fn handle_payload(self: &Arc<Self>, msg: PayloadMessage) {
        let cluster_arn = msg.cluster_arn.clone().unwrap_or_default();
        let mut credential_acks = Vec::new();
        for mut t in msg.tasks.unwrap_or_default() {
            let Some(arn) = t.arn.clone() else { continue };
            let desired = t.desired_status.clone().unwrap_or_else(|| "RUNNING".into());
            let known = self.tasks.lock().get(&arn).cloned();
            // The roles' credentials of a task that runs here or is about to (never of one
            // that ended): into the store, and out of what is saved.
            let runs_here =
                known.is_some() || (desired == "RUNNING" && !self.finished.lock().contains(&arn));
            if runs_here {
                credential_acks.extend(self.credentials.take_from_task(&t));
            }
            credentials::scrub(&mut t);
            match known {
                Some(tx) => {
                    tx.send_replace(desired);
                }
                None if desired == "RUNNING" && self.finished.lock().contains(&arn) => {
                    // A payload older than this task's end: it is not started again.
                    tracing::info!(task = %arn, "asked to run a task that already ended here; reporting it stopped");
                    self.report_stopped(&cluster_arn, arn);
                }
                None if desired == "RUNNING" => {
                    let st = TaskState {
                        arn: arn.clone(),
                        cluster_arn: t.task_cluster_arn.clone().unwrap_or(cluster_arn.clone()),
                        desired,
                        payload: t,
                        ..Default::default()
                    };
                    if let Err(e) = self.states.save(&st) {
                        tracing::error!(task = %arn, "cannot record the task: {e}");
                    }
                    self.spawn_runner(st);
                }
                None => {
                    // Asked to stop a task this agent is not running (it never started here,
                    // or it already ended): say it is stopped.
                    self.report_stopped(&cluster_arn, arn);
                }
            }
        }
        if let Some(id) = msg.message_id {
            self.backend
                .ack(AckRequest {
                    cluster: Some(cluster_arn),
                    container_instance: msg.container_instance_arn,
                    message_id: Some(id.clone()),
                })
                .await;
            // As the ECS agent does: the credentials a payload brought are acknowledged too,
            // under the payload's messageId.
            for mut ack in credential_acks {
                ack.message_id = Some(id.clone());
                self.backend.ack_credentials(ack).await;
            }
        }
    }

    /// Fresh credentials for a task's role: stored and acknowledged; a message that cannot be
    /// used (for a task that does not run here, say) is left unacknowledged, as the ECS agent
    /// does.
    async fn handle_credentials(&self, msg: IAMRoleCredentialsMessage) {
        let runs = |arn: &str| self.tasks.lock().contains_key(arn);
        match self.credentials.refresh(&msg, runs) {
            Ok(ack) => {
                tracing::debug!(
                    task = msg.task_arn.as_deref().unwrap_or_default(),
                    role = msg.role_type.as_deref().unwrap_or_default(),
                    expiration = ack.expiration.as_deref().unwrap_or_default(),
                    "role credentials refreshed"
                );
                self.backend.ack_credentials(ack).await;
            }
            Err(e) => tracing::warn!("credentials refresh not taken: {e}"),
        }
    }
}

impl Agent {
    /// Open the node's native driver, image store, network and state directory, then
    /// [`Self::start_with`] them.
    pub async fn start(cfg: AgentConfig, backend: Arc<dyn Backend>) -> Result<Agent, AgentError> {
        let runtime = NativeRuntime::new(&cfg.root.join("runtime"), &cfg.shim_exe)?;
        if cfg.favor_dynamic_cgroups {
            match NativeRuntime::favor_dynamic_cgroups() {
                Ok(Some(done)) => tracing::info!("{done} (faster container starts)"),
                Ok(None) => {}
                Err(e) => tracing::warn!("cgroup tuning skipped: {e}"),
            }
        }
        let images = NodeImages::open(&cfg)?;
        let (net, net_error): (Option<Arc<dyn Network>>, _) = match &cfg.network {
            Some(nc) => match NodeNet::open(nc.clone(), &cfg.shim_exe).await {
                Ok(n) => (Some(Arc::new(n)), None),
                Err(e) => {
                    tracing::warn!("container networking unavailable: {e}");
                    (None, Some(e))
                }
            },
            None => (None, None),
        };
        let parts = NodeParts {
            driver: Arc::new(runtime),
            images: Arc::new(images),
            net,
            net_error,
            states: StateDir::open(&cfg.root.join("state"))?,
            credentials_endpoint: true,
        };
        Self::start_with(cfg, backend, parts).await
    }

    /// Register (or re-register) the container instance, pick up the tasks the node was
    /// running, and start the session, on the node `parts`.
    pub async fn start_with(
        cfg: AgentConfig,
        backend: Arc<dyn Backend>,
        parts: NodeParts,
    ) -> Result<Agent, AgentError> {
        std::fs::create_dir_all(&cfg.root)?;
        let NodeParts {
            driver,
            images,
            net,
            net_error,
            states,
            credentials_endpoint,
        } = parts;
        // Task roles' credentials: a restarted agent knows its tasks' credential ids (their
        // keys come with the session's first payload).
        let creds = Arc::new(CredentialStore::new());
        let saved = states.all();
        for st in &saved {
            if st.status != "STOPPED" {
                creds.expect_task(&st.arn, &st.payload);
            }
        }
        let endpoint = if credentials_endpoint {
            Some(
                CredentialsEndpoint::start(
                    creds.clone(),
                    net.as_ref().map(|n| n.bridge()),
                    &cfg.root.join("credentials-endpoint"),
                )
                .await,
            )
        } else {
            None
        };
        let inner = Arc::new(Inner {
            backend: backend.clone(),
            driver,
            images,
            net,
            net_error,
            states,
            instance_arn: Mutex::new(String::new()),
            tasks: Mutex::new(HashMap::new()),
            finished: Mutex::new(Default::default()),
            credentials: creds,
            credentials_access: endpoint.as_ref().map(|e| e.access()).unwrap_or_default(),
            cfg,
        });
        let arn = register(&inner).await?;
        *inner.instance_arn.lock() = arn.clone();
        // Tasks from before a restart: runners re-attach to their containers.
        for st in saved {
            tracing::info!(task = %st.arn, status = %st.status, "resuming task");
            inner.spawn_runner(st);
        }
        let mut background = vec![tokio::spawn(maintenance(inner.clone()))];
        if !inner.cfg.telemetry_interval.is_zero() {
            background.push(tokio::spawn(telemetry::report(inner.clone())));
        }
        let me = inner.clone();
        let session = tokio::spawn(async move {
            let cluster = me.cfg.cluster.clone();
            loop {
                match me.backend.messages(&cluster, &arn).await {
                    Ok(mut rx) => {
                        let mut first = true;
                        while let Some(msg) = rx.recv().await {
                            match msg {
                                Inbound::Payload(msg) => {
                                    if std::mem::take(&mut first) {
                                        me.reconcile(&msg);
                                    }
                                    me.handle_payload(*msg).await;
                                }
                                Inbound::Credentials(c) => me.handle_credentials(*c).await,
                            }
                        }
                        tracing::warn!("agent session ended; reconnecting");
                    }
                    Err(e) => tracing::warn!("agent session: {e}; retrying"),
                }
                // With jitter: the nodes of a restarted server do not all come back at once.
                let jitter = rand::random::<u64>() % 1000;
                tokio::time::sleep(Duration::from_millis(1000 + jitter)).await;
            }
        });
        Ok(Agent {
            inner,
            session,
            background,
            _credentials_endpoint: endpoint,
        })
    }

    /// Replace the credentials for the control plane's registry (a fresh ECR token).
    pub fn set_registry_auth(&self, auth: RegistryAuth) {
        self.inner.images.set_registry_auth(auth);
    }

    pub fn instance_arn(&self) -> String {
        self.inner.instance_arn.lock().clone()
    }

    /// Stop following the control plane. Containers keep running; a new agent on the same
    /// directory picks them up.
    pub fn shutdown(self) {
        self.session.abort();
        for b in &self.background {
            b.abort();
        }
        self.inner.tasks.lock().clear();
    }

    /// How many tasks the agent runs now (started and not yet ended).
    pub fn task_count(&self) -> usize {
        self.inner.tasks.lock().len()
    }

    /// Where the logs of a task's container are kept.
    pub fn log_path(root: &Path, task_id: &str, container: &str) -> PathBuf {
        root.join("runtime")
            .join("logs")
            .join(format!("{}.log", engine::runtime_id(task_id, container)))
    }
}

/// The capabilities a node registers as attributes (what task definitions' `requiresAttributes`
/// name): awsvpc networking, container health checks, container dependencies; and berth's own
/// task networks, which placement of awsvpc tasks asks for.
pub const CAPABILITIES: [&str; 5] = [
    berth_model::taskdef::TASK_NETWORK_CAPABILITY,
    "ecs.capability.task-eni",
    "com.amazonaws.ecs.capability.docker-remote-api.1.17",
    "ecs.capability.container-health-check",
    "ecs.capability.container-ordering",
];

/// Rotate container logs that grew too big (copy to `.1`, shifting older copies, then
/// truncate: the shim appends, so writing continues at the new end); remove logs of ended
/// containers whose last write is more than `retention` before `now` (the wall time: it is
/// compared with the files' modification times). Returns how many files were rotated.
pub fn rotate_logs(
    dir: &Path,
    max_size: u64,
    max_files: u32,
    retention: Duration,
    live: &[String],
    now: berth_clock::Timestamp,
) -> usize {
    let mut rotated = 0;
    // Whether a file was last written more than `retention` before `now`.
    let expired = |m: &std::fs::Metadata| {
        m.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|t| {
                now.duration_since(berth_clock::Timestamp::from_unix_duration(t)) > retention
            })
    };
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".log") else {
            // A rotated copy: goes with its container's retention.
            if let Some((base, _)) = name.rsplit_once(".log.")
                && !live.iter().any(|l| l == base)
                && e.metadata().is_ok_and(|m| expired(&m))
            {
                let _ = std::fs::remove_file(&p);
            }
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        if !live.iter().any(|l| l == id) {
            if expired(&meta) {
                let _ = std::fs::remove_file(&p);
            }
            continue;
        }
        if meta.len() <= max_size || max_files < 2 {
            continue;
        }
        for i in (1..max_files - 1).rev() {
            let _ = std::fs::rename(
                dir.join(format!("{id}.log.{i}")),
                dir.join(format!("{id}.log.{}", i + 1)),
            );
        }
        if std::fs::copy(&p, dir.join(format!("{id}.log.1"))).is_ok()
            && std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_len(0))
                .is_ok()
        {
            rotated += 1;
        }
    }
    rotated
}

/// The node's housekeeping: log rotation every 10 s (for a driver that writes log files),
/// image collection every interval.
async fn maintenance(inner: Arc<Inner>) {
    let clock = inner.cfg.clock;
    let mut last_gc = clock.instant();
    // Without log files (a simulated node) only collection needs waking up for.
    let gc = inner.cfg.image_cleanup_interval;
    let period = match inner.driver.log_dir() {
        Some(_) => Duration::from_secs(10).min(gc),
        None => gc,
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Some(dir) = inner.driver.log_dir() {
            let mut live: Vec<String> = Vec::new();
            inner.states.each(|t| {
                live.extend(
                    t.containers
                        .iter()
                        .filter(|c| c.status != "STOPPED")
                        .map(|c| c.runtime_id.clone()),
                )
            });
            let (max, files, keep) = (
                inner.cfg.log_max_size,
                inner.cfg.log_max_files,
                inner.cfg.log_retention,
            );
            let now = clock.now();
            let _ = tokio::task::spawn_blocking(move || {
                rotate_logs(&dir, max, files, keep, &live, now)
            })
            .await;
        }
        if clock.elapsed(last_gc) >= inner.cfg.image_cleanup_interval {
            last_gc = clock.instant();
            match inner.images.collect(inner.cfg.image_minimum_age).await {
                Ok(n) if n > 0 => tracing::info!(images = n, "unused images removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!("image collection: {e}"),
            }
        }
    }
}

async fn register(inner: &Arc<Inner>) -> Result<String, AgentError> {
    let cfg = &inner.cfg;
    let arn_file = cfg.root.join("instance-arn");
    let previous = std::fs::read_to_string(&arn_file)
        .ok()
        .map(|s| s.trim().to_string());
    let (cpu_units, memory_mib) = cfg.resources.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
        (cpus * 1024, node_memory_mib() as i32)
    });
    // The credentials endpoint's ports too: a task's fixed host port there would fail.
    let mut ports: Vec<String> = cfg
        .reserved_ports
        .iter()
        .chain(&inner.credentials_access.ports())
        .map(|p| p.to_string())
        .collect();
    ports.sort();
    ports.dedup();
    let mut attrs: Vec<(String, String)> = vec![
        ("ecs.os-type".into(), "linux".into()),
        ("ecs.os-family".into(), "LINUX".into()),
        ("ecs.cpu-architecture".into(), cpu_arch().into()),
        ("berth.runtime".into(), inner.driver.name().into()),
    ];
    attrs.extend(CAPABILITIES.iter().map(|c| (c.to_string(), String::new())));
    if let Some(z) = &cfg.zone {
        attrs.push(("ecs.availability-zone".into(), z.clone()));
    }
    attrs.extend(cfg.attributes.iter().cloned());
    let attributes: Vec<Attribute> = attrs
        .into_iter()
        .map(|(n, v)| Attribute {
            name: Some(n),
            value: (!v.is_empty()).then_some(v),
            ..Default::default()
        })
        .collect();
    let resources = vec![
        Resource {
            name: Some("CPU".into()),
            r#type: Some("INTEGER".into()),
            integer_value: Some(cpu_units),
            ..Default::default()
        },
        Resource {
            name: Some("MEMORY".into()),
            r#type: Some("INTEGER".into()),
            integer_value: Some(memory_mib),
            ..Default::default()
        },
        Resource {
            name: Some("PORTS".into()),
            r#type: Some("STRINGSET".into()),
            string_set_value: Some(ports),
            ..Default::default()
        },
        Resource {
            name: Some("PORTS_UDP".into()),
            r#type: Some("STRINGSET".into()),
            string_set_value: Some(vec![]),
            ..Default::default()
        },
    ];
    let req = RegisterContainerInstanceRequest {
        cluster: Some(cfg.cluster.clone()),
        container_instance_arn: previous.clone(),
        total_resources: Some(resources),
        attributes: Some(attributes),
        version_info: Some(VersionInfo {
            agent_version: Some(env!("CARGO_PKG_VERSION").into()),
            agent_hash: Some("berth".into()),
            docker_version: Some(format!("berth-{}", inner.driver.name())),
        }),
        ..Default::default()
    };
    let ci = match inner.backend.register(req.clone()).await {
        Ok(ci) => ci,
        // The control plane no longer knows the old instance, or it was deregistered (which
        // is final): register a new one.
        Err(e)
            if previous.is_some()
                && (e.code == "InvalidParameterException"
                    || (e.code == "ClientException" && e.message.contains("is inactive"))) =>
        {
            tracing::warn!("re-registration refused ({e}); registering a new instance");
            let mut req = req;
            req.container_instance_arn = None;
            inner
                .backend
                .register(req)
                .await
                .map_err(AgentError::Register)?
        }
        Err(e) => return Err(AgentError::Register(e)),
    };
    let arn = ci.container_instance_arn.unwrap_or_default();
    std::fs::write(&arn_file, &arn)?;
    tracing::info!(instance = %arn, "container instance registered");
    Ok(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_and_expire() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t-c.log");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        std::fs::write(d.path().join("t-old.log"), b"gone").unwrap();
        let live = vec!["t-c".to_string()];
        // The time given, not the machine's, is what log ages are measured against.
        let written = std::fs::metadata(d.path().join("t-old.log"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let now = berth_clock::Timestamp::from_unix_duration(written);
        let hour = Duration::from_secs(3600);
        // Under the limit: nothing; over it: copied to .1 and truncated.
        assert_eq!(rotate_logs(d.path(), 200, 3, hour, &live, now), 0);
        assert_eq!(rotate_logs(d.path(), 50, 3, hour, &live, now), 1);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        assert_eq!(
            std::fs::read(d.path().join("t-c.log.1")).unwrap().len(),
            100
        );
        std::fs::write(&p, vec![b'y'; 60]).unwrap();
        rotate_logs(d.path(), 50, 3, hour, &live, now);
        assert_eq!(std::fs::read(d.path().join("t-c.log.2")).unwrap()[0], b'x');
        assert_eq!(std::fs::read(d.path().join("t-c.log.1")).unwrap()[0], b'y');
        std::fs::write(&p, vec![b'z'; 60]).unwrap();
        rotate_logs(d.path(), 50, 3, hour, &live, now);
        // At most 3 files: the oldest copy is replaced.
        assert_eq!(std::fs::read(d.path().join("t-c.log.2")).unwrap()[0], b'y');
        assert!(!d.path().join("t-c.log.3").exists());
        // An ended container's log stays until retention passes.
        rotate_logs(d.path(), 50, 3, hour, &live, now + hour / 2);
        assert!(d.path().join("t-old.log").exists());
        rotate_logs(d.path(), 50, 3, hour, &live, now + hour * 2);
        assert!(!d.path().join("t-old.log").exists());
        assert!(p.exists(), "a live container's log is never removed");
    }
}
