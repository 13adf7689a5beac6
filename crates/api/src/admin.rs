//! berth's own administration API, on the JSON protocol like the AWS services
//! (`BerthAdmin_20261123.<Operation>`, SigV4 signing name `berth`): join tokens for nodes.
//! A codec in front of the control plane's admin table ([`berth_control::admin_ops`]); only full
//! keys and sessions allowed `berth:<op>` may call it (join tokens are refused there).
//!
//! - `CreateJoinToken {cluster, expiresInSeconds?, description?}` →
//!   `{token: "KEY:SECRET", accessKeyId, secretAccessKey, cluster, createdAt, expiresAt?}`
//! - `ListJoinTokens {}` → `{tokens: [{accessKeyId, cluster, createdAt, expiresAt?, description}]}`
//! - `RevokeJoinToken {accessKeyId}` → `{}`

use std::sync::Arc;

use async_trait::async_trait;
use berth_control::admin_ops::admin;
use bytes::Bytes;

use crate::awsjson::{JsonCodec, JsonService, RequestContext};
use crate::error::AwsError;

pub const TARGET_PREFIX: &str = "BerthAdmin_20261123";
pub const OPERATIONS: &[&str] = admin::OPERATIONS;

pub struct Admin {
    control: Arc<berth_control::Control>,
}

impl Admin {
    pub fn new(control: Arc<berth_control::Control>) -> Self {
        Admin { control }
    }
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
        let c = &*self.control;
        match admin::dispatch(c, c, &ctx.caller, op, JsonCodec(&body)).await {
            Some(r) => r,
            None => Err(AwsError::client(
                "UnknownOperationException",
                format!("Unknown operation {op}"),
            )),
        }
    }
}
