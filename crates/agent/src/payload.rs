//! What the control plane sends the agent: payloads — tasks to run (recorded, then a runner
//! each), tasks to stop (their runners told), tasks it does not run here (reported stopped),
//! and on a session's first payload a reconciliation with what runs here — and refreshes of
//! task roles' credentials. Payloads and the credentials they carry are acknowledged.
//!
//! Must not: start a task twice, or again after it ended here.

use std::sync::Arc;

use berth_model::wire::acs::{AckRequest, IAMRoleCredentialsMessage, PayloadMessage};
use berth_model::wire::ecs::SubmitTaskStateChangeRequest;

use crate::Inner;
use crate::credentials;
use crate::state::TaskState;

impl Inner {
    /// The first payload of a session lists every task the control plane wants on this node:
    /// reconcile with what runs here. Tasks it does not list (stopped meanwhile, e.g. after
    /// the node was lost, or unknown to it) are stopped; finished tasks whose final report
    /// did not get through are reported again.
    pub(crate) fn reconcile(self: &Arc<Self>, msg: &PayloadMessage) {
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
    pub(crate) fn report_stopped(self: &Arc<Self>, cluster_arn: &str, arn: String) {
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

    pub(crate) async fn handle_payload(self: &Arc<Self>, msg: PayloadMessage) {
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
    pub(crate) async fn handle_credentials(&self, msg: IAMRoleCredentialsMessage) {
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
