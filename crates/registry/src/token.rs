//! Registry credentials: the password inside ECR's `authorizationToken`, and the bearer
//! tokens of the token endpoint (`/v2/token`). A token names the access key it was issued to
//! and its expiry, and is HMAC-signed with a key that lives in the state store, so tokens
//! survive restarts and cannot be forged. Passwords last 12 hours, as ECR's do.
//!
//! Only a password (minted from access keys by `GetAuthorizationToken`) mints bearer tokens,
//! and a bearer token never outlives the password it came from: a token cannot renew itself.
//! A bearer token carries the scopes it was asked for (`repository:<name>:pull,push`,
//! `registry:catalog:*`); [`Claims::allows`] says whether it covers an action.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_store::Store;
use subtle_free::ct_eq;

use crate::error::{DistError, EcrError};
use crate::{Registry, keys};

/// How long a token is valid.
pub const TOKEN_TTL_SECS: i64 = 12 * 3600;

mod subtle_free {
    /// Constant-time byte comparison.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The signing key, created on first use.
pub async fn load_or_create_key(store: &dyn Store) -> Result<Vec<u8>, EcrError> {
    Ok(
        berth_store::load_or_create(store, keys::SECRET, || rand::random::<[u8; 32]>().to_vec())
            .await?,
    )
}

fn mac(key: &[u8], payload: &str) -> String {
    hex::encode(berth_auth::hmac_sha256(key, payload.as_bytes()))
}

/// A token for `access_key_id`, valid until `expires_at` (epoch seconds).
pub fn issue(key: &[u8], access_key_id: &str, expires_at: i64) -> String {
    let payload = format!("{expires_at}.{access_key_id}");
    let sig = mac(key, &payload);
    // URL-safe alphabet: the token travels in headers and query strings.
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{payload}.{sig}"))
}

/// What a genuine, unexpired token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The access key it was issued to (`AKID~SESSION_TOKEN` for a role session).
    pub subject: String,
    /// Epoch seconds.
    pub expires_at: i64,
    /// `None` for a password (everything its subject may do); the granted scopes for a
    /// bearer token from the token endpoint.
    pub scopes: Option<Vec<Scope>>,
}

/// One scope of a bearer token: `repository:<name>:<actions>` or `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `repository` or `registry`.
    pub kind: String,
    pub name: String,
    /// `pull`, `push`, `delete` or `*`.
    pub actions: Vec<String>,
}

/// Actions a scope may name; others are not granted (the token spec grants a subset).
const ACTIONS: [&str; 4] = ["pull", "push", "delete", "*"];

impl Scope {
    /// Parse one scope; `Err` says what is wrong with it.
    pub fn parse(s: &str) -> Result<Scope, String> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("invalid scope {s:?}: expected type:name:actions"))?;
        let (name, actions) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("invalid scope {s:?}: expected type:name:actions"))?;
        let ok = match kind {
            "repository" => crate::digest::valid_repo_name(name),
            "registry" => name == "catalog",
            _ => false,
        };
        if !ok {
            return Err(format!(
                "invalid scope {s:?}: expected repository:<name>:<actions> or registry:catalog:*"
            ));
        }
        let actions = actions
            .split(',')
            .map(str::trim)
            .filter(|a| ACTIONS.contains(a))
            .map(str::to_string)
            .collect();
        Ok(Scope {
            kind: kind.to_string(),
            name: name.to_string(),
            actions,
        })
    }

    fn encode(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

impl Claims {
    /// Whether the token covers `action` (`pull`, `push`, `delete`, `*`) on a resource
    /// (`repository` + name, or `registry` + `catalog`). A password covers everything.
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        match &self.scopes {
            None => true,
            Some(scopes) => scopes.iter().any(|s| {
                s.kind == kind
                    && s.name == name
                    && s.actions.iter().any(|a| a == "*" || a == action)
            }),
        }
    }
}

/// The scope action an ECR action (as the registry's requests map to them) needs:
/// `pull` for reads, `push` for writes, `delete` for deletes.
pub fn scope_action(ecr_action: &str) -> &'static str {
    match ecr_action.trim_start_matches("ecr:") {
        "PutImage" | "InitiateLayerUpload" | "UploadLayerPart" | "CompleteLayerUpload" => "push",
        "BatchDeleteImage" => "delete",
        _ => "pull",
    }
}

/// The tag that starts a bearer token's payload (a password's starts with its expiry).
const BEARER: &str = "b1";

/// A bearer token for `access_key_id` with `scopes`, valid until `expires_at`.
pub fn issue_bearer(key: &[u8], access_key_id: &str, expires_at: i64, scopes: &[Scope]) -> String {
    let scope = scopes
        .iter()
        .map(Scope::encode)
        .collect::<Vec<_>>()
        .join(" ");
    // The scope travels base64-encoded: names may contain the separator.
    let scope = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(scope);
    let payload = format!("{BEARER}.{expires_at}.{scope}.{access_key_id}");
    let sig = mac(key, &payload);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{payload}.{sig}"))
}

/// The access key a token was issued to, if it is genuine and not expired at `now`.
pub fn verify(key: &[u8], token: &str, now: i64) -> Option<String> {
    verify_claims(key, token, now).map(|c| c.subject)
}

