//! The task runner: one per task, driving its containers through the ECS agent's states —
//! task ready (PENDING), containers started in `dependsOn` order (START, COMPLETE, SUCCESS,
//! HEALTHY), RUNNING once every container has started, then watching them: an essential
//! container exiting, or the control plane asking for STOPPED, stops the task — containers
//! signalled in reverse dependency order (SIGTERM, SIGKILL after `stopTimeout`), what the task
//! held released, STOPPED reported with every exit code and reason. Each step is saved to the
//! task's state record first, so a restarted agent re-attaches to running containers instead
//! of starting them again.
//!
//! The runner owns the state machine only. Containers are the [`Driver`]'s
//! (`berth_runtime::driver`); everything else a task needs is a hook ([`crate::hooks`]):
//! images, the task cgroup, the network, volumes, credentials, health checks. The runner calls
//! every hook at the same points of a task's life (see [`Hook`]), in their order, and in
//! reverse order when the task is over.
//!
//! Must not: know how a driver runs containers or how a hook does its work.
//!
//! [`Driver`]: berth_runtime::Driver

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_clock::Instant;
use berth_model::payload::{container_from_acs, volumes_from_acs};
use berth_model::status::{NodeContainerStatus, TaskStatus};
use berth_model::wire::ecs::{
    ContainerDefinition, ContainerStateChange, SubmitContainerStateChangeRequest,
    SubmitTaskStateChangeRequest,
};
use berth_model::wire::tcs::{ContainerHealth, PublishHealthRequest, TaskHealth};
use berth_runtime::driver::{Container, Exit, Signal};
use tokio::sync::{mpsc, watch};

use crate::Inner;
use crate::container::container_spec;
use crate::hooks::{self, Hook};
use crate::state::{ContainerState, TaskState};
use crate::task::{Event, Launch, Task};

#[cfg(test)]
mod tests;

