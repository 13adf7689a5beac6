//! The credentials endpoint on the node: a listener on `127.0.0.1` (for `host` containers)
//! and one on the bridge's gateway address with the DNAT rule that sends
//! `169.254.170.2:80` to it (for `bridge` and `awsvpc` containers), each serving
//! [`super::server::serve`]. The ports are kept in a file so that containers that outlive an
//! agent restart find the endpoint where their environment says it is. A part that cannot be
//! set up is logged and left out; the node runs without it.
//!
//! Must not: leave its redirect rule behind when it stops.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_runtime::net::Redirect;
use serde::{Deserialize, Serialize};

use super::access::Access;
use super::server::serve;
use super::store::CredentialStore;

/// Where containers on the bridge reach the endpoint, as on ECS.
pub const LINK_LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(169, 254, 170, 2), 80);

/// The ports of the previous run, kept so that `host` containers that outlive an agent
/// restart find the endpoint where their environment says it is.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ports {
    loopback: Option<u16>,
    bridge: Option<u16>,
}

/// Bind `ip:port`, or any free port when that one is taken (or `port` is None).
fn bind(ip: Ipv4Addr, port: Option<u16>) -> std::io::Result<tokio::net::TcpListener> {
    let try_bind = |port: u16| -> std::io::Result<tokio::net::TcpListener> {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        s.bind(SocketAddr::from((ip, port)))?;
        s.listen(128)
    };
    match port {
        Some(p) if p != 0 => try_bind(p).or_else(|e| {
            tracing::info!("credentials endpoint: {ip}:{p} not available ({e}); another port");
            try_bind(0)
        }),
        _ => try_bind(0),
    }
}

fn v4(l: &tokio::net::TcpListener) -> Option<SocketAddrV4> {
    match l.local_addr().ok()? {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// The node's running credentials endpoint: its listeners and the redirect of
/// `169.254.170.2:80`. Dropping it stops the listeners and removes the redirect.
pub struct CredentialsEndpoint {
    access: Access,
    redirect: Option<Redirect>,
    /// Dropping these ends the listeners.
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl CredentialsEndpoint {
    /// Start the endpoint: on `127.0.0.1`, and on the gateway of `bridge` (its name and the
    /// gateway address) with the redirect of [`LINK_LOCAL`] to it. A part that cannot be set
    /// up is logged and left out; the node runs without it. `port_file` keeps the ports for
    /// the next run.
    pub async fn start(
        store: Arc<CredentialStore>,
        bridge: Option<(String, Ipv4Addr)>,
        port_file: &Path,
    ) -> CredentialsEndpoint {
        let before: Ports = std::fs::read(port_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut stop = Vec::new();
        let mut spawn = |l: tokio::net::TcpListener| {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stop.push(tx);
            tokio::spawn(serve(l, store.clone(), async move {
                let _ = rx.await;
            }));
        };
        let mut access = Access::default();
        match bind(Ipv4Addr::LOCALHOST, before.loopback) {
            Ok(l) => {
                access.loopback = v4(&l);
                spawn(l);
            }
            Err(e) => tracing::error!(
                "task role credentials unavailable to host-mode containers: cannot listen on 127.0.0.1: {e}"
            ),
        }
        let mut redirect = None;
        if let Some((name, gw)) = bridge {
            let lost = "task role credentials unavailable to bridge and awsvpc containers";
            let listener = bind(gw, before.bridge).and_then(|l| {
                let to = v4(&l).ok_or_else(|| std::io::Error::other("not an IPv4 socket"))?;
                Ok((l, to))
            });
            match listener {
                Ok((l, to)) => {
                    let r = Redirect {
                        bridge: name.clone(),
                        from: LINK_LOCAL,
                        to,
                    };
                    let rr = r.clone();
                    match tokio::task::spawn_blocking(move || rr.install()).await {
                        Ok(Ok(())) => {
                            access.bridge = Some(to);
                            redirect = Some(r);
                            spawn(l);
                        }
                        Ok(Err(e)) => {
                            tracing::error!("{lost}: cannot redirect {LINK_LOCAL} on {name}: {e}")
                        }
                        Err(e) => tracing::error!("{lost}: {e}"),
                    }
                }
                Err(e) => tracing::error!("{lost}: cannot listen on {gw}: {e}"),
            }
        }
        let now = Ports {
            loopback: access.loopback.map(|a| a.port()),
            bridge: access.bridge.map(|a| a.port()),
        };
        if let Err(e) = write_ports(port_file, &now) {
            tracing::warn!(path = %port_file.display(), "keeping the credentials endpoint's ports: {e}");
        }
        if access != Access::default() {
            tracing::info!(
                loopback = ?access.loopback, bridge = ?access.bridge,
                "task credentials endpoint listening"
            );
        }
        CredentialsEndpoint {
            access,
            redirect,
            _stop: stop,
        }
    }

    pub fn access(&self) -> Access {
        self.access
    }

    /// The redirect rule this endpoint installed.
    pub fn redirect(&self) -> Option<&Redirect> {
        self.redirect.as_ref()
    }
}

fn write_ports(path: &Path, p: &Ports) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(p)?)?;
    std::fs::rename(&tmp, path)
}

impl Drop for CredentialsEndpoint {
    fn drop(&mut self) {
        // A stopping agent takes its rule along; a new agent replaces it anyway (with its own
        // port), and a killed one leaves it to that.
        if let Some(r) = self.redirect.take()
            && let Err(e) = r.remove()
        {
            tracing::warn!("removing the redirect of {LINK_LOCAL} on {}: {e}", r.bridge);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixtures::{get, task};
    use super::*;

    #[tokio::test]
    async fn a_restarted_endpoint_keeps_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials-endpoint");
        let store = Arc::new(CredentialStore::new());
        store.take_from_task(&task());
        let first = CredentialsEndpoint::start(store.clone(), None, &file).await;
        let a = first.access();
        let lo = a.loopback.expect("listening on loopback");
        assert_eq!(a.bridge, None);
        assert_eq!(get(lo.into(), "/v2/credentials/app-id").await.0, 200);
        drop(first);
        // The listener closes once its task sees the endpoint gone.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(lo).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let again = CredentialsEndpoint::start(store.clone(), None, &file).await;
        assert_eq!(
            again.access().loopback,
            Some(lo),
            "same port after a restart"
        );
        // While it holds the port, another one gets a port of its own.
        let other = CredentialsEndpoint::start(store, None, &file).await;
        assert_ne!(other.access().loopback, Some(lo));
        assert_eq!(get(lo.into(), "/v2/credentials/app-id").await.0, 200);
    }
}
