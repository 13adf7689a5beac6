//! Simulated nodes: many agents in one process, each a real container instance in session
//! with the control plane (registration, DiscoverPollEndpoint, the signed ACS websocket,
//! heartbeat acks, payload acks, `SubmitTaskStateChange`), whose containers are modelled
//! instead of started — like Nomad's mock driver. A task sent to RUNNING is reported RUNNING
//! after `start_delay`; one sent to STOPPED is reported STOPPED (exit code 0).
//!
//! They exist to exercise placement and the session protocol at scale on one machine
//! (`berth agent --simulate N`), and for the scale benchmark. Nothing is persisted: a
//! restarted simulator registers new instances.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_client::AwsClient;
use berth_model::wire::acs::PayloadMessage;
use berth_model::wire::ecs::{
    Attribute, ContainerStateChange, RegisterContainerInstanceRequest, Resource,
    SubmitTaskStateChangeRequest, VersionInfo,
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::session::open_session;

const ECS: &str = "AmazonEC2ContainerServiceV20141113";

/// How the simulated nodes look and behave.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub endpoint: String,
    pub region: String,
    pub creds: berth_auth::Credentials,
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
    /// Time a modelled task takes from payload to RUNNING.
    pub start_delay: Duration,
    /// State reports in flight at once (over one connection pool).
    pub report_concurrency: usize,
    /// The servers trusted for `https://` / `wss://`.
    pub trust: berth_client::TlsTrust,
}

/// Counters of a running simulation.
#[derive(Debug, Default)]
pub struct SimStats {
    pub registered: AtomicU64,
    pub connected: AtomicU64,
    pub running: AtomicU64,
    pub reports: AtomicU64,
    pub report_errors: AtomicU64,
    pub payloads: AtomicU64,
}

