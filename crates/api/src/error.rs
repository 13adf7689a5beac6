//! The AWS-shaped error answer of the JSON protocols: HTTP status, `x-amzn-ErrorType` header
//! and a `{"__type": …, "message": …}` body. botocore reads the code from `__type`, the Go SDK
//! (and so the ECS agent) from the header: we send both.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

/// One error as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl AwsError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
    /// A 400 client error.
    pub fn client(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    /// The body is not valid JSON, or a member has the wrong type.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::client("SerializationException", message)
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "__type": self.code,
            "message": self.message,
        }))
        .unwrap_or_default()
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = (status, self.body()).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        if let Ok(v) = HeaderValue::from_str(&self.code) {
            headers.insert("x-amzn-errortype", v);
        }
        resp
    }
}
