//! The token endpoint: only a password mints, a token never outlives its password, and it
//! carries the scopes asked for.

use std::sync::Arc;

use base64::Engine;
use berth_registry::{Registry, RegistryConfig};
use berth_store::{MemStore, Store};

async fn registry(dir: &std::path::Path) -> Arc<Registry> {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    Registry::open(
        RegistryConfig {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            host: "127.0.0.1:1".into(),
            create_on_push: true,
            bearer_challenge: true,
            tls: false,
        },
        store,
        dir,
    )
    .await
    .unwrap()
}

fn basic(password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"))
    )
}

#[tokio::test]
async fn only_a_password_mints_and_never_beyond_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    // A password with a minute left.
    let pw = r.node_password("AKIAEXAMPLE", 60);
    let (t, ttl) = r
        .token_endpoint(&basic(&pw), &["repository:app:pull,push".into()])
        .unwrap();
    assert!(
        (1..=60).contains(&ttl),
        "ttl {ttl}: capped by the password's life"
    );
    let c = r.verify_claims(&t).unwrap();
    assert_eq!(c.subject, "AKIAEXAMPLE");
    assert_eq!(c.expires_at, r.verify_claims(&pw).unwrap().expires_at);
    assert!(c.allows("repository", "app", "push"));
    assert!(!c.allows("repository", "other", "pull"));
    assert_eq!(r.verify_token(&t).as_deref(), Some("AKIAEXAMPLE"));

    // The token cannot mint another, whichever way it is presented.
    for auth in [format!("Bearer {t}"), basic(&t)] {
        let e = r.token_endpoint(&auth, &[]).unwrap_err();
        assert_eq!((e.code, e.status), ("UNAUTHORIZED", 401), "{auth}");
        assert!(e.message.contains("cannot be renewed"), "{e}");
    }
    // Nor does garbage, and a malformed scope is a clear error.
    assert_eq!(
        r.token_endpoint(&basic("nope"), &[]).unwrap_err().code,
        "UNAUTHORIZED"
    );
    let e = r
        .token_endpoint(&basic(&pw), &["repository:app".into()])
        .unwrap_err();
    assert_eq!((e.code, e.status), ("UNSUPPORTED", 400));

    // A long-lived password still mints tokens of at most 12 hours.
    let long = r.node_password("AKIAEXAMPLE", 10 * 365 * 24 * 3600);
    let (_, ttl) = r
        .token_endpoint(
            &basic(&long),
            &["repository:a:pull repository:b:pull".into()],
        )
        .unwrap();
    assert_eq!(ttl, berth_registry::token::TOKEN_TTL_SECS);
}
