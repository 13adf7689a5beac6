//! The node's container network as the task engine uses it: endpoints (a network namespace
//! with an address on the berth bridge) for `awsvpc` tasks and `bridge` containers, and port
//! forwards from host ports to bridge-mode containers. The work is done by
//! [`berth_runtime::net`]; this adapter keeps the engine's calls short and its errors text.

use std::net::{Ipv4Addr, SocketAddr};

pub use berth_runtime::net::Endpoint;
use berth_runtime::net::{NetConfig, Network, PortProxy, Proto};

pub struct NodeNet {
    net: Network,
    subnet: String,
}

impl NodeNet {
    pub async fn open(cfg: NetConfig) -> Result<NodeNet, String> {
        let subnet = format!("{}/{}", cfg.subnet.0, cfg.subnet.1);
        let net = Network::open(cfg).await.map_err(|e| e.to_string())?;
        Ok(NodeNet { net, subnet })
    }

    /// The subnet the bridge serves, as `a.b.c.d/n`.
    pub fn subnet(&self) -> String {
        self.subnet.clone()
    }

    /// The endpoint of `id`, created if it does not exist yet.
    pub async fn create(&self, id: &str) -> Result<Endpoint, String> {
        if let Some(ep) = self.net.endpoint(id).await {
            return Ok(ep);
        }
        self.net
            .create_endpoint(id)
            .await
            .map_err(|e| e.to_string())
    }

    /// Remove an endpoint; errors are logged, never fatal (the task is over anyway).
    pub async fn remove(&self, id: &str) {
        if let Err(e) = self.net.remove_endpoint(id).await {
            tracing::warn!(endpoint = %id, "removing network endpoint: {e}");
        }
    }
}

/// A host port forwarded to a container.
pub struct Forward {
    proxy: Option<PortProxy>,
    port: u16,
}

impl Forward {
    /// Listen on `host_port` (0: a free port from the dynamic range) on every host address
    /// and forward to `ip:container_port`.
    pub async fn start(
        proto: &str,
        host_port: u16,
        ip: Ipv4Addr,
        container_port: u16,
    ) -> Result<Forward, String> {
        let p = if proto.eq_ignore_ascii_case("udp") {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, host_port));
        let target = SocketAddr::from((ip, container_port));
        let proxy = PortProxy::start(p, bind, target)
            .await
            .map_err(|e| e.to_string())?;
        let port = proxy.host_port();
        Ok(Forward {
            proxy: Some(proxy),
            port,
        })
    }

    pub fn host_port(&self) -> u16 {
        self.port
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.stop();
        }
    }
}
