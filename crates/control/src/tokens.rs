//! Join tokens: access keys that let a node join one cluster (`berth token create`). A token
//! may call only what an agent calls — register, the session, state reports, draining its
//! node, a registry password and image pulls — for its own cluster, until it expires or is
//! revoked. Revoking deletes the key: its requests and its open agent sessions are refused
//! from then on. (Role sessions are authorized by their policies: see [`crate::iam`].)

use berth_model::arn::EcsResource;
use berth_store::{Compare, Op, Txn};

use crate::records::{AccessKeyRecord, KeyScope};
use crate::{AccessKey, Control, ControlError, Result, keys};

/// The operations a join token may call, as `service:Operation`.
pub const AGENT_OPERATIONS: &[&str] = &[
    "ecs:RegisterContainerInstance",
    "ecs:DeregisterContainerInstance",
    "ecs:DiscoverPollEndpoint",
    "ecs:SubmitTaskStateChange",
    "ecs:SubmitContainerStateChange",
    "ecs:SubmitAttachmentStateChanges",
    "ecs:Poll",
    "ecs:StartTelemetrySession",
    // A node drains itself (the ECS agent does on a spot interruption notice), as AWS's
    // managed container-instance role allows.
    "ecs:UpdateContainerInstancesState",
    "ecr:GetAuthorizationToken",
    // Pulls, as AWS's managed container-instance role allows.
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
];

/// User name of join tokens' keys.
pub const TOKEN_USER: &str = "berth-agent";

/// A join token as `berth token list` shows it (never the secret).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub access_key_id: String,
    pub cluster: String,
    pub created_at: f64,
    pub expires_at: Option<f64>,
    pub description: String,
}

fn info(r: &AccessKeyRecord, s: &KeyScope) -> TokenInfo {
    TokenInfo {
        access_key_id: r.access_key_id.clone(),
        cluster: s.cluster.clone(),
        created_at: r.created_at,
        expires_at: s.expires_at,
        description: s.description.clone(),
    }
}

fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Control {
    /// Whether a key is usable now (exists, active, not expired).
    pub(crate) fn key_usable(r: &AccessKeyRecord, at: f64) -> bool {
        r.status == "Active"
            && r.scope
                .as_ref()
                .and_then(|s| s.expires_at)
                .is_none_or(|e| e > at)
    }

    /// Make a join token for `cluster`, valid for `expires_in` seconds (`None`: until revoked).
    pub async fn create_join_token(
        &self,
        cluster: &str,
        expires_in: Option<u64>,
        description: &str,
    ) -> Result<(AccessKey, TokenInfo)> {
        let cname = self.cluster_name_of(Some(cluster))?.to_string();
        if !valid_cluster_name(&cname) {
            return Err(ControlError::invalid(format!(
                "Invalid cluster name {cname:?}: up to 255 letters, digits, '-' and '_'."
            )));
        }
        if expires_in == Some(0) {
            return Err(ControlError::invalid("expiresInSeconds must be positive."));
        }
        if description.chars().count() > 255 {
            return Err(ControlError::invalid(
                "description may be at most 255 characters.",
            ));
        }
        let created = self.now().as_secs_f64();
        let creds = berth_auth::new_access_key();
        let scope = KeyScope {
            cluster: cname,
            expires_at: expires_in.map(|s| created + s as f64),
            description: description.to_string(),
        };
        let rec = AccessKeyRecord {
            access_key_id: creds.access_key_id.clone(),
            secret_access_key: creds.secret_access_key.clone(),
            user_name: TOKEN_USER.to_string(),
            status: "Active".to_string(),
            created_at: created,
            scope: Some(scope.clone()),
        };
        if !self
            .put_new(&keys::access_key(&rec.access_key_id), &rec)
            .await?
        {
            return Err(ControlError::Server("access key id collision".into()));
        }
        Ok((
            AccessKey {
                access_key_id: creds.access_key_id,
                secret_access_key: creds.secret_access_key,
            },
            info(&rec, &scope),
        ))
    }

    /// Every join token (expired ones included, so that they can be revoked).
    pub fn list_join_tokens(&self) -> Vec<TokenInfo> {
        self.view
            .data
            .read()
            .access_keys()
            .values()
            .filter_map(|e| Some(info(&e.value, e.value.scope.as_ref()?)))
            .collect()
    }

    /// Delete a join token. Full keys cannot be revoked this way.
    pub async fn revoke_join_token(&self, access_key_id: &str) -> Result<()> {
        let rev = {
            let d = self.view.data.read();
            match d.access_keys().get(access_key_id) {
                Some(e) if e.value.scope.is_some() => e.rev,
                _ => {
                    return Err(ControlError::ResourceNotFound(format!(
                        "No join token {access_key_id}."
                    )));
                }
            }
        };
        let key = keys::access_key(access_key_id);
        self.commit(Txn {
            compare: vec![Compare::mod_revision_is(key.clone(), rev)],
            success: vec![Op::delete(key)],
            failure: vec![],
        })
        .await?;
        Ok(())
    }

    /// May the stored access key `access_key_id` do `action` (in the ECS cluster `cluster`,
    /// speaking for the container instances `instances`)? Full keys may do anything; join
    /// tokens only the agent operations in their cluster, for the instances they registered.
    pub(crate) fn key_may(
        &self,
        access_key_id: &str,
        service: &str,
        action: &str,
        cluster: Option<&str>,
        instances: &[String],
    ) -> Result<()> {
        let d = self.view.data.read();
        let Some(k) = d.access_keys().get(access_key_id) else {
            return Err(ControlError::AccessDenied("Unknown access key.".into()));
        };
        let Some(scope) = &k.value.scope else {
            return Ok(());
        };
        let scope = scope.clone();
        let user = k.value.user_name.clone();
        drop(d);
        let principal = format!("arn:aws:iam::{}:user/{}", self.part.account_id, user);
        if !AGENT_OPERATIONS.contains(&action) {
            return Err(ControlError::AccessDenied(format!(
                "User: {principal} is not authorized to perform: {action} (a join token may only \
                 call agent operations)"
            )));
        }
        if service == "ecs" {
            let asked = cluster.unwrap_or(crate::clusters::DEFAULT_CLUSTER);
            let name = match self.part.parse_ecs(asked) {
                Some(EcsResource::Cluster { name }) => name,
                _ => asked.to_string(),
            };
            if name != scope.cluster {
                return Err(ControlError::AccessDenied(format!(
                    "User: {principal} is not authorized to perform: {action} on resource: {} \
                     (the token joins cluster {})",
                    self.part.cluster(&name),
                    scope.cluster
                )));
            }
        }
        // A token speaks only for the nodes it registered: another node's session would
        // carry that node's tasks and their role credentials. (Instances registered before
        // berth recorded owners are claimed by the first token that re-registers them.)
        let d = self.view.data.read();
        for arn in instances {
            let owner = match self.part.parse_ecs(arn) {
                Some(EcsResource::ContainerInstance { cluster, id }) => {
                    d.instance_owners().get(&(cluster, id))
                }
                _ => None,
            };
            if owner.is_some_and(|o| o != access_key_id) {
                return Err(ControlError::AccessDenied(format!(
                    "User: {principal} is not authorized to perform: {action} on resource: \
                     {arn} (the container instance was registered by another credential)"
                )));
            }
        }
        Ok(())
    }
}