/// How long a restarted agent waits for a shim still starting a container it did not record.
const START_PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct Runner {
    t: Task,
    hooks: Vec<Box<dyn Hook>>,
    desired: watch::Receiver<String>,
    rx: mpsc::Receiver<Box<Event>>,
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
        let stopped = c.status == NodeContainerStatus::Stopped;
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
    c.status.reported().as_str()
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
                    status: NodeContainerStatus::None,
                    runtime_id: runtime_id(st.id(), d.name.as_deref().unwrap_or_default()),
                    health: d.health_check.as_ref().map(|_| "UNKNOWN".into()),
                    ..Default::default()
                })
                .collect();
        }
        if st.status.is_none() {
            st.status = Some(TaskStatus::Pending);
        }
        let volumes = volumes_from_acs(&st.payload);
        let (tx, rx) = mpsc::channel(16);
        let began = inner.cfg.clock.instant();
        Runner {
            t: Task {
                inner,
                st,
                defs,
                volumes,
                images: HashMap::new(),
                events: tx,
            },
            hooks: hooks::for_task(),
            desired,
            rx,
            stopping: false,
            report_stopping: false,
            kill_at: HashMap::new(),
            began,
        }
    }

    /// The task's life. Each step is a boxed future, alive only while it runs: what waits
    /// between steps is small (see the module's tests).
    pub(crate) async fn run(mut self) {
        if let Err(reason) = Box::pin(self.prepare()).await {
            self.fail(reason);
        } else {
            tracing::debug!(elapsed = ?self.elapsed(), "task prepared");
            Box::pin(self.resume_running()).await;
        }
        loop {
            let desired = self.desired.borrow().clone();
            if !self.stopping && desired == "STOPPED" {
                self.begin_stop(None);
            }
            if !self.stopping
                && let Err(reason) = Box::pin(self.start_ready()).await
            {
                self.fail(reason);
            }
            if !self.stopping
                && self.t.st.status == Some(TaskStatus::Pending)
                && self.t.st.containers.iter().all(|c| c.started_at.is_some())
            {
                Box::pin(self.report_running()).await;
            }
            if self.stopping {
                Box::pin(self.signal_next()).await;
                if self.report_stopping {
                    self.report_stopping = false;
                    Box::pin(self.t.report_status("STOPPING")).await;
                }
            }
            if self
                .t
                .st
                .containers
                .iter()
                .all(|c| c.status == NodeContainerStatus::Stopped)
            {
                break;
            }
            let tick = self.next_deadline();
            tokio::select! {
                ev = self.rx.recv() => if let Some(ev) = ev { Box::pin(self.on_event(*ev)).await },
                r = self.desired.changed() => if r.is_err() {
                    // The agent is shutting down: leave the containers running.
                    return;
                },
                _ = tokio::time::sleep(tick) => {}
            }
        }
        Box::pin(self.finish()).await;
    }

    /// How long the runner has been at it.
    fn elapsed(&self) -> Duration {
        self.t.inner.cfg.clock.elapsed(self.began)
    }

    /// How long until the next timer (SIGKILL, start timeout) may need attention.
    fn next_deadline(&self) -> Duration {
        let now = self.t.inner.cfg.clock.instant();
        let kill = self
            .kill_at
            .values()
            .map(|t| t.saturating_duration_since(now))
            .min();
        let waiting = !self.stopping && self.t.st.containers.iter().any(|c| c.status.not_started());
        let base = if waiting {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(3600)
        };
        kill.map_or(base, |k| k.min(base))
    }

    /// What this node allows, then every hook's preparation (images, cgroup, network).
    async fn prepare(&mut self) -> Result<(), String> {
        let mode = self.t.network_mode();
        self.t
            .inner
            .cfg
            .guard
            .check(&mode, &self.t.defs, &self.t.volumes)
            .map_err(|r| format!("CannotStartContainerError: {r}"))?;
        for h in self.hooks.iter_mut() {
            h.prepare(&mut self.t).await?;
        }
        Ok(())
    }

    /// Containers started (or being started) and not yet ended.
    fn live_containers(&self) -> Vec<String> {
        self.t
            .st
            .containers
            .iter()
            .filter(|c| c.status.live())
            .map(|c| c.name.clone())
            .collect()
    }

    /// After an agent restart: find the containers that were running.
    async fn resume_running(&mut self) {
        let names = self.live_containers();
        let driver = self.t.inner.driver.clone();
        for name in names {
            let mut c = self.t.st.container(&name).cloned().unwrap_or_default();
            if c.status == NodeContainerStatus::Created && c.shim_pid <= 0 {
                // The agent before this one died while starting it, before it saved the pids:
                // the driver's own record has them (else the container would run on,
                // unwatched, while its task is reported STOPPED).
                if let Some((pid, shim_pid)) =
                    driver.started_pids(&c.runtime_id, START_PATIENCE).await
                {
                    c.pid = pid;
                    c.shim_pid = shim_pid;
                }
            }
            match driver.attach(&c.runtime_id, c.pid, c.shim_pid).await {
                Ok(Some(container)) => {
                    tracing::info!(container = %name, pid = c.pid, "re-attached to a running container");
                    if c.status == NodeContainerStatus::Created
                        && let Some(cs) = self.t.st.container_mut(&name)
                    {
                        cs.status = NodeContainerStatus::Running;
                        cs.pid = c.pid;
                        cs.shim_pid = c.shim_pid;
                        cs.started_at.get_or_insert_with(|| self.t.inner.now());
                    }
                    self.t.save();
                    self.watch_container(&name, container);
                    for h in self.hooks.iter_mut() {
                        h.running(&mut self.t, &name, c.pid, true).await;
                    }
                }
                Ok(None) | Err(_) => {
                    let exit = driver
                        .exit_of(&c.runtime_id)
                        .await
                        .ok_or_else(|| "the container ended while the agent was away".to_string());
                    let ev = Box::new(Event::Exited(name.clone(), exit));
                    let _ = self.t.events.send(ev).await;
                }
            }
        }
    }

    /// Start every container whose dependencies are met.
    async fn start_ready(&mut self) -> Result<(), String> {
        loop {
            let mut started_any = false;
            let names: Vec<String> = self
                .t
                .st
                .containers
                .iter()
                .filter(|c| c.status == NodeContainerStatus::Pulled)
                .map(|c| c.name.clone())
                .collect();
            for name in names {
                let Some(d) = self.t.def(&name) else {
                    continue;
                };
                let limit = Duration::from_secs(d.start_timeout.unwrap_or(180).max(1) as u64);
                if !deps_ready(&self.t.st, d)? {
                    if self.elapsed() > limit {
                        return Err(format!(
                            "DependencyConditionNotMet: container {name} timed out waiting for its dependencies ({}s)",
                            limit.as_secs()
                        ));
                    }
                    continue;
                }
                self.start_container(name).await?;
                started_any = true;
            }
            if !started_any {
                return Ok(());
            }
        }
    }

    /// Container `name` as its definition and image say, before the hooks shape it.
    fn launch(&self, name: String) -> Result<Launch, String> {
        let d = self
            .t
            .def(&name)
            .ok_or_else(|| format!("CannotStartContainerError: no container {name}"))?;
        let task_id = self.t.id();
        let image =
            self.t.images.get(&name).cloned().ok_or_else(|| {
                format!("CannotStartContainerError: image of {name} is not ready")
            })?;
        let spec = container_spec(
            d,
            None,
            &image.config,
            &image.rootfs,
            &format!("/berth/{task_id}/{name}"),
        )
        .map_err(|e| format!("CannotStartContainerError: {}", e.0))?;
        Ok(Launch {
            id: runtime_id(&task_id, &name),
            name,
            image,
            spec,
            endpoint: None,
            bindings: Vec::new(),
        })
    }

    async fn start_container(&mut self, name: String) -> Result<(), String> {
        let mut l = match self.launch(name.clone()) {
            Ok(l) => l,
            Err(reason) => return self.not_started(&name, None, reason).await,
        };
        for h in self.hooks.iter_mut() {
            if let Err(reason) = h.create(&mut self.t, &mut l).await {
                return self.not_started(&name, Some(&l), reason).await;
            }
        }
        if let Some(c) = self.t.st.container_mut(&name) {
            c.status = NodeContainerStatus::Created;
            c.endpoint = l
                .endpoint
                .as_ref()
                .map(|e| serde_json::to_value(e).unwrap_or_default());
            c.bindings = l.bindings.clone();
        }
        self.t.save();
        tracing::debug!(elapsed = ?self.elapsed(), container = %name, "starting");
        let driver = self.t.inner.driver.clone();
        let container = match driver.start(&l.id, &l.image.rootfs, &l.spec).await {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("CannotStartContainerError: {}", e.message());
                return self.not_started(&name, Some(&l), reason).await;
            }
        };
        let pid = container.pid;
        let now = self.t.inner.now();
        if let Some(c) = self.t.st.container_mut(&name) {
            c.status = NodeContainerStatus::Running;
            c.pid = pid;
            c.shim_pid = container.shim_pid;
            c.started_at = Some(now);
        }
        for h in self.hooks.iter_mut() {
            h.running(&mut self.t, &name, pid, false).await;
        }
        self.t.save();
        self.watch_container(&name, container);
        tracing::info!(container = %name, pid, elapsed = ?self.elapsed(), "container started");
        if self.t.st.status == Some(TaskStatus::Running) {
            self.report_container(&name).await;
        }
        Ok(())
    }

    /// A container could not start: the hooks take back what they made for it (in reverse
    /// order), and the task fails with `reason`.
    async fn not_started(
        &mut self,
        name: &str,
        l: Option<&Launch>,
        reason: String,
    ) -> Result<(), String> {
        if let Some(l) = l {
            for h in self.hooks.iter_mut().rev() {
                h.undo(&mut self.t, l).await;
            }
        }
        if let Some(c) = self.t.st.container_mut(name) {
            c.status = NodeContainerStatus::Pulled;
            c.endpoint = None;
            c.bindings.clear();
            c.reason = Some(reason.clone());
        }
        self.t.save();
        Err(reason)
    }

    fn watch_container(&self, name: &str, mut c: Container) {
        let tx = self.t.events.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let r = c.wait().await.map_err(|e| e.to_string());
            let _ = tx.send(Box::new(Event::Exited(name, r))).await;
        });
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
                for h in self.hooks.iter_mut() {
                    h.exited(&mut self.t, &name).await;
                }
                self.kill_at.remove(&name);
                let now = self.t.inner.now();
                if let Some(c) = self.t.st.container_mut(&name) {
                    c.status = NodeContainerStatus::Stopped;
                    c.exit_code = code;
                    if reason.is_some() {
                        c.reason = reason;
                    }
                    c.finished_at = Some(now);
                    c.endpoint = None;
                }
                self.t.save();
                let essential = self
                    .t
                    .def(&name)
                    .map(|d| d.essential.unwrap_or(true))
                    .unwrap_or(true);
                if !self.stopping {
                    if essential {
                        self.begin_stop(Some("Essential container in task exited".into()));
                    } else if self.t.st.status == Some(TaskStatus::Running) {
                        self.report_container(&name).await;
                    }
                }
            }
            Event::Health(name, status) => {
                let changed = self
                    .t
                    .st
                    .container_mut(&name)
                    .map(|c| {
                        let ch = c.health.as_deref() != Some(status.as_str());
                        c.health = Some(status.clone());
                        ch
                    })
                    .unwrap_or(false);
                if changed {
                    self.t.save();
                    self.publish_health().await;
                }
            }
        }
    }

    async fn publish_health(&self) {
        let st = &self.t.st;
        let now = self.t.inner.now();
        let containers = st
            .containers
            .iter()
            .filter(|c| c.health.is_some())
            .map(|c| ContainerHealth {
                container_name: Some(c.name.clone()),
                health_status: c.health.clone(),
                status_since: Some(now),
                ..Default::default()
            })
            .collect();
        let req = PublishHealthRequest {
            tasks: Some(vec![TaskHealth {
                task_arn: Some(st.arn.clone()),
                cluster_arn: Some(st.cluster_arn.clone()),
                task_definition_family: st.payload.family.clone(),
                task_definition_version: st.payload.version.clone(),
                containers: Some(containers),
            }]),
            timestamp: Some(now),
            ..Default::default()
        };
        if let Err(e) = self.t.inner.backend.publish_health(req).await {
            tracing::warn!("publishing health: {e}");
        }
    }

    /// Give up on starting the task.
    fn fail(&mut self, reason: String) {
        tracing::warn!(task = %self.t.st.arn, "{reason}");
        if self.t.st.stopping_reason.is_none() {
            self.t.st.stopping_reason = Some(reason.clone());
        }
        self.begin_stop(Some(reason));
    }

    fn begin_stop(&mut self, reason: Option<String>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if self.t.st.stopping_reason.is_none() {
            self.t.st.stopping_reason = reason;
        }
        self.report_stopping = self.t.st.containers.iter().any(|c| c.started_at.is_some());
        // Containers that never started are done.
        for c in &mut self.t.st.containers {
            if c.status.not_started() {
                c.status = NodeContainerStatus::Stopped;
            }
        }
        self.t.save();
    }

    /// Signal the running containers that no other running container depends on; SIGKILL
    /// those whose stop timeout has passed.
    async fn signal_next(&mut self) {
        let running = self.live_containers();
        let now = self.t.inner.cfg.clock.instant();
        let driver = self.t.inner.driver.clone();
        for name in &running {
            let Some(c) = self.t.st.container(name) else {
                continue;
            };
            let (rid, pid) = (c.runtime_id.clone(), c.pid);
            if let Some(at) = self.kill_at.get(name) {
                if *at <= now {
                    tracing::info!(container = %name, "stop timeout passed: SIGKILL");
                    driver.signal(&rid, pid, Signal::SIGKILL).await;
                    self.kill_at
                        .insert(name.clone(), now + Duration::from_secs(3600));
                }
                continue;
            }
            let needed = running.iter().any(|other| {
                other != name
                    && self
                        .t
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
                .t
                .def(name)
                .and_then(|d| d.stop_timeout)
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(self.t.inner.cfg.stop_timeout);
            driver.signal(&rid, pid, Signal::SIGTERM).await;
            self.kill_at.insert(name.clone(), now + timeout);
        }
    }

    fn changes(&self) -> Vec<ContainerStateChange> {
        self.t
            .st
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
        self.t.st.status = Some(TaskStatus::Running);
        self.t.save();
        let st = &self.t.st;
        let req = SubmitTaskStateChangeRequest {
            cluster: Some(st.cluster_arn.clone()),
            task: Some(st.arn.clone()),
            status: Some("RUNNING".into()),
            containers: Some(self.changes()),
            pull_started_at: st.pull_started_at,
            pull_stopped_at: st.pull_stopped_at,
            ..Default::default()
        };
        self.t.inner.submit_task(req).await;
        tracing::debug!(elapsed = ?self.elapsed(), "RUNNING reported");
    }

    async fn report_container(&self, name: &str) {
        let st = &self.t.st;
        let Some(c) = st.container(name) else {
            return;
        };
        let req = SubmitContainerStateChangeRequest {
            cluster: Some(st.cluster_arn.clone()),
            task: Some(st.arn.clone()),
            container_name: Some(c.name.clone()),
            runtime_id: Some(c.runtime_id.clone()),
            status: Some(reported_status(c).into()),
            exit_code: c.exit_code,
            reason: c.reason.clone(),
            network_bindings: Some(c.bindings.clone()),
        };
        if let Err(e) = self
            .t
            .inner
            .backend
            .submit_container_state_change(req)
            .await
        {
            tracing::warn!(container = %name, "reporting container state: {e}");
        }
    }

    /// Everything has stopped: the hooks release what the task held (in reverse order), the
    /// driver cleans up after the containers, then STOPPED is reported.
    async fn finish(mut self) {
        for h in self.hooks.iter_mut().rev() {
            h.finish(&mut self.t).await;
        }
        let driver = self.t.inner.driver.clone();
        for c in &self.t.st.containers {
            driver.cleanup(&c.runtime_id).await;
        }
        let id = self.t.id();
        self.t.st.status = Some(TaskStatus::Stopped);
        self.t.save();
        let st = &self.t.st;
        let req = SubmitTaskStateChangeRequest {
            cluster: Some(st.cluster_arn.clone()),
            task: Some(st.arn.clone()),
            status: Some("STOPPED".into()),
            reason: st.stopping_reason.clone(),
            containers: Some(self.changes()),
            pull_started_at: st.pull_started_at,
            pull_stopped_at: st.pull_stopped_at,
            execution_stopped_at: Some(self.t.inner.now()),
            ..Default::default()
        };
        if self.t.inner.submit_task(req).await {
            self.t.inner.states.remove(&id);
        }
        self.t.inner.forget(&self.t.st.arn);
        tracing::info!(task = %self.t.st.arn, "task stopped");
    }
}
