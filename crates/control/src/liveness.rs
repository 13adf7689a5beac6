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
//! What is heard lives in memory (it changes with every frame); what it means
//! (`agentConnected`, stopped tasks) is written to the store on each change only. After a
//! server restart every agent gets a full timeout from the start to reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use berth_model::status::stop_code;

use crate::view::instance_id_of;
use crate::{Control, ControlError, Result, keys, now};

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
}

/// One open agent session; dropping it closes the session's presence.
pub struct AgentSession {
    presence: Arc<Presence>,
    epoch: Instant,
}

impl AgentSession {
    /// The agent sent something: it is alive.
    pub fn heard(&self) {
        self.presence
            .last_heard
            .store(ms_since(self.epoch), Ordering::Relaxed);
    }

    /// Time since the agent last sent anything.
    pub fn silent_for(&self) -> Duration {
        let last = self.presence.last_heard.load(Ordering::Relaxed);
        Duration::from_millis(ms_since(self.epoch).saturating_sub(last))
    }
}

impl Drop for AgentSession {
    fn drop(&mut self) {
        self.presence.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

fn ms_since(epoch: Instant) -> u64 {
    // Never 0, so that 0 can mean "never".
    epoch.elapsed().as_millis() as u64 + 1
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
        let cname = self.cluster_name_of(Some(cluster))?.to_string();
        let id = instance_id_of(instance_arn)
            .ok_or_else(|| {
                ControlError::invalid(format!("Invalid container instance ARN: {instance_arn}"))
            })?
            .to_string();
        let p = self.presence(&cname, &id);
        p.sessions.fetch_add(1, Ordering::Relaxed);
        let s = AgentSession {
            presence: p,
            epoch: self.epoch,
        };
        s.heard();
        s.presence.disconnected_at.store(0, Ordering::Relaxed);
        self.set_agent_connected(&cname, &id, true).await?;
        Ok(s)
    }

    /// Write `agentConnected` unless it already says so.
    async fn set_agent_connected(&self, cluster: &str, id: &str, up: bool) -> Result<()> {
        let already = self
            .view
            .data
            .read()
            .instances
            .get(cluster)
            .and_then(|m| m.get(id))
            .map(|e| e.value.agent_connected == Some(up));
        match already {
            None => Err(ControlError::invalid(format!(
                "Container instance {id} is not registered in cluster {cluster}."
            ))),
            Some(true) => Ok(()),
            Some(false) => {
                self.modify(
                    &keys::instance(cluster, id),
                    |d| d.instances.get(cluster)?.get(id).cloned(),
                    || ControlError::invalid("The referenced container instance was not found."),
                    |ci| {
                        ci.agent_connected = Some(up);
                        Ok(())
                    },
                )
                .await?;
                tracing::info!(%cluster, instance = %id, connected = up, "agent connection changed");
                Ok(())
            }
        }
    }

    /// One pass of the liveness check over every instance.
    pub async fn check_liveness(&self) -> Result<()> {
        let l = self.liveness;
        let now_ms = ms_since(self.epoch);
        let timeout = l.agent_timeout.as_millis() as u64;
        let grace = l.lost_grace.as_millis() as u64;
        let mut work: Vec<(String, String, Verdict)> = Vec::new();
        {
            let d = self.view.data.read();
            let presence = self.presence.lock();
            for (cluster, m) in &d.instances {
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
                    } else if !connected && d.unfinished.contains_key(&key) {
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
                Verdict::Connected => self.set_agent_connected(&cluster, &id, true).await,
                Verdict::Disconnected => {
                    self.presence(&cluster, &id)
                        .disconnected_at
                        .store(now_ms, Ordering::Relaxed);
                    self.set_agent_connected(&cluster, &id, false).await
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
            .unfinished
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
                |d| d.tasks.get(cluster)?.get(tid.as_str()).map(|e| e.entry()),
                || ControlError::invalid("The referenced task was not found."),
                |r| {
                    let t = &mut r.task;
                    if t.last_status.as_deref() == Some("STOPPED") {
                        return Ok(());
                    }
                    let at = now();
                    t.desired_status = Some("STOPPED".into());
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
