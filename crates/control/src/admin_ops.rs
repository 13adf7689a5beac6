//! berth's own administration API as an operation table (`berth:CreateJoinToken`,
//! `berth:ListJoinTokens`, `berth:RevokeJoinToken`): join tokens for nodes. The operations name
//! no resource, so a role session needs `berth:<op>` on `*`; join tokens are not
//! administrators (their scope holds only agent operations).
//!
//! The request shapes are berth's own (no AWS model describes them); they refuse unknown
//! members like every other shape berth does not generate.

use serde::{Deserialize, Serialize};

use berth_model::wire::{FieldError, Validate};

use crate::command::{Access, Caller, Command};
use crate::tokens::TokenInfo;
use crate::{Control, ControlError, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJoinTokenRequest {
    pub cluster: String,
    pub expires_in_seconds: Option<u64>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateJoinTokenResponse {
    /// `KEY:SECRET`, what `berth agent --token-file` reads.
    pub token: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub cluster: String,
    pub created_at: f64,
    pub expires_at: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListJoinTokensRequest {}

#[derive(Debug, Clone, Serialize)]
pub struct ListJoinTokensResponse {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeJoinTokenRequest {
    pub access_key_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Empty {}

// Required members are non-optional fields: serde refuses their absence.
impl Validate for CreateJoinTokenRequest {
    fn validate(&self, _path: &str, _errs: &mut Vec<FieldError>) {}
}
impl Validate for ListJoinTokensRequest {
    fn validate(&self, _path: &str, _errs: &mut Vec<FieldError>) {}
}
impl Validate for RevokeJoinTokenRequest {
    fn validate(&self, _path: &str, _errs: &mut Vec<FieldError>) {}
}

impl Command<Control> for CreateJoinTokenRequest {
    type Output = CreateJoinTokenResponse;
    type Error = ControlError;
    const SERVICE: &'static str = "berth";
    const NAME: &'static str = "CreateJoinToken";
    async fn access(&self, _: &Control, _: &Control) -> Access {
        Access::any()
    }
    async fn run(self, _: &Control, c: &Control, _: &Caller) -> Result<CreateJoinTokenResponse> {
        let (key, info) = c
            .create_join_token(&self.cluster, self.expires_in_seconds, &self.description)
            .await?;
        Ok(CreateJoinTokenResponse {
            token: format!("{}:{}", key.access_key_id, key.secret_access_key),
            access_key_id: key.access_key_id,
            secret_access_key: key.secret_access_key,
            cluster: info.cluster,
            created_at: info.created_at,
            expires_at: info.expires_at,
        })
    }
}

impl Command<Control> for ListJoinTokensRequest {
    type Output = ListJoinTokensResponse;
    type Error = ControlError;
    const SERVICE: &'static str = "berth";
    const NAME: &'static str = "ListJoinTokens";
    async fn access(&self, _: &Control, _: &Control) -> Access {
        Access::any()
    }
    async fn run(self, _: &Control, c: &Control, _: &Caller) -> Result<ListJoinTokensResponse> {
        Ok(ListJoinTokensResponse {
            tokens: c.list_join_tokens(),
        })
    }
}

impl Command<Control> for RevokeJoinTokenRequest {
    type Output = Empty;
    type Error = ControlError;
    const SERVICE: &'static str = "berth";
    const NAME: &'static str = "RevokeJoinToken";
    async fn access(&self, _: &Control, _: &Control) -> Access {
        Access::any()
    }
    async fn run(self, _: &Control, c: &Control, _: &Caller) -> Result<Empty> {
        c.revoke_join_token(&self.access_key_id).await?;
        Ok(Empty {})
    }
}

crate::operation_table! {
    /// berth's administration API (`BerthAdmin_20261123`).
    pub mod admin on Control {
        CreateJoinToken => CreateJoinTokenRequest,
        ListJoinTokens => ListJoinTokensRequest,
        RevokeJoinToken => RevokeJoinTokenRequest,
    }
}
