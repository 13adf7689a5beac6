//! The credentials endpoint over HTTP: one request per connection (the SDKs open one per
//! fetch), a bound on connections served at once and on how long each may take, answers from
//! [`super::answer::respond`].
//!
//! Must not: decide what is served (that is [`super::answer`]'s).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use super::answer::respond;
use super::store::CredentialStore;

/// How long one request to the endpoint may take (the SDKs' own timeout is shorter).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once by one listener; more are closed at once.
const MAX_CONNECTIONS: usize = 256;

/// Serve the endpoint on `listener` until `shutdown` resolves: one request per connection
/// (the SDKs open one per fetch), each given [`REQUEST_TIMEOUT`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<CredentialStore>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioIo, TokioTimer};

    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!("credentials endpoint: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let store = store.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let r = respond(&store, req.method().as_str(), req.uri().path());
                if r.status != 200 {
                    tracing::debug!(status = r.status, "credentials request refused");
                }
                let resp = hyper::Response::builder()
                    .status(r.status)
                    .header(hyper::header::CONTENT_TYPE, r.content_type)
                    .body(http_body_util::Full::new(bytes::Bytes::from(r.body)));
                async move { Ok::<_, Infallible>(resp.unwrap_or_default()) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::fixtures::{TASK, get, task};
    use super::*;

    #[tokio::test]
    async fn served_over_http() {
        let store = Arc::new(CredentialStore::new());
        store.take_from_task(&task());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(l, store.clone(), async move {
            let _ = rx.await;
        }));
        let (status, body) = get(addr, "/v2/credentials/app-id").await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["AccessKeyId"], "AKIAAPP");
        assert_eq!(v["Token"], "token-AKIAAPP");
        assert_eq!(v["Expiration"], "2026-11-23T21:00:00Z");
        let (status, body) = get(addr, "/v2/credentials/nope").await;
        assert_eq!(status, 400);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["code"],
            "InvalidIdInRequest"
        );
        // The task stops: its credentials are gone.
        store.remove_task(TASK);
        assert_eq!(get(addr, "/v2/credentials/app-id").await.0, 400);
        drop(tx);
        server.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
