//! The agent's session with a control plane across the network, the way the ECS agent talks
//! to ECS: `RegisterContainerInstance`, `SubmitTaskStateChange` and
//! `SubmitContainerStateChange` over the ECS JSON API (SigV4), and `DiscoverPollEndpoint` then
//! a SigV4-signed websocket (ACS framing `{"type","message"}`) that brings `PayloadMessage`s,
//! `IAMRoleCredentialsMessage`s and heartbeats; acks (`AckRequest`,
//! `IAMRoleCredentialsAckRequest`), heartbeat acks and berth's `BerthTaskNetwork` extension go
//! back on it.
//! Beside it, while it lives, the telemetry session (TCS: the same dance on the
//! `telemetryEndpoint`, query `cluster`/`containerInstance`) carries `PublishMetricsRequest`
//! and `PublishHealthRequest` (the latter falls back to the ACS session while TCS is down, or
//! when a backend goes [`RemoteBackend::without_telemetry`]). The backends of many simulated
//! nodes share one client and its [`Limits`].
//! See `berth_api::acs` and `berth_api::tcs` for the server side.

use std::sync::Arc;

use berth_client::{AwsClient, TlsTrust};
use berth_clock::{Clock, Instant};
use berth_model::wire::acs::{
    AckRequest, IAMRoleCredentialsAckRequest, IAMRoleCredentialsMessage, PayloadMessage,
};
use berth_model::wire::ecs::{
    ContainerInstance, RegisterContainerInstanceRequest, SubmitContainerStateChangeRequest,
    SubmitTaskStateChangeRequest,
};
use berth_model::wire::tcs::{PublishHealthRequest, PublishMetricsRequest};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::backend::{Backend, BackendError, Inbound, TaskNetworkReport};

const ECS: &str = "AmazonEC2ContainerServiceV20141113";
/// How long opening the session may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// When a silent server is given up on: three of its heartbeat intervals (as observed), or
/// the ECS agent's 90 s until two heartbeats have shown the interval.
#[derive(Debug, Default)]
struct SilenceDeadline {
    last: Option<Instant>,
    interval: Option<std::time::Duration>,
}

impl SilenceDeadline {
    fn heartbeat(&mut self, at: Instant) {
        if let Some(prev) = self.last {
            self.interval = Some(at - prev);
        }
        self.last = Some(at);
    }

    fn deadline(&self) -> std::time::Duration {
        match self.interval {
            Some(i) => (i * 3).clamp(
                std::time::Duration::from_secs(3),
                std::time::Duration::from_secs(90),
            ),
            None => std::time::Duration::from_secs(90),
        }
    }
}

/// A control plane reached over HTTP.
pub struct RemoteBackend {
    aws: Arc<AwsClient>,
    /// The servers trusted for `https://` / `wss://`.
    trust: TlsTrust,
    creds: berth_auth::Credentials,
    region: String,
    /// Frames for the current websocket, if connected.
    out: parking_lot::Mutex<Option<mpsc::Sender<String>>>,
    /// Frames for the current telemetry session, if connected.
    telemetry: Arc<parking_lot::Mutex<Option<mpsc::Sender<String>>>>,
    /// Limits shared with other agents of the same process.
    limits: Limits,
    /// Whether a telemetry session goes beside each ACS session.
    open_telemetry: bool,
    /// The agent's clock (heartbeat intervals).
    clock: Clock,
}

/// Limits shared by the backends of many agents in one process (simulated nodes): ECS calls
/// in flight (over one connection pool), and sessions being opened (each borrows a pooled
/// connection for `DiscoverPollEndpoint`; thousands at once would leave as many idle
/// connections behind). None: no limit.
#[derive(Clone, Default)]
pub struct Limits {
    pub calls: Option<Arc<tokio::sync::Semaphore>>,
    pub dials: Option<Arc<tokio::sync::Semaphore>>,
}

/// A permit of an optional limit.
async fn permit(
    s: &Option<Arc<tokio::sync::Semaphore>>,
) -> Option<tokio::sync::SemaphorePermit<'_>> {
    match s {
        Some(s) => s.acquire().await.ok(),
        None => None,
    }
}

fn be(e: berth_client::ClientError) -> BackendError {
    match e {
        berth_client::ClientError::Aws { code, message, .. } => BackendError { code, message },
        other => BackendError {
            code: "ServerException".into(),
            message: other.to_string(),
        },
    }
}

