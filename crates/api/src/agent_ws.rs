//! What the agent's two websocket sessions (ACS, [`crate::acs`]; TCS, [`crate::tcs`]) share:
//! how frames are written, whether the session's credential still holds, health reports, the
//! normal close.

use berth_model::wire::tcs::PublishHealthRequest;
use serde_json::Value;

use crate::AppState;

/// A frame as ACS frames messages.
pub fn frame(kind: &str, message: impl serde::Serialize) -> String {
    #[derive(serde::Serialize)]
    struct Frame<'a, M> {
        r#type: &'a str,
        message: M,
    }
    // Written straight out (no intermediate `Value`): every payload to every node goes
    // through here. A message that cannot be written goes out as an empty object.
    serde_json::to_string(&Frame {
        r#type: kind,
        message: &message,
    })
    .unwrap_or_else(|_| format!(r#"{{"type":{},"message":{{}}}}"#, Value::from(kind)))
}

/// A `PublishHealthRequest` from a session (ACS or TCS); whether it could be read.
pub(crate) async fn on_health(state: &AppState, cluster: &str, instance: &str, msg: Value) -> bool {
    match serde_json::from_value::<PublishHealthRequest>(msg) {
        Ok(r) => {
            let from = Some((cluster, instance));
            if let Err(e) = state.control.publish_health_from(from, r).await {
                tracing::warn!("health report refused: {e}");
            }
            true
        }
        Err(e) => {
            tracing::warn!("bad PublishHealthRequest: {e}");
            false
        }
    }
}

/// Whether a session's access key still holds (a revoked or expired join token ends its
/// sessions; so does an expired role session, or its role's deletion).
pub(crate) fn key_valid(state: &AppState, key: &str) -> bool {
    match key.split_once('~') {
        Some((akid, token)) => state.control.principal(akid, Some(token)).is_ok(),
        None => berth_auth::SecretLookup::secret_for(state.control.as_ref(), key).is_some(),
    }
}

/// A close frame with status 1000 (normal closure), which the ECS agent treats as a planned end.
pub(crate) fn normal_close() -> axum::extract::ws::CloseFrame {
    axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }
}
