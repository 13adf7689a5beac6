//! The task engine: one runner per task, driving its containers through the ECS agent's
//! states — images pulled (PENDING), network provisioned, containers started in `dependsOn`
//! order (START, COMPLETE, SUCCESS, HEALTHY), RUNNING once every container has started, then
//! watching them: an essential container exiting, or the control plane asking for STOPPED,
//! stops the task — containers signalled in reverse dependency order (SIGTERM, SIGKILL after
//! `stopTimeout`), network and bundles cleaned up, STOPPED reported with every exit code and
//! reason. Each step is saved to the task's state file first, so a restarted agent re-attaches
//! to running containers instead of starting them again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_model::payload::{container_from_acs, volumes_from_acs};
use berth_model::wire::ecs::{
    ContainerDefinition, ContainerStateChange, NetworkBinding, SubmitContainerStateChangeRequest,
    SubmitTaskStateChangeRequest, Volume,
};
use berth_model::wire::tcs::{ContainerHealth, PublishHealthRequest, TaskHealth};
use berth_runtime::PulledImage;
use berth_runtime::native::{Container, Exit};
use berth_runtime::spec::{BindMount, NetworkNs};
use tokio::sync::{mpsc, watch};

use crate::Inner;
use crate::backend::TaskNetworkReport;
use crate::container::container_spec;
use crate::credentials;
use crate::health::{HealthCheck, health_loop};
use crate::net::{Endpoint, Forward};
use crate::state::{ContainerState, TaskState};

/// Seconds since the epoch (millisecond precision), as ECS timestamps.
pub fn now() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// How long a restarted agent waits for a shim still starting a container it did not record.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// What happens to a task's containers.
pub(crate) enum Event {
    Exited(String, Result<Exit, String>),
    Health(String, String),
}

pub(crate) struct Runner {
    inner: Arc<Inner>,
    st: TaskState,
    desired: watch::Receiver<String>,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    defs: Vec<ContainerDefinition>,
    volumes: Vec<Volume>,
    images: HashMap<String, PulledImage>,
    forwards: HashMap<String, Vec<Forward>>,
    health: HashMap<String, tokio::task::JoinHandle<()>>,
    stopping: bool,
    /// STOPPING still to be reported.
    report_stopping: bool,
    /// Containers already sent SIGTERM, with when to send SIGKILL.
    kill_at: HashMap<String, Instant>,
    began: Instant,
}