/// Percent-encode a query value (everything but RFC 3986 unreserved characters).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl RemoteBackend {
    pub fn new(
        endpoint: &str,
        region: &str,
        creds: berth_auth::Credentials,
        trust: TlsTrust,
        clock: Clock,
    ) -> RemoteBackend {
        let aws = Arc::new(AwsClient::with_trust(
            endpoint,
            region,
            creds.clone(),
            &trust,
        ));
        RemoteBackend::sharing(aws, region, creds, trust, Limits::default(), clock)
    }

    /// A backend over a client (and its connection pool) shared with other agents, within
    /// shared `limits`.
    pub fn sharing(
        aws: Arc<AwsClient>,
        region: &str,
        creds: berth_auth::Credentials,
        trust: TlsTrust,
        limits: Limits,
        clock: Clock,
    ) -> RemoteBackend {
        RemoteBackend {
            aws,
            trust,
            creds,
            region: region.to_string(),
            out: parking_lot::Mutex::new(None),
            telemetry: Default::default(),
            limits,
            open_telemetry: true,
            clock,
        }
    }

    /// No telemetry session: metrics reports are refused, health goes over the ACS session.
    /// Simulated nodes run so unless asked (10,000 of them would double the server's sockets).
    pub fn without_telemetry(mut self) -> RemoteBackend {
        self.open_telemetry = false;
        self
    }

    /// The ECR password for the control plane's registry (`GetAuthorizationToken`).
    pub async fn registry_password(&self) -> Result<String, BackendError> {
        self.aws.ecr_password().await.map_err(be)
    }

    async fn ecs(&self, op: &str, body: &impl serde::Serialize) -> Result<Value, BackendError> {
        let v = serde_json::to_value(body).map_err(|e| BackendError {
            code: "SerializationException".into(),
            message: e.to_string(),
        })?;
        let _turn = permit(&self.limits.calls).await;
        self.aws.call(ECS, "ecs", op, &v).await.map_err(be)
    }

    fn send_frame(&self, kind: &str, message: Value) -> Result<(), BackendError> {
        let tx = self.out.lock().clone();
        let f = json!({"type": kind, "message": message}).to_string();
        match tx {
            Some(tx) if tx.try_send(f).is_ok() => Ok(()),
            _ => Err(BackendError {
                code: "ServerException".into(),
                message: "the agent session is not connected".into(),
            }),
        }
    }
}

/// The agent's websocket to ACS: `DiscoverPollEndpoint`, then the SigV4-signed upgrade.
pub type SessionStream = tokio_tungstenite::WebSocketStream<Box<dyn berth_client::tls::Io>>;

/// Open an ACS session for `instance_arn` (what the ECS agent does on every (re)connect).
pub async fn open_session(
    aws: &AwsClient,
    trust: &berth_client::TlsTrust,
    creds: &berth_auth::Credentials,
    region: &str,
    cluster: &str,
    instance_arn: &str,
) -> Result<SessionStream, BackendError> {
    dial(aws, trust, creds, region, cluster, instance_arn, false).await
}

