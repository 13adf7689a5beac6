//! Errors of the registry: [`DistError`] carries the OCI distribution spec's codes (and the
//! HTTP status each goes with); [`EcrError`] carries the ECR API's error shapes.

use berth_store::StoreError;

/// An OCI distribution error: `{"errors":[{"code","message","detail"}]}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DistError {
    pub code: &'static str,
    pub message: String,
    pub status: u16,
}

impl DistError {
    fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        DistError {
            code,
            status,
            message: message.into(),
        }
    }
    pub fn blob_unknown(d: &str) -> Self {
        Self::new(
            "BLOB_UNKNOWN",
            404,
            format!("blob unknown to registry: {d}"),
        )
    }
    pub fn upload_unknown() -> Self {
        Self::new(
            "BLOB_UPLOAD_UNKNOWN",
            404,
            "blob upload unknown to registry",
        )
    }
    pub fn upload_invalid(m: impl Into<String>) -> Self {
        Self::new("BLOB_UPLOAD_INVALID", 400, m)
    }
    pub fn digest_invalid(m: impl Into<String>) -> Self {
        Self::new("DIGEST_INVALID", 400, m)
    }
    pub fn manifest_blob_unknown(d: &str) -> Self {
        Self::new(
            "MANIFEST_BLOB_UNKNOWN",
            400,
            format!("manifest references a blob or manifest unknown to this repository: {d}"),
        )
    }
    pub fn manifest_invalid(m: impl Into<String>) -> Self {
        Self::new("MANIFEST_INVALID", 400, m)
    }
    pub fn manifest_unknown(r: &str) -> Self {
        Self::new("MANIFEST_UNKNOWN", 404, format!("manifest unknown: {r}"))
    }
    pub fn name_invalid(n: &str) -> Self {
        Self::new("NAME_INVALID", 400, format!("invalid repository name: {n}"))
    }
    pub fn name_unknown(n: &str) -> Self {
        Self::new(
            "NAME_UNKNOWN",
            404,
            format!("repository {n} does not exist in the registry"),
        )
    }
    pub fn size_invalid(m: impl Into<String>) -> Self {
        Self::new("SIZE_INVALID", 400, m)
    }
    pub fn tag_invalid(m: impl Into<String>) -> Self {
        Self::new("TAG_INVALID", 400, m)
    }
    pub fn range_invalid(m: impl Into<String>) -> Self {
        Self::new("BLOB_UPLOAD_INVALID", 416, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new("UNAUTHORIZED", 401, m)
    }
    pub fn denied(m: impl Into<String>) -> Self {
        Self::new("DENIED", 403, m)
    }
    pub fn unsupported(m: impl Into<String>) -> Self {
        Self::new("UNSUPPORTED", 415, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new("UNKNOWN", 500, m)
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "errors": [{"code": self.code, "message": self.message, "detail": null}]
        }))
        .unwrap_or_default()
    }
}

impl From<StoreError> for DistError {
    fn from(e: StoreError) -> Self {
        tracing::error!("store failure: {e}");
        DistError::internal(format!("state store: {e}"))
    }
}

impl From<crate::blob::BlobError> for DistError {
    fn from(e: crate::blob::BlobError) -> Self {
        use crate::blob::BlobError::*;
        match e {
            NotFound(d) => DistError::blob_unknown(&d),
            UploadNotFound(_) => DistError::upload_unknown(),
            DigestMismatch { expected, actual } => DistError::digest_invalid(format!(
                "provided digest {expected} does not match uploaded content ({actual})"
            )),
            e @ Io { .. } => {
                tracing::error!("blob storage failure: {e}");
                DistError::internal(e.to_string())
            }
        }
    }
}

/// An ECR API error; `code()` is the model's shape name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcrError {
    #[error("{0}")]
    RepositoryNotFound(String),
    #[error("{0}")]
    RepositoryAlreadyExists(String),
    #[error("{0}")]
    RepositoryNotEmpty(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidTagParameter(String),
    #[error("{0}")]
    ImageNotFound(String),
    #[error("{0}")]
    ImageTagAlreadyExists(String),
    #[error("{0}")]
    ImageAlreadyExists(String),
    #[error("{0}")]
    LayersNotFound(String),
    #[error("{0}")]
    LifecyclePolicyNotFound(String),
    #[error("{0}")]
    LifecyclePolicyPreviewNotFound(String),
    #[error("{0}")]
    RepositoryPolicyNotFound(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Server(String),
    /// Refused by authorization (the control plane's code and status: AccessDeniedException,
    /// an invalid session token…).
    #[error("{message}")]
    Denied {
        code: &'static str,
        status: u16,
        message: String,
    },
}

impl From<berth_control::ControlError> for EcrError {
    fn from(e: berth_control::ControlError) -> Self {
        EcrError::Denied {
            code: e.code(),
            status: e.http_status(),
            message: e.to_string(),
        }
    }
}

impl EcrError {
    pub fn code(&self) -> &'static str {
        match self {
            EcrError::RepositoryNotFound(_) => "RepositoryNotFoundException",
            EcrError::RepositoryAlreadyExists(_) => "RepositoryAlreadyExistsException",
            EcrError::RepositoryNotEmpty(_) => "RepositoryNotEmptyException",
            EcrError::InvalidParameter(_) => "InvalidParameterException",
            EcrError::InvalidTagParameter(_) => "InvalidTagParameterException",
            EcrError::ImageNotFound(_) => "ImageNotFoundException",
            EcrError::ImageTagAlreadyExists(_) => "ImageTagAlreadyExistsException",
            EcrError::ImageAlreadyExists(_) => "ImageAlreadyExistsException",
            EcrError::LayersNotFound(_) => "LayersNotFoundException",
            EcrError::LifecyclePolicyNotFound(_) => "LifecyclePolicyNotFoundException",
            EcrError::LifecyclePolicyPreviewNotFound(_) => {
                "LifecyclePolicyPreviewNotFoundException"
            }
            EcrError::RepositoryPolicyNotFound(_) => "RepositoryPolicyNotFoundException",
            EcrError::LimitExceeded(_) => "LimitExceededException",
            EcrError::Server(_) => "ServerException",
            EcrError::Denied { code, .. } => code,
        }
    }
    pub fn http_status(&self) -> u16 {
        match self {
            EcrError::Server(_) => 500,
            EcrError::Denied { status, .. } => *status,
            _ => 400,
        }
    }
}

impl From<StoreError> for EcrError {
    fn from(e: StoreError) -> Self {
        tracing::error!("store failure: {e}");
        EcrError::Server(format!("state store: {e}"))
    }
}

impl From<serde_json::Error> for EcrError {
    fn from(e: serde_json::Error) -> Self {
        EcrError::Server(format!("record encoding: {e}"))
    }
}
