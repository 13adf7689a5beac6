//! The agent's view of the control plane: the calls the ECS container agent makes, in the ECS
//! agent protocol's own shapes. Under `berth up` the implementation calls the control plane
//! in-process; the agent session over a websocket implements the same trait.

use berth_model::wire::acs::{
    AckRequest, IAMRoleCredentialsAckRequest, IAMRoleCredentialsMessage, PayloadMessage,
};
use berth_model::wire::ecs::{
    ContainerInstance, RegisterContainerInstanceRequest, SubmitContainerStateChangeRequest,
    SubmitTaskStateChangeRequest,
};
use berth_model::wire::tcs::{PublishHealthRequest, PublishMetricsRequest};
use tokio::sync::mpsc;

/// A call to the control plane failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct BackendError {
    /// The AWS error code (`InvalidParameterException`, `ServerException`, …).
    pub code: String,
    pub message: String,
}

impl BackendError {
    /// Errors worth retrying (the control plane was unavailable), as opposed to refusals.
    pub fn retryable(&self) -> bool {
        !matches!(
            self.code.as_str(),
            "InvalidParameterException" | "ClusterNotFoundException" | "AccessDeniedException"
        )
    }
}

/// What the network gave an `awsvpc` task, reported to the control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskNetworkReport {
    pub cluster: String,
    pub task_arn: String,
    pub private_ipv4: String,
    pub mac: String,
    pub subnet: String,
}

/// A message of the control plane in the agent's session.
///
/// No `Debug`: credentials messages carry secret keys, which must not reach a log.
pub enum Inbound {
    /// Tasks to run or stop (ACS `PayloadMessage`); they may carry their roles' credentials.
    /// (Boxed, as the other: a session's channel of them stays small.)
    Payload(Box<PayloadMessage>),
    /// Fresh credentials of a task's role (ACS `IAMRoleCredentialsMessage`), sent before the
    /// ones the task holds expire.
    Credentials(Box<IAMRoleCredentialsMessage>),
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// `RegisterContainerInstance` (with the instance's ARN when re-attaching after a restart).
    async fn register(
        &self,
        req: RegisterContainerInstanceRequest,
    ) -> Result<ContainerInstance, BackendError>;
    /// The ACS session: messages for this instance, starting with a payload of every
    /// unfinished task.
    async fn messages(
        &self,
        cluster: &str,
        instance_arn: &str,
    ) -> Result<mpsc::Receiver<Inbound>, BackendError>;
    /// Acknowledge a payload (ACS `AckRequest`).
    async fn ack(&self, ack: AckRequest);
    /// Acknowledge credentials, from a refresh or a payload (ACS
    /// `IAMRoleCredentialsAckRequest`).
    async fn ack_credentials(&self, ack: IAMRoleCredentialsAckRequest);
    async fn submit_task_state_change(
        &self,
        req: SubmitTaskStateChangeRequest,
    ) -> Result<(), BackendError>;
    async fn submit_container_state_change(
        &self,
        req: SubmitContainerStateChangeRequest,
    ) -> Result<(), BackendError>;
    /// TCS `PublishHealth`: container health results.
    async fn publish_health(&self, req: PublishHealthRequest) -> Result<(), BackendError>;
    /// TCS `PublishMetrics`: the running containers' CPU and memory use.
    async fn publish_metrics(&self, req: PublishMetricsRequest) -> Result<(), BackendError>;
    /// The task's network interface (berth nodes allocate it themselves).
    async fn report_task_network(&self, report: TaskNetworkReport) -> Result<(), BackendError>;
}