/// What a token grants, if it is genuine and not expired at `now`.
pub fn verify_claims(key: &[u8], token: &str, now: i64) -> Option<Claims> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (payload, sig) = raw.rsplit_once('.')?;
    if !ct_eq(mac(key, payload).as_bytes(), sig.as_bytes()) {
        return None;
    }
    let (scopes, rest) = match payload
        .strip_prefix(BEARER)
        .and_then(|p| p.strip_prefix('.'))
    {
        Some(p) => {
            let (exp, rest) = p.split_once('.')?;
            let (scope, akid) = rest.split_once('.')?;
            let scope = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(scope)
                .ok()?;
            let scope = String::from_utf8(scope).ok()?;
            let scopes = scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(Scope::parse)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            (Some(scopes), (exp, akid))
        }
        None => (None, payload.split_once('.')?),
    };
    let (exp, akid) = rest;
    let exp: i64 = exp.parse().ok()?;
    (now < exp).then(|| Claims {
        subject: akid.to_string(),
        expires_at: exp,
        scopes,
    })
}

impl Registry {
    /// What a registry token grants, if it is valid now.
    pub fn verify_claims(&self, t: &str) -> Option<Claims> {
        verify_claims(&self.token_key, t, self.now().as_secs())
    }

    /// The token endpoint (`GET /v2/token?scope=…`): a bearer token for the credential in
    /// the request's `Authorization` header, which must be `Basic` with a password
    /// (`AWS:<ecr get-login-password>`). The token carries the requested `scopes` and
    /// lives 12 hours, never past the password. Returns the token and its seconds to live.
    pub fn token_endpoint(
        &self,
        authorization: &str,
        scopes: &[String],
    ) -> Result<(String, i64), DistError> {
        let renewal = || {
            DistError::unauthorized(
                "a registry token cannot be renewed with itself; authenticate to the token endpoint with Basic AWS:<password from ecr get-login-password>",
            )
        };
        let password = from_basic(authorization).ok_or_else(renewal)?;
        let at = self.now().as_secs();
        let claims = verify_claims(&self.token_key, &password, at)
            .ok_or_else(|| DistError::unauthorized("the token is invalid or has expired"))?;
        if claims.scopes.is_some() {
            return Err(renewal());
        }
        let mut granted = Vec::new();
        for param in scopes {
            for s in param.split(' ').filter(|s| !s.is_empty()) {
                let s = Scope::parse(s).map_err(|m| DistError {
                    code: "UNSUPPORTED",
                    message: m,
                    status: 400,
                })?;
                granted.push(s);
            }
        }
        let expires_at = claims.expires_at.min(at + TOKEN_TTL_SECS);
        let t = issue_bearer(&self.token_key, &claims.subject, expires_at, &granted);
        Ok((t, expires_at - at))
    }
}

/// ECR's `authorizationToken`: base64 of `AWS:<token>`.
pub fn authorization_token(token: &str) -> String {
    STANDARD.encode(format!("AWS:{token}"))
}

/// The token inside an `Authorization: Basic …` header (user must be `AWS`).
pub fn from_basic(header_value: &str) -> Option<String> {
    let b = header_value.strip_prefix("Basic ")?;
    let raw = String::from_utf8(STANDARD.decode(b.trim()).ok()?).ok()?;
    let (user, pass) = raw.split_once(':')?;
    (user == "AWS").then(|| pass.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_carry_their_scope() {
        let key = b"k".repeat(32);
        let scopes = vec![
            Scope::parse("repository:team/app.v2:pull,push,bogus").unwrap(),
            Scope::parse("registry:catalog:*").unwrap(),
        ];
        assert_eq!(
            scopes[0].actions,
            ["pull", "push"],
            "unknown actions are not granted"
        );
        let t = issue_bearer(&key, "AKIA1", 1000, &scopes);
        let c = verify_claims(&key, &t, 999).unwrap();
        assert_eq!(c.subject, "AKIA1");
        assert_eq!(c.expires_at, 1000);
        assert_eq!(c.scopes.as_deref(), Some(&scopes[..]));
        assert!(c.allows("repository", "team/app.v2", "push"));
        assert!(!c.allows("repository", "team/app.v2", "delete"));
        assert!(!c.allows("repository", "other", "pull"));
        assert!(c.allows("registry", "catalog", "pull"));
        assert_eq!(verify(&key, &t, 999).as_deref(), Some("AKIA1"));
        assert_eq!(verify_claims(&key, &t, 1000), None, "expired");
        // No scope asked: a token that grants nothing.
        let none = verify_claims(&key, &issue_bearer(&key, "AKIA1", 1000, &[]), 0).unwrap();
        assert!(!none.allows("repository", "app", "pull"));
        // A password grants what its subject may do.
        let pw = verify_claims(&key, &issue(&key, "AKIA1", 1000), 0).unwrap();
        assert_eq!(pw.scopes, None);
        assert!(pw.allows("repository", "app", "push"));
        for bad in [
            "repository:app",
            "nope:app:pull",
            "repository:UPPER:pull",
            "registry:x:*",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(scope_action("ecr:PutImage"), "push");
        assert_eq!(scope_action("ecr:BatchDeleteImage"), "delete");
        assert_eq!(scope_action("ecr:GetDownloadUrlForLayer"), "pull");
    }

    #[test]
    fn issue_verify_expire_forge() {
        let key = b"k".repeat(32);
        let t = issue(&key, "AKIA1", 1000);
        assert_eq!(verify(&key, &t, 999).as_deref(), Some("AKIA1"));
        assert_eq!(verify(&key, &t, 1000), None, "expired");
        assert_eq!(verify(b"other", &t, 10), None, "wrong key");
        let forged =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("99999999999.AKIA1.0000");
        assert_eq!(verify(&key, &forged, 10), None);
        let basic = format!("Basic {}", authorization_token(&t));
        assert_eq!(from_basic(&basic), Some(t));
        let other_user = format!("Basic {}", STANDARD.encode("bob:x"));
        assert_eq!(from_basic(&other_user), None);
    }
}
