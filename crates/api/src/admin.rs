//! berth's own administration API, on the JSON protocol like the AWS services
//! (`BerthAdmin_20261123.<Operation>`, SigV4 signing name `berth`): join tokens for nodes.
//! Only full keys may call it (join tokens are refused by the control plane's authorization).
//!
//! - `CreateJoinToken {cluster, expiresInSeconds?, description?}` →
//!   `{token: "KEY:SECRET", accessKeyId, secretAccessKey, cluster, createdAt, expiresAt?}`
//! - `ListJoinTokens {}` → `{tokens: [{accessKeyId, cluster, createdAt, expiresAt?, description}]}`
//! - `RevokeJoinToken {accessKeyId}` → `{}`

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::awsjson::{JsonService, RequestContext};
use crate::error::AwsError;

pub const TARGET_PREFIX: &str = "BerthAdmin_20261123";
pub const OPERATIONS: &[&str] = &["CreateJoinToken", "ListJoinTokens", "RevokeJoinToken"];

pub struct Admin {
    control: Arc<berth_control::Control>,
}

impl Admin {
    pub fn new(control: Arc<berth_control::Control>) -> Self {
        Admin { control }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateJoinToken {
    cluster: String,
    expires_in_seconds: Option<u64>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RevokeJoinToken {
    access_key_id: String,
}

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, AwsError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| AwsError::serialization(e.to_string()))
}

fn encode(v: serde_json::Value) -> Result<Vec<u8>, AwsError> {
    serde_json::to_vec(&v).map_err(|e| AwsError::new(500, "ServerException", e.to_string()))
}

#[async_trait]
impl JsonService for Admin {
    fn name(&self) -> &'static str {
        "berth"
    }
    fn target_prefix(&self) -> &'static str {
        TARGET_PREFIX
    }
    fn signing_name(&self) -> &'static str {
        "berth"
    }
    fn operation(&self, op: &str) -> Option<&'static str> {
        OPERATIONS.iter().find(|o| **o == op).copied()
    }

    async fn call(
        &self,
        op: &'static str,
        body: Bytes,
        ctx: &RequestContext,
    ) -> Result<Vec<u8>, AwsError> {
        // Join tokens are not administrators; role sessions need `berth:<op>` on every
        // resource (these operations name none).
        let access = berth_control::command::Access::default();
        self.control
            .authorize_access(&ctx.caller, "berth", op, &access)?;
        match op {
            "CreateJoinToken" => {
                let r: CreateJoinToken = decode(&body)?;
                let (key, info) = self
                    .control
                    .create_join_token(&r.cluster, r.expires_in_seconds, &r.description)
                    .await?;
                encode(json!({
                    "token": format!("{}:{}", key.access_key_id, key.secret_access_key),
                    "accessKeyId": key.access_key_id,
                    "secretAccessKey": key.secret_access_key,
                    "cluster": info.cluster,
                    "createdAt": info.created_at,
                    "expiresAt": info.expires_at,
                }))
            }
            "ListJoinTokens" => encode(json!({"tokens": self.control.list_join_tokens()})),
            "RevokeJoinToken" => {
                let r: RevokeJoinToken = decode(&body)?;
                self.control.revoke_join_token(&r.access_key_id).await?;
                encode(json!({}))
            }
            _ => Err(AwsError::client(
                "UnknownOperationException",
                format!("Unknown operation {op}"),
            )),
        }
    }
}
