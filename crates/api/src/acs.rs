//! The agent session on the front door, as the ECS agent's ACS speaks it: `GET
//! /ws?clusterArn=…&containerInstanceArn=…` (the endpoint `DiscoverPollEndpoint` names), a
//! SigV4-signed upgrade request (service `ecs`), then a websocket of JSON text frames
//! `{"type":"<Shape>","message":{…}}`. The same path with `cluster=…&containerInstance=…` is
//! the telemetry session ([`crate::tcs`]).
//!
//! Server → agent: `PayloadMessage` (tasks to run or stop, from the control plane's feed;
//! the first one carries every unfinished task of the instance), `TaskManifestMessage` (after
//! the first payload and every 5 minutes), `HeartbeatMessage` every heartbeat interval,
//! `TaskStopVerificationAck`, `CloseMessage`. Agent → server: `AckRequest`,
//! `HeartbeatAckRequest`, `TaskStopVerificationMessage`; and two berth extensions on the same
//! connection: `PublishHealthRequest` (the TCS shape: container health) and
//! `BerthTaskNetwork` (the address a node gave an `awsvpc` task). State changes travel the
//! ordinary ECS API (`SubmitTaskStateChange`, `SubmitContainerStateChange`). A session for an
//! unknown or deregistered instance is refused before the upgrade with ACS's error types.
//!
//! The ECS agent says which versions it runs only in the session's URL (`agentVersion`,
//! `agentHash`, `dockerVersion`); they become the instance's `versionInfo` as the session
//! opens. However a session ends (the agent closes it or its connection goes; berth closes
//! it because its credentials or instance are gone or the agent went silent), it is logged
//! with the reason and handed back to node liveness, which disconnects the instance at once
//! unless another of its sessions is open.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use berth_control::agent::FeedMessage;
use berth_model::wire::acs::TaskStopVerificationMessage;
use berth_model::wire::ecs::VersionInfo;
use http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};

use crate::AppState;
use crate::agent_ws::{frame, key_valid, normal_close, on_health};
use crate::error::AwsError;

