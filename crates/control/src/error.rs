//! The control plane's errors. Each variant is one of the ECS model's error shapes, so the
//! front door can put it on the wire unchanged: [`ControlError::code`] is the shape name.

use berth_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// `ClusterNotFoundException`
    #[error("Cluster not found.")]
    ClusterNotFound,
    /// `InvalidParameterException`: a request member has a value the operation cannot take.
    #[error("{0}")]
    InvalidParameter(String),
    /// `ClientException`: the request is well-formed but refers to something that cannot be
    /// used (an unknown task definition, …).
    #[error("{0}")]
    Client(String),
    /// `ClusterContainsServicesException`
    #[error("The Cluster cannot be deleted while Services are active.")]
    ClusterContainsServices,
    /// `ClusterContainsContainerInstancesException`
    #[error("The Cluster cannot be deleted while Container Instances are active or draining.")]
    ClusterContainsContainerInstances,
    /// `ClusterContainsTasksException`
    #[error("The Cluster cannot be deleted while Tasks are active.")]
    ClusterContainsTasks,
    /// `ServiceNotFoundException`
    #[error("Service not found.")]
    ServiceNotFound,
    /// `ServiceNotActiveException`
    #[error("Service was not ACTIVE.")]
    ServiceNotActive,
    /// `ResourceNotFoundException`
    #[error("{0}")]
    ResourceNotFound(String),
    /// `ResourceInUseException`
    #[error("{0}")]
    ResourceInUse(String),
    /// `AttributeLimitExceededException`
    #[error("{0}")]
    AttributeLimitExceeded(String),
    /// `LimitExceededException`
    #[error("{0}")]
    LimitExceeded(String),
    /// `AccessDeniedException`: the credentials may not do this.
    #[error("{0}")]
    AccessDenied(String),
    /// `ServerException`: our fault.
    #[error("{0}")]
    Server(String),
    /// An IAM or STS error: its code (`NoSuchEntity`, `MalformedPolicyDocument`, …), HTTP
    /// status and message.
    #[error("{message}")]
    Iam {
        code: &'static str,
        status: u16,
        message: String,
    },
}

impl ControlError {
    /// The ECS error shape name, as it goes in `__type`.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::ClusterNotFound => "ClusterNotFoundException",
            ControlError::InvalidParameter(_) => "InvalidParameterException",
            ControlError::Client(_) => "ClientException",
            ControlError::ClusterContainsServices => "ClusterContainsServicesException",
            ControlError::ClusterContainsContainerInstances => {
                "ClusterContainsContainerInstancesException"
            }
            ControlError::ClusterContainsTasks => "ClusterContainsTasksException",
            ControlError::ServiceNotFound => "ServiceNotFoundException",
            ControlError::ServiceNotActive => "ServiceNotActiveException",
            ControlError::ResourceNotFound(_) => "ResourceNotFoundException",
            ControlError::ResourceInUse(_) => "ResourceInUseException",
            ControlError::AttributeLimitExceeded(_) => "AttributeLimitExceededException",
            ControlError::LimitExceeded(_) => "LimitExceededException",
            ControlError::AccessDenied(_) => "AccessDeniedException",
            ControlError::Server(_) => "ServerException",
            ControlError::Iam { code, .. } => code,
        }
    }

    /// The HTTP status: 500 for server faults, 400 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            ControlError::Server(_) => 500,
            ControlError::Iam { status, .. } => *status,
            _ => 400,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        ControlError::InvalidParameter(msg.into())
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        ControlError::Server(format!("state store: {e}"))
    }
}

impl From<serde_json::Error> for ControlError {
    fn from(e: serde_json::Error) -> Self {
        ControlError::Server(format!("stored record is unreadable: {e}"))
    }
}

pub type Result<T, E = ControlError> = std::result::Result<T, E>;