/// Open an ACS session (`telemetry` false) or the telemetry session (TCS, on the
/// `telemetryEndpoint` that `DiscoverPollEndpoint` names) for `instance_arn`.
async fn dial(
    aws: &AwsClient,
    trust: &berth_client::TlsTrust,
    creds: &berth_auth::Credentials,
    region: &str,
    cluster: &str,
    instance_arn: &str,
    telemetry: bool,
) -> Result<SessionStream, BackendError> {
    let v = aws
        .call(
            ECS,
            "ecs",
            "DiscoverPollEndpoint",
            &json!({"cluster": cluster, "containerInstance": instance_arn}),
        )
        .await
        .map_err(be)?;
    let field = if telemetry {
        "telemetryEndpoint"
    } else {
        "endpoint"
    };
    let endpoint = v[field].as_str().unwrap_or_default().to_string();
    let bad = |m: String| BackendError {
        code: "ServerException".into(),
        message: m,
    };
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| bad(format!("poll endpoint {endpoint:?}: {e}")))?;
    let host = uri
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| bad(format!("poll endpoint {endpoint:?} has no host")))?;
    let tls = uri.scheme_str() == Some("https");
    let scheme = if tls { "wss" } else { "ws" };
    // Query members in order (the signature's canonical form sorts them anyway).
    let query = if telemetry {
        format!(
            "agentVersion={}&cluster={}&containerInstance={}",
            enc(env!("CARGO_PKG_VERSION")),
            enc(cluster),
            enc(instance_arn)
        )
    } else {
        format!(
            "agentVersion={}&clusterArn={}&containerInstanceArn={}&protocolVersion=2&sendCredentials=true&seqNum=1",
            enc(env!("CARGO_PKG_VERSION")),
            enc(cluster),
            enc(instance_arn)
        )
    };
    // The session lives under the endpoint's own path, if it has one.
    let path = format!("{}/ws", uri.path().trim_end_matches('/'));
    let mut signed = http::HeaderMap::new();
    signed.insert(
        "host",
        http::HeaderValue::from_str(&host).map_err(|e| bad(e.to_string()))?,
    );
    // Not the agent's clock: that one's wall time is read once, at start, and an agent
    // started at boot before the machine's time was set would sign with the wrong time for
    // as long as it runs.
    #[allow(
        clippy::disallowed_methods,
        reason = "a client signs with its machine's wall time, which the server checks"
    )]
    let signed_at = time::OffsetDateTime::now_utc();
    berth_auth::sign(
        "GET",
        &path,
        Some(&query),
        &mut signed,
        b"",
        creds,
        region,
        "ecs",
        signed_at,
    );
    let mut req = format!("{scheme}://{host}{path}?{query}")
        .into_client_request()
        .map_err(|e| bad(e.to_string()))?;
    for (k, v) in signed.iter() {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let stream = trust
        .dial(&host, tls, CONNECT_TIMEOUT)
        .await
        .map_err(|e| bad(format!("agent session {endpoint}: {e}")))?;
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::client_async_with_config(
            req,
            stream,
            Some(
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(0),
            ),
        ),
    )
    .await
    .map_err(|_| {
        bad(format!(
            "agent session {endpoint}: no answer in {CONNECT_TIMEOUT:?}"
        ))
    })?
    .map_err(|e| bad(format!("agent session {endpoint}: {e}")))?;
    Ok(ws)
}

#[async_trait::async_trait]
impl Backend for RemoteBackend {
    async fn register(
        &self,
        req: RegisterContainerInstanceRequest,
    ) -> Result<ContainerInstance, BackendError> {
        let v = self.ecs("RegisterContainerInstance", &req).await?;
        serde_json::from_value(v["containerInstance"].clone()).map_err(|e| BackendError {
            code: "ServerException".into(),
            message: format!("unreadable container instance: {e}"),
        })
    }

    async fn messages(
        &self,
        cluster: &str,
        instance_arn: &str,
    ) -> Result<mpsc::Receiver<Inbound>, BackendError> {
        let ws = {
            let _turn = permit(&self.limits.dials).await;
            open_session(
                &self.aws,
                &self.trust,
                &self.creds,
                &self.region,
                cluster,
                instance_arn,
            )
            .await?
        };
        let (mut sink, mut stream) = ws.split();
        let (tx, rx) = mpsc::channel(256);
        let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
        *self.out.lock() = Some(out_tx.clone());
        // The telemetry session lives as long as this ACS session.
        let (alive, alive_rx) = tokio::sync::watch::channel(());
        if self.open_telemetry {
            tokio::spawn(keep_telemetry(
                self.aws.clone(),
                self.trust.clone(),
                self.creds.clone(),
                self.region.clone(),
                cluster.to_string(),
                instance_arn.to_string(),
                self.telemetry.clone(),
                self.limits.dials.clone(),
                alive_rx,
            ));
        }
        tokio::spawn(async move {
            while let Some(f) = out_rx.recv().await {
                if sink.send(Message::Text(f.into())).await.is_err() {
                    break;
                }
            }
        });
        let clock = self.clock;
        tokio::spawn(async move {
            let _alive = alive;
            let mut silence = SilenceDeadline::default();
            loop {
                // A server that went quiet (a cut link leaves the socket open) is left: the
                // agent reconnects and reconciles.
                let m = match tokio::time::timeout(silence.deadline(), stream.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(_) => break,
                    Err(_) => {
                        tracing::warn!(
                            "nothing from the control plane for {:?}; reconnecting",
                            silence.deadline()
                        );
                        break;
                    }
                };
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                match v["type"].as_str().unwrap_or_default() {
                    "PayloadMessage" | "IAMRoleCredentialsMessage" => {
                        if let Some(m) = inbound(v)
                            && tx.send(m).await.is_err()
                        {
                            break;
                        }
                    }
                    "HeartbeatMessage" => {
                        silence.heartbeat(clock.instant());
                        let ack = json!({"type": "HeartbeatAckRequest",
                                         "message": {"messageId": v["message"]["messageId"]}});
                        let _ = out_tx.try_send(ack.to_string());
                    }
                    other => tracing::debug!("session message {other} ignored"),
                }
            }
            // Dropping `tx` ends the feed: the agent reconnects.
        });
        Ok(rx)
    }