pub async fn handle(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let mut b = http::Request::builder().method(Method::GET).uri(uri);
    if let Some(h) = b.headers_mut() {
        *h = headers;
    }
    let parts = match b.body(()) {
        Ok(r) => r.into_parts().0,
        Err(e) => {
            return AwsError::client("InvalidParameterException", e.to_string()).into_response();
        }
    };
    let (verified, principal) = match state.authenticate(&parts, b"") {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    if verified.service != "ecs" {
        return AwsError::client(
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'ecs'. ",
        )
        .into_response();
    }
    // ACS names its parameters clusterArn/containerInstanceArn; the telemetry session (TCS)
    // cluster/containerInstance, on the same path.
    let telemetry = !q.contains_key("containerInstanceArn") && q.contains_key("containerInstance");
    let (cluster_param, instance_param, op) = if telemetry {
        ("cluster", "containerInstance", "StartTelemetrySession")
    } else {
        ("clusterArn", "containerInstanceArn", "Poll")
    };
    let cluster = q
        .get(cluster_param)
        .cloned()
        .unwrap_or_else(|| "default".into());
    let Some(instance) = q.get(instance_param).cloned() else {
        return AwsError::client(
            "InvalidParameterException",
            format!("{instance_param} is required."),
        )
        .into_response();
    };
    // The session speaks for its node: a join token only for an instance it registered.
    let access = state.control.node_access(&Some(cluster.clone()), &instance);
    let caller = crate::caller(&parts, principal);
    if let Err(e) = state.control.authorize_access(&caller, "ecs", op, &access) {
        return AwsError::from(e).into_response();
    }
    // What the session's credentials are checked by on every heartbeat: the access key, or a
    // role session's key and token.
    let key = caller.token_subject();
    // Check the instance before upgrading. A refusal is an HTTP error whose body the ECS
    // agent's websocket client reads (ACS framing, ACS's error types: it waits an hour after
    // InactiveInstanceException), with the error type in the AWS header as well.
    if let Err((kind, text)) = state.control.session_allowed(&cluster, &instance) {
        return refuse(kind, &text);
    }
    // Sessions are many and quiet: small buffers (tungstenite's default is 128 KiB each way,
    // 2.5 GiB for 10,000 agents); they grow for a large payload.
    let ws = ws.read_buffer_size(4096).write_buffer_size(0);
    if telemetry {
        return ws
            .on_upgrade(move |socket| crate::tcs::session(state, socket, cluster, instance, key));
    }
    let version = VersionInfo {
        agent_version: q.get("agentVersion").cloned(),
        agent_hash: q.get("agentHash").cloned(),
        docker_version: q.get("dockerVersion").cloned(),
    };
    ws.on_upgrade(move |socket| session(state, socket, cluster, instance, key, version))
}

/// Refuse a session before the upgrade, as ACS does.
fn refuse(kind: &str, text: &str) -> Response {
    let mut r = (
        http::StatusCode::BAD_REQUEST,
        [("content-type", "application/json")],
        frame(kind, json!({"message": text})),
    )
        .into_response();
    if let Ok(v) = http::HeaderValue::from_str(kind) {
        r.headers_mut().insert("x-amzn-ErrorType", v);
    }
    r
}

/// How an agent session ended.
enum Ended {
    /// The agent closed it, or its connection failed or went.
    Agent(&'static str),
    /// berth ends it, and tells the agent why (`CloseMessage`).
    Server(String),
    /// The control plane is stopping: the instance's presence is left to the liveness
    /// timeout of whichever server the agent reconnects to.
    Stopping,
}

async fn session(
    state: Arc<AppState>,
    mut socket: WebSocket,
    cluster: String,
    instance: String,
    key: String,
    version: VersionInfo,
) {
    // Presence first, then the feed: the feed's first payload is then news to nobody.
    let presence = match state
        .control
        .session_opened_with_version(&cluster, &instance, Some(&version))
        .await
    {
        Ok(p) => p,
        Err(e) => {
            let why = e.to_string();
            tracing::info!(%cluster, %instance, why, "agent session refused");
            return close(socket, &why).await;
        }
    };
    let feed = state.control.agent_feed(&cluster, &instance).await;
    let ended = match feed {
        Ok(mut feed) => {
            tracing::info!(%cluster, %instance, "agent session opened");
            serve(
                &state,
                &mut socket,
                &mut feed,
                &presence,
                &cluster,
                &instance,
                &key,
            )
            .await
        }
        Err(e) => Ended::Server(e.to_string()),
    };
    let why = match &ended {
        Ended::Agent(why) => (*why).to_string(),
        Ended::Server(why) => {
            close(socket, why).await;
            why.clone()
        }
        Ended::Stopping => "the control plane is stopping".to_string(),
    };
    tracing::info!(%cluster, %instance, why, "agent session closed");
    if !matches!(ended, Ended::Stopping)
        && let Err(e) = state.control.session_closed(presence).await
    {
        tracing::debug!(%cluster, %instance, "closing the session's presence: {e}");
    }
}

/// Run an open session until it ends; how it did.
async fn serve(
    state: &AppState,
    socket: &mut WebSocket,
    feed: &mut tokio::sync::mpsc::Receiver<FeedMessage>,
    presence: &berth_control::liveness::AgentSession,
    cluster: &str,
    instance: &str,
    key: &str,
) -> Ended {
    let live = state.control.liveness();
    let mut heartbeat = tokio::time::interval(live.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            msg = feed.recv() => {
                let Some(msg) = msg else { return Ended::Stopping };
                let text = match &msg {
                    FeedMessage::Payload(p) => frame("PayloadMessage", p),
                    FeedMessage::Manifest(m) => frame("TaskManifestMessage", m),
                    FeedMessage::Credentials(c) => frame("IAMRoleCredentialsMessage", c),
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return Ended::Agent("the agent's connection failed while sending");
                }
            }
            _ = heartbeat.tick() => {
                // ACS protocol version 2: a session whose agent stopped answering is closed.
                if presence.silent_for() > live.agent_timeout {
                    return Ended::Server("no heartbeat acknowledgement from the agent".into());
                }
                // A revoked or expired join token ends its sessions too.
                if !key_valid(state, key) {
                    return Ended::Server("the session's credentials are no longer valid".into());
                }
                // So does deregistering its instance.
                if let Err((_, why)) = state.control.session_allowed(cluster, instance) {
                    return Ended::Server(why);
                }
                let hb = json!({"healthy": true, "messageId": berth_model::arn::new_uuid()});
                if socket.send(Message::Text(frame("HeartbeatMessage", hb).into())).await.is_err() {
                    return Ended::Agent("the agent's connection failed while sending");
                }
            }
            incoming = socket.recv() => {
                match incoming {
                    Some(Ok(Message::Text(t))) => {
                        presence.heard();
                        if let Some(reply) = on_agent_message(state, cluster, instance, t.as_str()).await
                            && socket.send(Message::Text(reply.into())).await.is_err()
                        {
                            return Ended::Agent("the agent's connection failed while sending");
                        }
                    }
                    Some(Ok(Message::Close(_))) => return Ended::Agent("closed by the agent"),
                    None => return Ended::Agent("the agent's connection ended"),
                    Some(Err(_)) => return Ended::Agent("the agent's connection failed"),
                    Some(Ok(_)) => presence.heard(),
                }
            }
        }
    }
}

/// End a session with ACS's `CloseMessage`, saying why.
async fn close(mut socket: WebSocket, why: &str) {
    let _ = socket
        .send(Message::Text(
            frame("CloseMessage", json!({"message": why})).into(),
        ))
        .await;
    let _ = socket.send(Message::Close(Some(normal_close()))).await;
}

/// Handle one frame from the agent; the frame to answer with, if any.
async fn on_agent_message(
    state: &AppState,
    cluster: &str,
    instance: &str,
    text: &str,
) -> Option<String> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("agent sent an unreadable frame: {e}");
            return None;
        }
    };
    let msg = v["message"].clone();
    match v["type"].as_str().unwrap_or_default() {
        "AckRequest" | "HeartbeatAckRequest" | "IAMRoleCredentialsAckRequest" => {}
        "PublishHealthRequest" => {
            on_health(state, cluster, instance, msg).await;
        }
        "BerthTaskNetwork" => {
            let s = |k: &str| msg[k].as_str().unwrap_or_default().to_string();
            let net = berth_control::agent::TaskNetwork {
                private_ipv4: s("privateIpv4"),
                mac: s("mac"),
                subnet: s("subnet"),
            };
            // Only about this session's own tasks: its cluster, its instance.
            if let Err(e) = state
                .control
                .report_task_network_from(cluster, instance, &s("taskArn"), &net)
                .await
            {
                tracing::warn!("network report refused: {e}");
            }
        }
        "TaskStopVerificationMessage" => {
            match serde_json::from_value::<TaskStopVerificationMessage>(msg) {
                Ok(req) => {
                    let ack = state.control.verify_task_stops(cluster, instance, &req);
                    return Some(frame("TaskStopVerificationAck", ack));
                }
                Err(e) => tracing::warn!("bad TaskStopVerificationMessage: {e}"),
            }
        }
        other => tracing::debug!("agent message {other} ignored"),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_type_and_message() {
        let f: Value = serde_json::from_str(&frame("HeartbeatMessage", json!({"healthy": true})))
            .expect("json");
        assert_eq!(
            f,
            json!({"type": "HeartbeatMessage", "message": {"healthy": true}})
        );
    }
}
