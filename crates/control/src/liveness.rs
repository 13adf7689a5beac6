//! Node liveness: which agents are in session, `agentConnected` kept true to that, and the
//! tasks of instances that stay away marked STOPPED so that services replace them.
//!
//! An agent session ([`Control::session_opened`]) notes every frame the agent sends
//! ([`AgentSession::heard`]); the server sends a heartbeat every
//! [`Liveness::heartbeat_interval`] and the agent acknowledges it. A loop checks every
//! instance: nothing heard for [`Liveness::agent_timeout`] → `agentConnected: false` (the
//! scheduler then places nothing there: `AGENT`); still disconnected after
//! [`Liveness::lost_grace`] → its unfinished tasks become STOPPED with stopCode
//! `TerminationNotice`. An agent that comes back is connected again at once and reconciles
//! (its first payload lists only what should still run).
//!
//! A session that ends — the agent closes it, its connection goes, or the server closes it —
//! is handed back with [`Control::session_closed`]: unless another session of the instance is
//! open (a reconnect that overtook the close), the instance is disconnected then, not after
//! the timeout. Opening and closing one instance's sessions is serialized, so a close never
//! writes `false` over a reconnect that raced it. A session that is only dropped (the server
//! is stopping) leaves the instance to the timeout.
//!
//! What is heard lives in memory (it changes with every frame); what it means
//! (`agentConnected`, stopped tasks) is written to the store on each change only. After a
//! server restart every agent gets a full timeout from the start to reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_clock::{Clock, Instant};
use berth_model::status::{DesiredStatus, TaskStatus, stop_code};
use berth_model::wire::ecs::VersionInfo;

use crate::view::instance_id_of;
use crate::{Control, ControlError, Result, keys};

/// Timers of node liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// How often the server sends each agent a heartbeat (the agent acknowledges it).
    pub heartbeat_interval: Duration,
    /// Nothing heard from an agent for this long: it is disconnected.
    pub agent_timeout: Duration,
    /// Disconnected for this long: its tasks are marked STOPPED.
    pub lost_grace: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            heartbeat_interval: Duration::from_secs(5),
            agent_timeout: Duration::from_secs(12),
            lost_grace: Duration::from_secs(60),
        }
    }
}

/// What the server has heard from one container instance's agent.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    /// Milliseconds since the control plane started; 0: never.
    last_heard: AtomicU64,
    /// When this server saw it disconnected (ms since start, 0: not seen so).
    disconnected_at: AtomicU64,
    sessions: AtomicUsize,
    /// Held while one of the instance's sessions opens or closes, its `agentConnected`
    /// written included.
    gate: tokio::sync::Mutex<()>,
}

/// One open agent session. Hand it back with [`Control::session_closed`] when it ends;
/// dropping it only forgets it (the instance is then left to the liveness timeout).
pub struct AgentSession {
    presence: Arc<Presence>,
    clock: Clock,
    epoch: Instant,
    cluster: String,
    id: String,
}

impl AgentSession {
    /// The agent sent something: it is alive.
    pub fn heard(&self) {
        self.presence
            .last_heard
            .store(ms_since(&self.clock, self.epoch), Ordering::Relaxed);
    }

    /// Time since the agent last sent anything.
    pub fn silent_for(&self) -> Duration {
        let last = self.presence.last_heard.load(Ordering::Relaxed);
        Duration::from_millis(ms_since(&self.clock, self.epoch).saturating_sub(last))
    }
}

