//! The control plane's side of the agent boundary, in the ECS agent protocol's own messages:
//! [`Control::agent_feed`] turns the store's task records into ACS `PayloadMessage`s for one
//! container instance (a task placed on it, or its desired status changing), and the calls
//! an agent makes back besides `SubmitTaskStateChange`/`SubmitContainerStateChange`:
//! [`Control::publish_health`] (TCS `PublishHealth`) and [`Control::report_task_network`]
//! (the task's network interface, which on berth the node allocates).
//!
//! The feed is ordered and starts with every unfinished task of the instance, so an agent that
//! (re)connects learns the whole desired state before any change. After that first payload,
//! and every [`MANIFEST_INTERVAL`], it also carries a `TaskManifestMessage` (every task the
//! instance should have): the ECS agent stops a task it runs only when a payload says so or
//! when the server confirms a stop it proposes after a manifest
//! ([`Control::verify_task_stops`]), so this is how a stock agent learns what the server
//! stopped while it was away. berth's agents reconcile from the first payload and ignore it.

use berth_model::payload::task_to_acs;
use berth_model::status::{DesiredStatus, HealthStatus, TaskStatus};
use berth_model::wire::acs::{
    IAMRoleCredentialsMessage, PayloadMessage, TaskIdentifier, TaskManifestMessage,
    TaskStopVerificationAck, TaskStopVerificationMessage,
};
use berth_model::wire::ecs::{Attachment, KeyValuePair, NetworkInterface};
use berth_model::wire::tcs::PublishHealthRequest;
use tokio::sync::mpsc;

use crate::records::TaskRecord;
use crate::view::instance_id_of;
use crate::{Control, ControlError, Result, keys};

/// How often a session's feed repeats the task manifest.
pub const MANIFEST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// One message of an instance's feed.
#[derive(Debug, Clone)]
pub enum FeedMessage {
    Payload(PayloadMessage),
    Manifest(TaskManifestMessage),
    /// Fresh credentials of a task's role (ACS `IAMRoleCredentialsMessage`), sent before the
    /// ones the task holds expire.
    Credentials(IAMRoleCredentialsMessage),
}

/// What a node's network gave a task (awsvpc: its interface).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskNetwork {
    pub private_ipv4: String,
    pub mac: String,
    pub subnet: String,
}

