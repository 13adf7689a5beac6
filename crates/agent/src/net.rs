//! The node's container network as the task runner uses it: endpoints (a network namespace
//! with an address on the berth bridge) for `awsvpc` tasks and `bridge` containers, and port
//! forwards from host ports to bridge-mode containers. [`Network`] and [`PortForward`] are the
//! seam; [`NodeNet`] is the real network: the work is done by [`berth_runtime::net`] and
//! [`berth_runtime::forward`] (forwarder processes that outlive the agent), this adapter keeps
//! the runner's calls short and its errors text.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use berth_runtime::forward;
pub use berth_runtime::net::Endpoint;
use berth_runtime::net::{HostSocket, NetConfig, Network as BridgeNetwork, Proto, bind_host_port};

/// The container network of a node, as the task runner uses it. Errors are text: they end
/// up in a task's stopped reason.
#[async_trait::async_trait]
pub trait Network: Send + Sync {
    /// The subnet the bridge serves, as `a.b.c.d/n`.
    fn subnet(&self) -> String;
    /// The bridge's name and its (gateway) address.
    fn bridge(&self) -> (String, Ipv4Addr);
    /// The endpoint of `id`, created if it does not exist yet.
    async fn create(&self, id: &str) -> Result<Endpoint, String>;
    /// Remove an endpoint; errors are logged, never fatal (the task is over anyway).
    async fn remove(&self, id: &str);
    /// Bind `host_port` (0: a free port from the dynamic range) for `container_port` of a
    /// container: a taken port fails the start at once.
    fn bind_port(
        &self,
        proto: &str,
        host_port: u16,
        container_port: u16,
    ) -> Result<Box<dyn PortForward>, String>;
    /// After an agent restart: the forwarder `pid` of a port, if it is still the one
    /// forwarding to `ip:container_port` for process `watch_pid`.
    fn adopt_port(
        &self,
        pid: i32,
        proto: &str,
        host_port: u16,
        ip: Ipv4Addr,
        container_port: u16,
        watch_pid: i32,
    ) -> Option<Box<dyn PortForward>>;
}

/// A host port of a bridge-mode container: bound first, forwarding once the container runs,
/// ended with it.
pub trait PortForward: Send + Sync {
    fn host_port(&self) -> u16;
    /// The forwarder process, once it runs.
    fn pid(&self) -> Option<i32>;
    /// Start forwarding to `ip` for as long as process `watch_pid` lives; the forwarder's pid.
    fn run(&mut self, ip: Ipv4Addr, watch_pid: i32) -> Result<i32, String>;
    /// End the forwarding (the port closes).
    fn stop(&mut self);
}

/// The node's real network (the berth bridge).
pub struct NodeNet {
    net: BridgeNetwork,
    subnet: String,
    /// The `berth` binary, whose `forward` subcommand forwards a port.
    exe: PathBuf,
}

impl NodeNet {
    pub async fn open(cfg: NetConfig, exe: &Path) -> Result<NodeNet, String> {
        let subnet = format!("{}/{}", cfg.subnet.0, cfg.subnet.1);
        let net = BridgeNetwork::open(cfg).await.map_err(|e| e.to_string())?;
        Ok(NodeNet {
            net,
            subnet,
            exe: exe.to_path_buf(),
        })
    }
}

#[async_trait::async_trait]
impl Network for NodeNet {
    fn subnet(&self) -> String {
        self.subnet.clone()
    }

    fn bridge(&self) -> (String, Ipv4Addr) {
        let c = self.net.config();
        (c.bridge.clone(), berth_runtime::net::gateway(c.subnet))
    }

    async fn create(&self, id: &str) -> Result<Endpoint, String> {
        if let Some(ep) = self.net.endpoint(id).await {
            return Ok(ep);
        }
        self.net
            .create_endpoint(id)
            .await
            .map_err(|e| e.to_string())
    }

    async fn remove(&self, id: &str) {
        if let Err(e) = self.net.remove_endpoint(id).await {
            tracing::warn!(endpoint = %id, "removing network endpoint: {e}");
        }
    }

