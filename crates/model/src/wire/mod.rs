//! Wire types of the AWS services berth speaks, generated from the AWS service models by
//! `tools/gen-shapes/gen.py` (one module per service: ECS, ECR, the operations berth answers of
//! IAM and STS, and the ECS agent's ACS and TCS protocols), and what they share: the [`Validate`]
//! trait (required members, enum values, length and range constraints as the model states
//! them) and JSON decoding that tells malformed JSON from a member of the wrong type.

pub mod acs;
pub mod ecr;
pub mod ecs;
pub mod iam;
pub mod sts;
pub mod tcs;

use serde::de::DeserializeOwned;

/// One operation of a service model.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub name: &'static str,
    pub input: Option<&'static str>,
    pub output: Option<&'static str>,
    pub errors: &'static [&'static str],
}

/// One error shape of a service model.
#[derive(Debug, Clone, Copy)]
pub struct ErrorShape {
    pub name: &'static str,
    pub code: &'static str,
    pub status: u16,
    pub fault: bool,
}

/// What is wrong with one member.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    Missing,
    BadEnum {
        value: String,
        allowed: &'static [&'static str],
    },
    TooShort {
        min: usize,
    },
    TooLong {
        max: usize,
    },
    OutOfRange {
        min: Option<f64>,
        max: Option<f64>,
    },
}

/// A member that breaks the model's constraints; `path` uses wire member names
/// (`containerDefinitions.0.healthCheck.command`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub kind: FieldErrorKind,
}

impl FieldError {
    pub fn new(path: String, kind: FieldErrorKind) -> Self {
        FieldError { path, kind }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.path;
        match &self.kind {
            FieldErrorKind::Missing => write!(f, "Missing required parameter '{p}'"),
            FieldErrorKind::BadEnum { value, allowed } => write!(
                f,
                "Invalid value '{value}' for '{p}': must be one of {}",
                allowed.join(", ")
            ),
            FieldErrorKind::TooShort { min } => {
                write!(f, "'{p}' must have length greater than or equal to {min}")
            }
            FieldErrorKind::TooLong { max } => {
                write!(f, "'{p}' must have length less than or equal to {max}")
            }
            FieldErrorKind::OutOfRange { min, max } => match (min, max) {
                (Some(a), Some(b)) => write!(f, "'{p}' must be between {a} and {b}"),
                (Some(a), None) => write!(f, "'{p}' must be greater than or equal to {a}"),
                (None, Some(b)) => write!(f, "'{p}' must be less than or equal to {b}"),
                (None, None) => write!(f, "'{p}' is out of range"),
            },
        }
    }
}

/// Constraint checks generated from the service model.
pub trait Validate {
    fn validate(&self, path: &str, errs: &mut Vec<FieldError>);
}

/// Every constraint violation of a value, in member order.
pub fn validate<T: Validate>(v: &T) -> Vec<FieldError> {
    let mut errs = Vec::new();
    v.validate("", &mut errs);
    errs
}

#[doc(hidden)]
pub fn join(path: &str, member: &str) -> String {
    if path.is_empty() {
        member.to_string()
    } else {
        format!("{path}.{member}")
    }
}

#[doc(hidden)]
pub fn check_enum(
    path: &str,
    v: &str,
    allowed: &'static [&'static str],
    errs: &mut Vec<FieldError>,
) {
    if !allowed.contains(&v) {
        errs.push(FieldError::new(
            path.to_string(),
            FieldErrorKind::BadEnum {
                value: v.to_string(),
                allowed,
            },
        ));
    }
}

#[doc(hidden)]
pub fn check_len(
    path: &str,
    len: usize,
    min: Option<usize>,
    max: Option<usize>,
    errs: &mut Vec<FieldError>,
) {
    if let Some(m) = min
        && len < m
    {
        errs.push(FieldError::new(
            path.to_string(),
            FieldErrorKind::TooShort { min: m },
        ));
    }
    if let Some(m) = max
        && len > m
    {
        errs.push(FieldError::new(
            path.to_string(),
            FieldErrorKind::TooLong { max: m },
        ));
    }
}

#[doc(hidden)]
pub fn check_range(
    path: &str,
    v: f64,
    min: Option<f64>,
    max: Option<f64>,
    errs: &mut Vec<FieldError>,
) {
    if min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m) {
        errs.push(FieldError::new(
            path.to_string(),
            FieldErrorKind::OutOfRange { min, max },
        ));
    }
}

/// Why a request body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (or truncated).
    #[error("{0}")]
    Syntax(String),
    /// JSON, but a member has the wrong type.
    #[error("{message}")]
    Type { path: String, message: String },
}

/// Decode a JSON request body. An empty body decodes as `{}` (the AWS CLI sends `{}` for
/// operations without input, other clients may send nothing).
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            use serde_json::error::Category;
            match inner.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    Err(DecodeError::Syntax(format!("Malformed JSON: {inner}")))
                }
                Category::Data => Err(DecodeError::Type {
                    message: format!(
                        "Unexpected value for '{path}': {}",
                        strip_position(&inner.to_string())
                    ),
                    path,
                }),
            }
        }
    }
}

fn strip_position(s: &str) -> &str {
    match s.find(" at line ") {
        Some(i) => &s[..i],
        None => s,
    }
}
