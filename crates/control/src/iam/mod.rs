//! berth's IAM and STS: roles (a trust policy saying who may assume the role, inline policies
//! saying what its sessions may do), role sessions (temporary `ASIA…` credentials from
//! `AssumeRole`, and the task-role credentials the agent session hands to tasks), and the
//! decision whether a caller may do what a request asks ([`Control::authorize`]).
//!
//! Callers are [`Principal`]s: a stored access key (the root key — an administrator — or a
//! join token, limited to the agent operations of its cluster) or a role session, whose
//! every request is checked against its role's policies with [`berth_auth::policy`].
//! Sessions are not stored: their tokens carry sealed claims ([`berth_auth::session`]),
//! checked on each request against the role as it is now (deleting the role ends them).
//! Must not: let a session outlive its expiry or its role, or grant what no policy allows.
//!
//! By concern: `roles` (the role and inline-policy operations), `authorize` (principals,
//! identities and the glue to policy evaluation), `sts` (trust and role-session
//! credentials); this module keeps the shapes and the checks they share.

mod authorize;
mod roles;
mod sts;

pub(crate) use authorize::PolicyCache;

use berth_auth::policy::{Policy, PolicyKind};
use berth_store::Store;

use crate::{ControlError, Result, keys};

/// The service principal ECS assumes task roles as.
pub const ECS_TASKS_SERVICE: &str = "ecs-tasks.amazonaws.com";
/// IAM's limit on one role's inline policies, together.
pub const MAX_ROLE_POLICY_BYTES: usize = 10_240;
/// IAM's default limit on a trust policy.
pub const MAX_TRUST_POLICY_BYTES: usize = 2_048;

/// Who is calling (defined with the command boundary, where every caller is one).
pub use crate::command::Principal;

/// Credentials of a new role session.
#[derive(Debug, Clone)]
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Epoch seconds.
    pub expiration: i64,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`
    pub assumed_role_arn: String,
    /// `ROLEID:SESSION`
    pub assumed_role_id: String,
}

/// Who a caller is, as STS `GetCallerIdentity` says.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// What CreateRole takes.
#[derive(Debug, Clone, Default)]
pub struct NewRole {
    pub role_name: String,
    pub path: Option<String>,
    pub assume_role_policy: String,
    pub description: Option<String>,
    pub max_session_duration: Option<i64>,
    pub tags: Vec<(String, String)>,
}

pub(crate) fn iam(code: &'static str, status: u16, msg: impl Into<String>) -> ControlError {
    ControlError::Iam {
        code,
        status,
        message: msg.into(),
    }
}

pub(crate) fn validation(msg: impl Into<String>) -> ControlError {
    iam("ValidationError", 400, msg)
}

fn no_such_role(name: &str) -> ControlError {
    iam(
        "NoSuchEntity",
        404,
        format!("The role with name {name} cannot be found."),
    )
}

pub(crate) fn malformed(msg: String) -> ControlError {
    iam("MalformedPolicyDocument", 400, msg)
}

/// IAM names: letters, digits and `_+=,.@-`, `min..=max` characters.
pub(crate) fn check_name(what: &str, v: &str, min: usize, max: usize) -> Result<()> {
    let n = v.chars().count();
    if n < min || n > max {
        return Err(validation(format!(
            "1 validation error detected: Value '{v}' at '{what}' failed to satisfy constraint: \
             Member must have length between {min} and {max}"
        )));
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
    {
        return Err(validation(format!(
            "1 validation error detected: Value '{v}' at '{what}' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: [\\w+=,.@-]+"
        )));
    }
    Ok(())
}

pub(crate) fn check_path(p: &str) -> Result<()> {
    let ok = p.len() <= 512
        && p.starts_with('/')
        && p.ends_with('/')
        && p.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !ok {
        return Err(validation(format!(
            "1 validation error detected: Value '{p}' at 'path' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: (\\u002F)|(\\u002F[\\u0021-\\u007F]+\\u002F)"
        )));
    }
    Ok(())
}

/// IAM's paging parameters: `MaxItems` (1–1000, default 100) and the `Marker` of the previous
/// page (opaque, as [`crate::paging`] makes them), as (limit, key to resume after).
pub(crate) fn iam_page(
    marker: Option<&str>,
    max_items: Option<i64>,
) -> Result<(usize, Option<String>)> {
    let max = max_items.unwrap_or(100);
    if !(1..=1000).contains(&max) {
        return Err(validation(
            "1 validation error detected: Value at 'maxItems' failed to satisfy constraint: \
             Member must have value between 1 and 1000",
        ));
    }
    let after = crate::paging::decode(marker).map_err(|_| validation("Invalid Marker."))?;
    Ok((max as usize, after))
}

/// A policy document within IAM's size quota `quota` (`max` characters) that parses as `kind`.
pub(crate) fn check_document(doc: &str, kind: PolicyKind, max: usize, quota: &str) -> Result<()> {
    if doc.len() > max {
        return Err(iam(
            "LimitExceeded",
            409,
            format!("Cannot exceed quota for {quota}: {max}"),
        ));
    }
    Policy::parse(doc, kind).map_err(malformed)?;
    Ok(())
}

/// An IAM unique id: `prefix` (`AROA` roles, `ANPA` policies) and 17 random characters.
pub(crate) fn unique_id(prefix: &str) -> String {
    use rand::Rng;
    const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    let mut id = String::from(prefix);
    for _ in 0..17 {
        id.push(ID[rng.random_range(0..ID.len())] as char);
    }
    id
}

/// The key that seals session tokens: made on first start, kept in the store.
pub(crate) async fn load_or_create_session_key(store: &dyn Store) -> Result<Vec<u8>> {
    Ok(berth_store::load_or_create(store, keys::SESSION_KEY, || {
        rand::random::<[u8; 32]>().to_vec()
    })
    .await?)
}

/// ISO 8601 in UTC, as IAM and STS write times.
pub fn iso8601(epoch: f64) -> String {
    let secs = epoch.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Control;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_795_464_000.5), "2026-11-23T20:00:00Z");
    }

    #[test]
    fn role_arns_are_recognised() {
        assert!(Control::is_role_arn("arn:aws:iam::123456789012:role/app"));
        assert!(Control::is_role_arn(
            "arn:aws:iam::123456789012:role/x/y/app"
        ));
        assert!(!Control::is_role_arn("arn:aws:iam::123456789012:user/app"));
        assert!(!Control::is_role_arn("arn:aws:iam::1234:role/app"));
        assert!(!Control::is_role_arn("app"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("roleName", "app-role_1+=,.@", 1, 64).is_ok());
        assert!(check_name("roleName", "", 1, 64).is_err());
        assert!(check_name("roleName", "a b", 1, 64).is_err());
        assert!(check_name("roleName", &"a".repeat(65), 1, 64).is_err());
        assert!(check_path("/").is_ok());
        assert!(check_path("/team/app/").is_ok());
        assert!(check_path("team").is_err());
        assert!(check_path("/team").is_err());
    }
}