    fn bind_port(
        &self,
        proto: &str,
        host_port: u16,
        container_port: u16,
    ) -> Result<Box<dyn PortForward>, String> {
        let f = Forward::bind(proto, host_port, container_port)?;
        Ok(Box::new(NodeForward {
            f,
            exe: self.exe.clone(),
        }))
    }

    fn adopt_port(
        &self,
        pid: i32,
        proto: &str,
        host_port: u16,
        ip: Ipv4Addr,
        container_port: u16,
        watch_pid: i32,
    ) -> Option<Box<dyn PortForward>> {
        let f = Forward::adopt(pid, proto, host_port, ip, container_port, watch_pid)?;
        Some(Box::new(NodeForward {
            f,
            exe: self.exe.clone(),
        }))
    }
}

/// A [`Forward`] with the binary its forwarder runs.
struct NodeForward {
    f: Forward,
    exe: PathBuf,
}

impl PortForward for NodeForward {
    fn host_port(&self) -> u16 {
        self.f.host_port()
    }

    fn pid(&self) -> Option<i32> {
        self.f.pid()
    }

    fn run(&mut self, ip: Ipv4Addr, watch_pid: i32) -> Result<i32, String> {
        self.f.run(&self.exe, ip, watch_pid)
    }

    fn stop(&mut self) {
        self.f.stop()
    }
}

/// A host port forwarded to a bridge-mode container by a forwarder process of its own
/// ([`berth_runtime::forward`]), which outlives the agent: the port keeps answering while the
/// agent restarts. Bound first ([`Forward::bind`]: a taken port fails the start at once), handed
/// to its forwarder once the container runs ([`Forward::run`]), ended with the container
/// ([`Forward::stop`]; the forwarder also ends by itself when the container's init does).
pub struct Forward {
    proto: Proto,
    port: u16,
    container_port: u16,
    socket: Option<HostSocket>,
    pid: Option<i32>,
}

fn proto_of(name: &str) -> Proto {
    if name.eq_ignore_ascii_case("udp") {
        Proto::Udp
    } else {
        Proto::Tcp
    }
}

impl Forward {
    /// Bind `host_port` (0: a free port from the dynamic range) on every host address, for
    /// `container_port` of the container.
    pub fn bind(proto: &str, host_port: u16, container_port: u16) -> Result<Forward, String> {
        let proto = proto_of(proto);
        let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, host_port));
        let (socket, port) = bind_host_port(proto, bind).map_err(|e| e.to_string())?;
        Ok(Forward {
            proto,
            port,
            container_port,
            socket: Some(socket),
            pid: None,
        })
    }

    /// Start the forwarder to `ip` for as long as process `watch_pid` lives; its pid.
    pub fn run(&mut self, exe: &Path, ip: Ipv4Addr, watch_pid: i32) -> Result<i32, String> {
        let socket = self
            .socket
            .take()
            .ok_or_else(|| format!("port {} has a forwarder already", self.port))?;
        let target = SocketAddr::from((ip, self.container_port));
        let pid = forward::spawn(exe, socket, self.proto, self.port, target, watch_pid)
            .map_err(|e| e.to_string())?;
        self.pid = Some(pid);
        Ok(pid)
    }

    /// After an agent restart: the forwarder `pid` of this port, if it is still the one
    /// forwarding to `ip` for process `watch_pid`.
    pub fn adopt(
        pid: i32,
        proto: &str,
        host_port: u16,
        ip: Ipv4Addr,
        container_port: u16,
        watch_pid: i32,
    ) -> Option<Forward> {
        let proto = proto_of(proto);
        let target = SocketAddr::from((ip, container_port));
        forward::is_forwarder(pid, proto, host_port, target, watch_pid).then_some(Forward {
            proto,
            port: host_port,
            container_port,
            socket: None,
            pid: Some(pid),
        })
    }

    pub fn host_port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// End the forwarder (the port closes); a socket not handed over yet closes on drop.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            forward::stop(pid);
        }
    }
}
