//! Registry credentials: the password inside ECR's `authorizationToken` (and the bearer token
//! of the token endpoint). A token names the access key it was issued to and its expiry, and
//! is HMAC-signed with a key that lives in the state store, so tokens survive restarts and
//! cannot be forged. Tokens last 12 hours, as ECR's do.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_store::Store;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle_free::ct_eq;

use crate::error::EcrError;
use crate::keys;

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
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(payload.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A token for `access_key_id`, valid until `expires_at` (epoch seconds).
pub fn issue(key: &[u8], access_key_id: &str, expires_at: i64) -> String {
    let payload = format!("{expires_at}.{access_key_id}");
    let sig = mac(key, &payload);
    // URL-safe alphabet: the token travels in headers and query strings.
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{payload}.{sig}"))
}

/// The access key a token was issued to, if it is genuine and not expired at `now`.
pub fn verify(key: &[u8], token: &str, now: i64) -> Option<String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (payload, sig) = raw.rsplit_once('.')?;
    if !ct_eq(mac(key, payload).as_bytes(), sig.as_bytes()) {
        return None;
    }
    let (exp, akid) = payload.split_once('.')?;
    let exp: i64 = exp.parse().ok()?;
    (now < exp).then(|| akid.to_string())
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
