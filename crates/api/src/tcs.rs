//! The telemetry session, as the ECS agent's TCS speaks it: `GET
//! /ws?cluster=…&containerInstance=…` on the endpoint `DiscoverPollEndpoint` names as
//! `telemetryEndpoint` (the front door itself), a SigV4-signed upgrade ([`crate::acs::handle`]
//! checks it and the instance), then JSON text frames `{"type":"<Shape>","message":{…}}`.
//!
//! Agent → server: `PublishMetricsRequest` (each running container's CPU and memory; kept
//! as the `/metrics` gauges of [`berth_control::telemetry`]), `PublishHealthRequest`
//! (container health → the tasks' `healthStatus`), `PublishInstanceStatusRequest`; each is
//! acknowledged (`AckPublishMetric`, `AckPublishHealth`, `AckPublishInstanceStatus`).
//! Server → agent: `HeartbeatMessage` every heartbeat interval, and
//! `StopTelemetrySessionMessage` when the session's key is no longer valid.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use berth_model::wire::tcs::PublishMetricsRequest;
use serde_json::{Value, json};

use crate::AppState;
use crate::agent_ws::{frame, key_valid, normal_close, on_health};

pub async fn session(
    state: Arc<AppState>,
    mut socket: WebSocket,
    cluster: String,
    instance: String,
    key: String,
) {
    tracing::info!(%cluster, %instance, "telemetry session opened");
    let mut heartbeat = tokio::time::interval(state.control.liveness().heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let why = loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if !key_valid(&state, &key) {
                    let m = json!({"message": "the session's credentials are no longer valid"});
                    let _ = socket
                        .send(Message::Text(frame("StopTelemetrySessionMessage", m).into()))
                        .await;
                    let _ = socket.send(Message::Close(Some(normal_close()))).await;
                    break "credentials no longer valid";
                }
                let hb = json!({"healthy": true});
                if socket.send(Message::Text(frame("HeartbeatMessage", hb).into())).await.is_err() {
                    break "send failed";
                }
            }
            incoming = socket.recv() => {
                match incoming {
                    Some(Ok(Message::Text(t))) => {
                        if let Some(reply) = on_message(&state, &cluster, &instance, t.as_str()).await
                            && socket.send(Message::Text(reply.into())).await.is_err()
                        {
                            break "send failed";
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break "closed by the agent",
                    Some(Ok(_)) => {}
                }
            }
        }
    };
    tracing::info!(%cluster, %instance, why, "telemetry session closed");
}

/// The JSON of a telemetry frame. The ECS agent puts the headers of a signed request (lines
/// `Name: value`, then a blank line) before the JSON of every frame it sends on this
/// session; berth's agent sends the JSON alone.
#[doc(hidden)]
pub fn frame_json(text: &str) -> &str {
    if text.trim_start().starts_with('{') {
        return text;
    }
    text.split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .map_or(text, |(_, json)| json)
}

/// Handle one frame; the acknowledgement to send back, if any.
async fn on_message(state: &AppState, cluster: &str, instance: &str, text: &str) -> Option<String> {
    let v: Value = match serde_json::from_str(frame_json(text)) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("telemetry: unreadable frame: {e}");
            return None;
        }
    };
    let msg = v["message"].clone();
    match v["type"].as_str().unwrap_or_default() {
        "PublishMetricsRequest" => match serde_json::from_value::<PublishMetricsRequest>(msg) {
            Ok(r) => {
                if let Err(e) = state.control.publish_metrics(cluster, instance, &r) {
                    tracing::warn!("metrics report refused: {e}");
                }
                Some(frame("AckPublishMetric", json!({"message": "ok"})))
            }
            Err(e) => {
                tracing::warn!("bad PublishMetricsRequest: {e}");
                None
            }
        },
        "PublishHealthRequest" => on_health(state, cluster, instance, msg)
            .await
            .then(|| frame("AckPublishHealth", json!({"message": "ok"}))),
        "PublishInstanceStatusRequest" => {
            Some(frame("AckPublishInstanceStatus", json!({"message": "ok"})))
        }
        other => {
            tracing::debug!("telemetry message {other} ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_signed_headers_first_are_read() {
        let json = r#"{"type":"PublishHealthRequest","message":{}}"#;
        assert_eq!(frame_json(json), json);
        let signed = format!(
            "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261123/us-east-1/ecs/aws4_request\r\nX-Amz-Date: 20261123T000000Z\r\nHost: berth:8470\r\n\r\n{json}"
        );
        assert_eq!(frame_json(&signed), json);
        assert_eq!(frame_json("garbage"), "garbage");
    }
}
