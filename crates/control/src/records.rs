//! What the control plane keeps in the store, one JSON document per key (see [`crate::keys`]).
//! Where a wire shape already says everything, the record *is* the wire shape; records add
//! only what the wire does not carry. Derived numbers (counts, remaining resources) are never
//! stored: the view computes them.

use berth_model::wire::ecs::{Tag, Task, TaskDefinition};
use serde::{Deserialize, Serialize};

/// A task definition revision and its tags (DescribeTaskDefinition returns tags beside it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskDefRecord {
    pub def: TaskDefinition,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// The revision counter of a family: revisions are never reused, even after deletion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FamilyRecord {
    pub family: String,
    pub last_revision: i32,
}

/// What a task holds on its container instance while it is not STOPPED.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reservation {
    pub cpu: i64,
    pub memory: i64,
    #[serde(default)]
    pub ports_tcp: Vec<u16>,
    #[serde(default)]
    pub ports_udp: Vec<u16>,
    #[serde(default)]
    pub gpus: i64,
}

/// A task as ECS describes it, plus what it reserves on its instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    pub task: Task,
    #[serde(default)]
    pub reserved: Reservation,
}

/// An access key of berth's IAM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessKeyRecord {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub user_name: String,
    /// `Active` or `Inactive`, as IAM says.
    pub status: String,
    pub created_at: f64,
    /// A join token's limits; `None` for a full key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<KeyScope>,
}

/// An IAM role: who may assume it (the trust policy) and what its sessions may do (inline
/// policies, by name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoleRecord {
    pub role_name: String,
    /// `AROA…`, unique for the life of this role (a role made again under the same name gets a
    /// new one, and the old one's sessions end).
    pub role_id: String,
    pub path: String,
    pub arn: String,
    pub create_date: f64,
    pub assume_role_policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub max_session_duration: i64,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// Inline policies: name → document, in name order.
    #[serde(default)]
    pub policies: std::collections::BTreeMap<String, String>,
    /// ARNs of the managed policies attached, in attachment order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attached: Vec<String>,
}

/// A customer managed policy (one version, `v1`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManagedPolicyRecord {
    pub policy_name: String,
    /// `ANPA…`
    pub policy_id: String,
    pub arn: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub create_date: f64,
    pub document: String,
}

/// What a join token (`berth token create`) may do: the agent operations, in one cluster,
/// until it expires.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyScope {
    pub cluster: String,
    /// Epoch seconds; `None`: never.
    pub expires_at: Option<f64>,
    #[serde(default)]
    pub description: String,
}

/// A service as ECS describes it (configuration, deployments without their counts, events),
/// plus what the service controller remembers between decisions. Running, pending and failed
/// counts are not stored: they are counted from the service's tasks when asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceRecord {
    pub service: berth_model::wire::ecs::Service,
    #[serde(default)]
    pub ctl: ServiceControl,
}

/// The service controller's own notes on a service.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceControl {
    /// The last deployment that completed: what a circuit-breaker rollback goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed: Option<berth_model::wire::ecs::Deployment>,
    /// Whether the steady-state event was written since the service last changed.
    #[serde(default)]
    pub steady: bool,
    /// Whether launches are being held back because tasks keep failing (event written).
    #[serde(default)]
    pub throttled: bool,
    /// Whether the "cannot place" event of the current shortage was written.
    #[serde(default)]
    pub unplaced: bool,
}