/// Whether a container's dependencies allow it to start now: Ok(true) yes, Ok(false) not
/// yet, Err(reason) never.
pub fn deps_ready(st: &TaskState, d: &ContainerDefinition) -> Result<bool, String> {
    let name = d.name.as_deref().unwrap_or_default();
    for dep in d.depends_on.as_deref().unwrap_or_default() {
        let dn = dep.container_name.as_deref().unwrap_or_default();
        let cond = dep.condition.as_deref().unwrap_or("START");
        let Some(c) = st.container(dn) else {
            return Err(format!(
                "container {name} depends on unknown container {dn}"
            ));
        };
        let stopped = c.status == "STOPPED";
        let ok = match cond {
            "START" => c.started_at.is_some(),
            "COMPLETE" => stopped,
            "SUCCESS" => {
                if stopped && c.exit_code != Some(0) {
                    return Err(format!(
                        "DependencyConditionNotMet: container {name} depends on {dn} exiting successfully; it exited with {}",
                        c.exit_code.map_or("no exit code".into(), |x| x.to_string())
                    ));
                }
                stopped
            }
            "HEALTHY" => {
                if stopped || c.health.as_deref() == Some("UNHEALTHY") {
                    return Err(format!(
                        "DependencyConditionNotMet: container {name} depends on {dn} being HEALTHY; it is {}",
                        if stopped { "STOPPED" } else { "UNHEALTHY" }
                    ));
                }
                c.health.as_deref() == Some("HEALTHY")
            }
            other => return Err(format!("unknown dependency condition {other}")),
        };
        if stopped && cond == "START" && c.started_at.is_none() {
            return Err(format!(
                "DependencyConditionNotMet: container {dn} never started"
            ));
        }
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A container's status as reported: only the steady states (RUNNING, STOPPED) cross the
/// boundary, as with the ECS agent.
fn reported_status(c: &ContainerState) -> &'static str {
    if c.status == "STOPPED" {
        "STOPPED"
    } else {
        "RUNNING"
    }
}

/// The runtime id of a task's container.
pub fn runtime_id(task_id: &str, name: &str) -> String {
    format!("{task_id}-{name}")
}

fn oom_reason() -> String {
    "OutOfMemoryError: Container killed due to memory usage".into()
}

impl Runner {
    pub(crate) fn new(
        inner: Arc<Inner>,
        mut st: TaskState,
        desired: watch::Receiver<String>,
    ) -> Runner {
        let defs: Vec<ContainerDefinition> = st
            .payload
            .containers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(container_from_acs)
            .collect();
        if st.containers.is_empty() {
            st.containers = defs
                .iter()
                .map(|d| ContainerState {
                    name: d.name.clone().unwrap_or_default(),
                    status: "NONE".into(),
                    runtime_id: runtime_id(st.id(), d.name.as_deref().unwrap_or_default()),
                    health: d.health_check.as_ref().map(|_| "UNKNOWN".into()),
                    ..Default::default()
                })
                .collect();
        }
        if st.status.is_empty() {
            st.status = "PENDING".into();
        }
        let volumes = volumes_from_acs(&st.payload);
        let (tx, rx) = mpsc::channel(64);
        Runner {
            inner,
            st,
            desired,
            tx,
            rx,
            defs,
            volumes,
            images: HashMap::new(),
            forwards: HashMap::new(),
            health: HashMap::new(),
            stopping: false,
            report_stopping: false,
            kill_at: HashMap::new(),
            began: Instant::now(),
        }
    }

    fn def(&self, name: &str) -> Option<&ContainerDefinition> {
        self.defs.iter().find(|d| d.name.as_deref() == Some(name))
    }

    fn save(&self) {
        if let Err(e) = self.inner.states.save(&self.st) {
            tracing::error!(task = %self.st.arn, "saving task state: {e}");
        }
    }

    fn network_mode(&self) -> String {
        self.st
            .payload
            .network_mode
            .clone()
            .unwrap_or_else(|| "bridge".into())
    }

    pub(crate) async fn run(mut self) {
        if let Err(reason) = self.prepare().await {
            self.fail(reason);
        } else {
            tracing::debug!(elapsed = ?self.began.elapsed(), "task prepared");
            self.resume_running().await;
        }
        loop {
            let desired = self.desired.borrow().clone();
            if !self.stopping && desired == "STOPPED" {
                self.begin_stop(None);
            }
            if !self.stopping
                && let Err(reason) = self.start_ready().await
            {
                self.fail(reason);
            }
            if !self.stopping
                && self.st.status == "PENDING"
                && self.st.containers.iter().all(|c| c.started_at.is_some())
            {
                self.report_running().await;
            }
            if self.stopping {
                self.signal_next();
                if self.report_stopping {
                    self.report_stopping = false;
                    self.report_status("STOPPING").await;
                }
            }
            if self.st.containers.iter().all(|c| c.status == "STOPPED") {
                break;
            }
            let tick = self.next_deadline();
            tokio::select! {
                ev = self.rx.recv() => if let Some(ev) = ev { self.on_event(ev).await },
                r = self.desired.changed() => if r.is_err() {
                    // The agent is shutting down: leave the containers running.
                    return;
                },
                _ = tokio::time::sleep(tick) => {}
            }
        }
        self.finish().await;
    }

    /// How long until the next timer (SIGKILL, start timeout) may need attention.
    fn next_deadline(&self) -> Duration {
        let now = Instant::now();
        let kill = self
            .kill_at
            .values()
            .map(|t| t.saturating_duration_since(now))
            .min();
        let waiting = !self.stopping
            && self
                .st
                .containers
                .iter()
                .any(|c| c.status == "NONE" || c.status == "PULLED");
        let base = if waiting {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(3600)
        };
        kill.map_or(base, |k| k.min(base))
    }

    /// Pull images and provision the task's network.
    async fn prepare(&mut self) -> Result<(), String> {
        self.inner
            .cfg
            .guard
            .check(&self.network_mode(), &self.defs, &self.volumes)
            .map_err(|r| format!("CannotStartContainerError: {r}"))?;
        let need_images = self.st.containers.iter().any(|c| c.status != "STOPPED");
        if need_images {
            if self.st.pull_started_at.is_none() {
                self.st.pull_started_at = Some(now());
            }
            let mut wanted: Vec<(String, String)> = Vec::new();
            for d in &self.defs {
                wanted.push((
                    d.name.clone().unwrap_or_default(),
                    d.image.clone().unwrap_or_default(),
                ));
            }
            let pulls = wanted.iter().map(|(_, image)| self.inner.pull(image));
            let results = futures::future::join_all(pulls).await;
            let mut failure = None;
            for ((name, image), r) in wanted.iter().zip(results) {
                match r {
                    Ok(img) => {
                        if let Some(c) = self.st.container_mut(name) {
                            c.image_digest = Some(img.manifest_digest.clone());
                            if c.status == "NONE" {
                                c.status = "PULLED".into();
                            }
                        }
                        self.images.insert(name.clone(), img);
                    }
                    Err(e) => {
                        let reason =
                            format!("CannotPullContainerError: failed to resolve ref {image}: {e}");
                        if let Some(c) = self.st.container_mut(name) {
                            c.reason = Some(reason.clone());
                        }
                        failure.get_or_insert(reason);
                    }
                }
            }
            if self.st.pull_stopped_at.is_none() {
                self.st.pull_stopped_at = Some(now());
            }
            self.save();
            if let Some(f) = failure {
                return Err(f);
            }
        }
        if need_images {
            let id = self.st.id().to_string();
            self.inner
                .runtime
                .task_cgroup(
                    &format!("/berth/{id}"),
                    self.st.payload.cpu,
                    self.st.payload.memory.map(i64::from),
                )
                .map_err(|e| format!("CannotStartContainerError: task limits: {e}"))?;
        }
        if self.network_mode() == "awsvpc" && self.st.endpoint.is_none() && need_images {
            let net = self
                .inner
                .net
                .as_ref()
                .ok_or_else(|| self.inner.no_network_reason())?;
            let ep = net
                .create(self.st.id())
                .await
                .map_err(|e| format!("CannotStartContainerError: network setup: {e}"))?;
            self.st.endpoint = Some(serde_json::to_value(&ep).unwrap_or_default());
            self.save();
            let report = TaskNetworkReport {
                cluster: self.st.cluster_arn.clone(),
                task_arn: self.st.arn.clone(),
                private_ipv4: ep.ip.to_string(),
                mac: ep.mac.clone(),
                subnet: net.subnet(),
            };
            let b = self.inner.backend.clone();
            if let Err(e) = b.report_task_network(report).await {
                tracing::warn!("reporting the task network: {e}");
            }
            self.report_status("PENDING").await;
        }
        Ok(())
    }

    /// Containers started (or being started) and not yet ended.
    fn live_containers(&self) -> Vec<String> {
        self.st
            .containers
            .iter()
            .filter(|c| c.status == "RUNNING" || c.status == "CREATED")
            .map(|c| c.name.clone())
            .collect()
    }

    /// After an agent restart: find the containers that were running.
    async fn resume_running(&mut self) {
        let names = self.live_containers();
        for name in names {
            let mut c = self.st.container(&name).cloned().unwrap_or_default();
            if c.status == "CREATED" && c.shim_pid <= 0 {
                // The agent before this one died while starting it, before it saved the pids:
                // the shim's own record has them (else the container would run on, unwatched,
                // while its task is reported STOPPED).
                if let Some((pid, shim_pid)) = self
                    .inner
                    .runtime
                    .started_pids(&c.runtime_id, START_PATIENCE)
                    .await
                {
                    c.pid = pid;
                    c.shim_pid = shim_pid;
                }
            }
            match self.inner.runtime.attach(&c.runtime_id, c.pid, c.shim_pid) {
                Ok(Some(container)) => {
                    tracing::info!(container = %name, pid = c.pid, "re-attached to a running container");
                    if c.status == "CREATED" {
                        if let Some(cs) = self.st.container_mut(&name) {
                            cs.status = "RUNNING".into();
                            cs.pid = c.pid;
                            cs.shim_pid = c.shim_pid;
                            cs.started_at.get_or_insert_with(now);
                        }
                        self.save();
                    }
                    self.watch_container(&name, container);
                    self.restore_forwards(&name).await;
                    self.start_health(&name, c.pid);
                }
                Ok(None) | Err(_) => {
                    let exit =
                        self.inner.runtime.exit_of(&c.runtime_id).ok_or_else(|| {
                            "the container ended while the agent was away".to_string()
                        });
                    let _ = self.tx.send(Event::Exited(name.clone(), exit)).await;
                }
            }
        }
    }

    /// Start every container whose dependencies are met.
    async fn start_ready(&mut self) -> Result<(), String> {
        loop {
            let mut started_any = false;
            let names: Vec<String> = self
                .st
                .containers
                .iter()
                .filter(|c| c.status == "PULLED")
                .map(|c| c.name.clone())
                .collect();
            for name in names {
                let Some(d) = self.def(&name).cloned() else {
                    continue;
                };
                if !deps_ready(&self.st, &d)? {
                    let limit = Duration::from_secs(d.start_timeout.unwrap_or(180).max(1) as u64);
                    if self.began.elapsed() > limit {
                        return Err(format!(
                            "DependencyConditionNotMet: container {name} timed out waiting for its dependencies ({}s)",
                            limit.as_secs()
                        ));
                    }
                    continue;
                }
                self.start_container(&d).await?;
                started_any = true;
            }
            if !started_any {
                return Ok(());
            }
        }
    }

    fn host_path(&self, volume: &str) -> Result<PathBuf, String> {
        let v = self
            .volumes
            .iter()
            .find(|v| v.name.as_deref() == Some(volume))
            .ok_or_else(|| format!("CannotStartContainerError: unknown volume {volume}"))?;
        let p = match v.host.as_ref().and_then(|h| h.source_path.clone()) {
            Some(src) => PathBuf::from(src),
            None => self.inner.volume_dir(self.st.id(), volume),
        };
        std::fs::create_dir_all(&p)
            .map_err(|e| format!("CannotStartContainerError: volume {volume}: {e}"))?;
        Ok(p)
    }

    fn mounts_of(
        &self,
        d: &ContainerDefinition,
        seen: &mut Vec<String>,
    ) -> Result<Vec<BindMount>, String> {
        let name = d.name.clone().unwrap_or_default();
        if seen.contains(&name) {
            return Ok(vec![]);
        }
        seen.push(name);
        let mut out = Vec::new();
        for m in d.mount_points.as_deref().unwrap_or_default() {
            let vol = m.source_volume.as_deref().unwrap_or_default();
            out.push(BindMount {
                source: self.host_path(vol)?,
                destination: m.container_path.clone().unwrap_or_default(),
                readonly: m.read_only.unwrap_or(false),
            });
        }
        for vf in d.volumes_from.as_deref().unwrap_or_default() {
            let src = vf.source_container.as_deref().unwrap_or_default();
            let sd = self.def(src).cloned().ok_or_else(|| {
                format!("CannotStartContainerError: volumesFrom unknown container {src}")
            })?;
            for mut m in self.mounts_of(&sd, seen)? {
                if vf.read_only == Some(true) {
                    m.readonly = true;
                }
                out.push(m);
            }
        }
        Ok(out)
    }

    async fn start_container(&mut self, d: &ContainerDefinition) -> Result<(), String> {
        let name = d.name.clone().unwrap_or_default();
        let task_id = self.st.id().to_string();
        let id = runtime_id(&task_id, &name);
        let img =
            self.images.get(&name).cloned().ok_or_else(|| {
                format!("CannotStartContainerError: image of {name} is not ready")
            })?;
        let cannot = |e: String| format!("CannotStartContainerError: {e}");
        let mut spec = container_spec(
            d,
            None,
            &img.config,
            &img.rootfs,
            &format!("/berth/{task_id}/{name}"),
        )
        .map_err(|e| cannot(e.0))?;
        spec.mounts = self.mounts_of(d, &mut Vec::new())?;
        let mode = self.network_mode();
        let mut endpoint: Option<Endpoint> = None;
        spec.network = if d.disable_networking == Some(true) {
            NetworkNs::New
        } else {
            match mode.as_str() {
                "host" => NetworkNs::Host,
                "none" => NetworkNs::New,
                "awsvpc" => {
                    let ep: Endpoint = self
                        .st
                        .endpoint
                        .clone()
                        .and_then(|v| serde_json::from_value(v).ok())
                        .ok_or_else(|| cannot("the task has no network endpoint".into()))?;
                    NetworkNs::Path(ep.netns.clone())
                }
                _ => {
                    let net = self
                        .inner
                        .net
                        .as_ref()
                        .ok_or_else(|| self.inner.no_network_reason())?;
                    let ep = net
                        .create(&id)
                        .await
                        .map_err(|e| cannot(format!("network setup: {e}")))?;
                    let path = ep.netns.clone();
                    endpoint = Some(ep);
                    NetworkNs::Path(path)
                }
            }
        };
        if d.hostname.is_none() {
            spec.hostname = match mode.as_str() {
                "host" => nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_else(|| "berth".into()),
                _ => id.chars().take(12).collect(),
            };
        }
        self.credentials_env(d, &mode, &mut spec.env);
        // Port bindings: bridge forwards host ports; host and awsvpc publish the container port.
        let mut bindings = Vec::new();
        let mut forwards = Vec::new();
        for pm in d.port_mappings.as_deref().unwrap_or_default() {
            let cport = pm.container_port.unwrap_or(0);
            let proto = pm.protocol.clone().unwrap_or_else(|| "tcp".into());
            match (mode.as_str(), &endpoint) {
                ("bridge", Some(_)) => {
                    let hp = pm.host_port.unwrap_or(0);
                    match Forward::bind(&proto, hp as u16, cport as u16) {
                        Ok(f) => {
                            bindings.push(NetworkBinding {
                                bind_ip: Some("0.0.0.0".into()),
                                container_port: Some(cport),
                                host_port: Some(f.host_port() as i32),
                                protocol: Some(proto.clone()),
                                ..Default::default()
                            });
                            forwards.push(f);
                        }
                        Err(e) => {
                            if let Some(net) = &self.inner.net {
                                net.remove(&id).await;
                            }
                            return Err(cannot(format!("port {hp}/{proto}: {e}")));
                        }
                    }
                }
                ("host", _) => bindings.push(NetworkBinding {
                    bind_ip: Some("0.0.0.0".into()),
                    container_port: Some(cport),
                    host_port: Some(cport),
                    protocol: Some(proto.clone()),
                    ..Default::default()
                }),
                _ => {}
            }
        }
        if let Some(c) = self.st.container_mut(&name) {
            c.status = "CREATED".into();
            c.endpoint = endpoint
                .as_ref()
                .map(|e| serde_json::to_value(e).unwrap_or_default());
            c.bindings = bindings.clone();
        }
        self.save();
        self.inner.mark_used(&img);
        tracing::debug!(elapsed = ?self.began.elapsed(), container = %name, "starting");
        let started = self.inner.runtime.start(&id, &img.rootfs, &spec).await;
        let container = match started {
            Ok(c) => c,
            Err(e) => {
                drop(forwards);
                if endpoint.is_some()
                    && let Some(net) = &self.inner.net
                {
                    net.remove(&id).await;
                }
                if let Some(c) = self.st.container_mut(&name) {
                    c.status = "PULLED".into();
                    c.endpoint = None;
                    c.bindings.clear();
                }
                let msg = match e {
                    berth_runtime::native::RuntimeError::Container { message, .. } => message,
                    other => other.to_string(),
                };
                let reason = cannot(msg);
                if let Some(c) = self.st.container_mut(&name) {
                    c.reason = Some(reason.clone());
                }
                self.save();
                return Err(reason);
            }
        };
        let pid = container.pid;
        // The bound host ports go to their forwarder processes now that the container runs.
        let mut forwarders = Vec::new();
        if let Some(ep) = &endpoint {
            for f in &mut forwards {
                match f.run(&self.inner.cfg.shim_exe, ep.ip, pid) {
                    Ok(p) => forwarders.push(p),
                    Err(e) => {
                        tracing::error!(container = %name, port = f.host_port(), "no forwarder: {e}")
                    }
                }
            }
        }
        if let Some(c) = self.st.container_mut(&name) {
            c.status = "RUNNING".into();
            c.pid = pid;
            c.shim_pid = container.shim_pid;
            c.started_at = Some(now());
            c.forwarders = forwarders;
        }
        self.save();
        self.forwards.insert(name.clone(), forwards);
        self.watch_container(&name, container);
        self.start_health(&name, pid);
        tracing::info!(container = %name, pid, elapsed = ?self.began.elapsed(), "container started");
        if self.st.status == "RUNNING" {
            self.report_container(&name).await;
        }
        Ok(())
    }

    /// Point a container with a task role at its credentials (the variable its network mode
    /// reaches the endpoint by). Built at every start from the task's saved credentials id, so
    /// a container started after an agent restart gets it too; one that kept running keeps its
    /// own, which stays right: the loopback port is kept across restarts and the bridge's
    /// address is redirected to wherever the endpoint listens now.
    fn credentials_env(&self, d: &ContainerDefinition, mode: &str, env: &mut Vec<String>) {
        let Some(id) = credentials::task_role_id(&self.st.payload) else {
            return;
        };
        let disabled = d.disable_networking == Some(true);
        match self.inner.credentials_access.env(mode, disabled, id) {
            Some((name, value)) => credentials::set_env(env, d, name, &value),
            None if !disabled && mode != "none" => tracing::warn!(
                container = d.name.as_deref().unwrap_or_default(),
                "the task has a role, but its credentials endpoint is not available in network mode {mode} on this node"
            ),
            None => {}
        }
    }

    /// Bridge port forwards of a re-attached container: its forwarder processes kept where
    /// they still run (they outlived the agent), started again where not.
    async fn restore_forwards(&mut self, name: &str) {
        let Some(c) = self.st.container(name).cloned() else {
            return;
        };
        let Some(ep) = c
            .endpoint
            .and_then(|v| serde_json::from_value::<Endpoint>(v).ok())
        else {
            return;
        };
        let mut fs = Vec::new();
        let mut pids = Vec::new();
        for (i, b) in c.bindings.iter().enumerate() {
            let proto = b.protocol.clone().unwrap_or_else(|| "tcp".into());
            let host_port = b.host_port.unwrap_or(0) as u16;
            let cport = b.container_port.unwrap_or(0) as u16;
            let kept = c
                .forwarders
                .get(i)
                .and_then(|&pid| Forward::adopt(pid, &proto, host_port, ep.ip, cport, c.pid));
            let f = match kept {
                Some(f) => Ok(f),
                None => Forward::bind(&proto, host_port, cport)
                    .and_then(|mut f| f.run(&self.inner.cfg.shim_exe, ep.ip, c.pid).map(|_| f)),
            };
            match f {
                Ok(f) => {
                    pids.push(f.pid().unwrap_or(0));
                    fs.push(f);
                }
                Err(e) => {
                    pids.push(0);
                    tracing::warn!(container = %name, "port {host_port} not restored: {e}")
                }
            }
        }
        if let Some(cs) = self.st.container_mut(name)
            && cs.forwarders != pids
        {
            cs.forwarders = pids;
            self.save();
        }
        self.forwards.insert(name.to_string(), fs);
    }

    fn watch_container(&self, name: &str, mut c: Container) {
        let tx = self.tx.clone();
        let rt = self.inner.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let r = rt.runtime.wait(&mut c).await.map_err(|e| e.to_string());
            let _ = tx.send(Event::Exited(name, r)).await;
        });
    }

    fn start_health(&mut self, name: &str, pid: i32) {
        let Some(hc) = self
            .def(name)
            .and_then(|d| d.health_check.clone())
            .and_then(|h| HealthCheck::from_ecs(&h))
        else {
            return;
        };
        let tx = self.tx.clone();
        let inner = self.inner.clone();
        let n = name.to_string();
        let rid = runtime_id(self.st.id(), name);
        let h = tokio::spawn(async move {
            health_loop(hc, inner, rid, pid, move |status| {
                let tx = tx.clone();
                let n = n.clone();
                async move {
                    let _ = tx.send(Event::Health(n, status)).await;
                }
            })
            .await
        });
        if let Some(old) = self.health.insert(name.to_string(), h) {
            old.abort();
        }
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Exited(name, r) => {
                let (code, reason) = match r {
                    Ok(Exit::OutOfMemory) => (Some(137), Some(oom_reason())),
                    Ok(e) => (Some(e.code()), None),
                    Err(e) => (None, Some(format!("Container state unknown: {e}"))),
                };
                tracing::info!(container = %name, ?code, "container exited");
                if let Some(h) = self.health.remove(&name) {
                    h.abort();
                }
                for mut f in self.forwards.remove(&name).unwrap_or_default() {
                    f.stop();
                }
                let ep = self.st.container(&name).and_then(|c| c.endpoint.clone());
                if ep.is_some()
                    && let Some(net) = &self.inner.net
                {
                    net.remove(&runtime_id(self.st.id(), &name)).await;
                }
                self.kill_at.remove(&name);
                if let Some(c) = self.st.container_mut(&name) {
                    c.status = "STOPPED".into();
                    c.exit_code = code;
                    if reason.is_some() {
                        c.reason = reason;
                    }
                    c.finished_at = Some(now());
                    c.endpoint = None;
                }
                self.save();
                let essential = self
                    .def(&name)
                    .map(|d| d.essential.unwrap_or(true))
                    .unwrap_or(true);
                if !self.stopping {
                    if essential {
                        self.begin_stop(Some("Essential container in task exited".into()));
                    } else if self.st.status == "RUNNING" {
                        self.report_container(&name).await;
                    }
                }
            }
            Event::Health(name, status) => {
                let changed = self
                    .st
                    .container_mut(&name)
                    .map(|c| {
                        let ch = c.health.as_deref() != Some(status.as_str());
                        c.health = Some(status.clone());
                        ch
                    })
                    .unwrap_or(false);
                if changed {
                    self.save();
                    self.publish_health().await;
                }
            }
        }
    }

    async fn publish_health(&self) {
        let essential: Vec<&String> = self
            .st
            .containers
            .iter()
            .filter(|c| c.health.is_some())
            .map(|c| &c.name)
            .collect();
        let containers = self
            .st
            .containers
            .iter()
            .filter(|c| essential.contains(&&c.name))
            .map(|c| ContainerHealth {
                container_name: Some(c.name.clone()),
                health_status: c.health.clone(),
                status_since: Some(now()),
                ..Default::default()
            })
            .collect();
        let req = PublishHealthRequest {
            tasks: Some(vec![TaskHealth {
                task_arn: Some(self.st.arn.clone()),
                cluster_arn: Some(self.st.cluster_arn.clone()),
                task_definition_family: self.st.payload.family.clone(),
                task_definition_version: self.st.payload.version.clone(),
                containers: Some(containers),
            }]),
            timestamp: Some(now()),
            ..Default::default()
        };
        if let Err(e) = self.inner.backend.publish_health(req).await {
            tracing::warn!("publishing health: {e}");
        }
    }

    /// Give up on starting the task.
    fn fail(&mut self, reason: String) {
        tracing::warn!(task = %self.st.arn, "{reason}");
        if self.st.stopping_reason.is_none() {
            self.st.stopping_reason = Some(reason.clone());
        }
        self.begin_stop(Some(reason));
    }

    fn begin_stop(&mut self, reason: Option<String>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if self.st.stopping_reason.is_none() {
            self.st.stopping_reason = reason;
        }
        self.report_stopping = self.st.containers.iter().any(|c| c.started_at.is_some());
        // Containers that never started are done.
        for c in &mut self.st.containers {
            if c.status == "NONE" || c.status == "PULLED" {
                c.status = "STOPPED".into();
            }
        }
        self.save();
    }

    /// Signal the running containers that no other running container depends on; SIGKILL
    /// those whose stop timeout has passed.
    fn signal_next(&mut self) {
        let running = self.live_containers();
        let now = Instant::now();
        for name in &running {
            if let Some(at) = self.kill_at.get(name) {
                if *at <= now
                    && let Some(c) = self.st.container(name)
                {
                    tracing::info!(container = %name, "stop timeout passed: SIGKILL");
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(c.pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    self.kill_at
                        .insert(name.clone(), now + Duration::from_secs(3600));
                }
                continue;
            }
            let needed = running.iter().any(|other| {
                other != name
                    && self
                        .def(other)
                        .and_then(|d| d.depends_on.as_ref())
                        .is_some_and(|ds| {
                            ds.iter()
                                .any(|dep| dep.container_name.as_deref() == Some(name.as_str()))
                        })
            });
            if needed {
                continue;
            }
            let timeout = self
                .def(name)
                .and_then(|d| d.stop_timeout)
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(self.inner.cfg.stop_timeout);
            if let Some(c) = self.st.container(name) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            self.kill_at.insert(name.clone(), now + timeout);
        }
    }

    fn changes(&self) -> Vec<ContainerStateChange> {
        self.st
            .containers
            .iter()
            .map(|c| ContainerStateChange {
                container_name: Some(c.name.clone()),
                image_digest: c.image_digest.clone(),
                runtime_id: Some(c.runtime_id.clone()),
                exit_code: c.exit_code,
                network_bindings: Some(c.bindings.clone()),
                reason: c.reason.clone(),
                status: Some(reported_status(c).into()),
            })
            .collect()
    }

    async fn report_running(&mut self) {
        self.st.status = "RUNNING".into();
        self.save();
        let req = SubmitTaskStateChangeRequest {
            cluster: Some(self.st.cluster_arn.clone()),
            task: Some(self.st.arn.clone()),
            status: Some("RUNNING".into()),
            containers: Some(self.changes()),
            pull_started_at: self.st.pull_started_at,
            pull_stopped_at: self.st.pull_stopped_at,
            ..Default::default()
        };
        self.inner.submit_task(req).await;
        tracing::debug!(elapsed = ?self.began.elapsed(), "RUNNING reported");
    }

    /// A task status on the way (PENDING after provisioning, STOPPING, DEPROVISIONING).
    async fn report_status(&self, status: &str) {
        let req = SubmitTaskStateChangeRequest {
            cluster: Some(self.st.cluster_arn.clone()),
            task: Some(self.st.arn.clone()),
            status: Some(status.into()),
            ..Default::default()
        };
        self.inner.submit_task(req).await;
    }

    async fn report_container(&self, name: &str) {
        let Some(c) = self.st.container(name) else {
            return;
        };
        let req = SubmitContainerStateChangeRequest {
            cluster: Some(self.st.cluster_arn.clone()),
            task: Some(self.st.arn.clone()),
            container_name: Some(c.name.clone()),
            runtime_id: Some(c.runtime_id.clone()),
            status: Some(reported_status(c).into()),
            exit_code: c.exit_code,
            reason: c.reason.clone(),
            network_bindings: Some(c.bindings.clone()),
        };
        if let Err(e) = self.inner.backend.submit_container_state_change(req).await {
            tracing::warn!(container = %name, "reporting container state: {e}");
        }
    }

    /// Everything has stopped: clean up and report.
    async fn finish(mut self) {
        for (_, h) in self.health.drain() {
            h.abort();
        }
        self.forwards.clear();
        let id = self.st.id().to_string();
        if self.st.endpoint.is_some() {
            self.report_status("DEPROVISIONING").await;
        }
        if let Some(net) = &self.inner.net {
            for c in &self.st.containers {
                if c.endpoint.is_some() {
                    net.remove(&c.runtime_id).await;
                }
            }
            if self.st.endpoint.is_some() {
                net.remove(&id).await;
            }
        }
        for c in &self.st.containers {
            self.inner.runtime.cleanup(&c.runtime_id);
        }
        self.inner.runtime.remove_cgroup(&format!("/berth/{id}"));
        let _ = std::fs::remove_dir_all(self.inner.task_dir(&id));
        self.st.status = "STOPPED".into();
        self.save();
        let req = SubmitTaskStateChangeRequest {
            cluster: Some(self.st.cluster_arn.clone()),
            task: Some(self.st.arn.clone()),
            status: Some("STOPPED".into()),
            reason: self.st.stopping_reason.clone(),
            containers: Some(self.changes()),
            pull_started_at: self.st.pull_started_at,
            pull_stopped_at: self.st.pull_stopped_at,
            execution_stopped_at: Some(now()),
            ..Default::default()
        };
        if self.inner.submit_task(req).await {
            self.inner.states.remove(&id);
        }
        self.inner.forget(&self.st.arn);
        tracing::info!(task = %self.st.arn, "task stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::wire::ecs::ContainerDependency;

    fn dep(on: &str, cond: &str) -> ContainerDefinition {
        ContainerDefinition {
            name: Some("app".into()),
            depends_on: Some(vec![ContainerDependency {
                container_name: Some(on.into()),
                condition: Some(cond.into()),
            }]),
            ..Default::default()
        }
    }

    fn state(status: &str, started: bool, exit: Option<i32>, health: Option<&str>) -> TaskState {
        TaskState {
            containers: vec![ContainerState {
                name: "db".into(),
                status: status.into(),
                started_at: started.then_some(1.0),
                exit_code: exit,
                health: health.map(str::to_string),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn dependency_conditions() {
        let waiting = state("PULLED", false, None, Some("UNKNOWN"));
        let running = state("RUNNING", true, None, Some("UNKNOWN"));
        let healthy = state("RUNNING", true, None, Some("HEALTHY"));
        let unhealthy = state("RUNNING", true, None, Some("UNHEALTHY"));
        let ok_exit = state("STOPPED", true, Some(0), None);
        let bad_exit = state("STOPPED", true, Some(2), None);
        let never = state("STOPPED", false, None, None);
        assert_eq!(deps_ready(&waiting, &dep("db", "START")), Ok(false));
        assert_eq!(deps_ready(&running, &dep("db", "START")), Ok(true));
        assert_eq!(deps_ready(&ok_exit, &dep("db", "START")), Ok(true));
        assert!(deps_ready(&never, &dep("db", "START")).is_err());
        assert_eq!(deps_ready(&running, &dep("db", "COMPLETE")), Ok(false));
        assert_eq!(deps_ready(&bad_exit, &dep("db", "COMPLETE")), Ok(true));
        assert_eq!(deps_ready(&ok_exit, &dep("db", "SUCCESS")), Ok(true));
        assert!(deps_ready(&bad_exit, &dep("db", "SUCCESS")).is_err());
        assert_eq!(deps_ready(&running, &dep("db", "HEALTHY")), Ok(false));
        assert_eq!(deps_ready(&healthy, &dep("db", "HEALTHY")), Ok(true));
        assert!(deps_ready(&unhealthy, &dep("db", "HEALTHY")).is_err());
        assert!(deps_ready(&ok_exit, &dep("db", "HEALTHY")).is_err());
        assert!(deps_ready(&running, &dep("nope", "START")).is_err());
        assert_eq!(
            deps_ready(&running, &ContainerDefinition::default()),
            Ok(true),
            "no dependencies"
        );
    }
}