impl Control {
    /// `DiscoverPollEndpoint`: check that the instance is registered in the cluster (the
    /// endpoint itself is the front door's own address, which only the API layer knows).
    pub fn discover_poll_endpoint(
        &self,
        req: berth_model::wire::ecs::DiscoverPollEndpointRequest,
    ) -> Result<()> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        if let Some(ci) = req.container_instance.as_deref() {
            let id = instance_id_of(ci).unwrap_or_default();
            let known = self
                .view
                .data
                .read()
                .instances()
                .get(&cname)
                .is_some_and(|m| m.contains_key(id));
            if !known {
                return Err(ControlError::invalid(format!(
                    "Container instance {ci} is not registered in cluster {cname}."
                )));
            }
        }
        Ok(())
    }

    /// Whether an agent session may open (or stay open) for an instance, in the terms of
    /// ACS's own refusals: `Err((error type, message))` with `InvalidClusterException`,
    /// `InvalidInstanceException` or `InactiveInstanceException` (a deregistered instance).
    pub fn session_allowed(
        &self,
        cluster: &str,
        instance: &str,
    ) -> std::result::Result<(), (&'static str, String)> {
        let Ok(cname) = self.cluster_name_of(Some(cluster)) else {
            return Err((
                "InvalidClusterException",
                format!("Invalid cluster {cluster}."),
            ));
        };
        let id = instance_id_of(instance).unwrap_or_default();
        let d = self.view.data.read();
        if !d.clusters().contains_key(cname) {
            return Err((
                "InvalidClusterException",
                format!("Cluster {cname} not found."),
            ));
        }
        match d.instances().get(cname).and_then(|m| m.get(id)) {
            None => Err((
                "InvalidInstanceException",
                format!("Container instance {instance} is not registered in cluster {cname}."),
            )),
            Some(e) if e.value.status.as_deref() == Some("INACTIVE") => Err((
                "InactiveInstanceException",
                format!("Container instance {instance} is deregistered (INACTIVE)."),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Follow the tasks placed on one container instance as ACS payloads. The receiver ends
    /// when the control plane does; dropping it stops the feed.
    ///
    /// The view routes each task write to the feeds of its instance, so a feed costs nothing
    /// while other instances' tasks change (10,000 agents do not each read every write).
    pub async fn agent_feed(
        self: &std::sync::Arc<Self>,
        cluster: &str,
        instance_arn: &str,
    ) -> Result<mpsc::Receiver<FeedMessage>> {
        let cname = self.cluster_name_of(Some(cluster))?.to_string();
        let inst = instance_id_of(instance_arn)
            .ok_or_else(|| {
                ControlError::invalid(format!("Invalid container instance ARN: {instance_arn}"))
            })?
            .to_string();
        let (initial, mut writes) = self.view.data.write().follow_instance(&cname, &inst);
        let (tx, rx) = mpsc::channel(256);
        let me = self.clone();
        let cluster_arn = self.part.cluster(&cname);
        let instance_arn = self.part.container_instance(&cname, &inst);
        let clock = self.clock;
        tokio::spawn(async move {
            // What each task's last payload said (desired status), so that only changes go out.
            let mut sent: std::collections::HashMap<String, String> = Default::default();
            // Sequence numbers grow across sessions too (the ECS agent keeps the highest it
            // saw, and takes a manifest only if its timeline is above it): the store revision
            // the view has applied, or one more than the last.
            let mut seq = 0i32;
            let mut next_seq = || {
                let applied = i32::try_from(me.view.applied()).unwrap_or(i32::MAX);
                seq = applied.max(seq.saturating_add(1));
                seq
            };
            let payload = |seq: i32, tasks: Vec<berth_model::wire::acs::Task>| {
                FeedMessage::Payload(PayloadMessage {
                    cluster_arn: Some(cluster_arn.clone()),
                    container_instance_arn: Some(instance_arn.clone()),
                    tasks: Some(tasks),
                    message_id: Some(berth_model::arn::new_uuid()),
                    seq_num: Some(seq),
                    generated_at: Some(clock.now().as_secs()),
                    ..Default::default()
                })
            };
            // Tasks holding role credentials, and when they were issued.
            let mut issued: std::collections::HashMap<String, berth_clock::Instant> =
                Default::default();
            let note = |issued: &mut std::collections::HashMap<String, berth_clock::Instant>,
                        t: &berth_model::wire::acs::Task| {
                if (t.role_credentials.is_some() || t.execution_role_credentials.is_some())
                    && let Some(a) = &t.arn
                {
                    issued.insert(a.clone(), clock.instant());
                }
            };
            let batch: Vec<_> = initial
                .iter()
                .filter_map(|r| me.payload_task(r, &mut sent))
                .collect();
            batch.iter().for_each(|t| note(&mut issued, t));
            if tx.send(payload(next_seq(), batch)).await.is_err() {
                return;
            }
            let mut manifests = tokio::time::interval(MANIFEST_INTERVAL);
            manifests.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Role credentials are renewed at half their life.
            let ttl = me.task_credentials_ttl;
            let mut renewals =
                tokio::time::interval((ttl / 10).max(std::time::Duration::from_secs(1)));
            renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    w = writes.recv() => {
                        let Some(first) = w else { return };
                        let mut tasks: Vec<_> =
                            me.payload_task(&first, &mut sent).into_iter().collect();
                        // Whatever else is already queued goes in the same payload.
                        while let Ok(r) = writes.try_recv() {
                            tasks.extend(me.payload_task(&r, &mut sent));
                        }
                        tasks.iter().for_each(|t| note(&mut issued, t));
                        if !tasks.is_empty() && tx.send(payload(next_seq(), tasks)).await.is_err() {
                            return;
                        }
                    }
                    _ = renewals.tick() => {
                        // Finished tasks need no more.
                        issued.retain(|arn, _| sent.contains_key(arn));
                        for (arn, at) in issued.iter_mut() {
                            if clock.elapsed(*at) < ttl / 2 {
                                continue;
                            }
                            *at = clock.instant();
                            for m in me.renew_credentials(&cname, arn) {
                                if tx.send(FeedMessage::Credentials(m)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    // The first tick is at once: a manifest right after the first payload.
                    _ = manifests.tick() => {
                        let m = me.task_manifest(&cluster_arn, &instance_arn, &cname, &inst, next_seq());
                        if tx.send(FeedMessage::Manifest(m)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Every task an instance should have (its unfinished tasks, with their desired status),
    /// as ACS's `TaskManifestMessage`.
    fn task_manifest(
        &self,
        cluster_arn: &str,
        instance_arn: &str,
        cluster: &str,
        inst: &str,
        timeline: i32,
    ) -> TaskManifestMessage {
        let d = self.view.data.read();
        let tasks = d
            .unfinished()
            .get(&(cluster.to_string(), inst.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let e = d.tasks().get(cluster)?.get(id)?;
                Some(TaskIdentifier {
                    task_arn: Some(e.summary.arn.clone()),
                    task_cluster_arn: Some(cluster_arn.to_string()),
                    desired_status: Some(e.summary.desired_status.into()),
                })
            })
            .collect();
        TaskManifestMessage {
            cluster_arn: Some(cluster_arn.to_string()),
            container_instance_arn: Some(instance_arn.to_string()),
            tasks: Some(tasks),
            generated_at: Some(self.now().as_secs()),
            message_id: Some(berth_model::arn::new_uuid()),
            timeline: Some(i64::from(timeline)),
        }
    }

    /// Answer an agent's `TaskStopVerificationMessage` (tasks it runs that a manifest did not
    /// list as RUNNING): the candidates the server agrees should stop, which are those that
    /// are not unfinished tasks of this instance with desired status RUNNING.
    pub fn verify_task_stops(
        &self,
        cluster: &str,
        instance_arn: &str,
        req: &TaskStopVerificationMessage,
    ) -> TaskStopVerificationAck {
        let cname = self.cluster_name_of(Some(cluster)).unwrap_or(cluster);
        let inst = instance_id_of(instance_arn).unwrap_or_default();
        let d = self.view.data.read();
        let wanted = |arn: &str| {
            let id = arn.rsplit('/').next().unwrap_or_default();
            d.unfinished()
                .get(&(cname.to_string(), inst.to_string()))
                .is_some_and(|s| s.contains(id))
                && d.tasks()
                    .get(cname)
                    .and_then(|m| m.get(id))
                    .is_some_and(|e| {
                        e.summary.arn == arn && e.summary.desired_status == DesiredStatus::Running
                    })
        };
        let stop_tasks = req
            .stop_candidates
            .iter()
            .flatten()
            .filter(|c| c.task_arn.as_deref().is_some_and(|a| !wanted(a)))
            .map(|c| TaskIdentifier {
                task_arn: c.task_arn.clone(),
                task_cluster_arn: c.task_cluster_arn.clone(),
                desired_status: Some(DesiredStatus::Stopped.into()),
            })
            .collect();
        TaskStopVerificationAck {
            generated_at: Some(self.now().as_secs()),
            message_id: req.message_id.clone(),
            stop_tasks: Some(stop_tasks),
        }
    }

    /// The payload for one task record of the instance if its desired status is news.
    fn payload_task(
        &self,
        rec: &TaskRecord,
        sent: &mut std::collections::HashMap<String, String>,
    ) -> Option<berth_model::wire::acs::Task> {
        let t = &rec.task;
        let arn = t.task_arn.clone()?;
        let desired = t.desired_status.clone().unwrap_or_default();
        let finished = TaskStatus::of(t.last_status.as_deref()) == Some(TaskStatus::Stopped);
        if finished {
            sent.remove(&arn);
            return None;
        }
        if sent.get(&arn) == Some(&desired) {
            return None;
        }
        let td = self.task_def_of(t)?;
        let running = DesiredStatus::of(Some(&desired)) != Some(DesiredStatus::Stopped);
        sent.insert(arn, desired);
        let mut task = task_to_acs(t, &td);
        self.add_registry_auth(&mut task);
        if running {
            let (role, exec) = self.task_credentials(t, &td);
            task.role_credentials = role;
            task.execution_role_credentials = exec;
        }
        Some(task)
    }

    /// The task definition a task was started from.
    fn task_def_of(
        &self,
        t: &berth_model::wire::ecs::Task,
    ) -> Option<berth_model::wire::ecs::TaskDefinition> {
        let (family, rev) = t
            .task_definition_arn
            .as_deref()?
            .rsplit('/')
            .next()?
            .split_once(':')?;
        let rev: i32 = rev.parse().ok()?;
        let d = self.view.data.read();
        Some(d.task_defs().get(family)?.get(&rev)?.value.def.clone())
    }

    fn task_record(&self, cluster: &str, id: &str) -> Option<TaskRecord> {
        let d = self.view.data.read();
        Some(d.tasks().get(cluster)?.get(id)?.record())
    }

    /// The roles a task runs with: its task role and execution role (an override wins).
    fn task_roles(
        t: &berth_model::wire::ecs::Task,
        td: &berth_model::wire::ecs::TaskDefinition,
    ) -> (Option<String>, Option<String>) {
        let o = t.overrides.as_ref();
        (
            o.and_then(|o| o.task_role_arn.clone())
                .or_else(|| td.task_role_arn.clone()),
            o.and_then(|o| o.execution_role_arn.clone())
                .or_else(|| td.execution_role_arn.clone()),
        )
    }

    /// Fresh credentials for a task's roles, as ACS carries them. A role that cannot be
    /// assumed (deleted since the task was placed, or no longer trusting ECS) gives none.
    fn task_credentials(
        &self,
        t: &berth_model::wire::ecs::Task,
        td: &berth_model::wire::ecs::TaskDefinition,
    ) -> (
        Option<berth_model::wire::acs::IAMRoleCredentials>,
        Option<berth_model::wire::acs::IAMRoleCredentials>,
    ) {
        let (Some(arn), Some(cluster)) = (t.task_arn.as_deref(), t.cluster_arn.as_deref()) else {
            return (None, None);
        };
        let (role, exec) = Self::task_roles(t, td);
        let make = |role: Option<String>, kind: &str| {
            let role = role?;
            match self.task_role_session(&role, cluster, arn) {
                Ok(s) => Some(berth_model::wire::acs::IAMRoleCredentials {
                    credentials_id: Some(self.credentials_id(arn, kind)),
                    role_arn: Some(role),
                    access_key_id: Some(s.access_key_id),
                    secret_access_key: Some(s.secret_access_key),
                    session_token: Some(s.session_token),
                    expiration: Some(crate::iam::iso8601(s.expiration as f64)),
                    credential_scope: None,
                }),
                Err(e) => {
                    tracing::warn!(task = arn, role, error = %e, "no credentials for the task's role");
                    None
                }
            }
        };
        (make(role, "TaskApplication"), make(exec, "TaskExecution"))
    }

    /// A task's credentials id for one role type: the same for the task's whole life (its
    /// containers keep the URI), and not guessable from the task's ARN.
    fn credentials_id(&self, task_arn: &str, kind: &str) -> String {
        let h = berth_auth::session::secret_of(&self.session_key, &format!("{kind}/{task_arn}"));
        let hex: String = h.bytes().take(16).map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    /// `IAMRoleCredentialsMessage`s with fresh credentials for a task's roles (none when
    /// the task is gone or finished).
    fn renew_credentials(&self, cluster: &str, task_arn: &str) -> Vec<IAMRoleCredentialsMessage> {
        let id = task_arn.rsplit('/').next().unwrap_or_default();
        let Some(rec) = self.task_record(cluster, id) else {
            return vec![];
        };
        let t = &rec.task;
        if DesiredStatus::of(t.desired_status.as_deref()) == Some(DesiredStatus::Stopped)
            || TaskStatus::of(t.last_status.as_deref()) == Some(TaskStatus::Stopped)
        {
            return vec![];
        }
        let Some(td) = self.task_def_of(t) else {
            return vec![];
        };
        let (role, exec) = self.task_credentials(t, &td);
        [(role, "TaskApplication"), (exec, "TaskExecution")]
            .into_iter()
            .filter_map(|(c, kind)| {
                Some(IAMRoleCredentialsMessage {
                    task_arn: Some(task_arn.to_string()),
                    task_cluster_arn: t.cluster_arn.clone(),
                    role_credentials: Some(c?),
                    role_type: Some(kind.to_string()),
                    message_id: Some(berth_model::arn::new_uuid()),
                })
            })
            .collect()
    }

    /// Images in berth's own registry: tell the agent to log in the ECR way, at berth's front
    /// door with its own credentials (what the ECS agent does with `endpointOverride`;
    /// berth's agents know their registry already and ignore this).
    fn add_registry_auth(&self, task: &mut berth_model::wire::acs::Task) {
        use berth_model::wire::acs::{ECRAuthData, RegistryAuthenticationData};
        let Some((host, endpoint)) = self.registry.get() else {
            return;
        };
        let prefix = format!("{host}/");
        for c in task.containers.iter_mut().flatten() {
            if c.image.as_deref().is_some_and(|i| i.starts_with(&prefix)) {
                c.registry_authentication = Some(RegistryAuthenticationData {
                    r#type: Some("ecr".into()),
                    ecr_auth_data: Some(ECRAuthData {
                        registry_id: Some(self.part.account_id.clone()),
                        region: Some(self.part.region.clone()),
                        endpoint_override: Some(endpoint.clone()),
                        use_execution_role: Some(false),
                    }),
                    ..Default::default()
                });
            }
        }
    }

    /// Container health as the agent saw it (TCS `PublishHealth`): the containers'
    /// `healthStatus`, and the task's (HEALTHY iff every essential container with a health
    /// check is HEALTHY; UNHEALTHY if any is).
    pub async fn publish_health(&self, req: PublishHealthRequest) -> Result<()> {
        self.publish_health_from(None, req).await
    }

    /// Container health from an agent session: only about tasks placed on the session's own
    /// instance (`from`: cluster and container-instance ARN), whatever the report names.
    pub async fn publish_health_from(
        &self,
        from: Option<(&str, &str)>,
        req: PublishHealthRequest,
    ) -> Result<()> {
        let default_cluster = req.metadata.as_ref().and_then(|m| m.cluster.clone());
        let from = match from {
            Some((c, i)) => Some((
                self.cluster_name_of(Some(c))?.to_string(),
                crate::view::instance_id_of(i)
                    .unwrap_or_default()
                    .to_string(),
            )),
            None => None,
        };
        for th in req.tasks.as_deref().unwrap_or_default() {
            let given = th.cluster_arn.as_deref().or(default_cluster.as_deref());
            let Ok(cname) = self.cluster_name_of(given).map(str::to_string) else {
                continue;
            };
            let Some(id) = th
                .task_arn
                .as_deref()
                .and_then(|a| a.rsplit('/').next())
                .map(str::to_string)
            else {
                continue;
            };
            if let Some((fc, fi)) = &from {
                let here = fc == &cname
                    && self
                        .view
                        .data
                        .read()
                        .tasks()
                        .get(&cname)
                        .and_then(|m| m.get(&id))
                        .is_some_and(|e| e.summary.instance_id.as_deref() == Some(fi.as_str()));
                if !here {
                    tracing::debug!(task = %id, "health report about a task of another instance ignored");
                    continue;
                }
            }
            let r = self
                .modify(
                    &keys::task(&cname, &id),
                    |d| d.tasks().get(&cname)?.get(&id).map(|e| e.entry()),
                    || ControlError::invalid("The referenced task was not found."),
                    |r| {
                        let t = &mut r.task;
                        let mut changed = false;
                        for ch in th.containers.as_deref().unwrap_or_default() {
                            if let Some(c) = t
                                .containers
                                .as_mut()
                                .and_then(|cs| cs.iter_mut().find(|c| c.name == ch.container_name))
                                && c.health_status != ch.health_status
                            {
                                c.health_status = ch.health_status.clone();
                                changed = true;
                            }
                        }
                        // What a container reports is checked on the way in (the wire
                        // shape's enum); anything else counts as not known.
                        let task_health = HealthStatus::of_task(
                            t.containers
                                .as_deref()
                                .unwrap_or_default()
                                .iter()
                                .filter_map(|c| c.health_status.as_deref())
                                .map(|h| h.parse().unwrap_or(HealthStatus::Unknown)),
                        );
                        if HealthStatus::of(t.health_status.as_deref()) != Some(task_health) {
                            t.health_status = Some(task_health.into());
                            changed = true;
                        }
                        if changed {
                            t.version = Some(t.version.unwrap_or(0) + 1);
                        }
                        Ok(())
                    },
                )
                .await;
            if let Err(e) = r {
                tracing::debug!(task = %id, "health report for an unknown task: {e}");
            }
        }
        Ok(())
    }

    /// [`Control::report_task_network`] from an agent session: only for a task placed on the
    /// session's own instance.
    pub async fn report_task_network_from(
        &self,
        cluster: &str,
        instance_arn: &str,
        task_arn: &str,
        net: &TaskNetwork,
    ) -> Result<()> {
        let cname = self.cluster_name_of(Some(cluster))?.to_string();
        let inst = crate::view::instance_id_of(instance_arn).unwrap_or_default();
        let id = task_arn.rsplit('/').next().unwrap_or_default();
        let here = self
            .view
            .data
            .read()
            .tasks()
            .get(&cname)
            .and_then(|m| m.get(id))
            .is_some_and(|e| e.summary.instance_id.as_deref() == Some(inst));
        if !here {
            return Err(ControlError::invalid(
                "The referenced task is not placed on this container instance.",
            ));
        }
        self.report_task_network(&cname, task_arn, net).await
    }

    /// The network interface a node gave an `awsvpc` task: shown in the task's ENI attachment
    /// details and every container's `networkInterfaces`, as ECS shows them.
    pub async fn report_task_network(
        &self,
        cluster: &str,
        task_arn: &str,
        net: &TaskNetwork,
    ) -> Result<()> {
        let cname = self.cluster_name_of(Some(cluster))?.to_string();
        let id = task_arn.rsplit('/').next().unwrap_or_default().to_string();
        self.modify(
            &keys::task(&cname, &id),
            |d| d.tasks().get(&cname)?.get(&id).map(|e| e.entry()),
            || ControlError::invalid("The referenced task was not found."),
            |r| {
                let t = &mut r.task;
                let atts = t.attachments.get_or_insert_with(Vec::new);
                if atts.is_empty() {
                    atts.push(Attachment {
                        id: Some(berth_model::arn::new_uuid()),
                        r#type: Some("ElasticNetworkInterface".into()),
                        ..Default::default()
                    });
                }
                let att = &mut atts[0];
                let eni = format!("eni-{}", &net.mac.replace(':', "")[..]);
                let kv = |n: &str, v: &str| KeyValuePair {
                    name: Some(n.into()),
                    value: Some(v.into()),
                };
                let subnet = att
                    .details
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .find(|d| d.name.as_deref() == Some("subnetId"))
                    .and_then(|d| d.value.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| net.subnet.clone());
                att.status = Some("ATTACHED".into());
                att.details = Some(vec![
                    kv("subnetId", &subnet),
                    kv("networkInterfaceId", &eni),
                    kv("macAddress", &net.mac),
                    kv(
                        "privateDnsName",
                        &format!("ip-{}.ec2.internal", net.private_ipv4.replace('.', "-")),
                    ),
                    kv("privateIPv4Address", &net.private_ipv4),
                ]);
                let att_id = att.id.clone();
                for c in t.containers.as_mut().into_iter().flatten() {
                    c.network_interfaces = Some(vec![NetworkInterface {
                        attachment_id: att_id.clone(),
                        private_ipv4_address: Some(net.private_ipv4.clone()),
                        ..Default::default()
                    }]);
                }
                t.version = Some(t.version.unwrap_or(0) + 1);
                Ok(())
            },
        )
        .await?;
        Ok(())
    }
}