/// A running simulation; dropping it does not stop it (abort the tasks with [`Sim::stop`]).
pub struct Sim {
    pub stats: Arc<SimStats>,
    pub instance_arns: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sim {
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

fn be(e: berth_client::ClientError) -> crate::backend::BackendError {
    match e {
        berth_client::ClientError::Aws { code, message, .. } => {
            crate::backend::BackendError { code, message }
        }
        other => crate::backend::BackendError {
            code: "ServerException".into(),
            message: other.to_string(),
        },
    }
}

/// The registration of simulated node `i`.
pub fn registration(cfg: &SimConfig, i: usize) -> RegisterContainerInstanceRequest {
    let pick = |v: &[String]| (!v.is_empty()).then(|| v[i % v.len()].clone());
    let mut attributes = vec![
        Attribute {
            name: Some("ecs.os-type".into()),
            value: Some("linux".into()),
            ..Default::default()
        },
        Attribute {
            name: Some("berth.runtime".into()),
            value: Some("simulated".into()),
            ..Default::default()
        },
    ];
    attributes.extend(crate::CAPABILITIES.iter().map(|c| Attribute {
        name: Some(c.to_string()),
        ..Default::default()
    }));
    if let Some(z) = pick(&cfg.zones) {
        attributes.push(Attribute {
            name: Some("ecs.availability-zone".into()),
            value: Some(z),
            ..Default::default()
        });
    }
    if let Some(t) = pick(&cfg.instance_types) {
        attributes.push(Attribute {
            name: Some("ecs.instance-type".into()),
            value: Some(t),
            ..Default::default()
        });
    }
    let int = |name: &str, v: i32| Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: Some(v),
        ..Default::default()
    };
    RegisterContainerInstanceRequest {
        cluster: Some(cfg.cluster.clone()),
        total_resources: Some(vec![
            int("CPU", cfg.cpu),
            int("MEMORY", cfg.memory),
            Resource {
                name: Some("PORTS".into()),
                r#type: Some("STRINGSET".into()),
                string_set_value: Some(vec!["22".into()]),
                ..Default::default()
            },
        ]),
        attributes: Some(attributes),
        version_info: Some(VersionInfo {
            agent_version: Some(format!("berth-sim {}", env!("CARGO_PKG_VERSION"))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A state report for the shared reporters.
struct Report {
    req: SubmitTaskStateChangeRequest,
}

/// Register `cfg.count` nodes and keep each in session until stopped.
pub async fn start(cfg: SimConfig) -> Result<Sim, crate::backend::BackendError> {
    let aws = Arc::new(AwsClient::new(
        &cfg.endpoint,
        &cfg.region,
        cfg.creds.clone(),
    ));
    let stats = Arc::new(SimStats::default());
    let cfg = Arc::new(cfg);
    // Register with bounded concurrency (the store's group commit batches them).
    let mut arns = Vec::with_capacity(cfg.count);
    {
        let regs = futures::stream::iter(0..cfg.count)
            .map(|i| {
                let aws = aws.clone();
                let cfg = cfg.clone();
                let stats = stats.clone();
                async move {
                    let v = aws
                        .call(
                            ECS,
                            "ecs",
                            "RegisterContainerInstance",
                            &json!(registration(&cfg, i)),
                        )
                        .await
                        .map_err(be)?;
                    stats.registered.fetch_add(1, Ordering::Relaxed);
                    Ok::<String, crate::backend::BackendError>(
                        v["containerInstance"]["containerInstanceArn"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                }
            })
            .buffer_unordered(64);
        futures::pin_mut!(regs);
        while let Some(r) = regs.next().await {
            arns.push(r?);
        }
    }
    let (report_tx, report_rx) = mpsc::unbounded_channel::<Report>();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(reporter(
        aws.clone(),
        report_rx,
        cfg.report_concurrency.max(1),
        stats.clone(),
    )));
    // Sessions open a few at a time: each DiscoverPollEndpoint borrows a pooled HTTP
    // connection, and 10,000 at once would leave 10,000 idle connections behind.
    let opening = Arc::new(tokio::sync::Semaphore::new(64));
    for arn in &arns {
        tasks.push(tokio::spawn(node(
            cfg.clone(),
            aws.clone(),
            arn.clone(),
            report_tx.clone(),
            stats.clone(),
            opening.clone(),
        )));
    }
    Ok(Sim {
        stats,
        instance_arns: arns,
        tasks,
    })
}

/// Deliver state reports, a bounded number at a time, retrying what did not get through.
async fn reporter(
    aws: Arc<AwsClient>,
    rx: mpsc::UnboundedReceiver<Report>,
    concurrency: usize,
    stats: Arc<SimStats>,
) {
    tokio_stream_like(rx)
        .for_each_concurrent(concurrency, |r| {
            let aws = aws.clone();
            let stats = stats.clone();
            async move {
                let mut delay = Duration::from_millis(100);
                for _ in 0..10 {
                    match aws
                        .call(ECS, "ecs", "SubmitTaskStateChange", &json!(r.req))
                        .await
                    {
                        Ok(_) => {
                            stats.reports.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Err(berth_client::ClientError::Aws { .. }) => {
                            stats.report_errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Err(_) => {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                stats.report_errors.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
}

fn tokio_stream_like<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The modelled containers of one node: task ARN → desired status last acted on.
type Modelled = HashMap<String, String>;

/// One simulated node's session, reconnecting whenever it ends.
async fn node(
    cfg: Arc<SimConfig>,
    aws: Arc<AwsClient>,
    arn: String,
    reports: mpsc::UnboundedSender<Report>,
    stats: Arc<SimStats>,
    opening: Arc<tokio::sync::Semaphore>,
) {
    let mut tasks: Modelled = HashMap::new();
    loop {
        let opened = {
            let _turn = opening.acquire().await;
            open_session(
                &aws,
                &cfg.trust,
                &cfg.creds,
                &cfg.region,
                &cfg.cluster,
                &arn,
            )
            .await
        };
        match opened {
            Ok(ws) => {
                stats.connected.fetch_add(1, Ordering::Relaxed);
                let (mut sink, mut stream) = ws.split();
                let mut first = true;
                while let Some(Ok(m)) = stream.next().await {
                    let Message::Text(t) = m else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        continue;
                    };
                    let reply = match v["type"].as_str().unwrap_or_default() {
                        "HeartbeatMessage" => Some(json!({"type": "HeartbeatAckRequest",
                            "message": {"messageId": v["message"]["messageId"]}})),
                        // Modelled tasks make no use of credentials; a refresh is only
                        // acknowledged, as a real node does.
                        "IAMRoleCredentialsMessage" => {
                            let m = &v["message"];
                            Some(json!({"type": "IAMRoleCredentialsAckRequest", "message": {
                                "messageId": m["messageId"],
                                "credentialsId": m["roleCredentials"]["credentialsId"],
                                "expiration": m["roleCredentials"]["expiration"]}}))
                        }
                        "PayloadMessage" => {
                            let Ok(p) =
                                serde_json::from_value::<PayloadMessage>(v["message"].clone())
                            else {
                                continue;
                            };
                            stats.payloads.fetch_add(1, Ordering::Relaxed);
                            let health = on_payload(
                                &cfg,
                                &mut tasks,
                                &p,
                                std::mem::take(&mut first),
                                &reports,
                                &stats,
                            );
                            if let Some(h) = health
                                && sink
                                    .send(Message::Text(h.to_string().into()))
                                    .await
                                    .is_err()
                            {
                                break;
                            }
                            Some(json!({"type": "AckRequest", "message": {
                                "cluster": p.cluster_arn, "containerInstance": p.container_instance_arn,
                                "messageId": p.message_id}}))
                        }
                        _ => None,
                    };
                    if let Some(r) = reply
                        && sink
                            .send(Message::Text(r.to_string().into()))
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
                stats.connected.fetch_sub(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(instance = %arn, "simulated session: {e}"),
        }
        // Reconnect with jitter, so that a restarted server is not hit by every node at once.
        let jitter = rand::random::<u64>() % 2000;
        tokio::time::sleep(Duration::from_millis(500 + jitter)).await;
    }
}

/// Model one payload: start what should run, stop what should stop, and (on the first
/// payload of a session) forget what the control plane no longer lists. Containers with a
/// health check pass it: the returned `PublishHealthRequest` frame says so for the tasks
/// this payload started.
fn on_payload(
    cfg: &SimConfig,
    tasks: &mut Modelled,
    p: &PayloadMessage,
    first: bool,
    reports: &mpsc::UnboundedSender<Report>,
    stats: &Arc<SimStats>,
) -> Option<Value> {
    let mut healthy: Vec<Value> = Vec::new();
    let cluster = p.cluster_arn.clone().unwrap_or_else(|| cfg.cluster.clone());
    let listed: HashSet<&str> = p
        .tasks
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.arn.as_deref())
        .collect();
    if first {
        let before = tasks.len();
        tasks.retain(|arn, _| listed.contains(arn.as_str()));
        stats
            .running
            .fetch_sub((before - tasks.len()) as u64, Ordering::Relaxed);
    }
    for t in p.tasks.as_deref().unwrap_or_default() {
        let Some(arn) = t.arn.clone() else { continue };
        let desired = t.desired_status.clone().unwrap_or_else(|| "RUNNING".into());
        let containers = |status: &str| {
            t.containers
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|c| ContainerStateChange {
                    container_name: c.name.clone(),
                    status: Some(status.into()),
                    exit_code: (status == "STOPPED").then_some(0),
                    runtime_id: Some(format!("sim-{}", berth_model::arn::new_uuid())),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        };
        let send = |status: &str, delay: Duration| {
            let req = SubmitTaskStateChangeRequest {
                cluster: Some(cluster.clone()),
                task: Some(arn.clone()),
                status: Some(status.into()),
                containers: Some(containers(status)),
                reason: (status == "STOPPED").then(|| "Simulated task stopped".to_string()),
                ..Default::default()
            };
            let r = Report { req };
            if delay.is_zero() {
                let _ = reports.send(r);
            } else {
                let reports = reports.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = reports.send(r);
                });
            }
        };
        match (tasks.get(&arn).map(String::as_str), desired.as_str()) {
            (None, "RUNNING") => {
                tasks.insert(arn.clone(), desired.clone());
                stats.running.fetch_add(1, Ordering::Relaxed);
                send("RUNNING", cfg.start_delay);
                let checked: Vec<Value> = t
                    .containers
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .filter(|c| c.health_check_type.is_some())
                    .map(|c| json!({"containerName": c.name, "healthStatus": "HEALTHY"}))
                    .collect();
                if !checked.is_empty() {
                    healthy.push(json!({"taskArn": arn, "containers": checked}));
                }
            }
            (Some("RUNNING"), "STOPPED") | (None, "STOPPED") => {
                if tasks.remove(&arn).is_some() {
                    stats.running.fetch_sub(1, Ordering::Relaxed);
                }
                send("STOPPED", Duration::ZERO);
            }
            _ => {}
        }
    }
    (!healthy.is_empty()).then(|| {
        json!({"type": "PublishHealthRequest", "message": {
            "metadata": {"cluster": cluster, "containerInstance": p.container_instance_arn,
                         "messageId": berth_model::arn::new_uuid(), "fin": true},
            "tasks": healthy,
            "timestamp": crate::engine::now()}})
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SimConfig {
        SimConfig {
            endpoint: "http://127.0.0.1:1".into(),
            region: "us-east-1".into(),
            creds: berth_auth::Credentials {
                access_key_id: "A".into(),
                secret_access_key: "S".into(),
                session_token: None,
            },
            cluster: "sim".into(),
            count: 3,
            cpu: 4096,
            memory: 8192,
            zones: vec!["a".into(), "b".into()],
            instance_types: vec![],
            start_delay: Duration::ZERO,
            report_concurrency: 4,
            trust: berth_client::TlsTrust::load(&Default::default()).unwrap(),
        }
    }

    fn payload(tasks: &[(&str, &str)]) -> PayloadMessage {
        PayloadMessage {
            cluster_arn: Some("c".into()),
            tasks: Some(
                tasks
                    .iter()
                    .map(|(a, d)| berth_model::wire::acs::Task {
                        arn: Some(a.to_string()),
                        desired_status: Some(d.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn registrations_take_turns_over_zones() {
        let c = cfg();
        let zone = |i| {
            registration(&c, i)
                .attributes
                .unwrap()
                .into_iter()
                .find(|a| a.name.as_deref() == Some("ecs.availability-zone"))
                .and_then(|a| a.value)
        };
        assert_eq!(zone(0).as_deref(), Some("a"));
        assert_eq!(zone(1).as_deref(), Some("b"));
        assert_eq!(zone(2).as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn payloads_start_stop_and_reconcile_modelled_tasks() {
        let c = cfg();
        let stats = Arc::new(SimStats::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut m = Modelled::new();
        on_payload(
            &c,
            &mut m,
            &payload(&[("t1", "RUNNING"), ("t2", "RUNNING")]),
            true,
            &tx,
            &stats,
        );
        assert_eq!(m.len(), 2);
        assert_eq!(stats.running.load(Ordering::Relaxed), 2);
        // Repeated: nothing new is started or reported.
        on_payload(
            &c,
            &mut m,
            &payload(&[("t1", "RUNNING")]),
            false,
            &tx,
            &stats,
        );
        on_payload(
            &c,
            &mut m,
            &payload(&[("t1", "STOPPED")]),
            false,
            &tx,
            &stats,
        );
        assert_eq!(stats.running.load(Ordering::Relaxed), 1);
        // A new session lists nothing: t2 is forgotten.
        on_payload(&c, &mut m, &payload(&[]), true, &tx, &stats);
        assert!(m.is_empty());
        assert_eq!(stats.running.load(Ordering::Relaxed), 0);
        let mut statuses = Vec::new();
        while let Ok(r) = rx.try_recv() {
            statuses.push((r.req.task.unwrap(), r.req.status.unwrap()));
        }
        assert_eq!(
            statuses,
            vec![
                ("t1".to_string(), "RUNNING".to_string()),
                ("t2".to_string(), "RUNNING".to_string()),
                ("t1".to_string(), "STOPPED".to_string()),
            ]
        );
    }
}