impl Drop for AgentSession {
    fn drop(&mut self) {
        self.presence.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

fn ms_since(clock: &Clock, epoch: Instant) -> u64 {
    // Never 0, so that 0 can mean "never".
    clock.elapsed(epoch).as_millis() as u64 + 1
}

/// What the liveness check decided for one instance.
#[derive(Debug, PartialEq)]
enum Verdict {
    Connected,
    Disconnected,
    Lost,
}

impl Control {
    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    fn presence(&self, cluster: &str, id: &str) -> Arc<Presence> {
        self.presence
            .lock()
            .entry((cluster.to_string(), id.to_string()))
            .or_default()
            .clone()
    }

    /// An agent opened its session for `instance_arn`: it is connected from now on.
    pub async fn session_opened(&self, cluster: &str, instance_arn: &str) -> Result<AgentSession> {
        self.session_opened_with_version(cluster, instance_arn, None)
            .await
    }

    /// [`Control::session_opened`], with what the agent said of its versions when it opened
    /// the session (the stock ECS agent says it only there: `agentVersion`, `agentHash` and
    /// `dockerVersion` in the `/ws` query). They become the instance's `versionInfo`, each
    /// member given replacing the one stored, as RegisterContainerInstance's `versionInfo`
    /// does.
    pub async fn session_opened_with_version(
        &self,
        cluster: &str,
        instance_arn: &str,
        version: Option<&VersionInfo>,
    ) -> Result<AgentSession> {
        let cname = self.cluster_name_of(Some(cluster))?.to_string();
        let id = instance_id_of(instance_arn)
            .ok_or_else(|| {
                ControlError::invalid(format!("Invalid container instance ARN: {instance_arn}"))
            })?
            .to_string();
        let p = self.presence(&cname, &id);
        let _gate = p.gate.lock().await;
        p.sessions.fetch_add(1, Ordering::Relaxed);
        let s = AgentSession {
            presence: p.clone(),
            clock: self.clock,
            epoch: self.epoch,
            cluster: cname,
            id,
        };
        s.heard();
        p.disconnected_at.store(0, Ordering::Relaxed);
        self.write_presence(&s.cluster, &s.id, true, version)
            .await?;
        Ok(s)
    }

    /// An agent session ended: the agent closed it, its connection went, or the server
    /// closed it. Unless another session of the instance is open, the instance is
    /// disconnected now (nothing more is placed there; its tasks are stopped after
    /// [`Liveness::lost_grace`], as for any disconnected instance). Whether it was.
    pub async fn session_closed(&self, s: AgentSession) -> Result<bool> {
        let p = s.presence.clone();
        let _gate = p.gate.lock().await;
        let (cluster, id) = (s.cluster.clone(), s.id.clone());
        drop(s);
        if p.sessions.load(Ordering::Relaxed) > 0 {
            return Ok(false);
        }
        // The grace counts from the first sign of absence: a liveness check may have seen
        // the silence before the session was closed for it.
        let _ = p.disconnected_at.compare_exchange(
            0,
            ms_since(&self.clock, self.epoch),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.write_presence(&cluster, &id, false, None).await?;
        Ok(true)
    }

    /// Write `agentConnected` and what the agent reported of its versions, unless the
    /// instance already says so.
    async fn write_presence(
        &self,
        cluster: &str,
        id: &str,
        up: bool,
        version: Option<&VersionInfo>,
    ) -> Result<()> {
        let (already, new_version) = {
            let d = self.view.data.read();
            let Some(e) = d.instances().get(cluster).and_then(|m| m.get(id)) else {
                return Err(ControlError::invalid(format!(
                    "Container instance {id} is not registered in cluster {cluster}."
                )));
            };
            (
                e.value.agent_connected == Some(up),
                version.and_then(|v| merged_version_info(e.value.version_info.as_ref(), v)),
            )
        };
        if already && new_version.is_none() {
            return Ok(());
        }
        self.modify(
            &keys::instance(cluster, id),
            |d| d.instances().get(cluster)?.get(id).cloned(),
            || ControlError::invalid("The referenced container instance was not found."),
            |ci| {
                ci.agent_connected = Some(up);
                if let Some(v) =
                    version.and_then(|v| merged_version_info(ci.version_info.as_ref(), v))
                {
                    ci.version_info = Some(v);
                }
                Ok(())
            },
        )
        .await?;
        if !already {
            tracing::info!(%cluster, instance = %id, connected = up, "agent connection changed");
        }
        if let Some(v) = new_version {
            tracing::info!(%cluster, instance = %id, version = ?v, "agent versions recorded");
        }
        Ok(())
    }

    /// One pass of the liveness check over every instance.
    pub async fn check_liveness(&self) -> Result<()> {
        let l = self.liveness;
        let now_ms = ms_since(&self.clock, self.epoch);
        let timeout = l.agent_timeout.as_millis() as u64;
        let grace = l.lost_grace.as_millis() as u64;
        let mut work: Vec<(String, String, Verdict)> = Vec::new();
        {
            let d = self.view.data.read();
            let presence = self.presence.lock();
            for (cluster, m) in d.instances() {
                for (id, e) in m {
                    let ci = &e.value;
                    if ci.status.as_deref() == Some("INACTIVE") {
                        continue;
                    }
                    let key = (cluster.clone(), id.clone());
                    let p = presence.get(&key);
                    let last = p
                        .map(|p| p.last_heard.load(Ordering::Relaxed))
                        .filter(|v| *v > 0)
                        .unwrap_or(1);
                    let fresh = now_ms.saturating_sub(last) <= timeout;
                    let in_session = p.is_some_and(|p| p.sessions.load(Ordering::Relaxed) > 0);
                    let connected = ci.agent_connected == Some(true);
                    if connected && !fresh {
                        work.push((cluster.clone(), id.clone(), Verdict::Disconnected));
                    } else if !connected && fresh && in_session {
                        work.push((cluster.clone(), id.clone(), Verdict::Connected));
                    } else if !connected && d.unfinished().contains_key(&key) {
                        let since = p
                            .map(|p| p.disconnected_at.load(Ordering::Relaxed))
                            .filter(|v| *v > 0)
                            .unwrap_or(1);
                        if now_ms.saturating_sub(since) > grace {
                            work.push((cluster.clone(), id.clone(), Verdict::Lost));
                        }
                    }
                }
            }
        }
        for (cluster, id, v) in work {
            let r = match v {
                Verdict::Connected => self.write_presence(&cluster, &id, true, None).await,
                Verdict::Disconnected => {
                    self.presence(&cluster, &id)
                        .disconnected_at
                        .store(now_ms, Ordering::Relaxed);
                    self.write_presence(&cluster, &id, false, None).await
                }
                Verdict::Lost => self.stop_lost_tasks(&cluster, &id).await,
            };
            if let Err(e) = r {
                tracing::warn!(%cluster, instance = %id, "liveness: {e}");
            }
        }
        Ok(())
    }

    /// Mark every unfinished task of a lost instance STOPPED.
    async fn stop_lost_tasks(&self, cluster: &str, id: &str) -> Result<()> {
        let ids: Vec<String> = self
            .view
            .data
            .read()
            .unfinished()
            .get(&(cluster.to_string(), id.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let grace = self.liveness.lost_grace.as_secs();
        let reason = format!(
            "Task stopped because its container instance {id} was lost: its agent has been \
             disconnected for more than {grace} s."
        );
        tracing::warn!(%cluster, instance = %id, tasks = ids.len(), "container instance lost; stopping its tasks");
        let task_keys: Vec<String> = ids.iter().map(|t| keys::task(cluster, t)).collect();
        let stops = ids.iter().zip(&task_keys).map(|(tid, key)| {
            self.modify(
                key,
                |d| d.tasks().get(cluster)?.get(tid.as_str()).map(|e| e.entry()),
                || ControlError::invalid("The referenced task was not found."),
                |r| {
                    let t = &mut r.task;
                    if TaskStatus::of(t.last_status.as_deref()) == Some(TaskStatus::Stopped) {
                        return Ok(());
                    }
                    let at = self.now().as_secs_f64();
                    t.desired_status = Some(DesiredStatus::Stopped.into());
                    t.stop_code = Some(stop_code::TERMINATION_NOTICE.into());
                    t.stopped_reason = Some(reason.clone());
                    t.stopping_at.get_or_insert(at);
                    t.version = Some(t.version.unwrap_or(0) + 1);
                    crate::tasks::finish(t, at);
                    Ok(())
                },
            )
        });
        // Concurrent commits share the store's group commit.
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                tracing::warn!(%cluster, instance = %id, "stopping a lost task: {e}");
            }
        }
        Ok(())
    }

    /// Run the liveness check until the control plane is dropped.
    pub(crate) fn spawn_liveness(c: Weak<Control>) {
        tokio::spawn(async move {
            let period = {
                let Some(c) = c.upgrade() else { return };
                (c.liveness.agent_timeout / 4)
                    .clamp(Duration::from_millis(100), Duration::from_secs(1))
            };
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(c) = c.upgrade() else { return };
                if let Err(e) = c.check_liveness().await {
                    tracing::warn!("liveness check: {e}");
                }
            }
        });
    }
}

/// The presence table of a control plane.
pub(crate) type PresenceTable = parking_lot::Mutex<HashMap<(String, String), Arc<Presence>>>;

/// `stored` with each member `reported` gives (and not empty) in its place; `None` when that
/// changes nothing.
fn merged_version_info(
    stored: Option<&VersionInfo>,
    reported: &VersionInfo,
) -> Option<VersionInfo> {
    let mut v = stored.cloned().unwrap_or_default();
    let mut changed = false;
    for (to, from) in [
        (&mut v.agent_version, &reported.agent_version),
        (&mut v.agent_hash, &reported.agent_hash),
        (&mut v.docker_version, &reported.docker_version),
    ] {
        if let Some(f) = from.as_deref().filter(|f| !f.is_empty())
            && to.as_deref() != Some(f)
        {
            *to = Some(f.to_string());
            changed = true;
        }
    }
    changed.then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::wire::ecs::{
        ContainerDefinition, PlacementConstraint, RegisterContainerInstanceRequest,
        RegisterTaskDefinitionRequest, Resource, RunTaskRequest,
    };

    /// A control plane whose liveness timers never fire during a test: whatever changes
    /// `agentConnected` here is the session's opening or closing.
    async fn control() -> Arc<Control> {
        control_with(Liveness {
            heartbeat_interval: Duration::from_secs(3600),
            agent_timeout: Duration::from_secs(3600),
            lost_grace: Duration::from_secs(3600),
        })
        .await
    }

    /// A control plane with these liveness timers, task definition `w` and one instance.
    async fn control_with(liveness: Liveness) -> Arc<Control> {
        let cfg = crate::ControlConfig {
            liveness,
            ..Default::default()
        };
        let c = Control::open(cfg, Arc::new(berth_store::MemStore::new()))
            .await
            .unwrap();
        let resource = |name: &str, v: i32| Resource {
            name: Some(name.into()),
            r#type: Some("INTEGER".into()),
            integer_value: Some(v),
            ..Default::default()
        };
        c.register_task_definition(
            RegisterTaskDefinitionRequest {
                family: Some("w".into()),
                container_definitions: Some(vec![ContainerDefinition {
                    name: Some("a".into()),
                    image: Some("busybox".into()),
                    memory: Some(16),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            "me",
        )
        .await
        .unwrap();
        c.register_container_instance(RegisterContainerInstanceRequest {
            total_resources: Some(vec![resource("CPU", 1024), resource("MEMORY", 4096)]),
            ..Default::default()
        })
        .await
        .unwrap();
        c
    }

    fn the_instance(c: &Control) -> (String, Option<bool>, Option<VersionInfo>) {
        let d = c.view.data.read();
        let e = d.instances()["default"].values().next().unwrap();
        (
            e.value.container_instance_arn.clone().unwrap(),
            e.value.agent_connected,
            e.value.version_info.clone(),
        )
    }

    /// RunTask with `memberOf(agentConnected==true)`: the failure reason, if it placed
    /// nothing.
    async fn placed(c: &Control) -> std::result::Result<(), String> {
        let r = c
            .run_task(RunTaskRequest {
                task_definition: Some("w".into()),
                placement_constraints: Some(vec![PlacementConstraint {
                    r#type: Some("memberOf".into()),
                    expression: Some("agentConnected == true".into()),
                }]),
                ..Default::default()
            })
            .await
            .unwrap();
        match r.failures.unwrap_or_default().first() {
            None => Ok(()),
            Some(f) => Err(f.reason.clone().unwrap_or_default()),
        }
    }

    /// The liveness loop on a paused clock, with ECS's timers (12 s without a word:
    /// disconnected; 60 s more: its tasks stop): minutes of an agent's life in no real time.
    #[tokio::test(start_paused = true)]
    async fn a_silent_agent_is_disconnected_then_its_tasks_are_stopped() {
        let l = Liveness::default();
        let c = control_with(l).await;
        let (arn, ..) = the_instance(&c);
        let s = c.session_opened("default", &arn).await.unwrap();
        assert_eq!(placed(&c).await, Ok(()));
        let task = |c: &Control| {
            let d = c.view.data.read();
            let e = d.tasks()["default"].values().next().unwrap();
            (e.summary.desired_status.as_str(), e.record().task.stop_code)
        };
        // An agent that keeps talking stays connected however long it lives.
        for _ in 0..24 {
            tokio::time::sleep(l.heartbeat_interval).await;
            s.heard();
        }
        assert_eq!(the_instance(&c).1, Some(true));
        assert_eq!(s.silent_for(), Duration::ZERO);
        // Silent for less than the timeout: still connected.
        tokio::time::sleep(l.agent_timeout - Duration::from_secs(1)).await;
        assert_eq!(the_instance(&c).1, Some(true));
        assert_eq!(s.silent_for(), l.agent_timeout - Duration::from_secs(1));
        // Past it (the check runs every 3 s; the sleeps here end between its runs):
        // disconnected, nothing more is placed there, but its task is left alone for the grace.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(the_instance(&c).1, Some(false));
        assert_eq!(placed(&c).await, Err("AGENT".into()));
        assert_eq!(task(&c), ("RUNNING", None));
        tokio::time::sleep(l.lost_grace - Duration::from_secs(8)).await;
        assert_eq!(task(&c), ("RUNNING", None), "within the grace");
        // Lost: its task stops, as ECS stops a lost instance's.
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(
            task(&c),
            ("STOPPED", Some(stop_code::TERMINATION_NOTICE.to_string()))
        );
        // An agent that comes back is connected at once.
        s.heard();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(the_instance(&c).1, Some(true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_session_disconnects_at_once_unless_another_is_open() {
        let c = control().await;
        let (arn, ..) = the_instance(&c);
        let first = c.session_opened("default", &arn).await.unwrap();
        let second = c.session_opened("default", &arn).await.unwrap();
        assert!(!c.session_closed(first).await.unwrap(), "another is open");
        assert_eq!(the_instance(&c).1, Some(true));
        assert_eq!(placed(&c).await, Ok(()));
        assert!(c.session_closed(second).await.unwrap());
        assert_eq!(the_instance(&c).1, Some(false), "long before the timeout");
        assert_eq!(placed(&c).await, Err("AGENT".into()));
        // It counts as away from the close on: the lost-instance grace starts there.
        let p = c.presence("default", arn.rsplit('/').next().unwrap());
        assert!(p.disconnected_at.load(Ordering::Relaxed) > 0);
        // A session that is only dropped (a stopping server) changes nothing.
        drop(c.session_opened("default", &arn).await.unwrap());
        assert_eq!(the_instance(&c).1, Some(true));
        assert!(p.disconnected_at.load(Ordering::Relaxed) == 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reconnect_racing_the_close_stays_connected() {
        let c = control().await;
        let (arn, ..) = the_instance(&c);
        let mut open = c.session_opened("default", &arn).await.unwrap();
        for _ in 0..50 {
            let (closed, reopened) =
                tokio::join!(c.session_closed(open), c.session_opened("default", &arn));
            closed.unwrap();
            open = reopened.unwrap();
            assert_eq!(the_instance(&c).1, Some(true));
        }
        assert!(c.session_closed(open).await.unwrap());
        assert_eq!(the_instance(&c).1, Some(false));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn versions_said_on_opening_become_version_info() {
        let c = control().await;
        let (arn, _, before) = the_instance(&c);
        assert_eq!(before, None);
        let said = VersionInfo {
            agent_version: Some("1.97.1".into()),
            agent_hash: Some("5e3ea8a2".into()),
            docker_version: Some("DockerVersion: 25.0.5".into()),
        };
        let s = c
            .session_opened_with_version("default", &arn, Some(&said))
            .await
            .unwrap();
        assert_eq!(the_instance(&c).2.as_ref(), Some(&said));
        c.session_closed(s).await.unwrap();
        // A later session that says less keeps what is known; what it says replaces it.
        let less = VersionInfo {
            agent_version: Some("1.98.0".into()),
            agent_hash: Some(String::new()),
            docker_version: None,
        };
        c.session_opened_with_version("default", &arn, Some(&less))
            .await
            .unwrap();
        let now = the_instance(&c).2.unwrap();
        assert_eq!(now.agent_version.as_deref(), Some("1.98.0"));
        assert_eq!(now.agent_hash, said.agent_hash);
        assert_eq!(now.docker_version, said.docker_version);
    }

    #[test]
    fn merging_version_info_says_when_nothing_changes() {
        let v = VersionInfo {
            agent_version: Some("1".into()),
            ..Default::default()
        };
        assert_eq!(merged_version_info(None, &v), Some(v.clone()));
        assert_eq!(merged_version_info(Some(&v), &v), None);
        assert_eq!(merged_version_info(Some(&v), &VersionInfo::default()), None);
        assert_eq!(merged_version_info(None, &VersionInfo::default()), None);
    }
}