    async fn ack(&self, ack: AckRequest) {
        let _ = self.send_frame("AckRequest", serde_json::to_value(ack).unwrap_or_default());
    }

    async fn ack_credentials(&self, ack: IAMRoleCredentialsAckRequest) {
        let _ = self.send_frame(
            "IAMRoleCredentialsAckRequest",
            serde_json::to_value(ack).unwrap_or_default(),
        );
    }

    async fn submit_task_state_change(
        &self,
        req: SubmitTaskStateChangeRequest,
    ) -> Result<(), BackendError> {
        self.ecs("SubmitTaskStateChange", &req).await.map(|_| ())
    }

    async fn submit_container_state_change(
        &self,
        req: SubmitContainerStateChangeRequest,
    ) -> Result<(), BackendError> {
        self.ecs("SubmitContainerStateChange", &req)
            .await
            .map(|_| ())
    }

    async fn publish_health(&self, req: PublishHealthRequest) -> Result<(), BackendError> {
        let msg = serde_json::to_value(req).unwrap_or_default();
        // On the telemetry session, as the ECS agent sends it; on the ACS session (a berth
        // extension) while the telemetry session is down.
        let f = json!({"type": "PublishHealthRequest", "message": msg}).to_string();
        let tcs = self.telemetry.lock().clone();
        if let Some(t) = tcs
            && t.try_send(f).is_ok()
        {
            return Ok(());
        }
        self.send_frame("PublishHealthRequest", msg)
    }

    async fn publish_metrics(&self, req: PublishMetricsRequest) -> Result<(), BackendError> {
        let f = json!({"type": "PublishMetricsRequest",
                       "message": serde_json::to_value(req).unwrap_or_default()})
        .to_string();
        let tcs = self.telemetry.lock().clone();
        match tcs {
            Some(t) if t.try_send(f).is_ok() => Ok(()),
            _ => Err(BackendError {
                code: "ServerException".into(),
                message: "the telemetry session is not connected".into(),
            }),
        }
    }

    async fn report_task_network(&self, r: TaskNetworkReport) -> Result<(), BackendError> {
        self.send_frame(
            "BerthTaskNetwork",
            json!({"cluster": r.cluster, "taskArn": r.task_arn, "privateIpv4": r.private_ipv4,
                   "mac": r.mac, "subnet": r.subnet}),
        )
    }
}

/// The message of a `PayloadMessage` or `IAMRoleCredentialsMessage` frame; None (logged) for
/// one that cannot be read. A credentials message's error says where, never what: its values
/// are secret.
#[doc(hidden)]
pub fn inbound(mut frame: Value) -> Option<Inbound> {
    let kind = frame["type"].as_str().unwrap_or_default().to_string();
    // `get_mut`, not `frame["message"]`: indexing a frame that is not an object (`1`, `[]`)
    // mutably panics.
    let message = frame
        .get_mut("message")
        .map(Value::take)
        .unwrap_or_default();
    match kind.as_str() {
        "PayloadMessage" => match serde_json::from_value::<PayloadMessage>(message) {
            Ok(p) => Some(Inbound::Payload(Box::new(p))),
            Err(e) => {
                tracing::warn!("unreadable payload: {e}");
                None
            }
        },
        "IAMRoleCredentialsMessage" => {
            match serde_json::from_value::<IAMRoleCredentialsMessage>(message) {
                Ok(c) => Some(Inbound::Credentials(Box::new(c))),
                Err(e) => {
                    tracing::warn!(
                        "unreadable credentials message (line {}, column {})",
                        e.line(),
                        e.column()
                    );
                    None
                }
            }
        }
        _ => None,
    }
}

