//! The agent session on the front door, as the ECS agent's ACS speaks it: `GET
//! /ws?clusterArn=…&containerInstanceArn=…` (the endpoint `DiscoverPollEndpoint` names), a
//! SigV4-signed upgrade request (service `ecs`), then a websocket of JSON text frames
//! `{"type":"<Shape>","message":{…}}`.
//!
//! Server → agent: `PayloadMessage` (tasks to run or stop, from the control plane's feed;
//! the first one carries every unfinished task of the instance), `HeartbeatMessage` every 30 s.
//! Agent → server: `AckRequest`, `HeartbeatAckRequest`; and two berth extensions on the same
//! connection: `PublishHealthRequest` (the TCS shape: container health) and
//! `BerthTaskNetwork` (the address a node gave an `awsvpc` task). State changes travel the
//! ordinary ECS API (`SubmitTaskStateChange`, `SubmitContainerStateChange`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use berth_model::wire::tcs::PublishHealthRequest;
use http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::AwsError;

/// A frame as ACS frames messages.
pub fn frame(kind: &str, message: impl serde::Serialize) -> String {
    json!({"type": kind, "message": message}).to_string()
}

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
    let verified = match state.authenticate(&parts, b"") {
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
    let cluster = q
        .get("clusterArn")
        .cloned()
        .unwrap_or_else(|| "default".into());
    let Some(instance) = q.get("containerInstanceArn").cloned() else {
        return AwsError::client(
            "InvalidParameterException",
            "containerInstanceArn is required.",
        )
        .into_response();
    };
    let feed = match state.control.agent_feed(&cluster, &instance).await {
        Ok(f) => f,
        Err(e) => return AwsError::from(e).into_response(),
    };
    tracing::info!(%cluster, %instance, "agent session opened");
    ws.on_upgrade(move |socket| session(state, socket, feed, cluster, instance))
}

async fn session(
    state: Arc<AppState>,
    mut socket: WebSocket,
    mut feed: tokio::sync::mpsc::Receiver<berth_model::wire::acs::PayloadMessage>,
    cluster: String,
    instance: String,
) {
    let mut heartbeat = tokio::time::interval(Duration::from_secs(30));
    heartbeat.tick().await;
    loop {
        tokio::select! {
            msg = feed.recv() => {
                let Some(msg) = msg else { break };
                if socket.send(Message::Text(frame("PayloadMessage", &msg).into())).await.is_err() {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                let hb = json!({"healthy": true, "messageId": berth_model::arn::new_uuid()});
                if socket.send(Message::Text(frame("HeartbeatMessage", hb).into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                match incoming {
                    Some(Ok(Message::Text(t))) => on_agent_message(&state, &cluster, t.as_str()).await,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
    tracing::info!(%cluster, %instance, "agent session closed");
}

async fn on_agent_message(state: &AppState, cluster: &str, text: &str) {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("agent sent an unreadable frame: {e}");
            return;
        }
    };
    let msg = v["message"].clone();
    match v["type"].as_str().unwrap_or_default() {
        "AckRequest" | "HeartbeatAckRequest" => {}
        "PublishHealthRequest" => match serde_json::from_value::<PublishHealthRequest>(msg) {
            Ok(r) => {
                if let Err(e) = state.control.publish_health(r).await {
                    tracing::warn!("health report refused: {e}");
                }
            }
            Err(e) => tracing::warn!("bad PublishHealthRequest: {e}"),
        },
        "BerthTaskNetwork" => {
            let s = |k: &str| msg[k].as_str().unwrap_or_default().to_string();
            let net = berth_control::agent::TaskNetwork {
                private_ipv4: s("privateIpv4"),
                mac: s("mac"),
                subnet: s("subnet"),
            };
            let c = msg["cluster"].as_str().unwrap_or(cluster).to_string();
            if let Err(e) = state
                .control
                .report_task_network(&c, &s("taskArn"), &net)
                .await
            {
                tracing::warn!("network report refused: {e}");
            }
        }
        other => tracing::debug!("agent message {other} ignored"),
    }
}
