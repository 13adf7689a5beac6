//! Temporary credentials of role sessions (what STS `AssumeRole` hands out, and what tasks
//! with a task role receive): an `ASIA…` access key id, a secret, and a session token that
//! carries the session's claims (role, session name, validity) sealed with the issuer's key.
//!
//! Nothing is stored per session: the secret is derived from the access key id with the
//! issuer's key, and the token proves the claims. So a session costs two HMACs to mint or
//! check, survives a restart of the server (the key is kept in the store), and ends when it
//! expires or its role is deleted (the role id is a claim).
//! Must not: accept a token whose claims are not sealed by the key, or that names another
//! access key id than the one that signed the request.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::Credentials;

const VERSION: &str = "b1";

/// What a session token says about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub access_key_id: String,
    pub role_name: String,
    /// The role's unique id (`AROA…`) when the session was made: a role deleted and created
    /// again under the same name does not inherit the old sessions.
    pub role_id: String,
    pub session_name: String,
    /// Epoch seconds.
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Why a session token is refused (STS's error codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("The security token included in the request is invalid.")]
    Invalid,
    #[error("The security token included in the request is expired")]
    Expired,
}

impl SessionError {
    /// The AWS error code.
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::Invalid => "UnrecognizedClientException",
            SessionError::Expired => "ExpiredTokenException",
        }
    }
}

/// The MAC of `parts`, each followed by a zero byte (so no two lists of parts read alike).
fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut data = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        data.extend_from_slice(p);
        data.push(0);
    }
    crate::hmac_sha256(key, &data)
}

/// Whether an access key id is a session's (temporary credentials start with `ASIA`).
pub fn is_session_key(access_key_id: &str) -> bool {
    access_key_id.starts_with("ASIA")
}

/// The secret of a session's access key id.
pub fn secret_of(key: &[u8], access_key_id: &str) -> String {
    let m = mac(key, &[b"secret", access_key_id.as_bytes()]);
    // 40 characters, like an IAM secret access key.
    base64::engine::general_purpose::STANDARD.encode(m)[..40].to_string()
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
}

/// Mint the credentials of a new session. `role_name` and `session_name` must be IAM names
/// (letters, digits, `_+=,.@-`); the access key id in `claims` is replaced by a fresh one.
pub fn mint(key: &[u8], mut claims: Claims) -> Credentials {
    use rand::Rng;
    const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    let mut id = String::from("ASIA");
    for _ in 0..16 {
        id.push(ID[rng.random_range(0..ID.len())] as char);
    }
    claims.access_key_id = id;
    debug_assert!(valid_name(&claims.role_name) && valid_name(&claims.session_name));
    let body = format!(
        "{VERSION}|{}|{}|{}|{}|{}|{}",
        claims.access_key_id,
        claims.role_name,
        claims.role_id,
        claims.session_name,
        claims.issued_at,
        claims.expires_at
    );
    let seal = mac(key, &[b"token", body.as_bytes()]);
    let token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(body.as_bytes()),
        URL_SAFE_NO_PAD.encode(seal)
    );
    Credentials {
        secret_access_key: secret_of(key, &claims.access_key_id),
        access_key_id: claims.access_key_id,
        session_token: Some(token),
    }
}

/// Check a session token presented with `access_key_id` at `now` (epoch seconds).
pub fn open(
    key: &[u8],
    access_key_id: &str,
    token: &str,
    now: i64,
) -> Result<Claims, SessionError> {
    let (body, seal) = token.split_once('.').ok_or(SessionError::Invalid)?;
    let body = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| SessionError::Invalid)?;
    let seal = URL_SAFE_NO_PAD
        .decode(seal)
        .map_err(|_| SessionError::Invalid)?;
    let want = mac(key, &[b"token", &body]);
    if seal.len() != want.len() || !bool::from(seal.ct_eq(&want)) {
        return Err(SessionError::Invalid);
    }
    let body = String::from_utf8(body).map_err(|_| SessionError::Invalid)?;
    let f: Vec<&str> = body.split('|').collect();
    let [v, akid, role, role_id, session, issued, expires] = f[..] else {
        return Err(SessionError::Invalid);
    };
    if v != VERSION || akid != access_key_id {
        return Err(SessionError::Invalid);
    }
    let claims = Claims {
        access_key_id: akid.to_string(),
        role_name: role.to_string(),
        role_id: role_id.to_string(),
        session_name: session.to_string(),
        issued_at: issued.parse().map_err(|_| SessionError::Invalid)?,
        expires_at: expires.parse().map_err(|_| SessionError::Invalid)?,
    };
    if claims.expires_at <= now {
        return Err(SessionError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            access_key_id: String::new(),
            role_name: "app".into(),
            role_id: "AROAEXAMPLE".into(),
            session_name: "task-1".into(),
            issued_at: 1000,
            expires_at: 2000,
        }
    }

    #[test]
    fn minted_sessions_open_with_their_key_only() {
        let key = b"k1";
        let c = mint(key, claims());
        assert!(is_session_key(&c.access_key_id));
        assert_eq!(c.access_key_id.len(), 20);
        assert_eq!(c.secret_access_key, secret_of(key, &c.access_key_id));
        assert_eq!(c.secret_access_key.len(), 40);
        let t = c.session_token.clone().unwrap();
        let got = open(key, &c.access_key_id, &t, 1500).unwrap();
        assert_eq!(got.role_name, "app");
        assert_eq!(got.role_id, "AROAEXAMPLE");
        assert_eq!(got.access_key_id, c.access_key_id);
        // Another key, another access key id, expiry, tampering.
        assert_eq!(
            open(b"k2", &c.access_key_id, &t, 1500),
            Err(SessionError::Invalid)
        );
        let other = mint(key, claims());
        assert_eq!(
            open(key, &other.access_key_id, &t, 1500),
            Err(SessionError::Invalid)
        );
        assert_eq!(
            open(key, &c.access_key_id, &t, 2000),
            Err(SessionError::Expired)
        );
        let (b, s) = t.split_once('.').unwrap();
        let forged = String::from_utf8(URL_SAFE_NO_PAD.decode(b).unwrap())
            .unwrap()
            .replace("|2000", "|9999");
        let forged = format!("{}.{s}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(
            open(key, &c.access_key_id, &forged, 1500),
            Err(SessionError::Invalid)
        );
        assert_eq!(
            open(key, &c.access_key_id, "garbage", 1500),
            Err(SessionError::Invalid)
        );
        // Two sessions never share an access key id or secret.
        assert_ne!(other.access_key_id, c.access_key_id);
        assert_ne!(other.secret_access_key, c.secret_access_key);
    }
}