/// Keep a telemetry session open while the ACS session it belongs to lives (`alive`'s sender
/// is dropped when that session ends): reconnect after 5 s when it drops, leave on the
/// server's `StopTelemetrySessionMessage`.
#[allow(clippy::too_many_arguments)]
async fn keep_telemetry(
    aws: Arc<AwsClient>,
    trust: TlsTrust,
    creds: berth_auth::Credentials,
    region: String,
    cluster: String,
    instance_arn: String,
    slot: Arc<parking_lot::Mutex<Option<mpsc::Sender<String>>>>,
    dials: Option<Arc<tokio::sync::Semaphore>>,
    mut alive: tokio::sync::watch::Receiver<()>,
) {
    loop {
        let dialed = {
            let _turn = permit(&dials).await;
            dial(&aws, &trust, &creds, &region, &cluster, &instance_arn, true).await
        };
        match dialed {
            Ok(ws) => {
                let (mut sink, mut stream) = ws.split();
                let (tx, mut rx) = mpsc::channel::<String>(64);
                *slot.lock() = Some(tx);
                tracing::debug!("telemetry session open");
                loop {
                    tokio::select! {
                        f = rx.recv() => {
                            let Some(f) = f else { break };
                            if sink.send(Message::Text(f.into())).await.is_err() {
                                break;
                            }
                        }
                        m = stream.next() => match m {
                            Some(Ok(Message::Text(t))) => {
                                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                                if v["type"] == "StopTelemetrySessionMessage" {
                                    tracing::warn!("the server ended the telemetry session: {}", v["message"]["message"]);
                                    break;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                        _ = alive.changed() => break,
                    }
                }
                *slot.lock() = None;
            }
            Err(e) => tracing::debug!("telemetry session: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = alive.changed() => return,
        }
        if alive.has_changed().is_err() {
            return;
        }
    }
}

/// Convenience for the binary: a backend behind an `Arc`.
pub fn remote(
    endpoint: &str,
    region: &str,
    creds: berth_auth::Credentials,
    trust: TlsTrust,
    clock: Clock,
) -> Arc<RemoteBackend> {
    Arc::new(RemoteBackend::new(endpoint, region, creds, trust, clock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn payload_and_credentials_frames_are_read() {
        let p = json!({"type": "PayloadMessage", "message": {"messageId": "p1", "tasks": [{
            "arn": "t", "roleCredentials": {"credentialsId": "c1", "accessKeyId": "AK"}}]}});
        let Some(Inbound::Payload(p)) = inbound(p) else {
            panic!("a payload")
        };
        assert_eq!(p.message_id.as_deref(), Some("p1"));
        let t = &p.tasks.unwrap()[0];
        assert_eq!(
            t.role_credentials
                .as_ref()
                .unwrap()
                .credentials_id
                .as_deref(),
            Some("c1")
        );
        let c = json!({"type": "IAMRoleCredentialsMessage", "message": {
            "messageId": "m1", "taskArn": "t", "roleType": "TaskApplication",
            "roleCredentials": {"credentialsId": "c1", "accessKeyId": "AK",
                "secretAccessKey": "SK", "sessionToken": "TK",
                "expiration": "2026-11-23T21:00:00Z"}}});
        let Some(Inbound::Credentials(c)) = inbound(c) else {
            panic!("credentials")
        };
        assert_eq!(c.message_id.as_deref(), Some("m1"));
        assert_eq!(c.role_type.as_deref(), Some("TaskApplication"));
        let rc = c.role_credentials.unwrap();
        assert_eq!(rc.session_token.as_deref(), Some("TK"));
        assert_eq!(rc.expiration.as_deref(), Some("2026-11-23T21:00:00Z"));
        let bad = json!({"type": "IAMRoleCredentialsMessage", "message": {"roleCredentials": 5}});
        assert!(inbound(bad).is_none());
        assert!(inbound(json!({"type": "HeartbeatMessage", "message": {}})).is_none());
        // Found by afl (bench/fuzz.sh frames): a frame that is not an object panicked.
        for odd in [
            json!(1),
            json!("PayloadMessage"),
            json!([1]),
            json!(null),
            json!(true),
        ] {
            assert!(inbound(odd).is_none());
        }
    }

    #[test]
    fn silence_deadline_follows_the_heartbeat_interval() {
        let mut d = SilenceDeadline::default();
        assert_eq!(d.deadline(), Duration::from_secs(90));
        let t = Clock::system().instant();
        d.heartbeat(t);
        assert_eq!(d.deadline(), Duration::from_secs(90));
        d.heartbeat(t + Duration::from_secs(5));
        assert_eq!(d.deadline(), Duration::from_secs(15));
        d.heartbeat(t + Duration::from_secs(5) + Duration::from_millis(200));
        assert_eq!(d.deadline(), Duration::from_secs(3));
    }
}
