//! Host ports: binding one ([`bind_host_port`]: a taken port is an error at once) and
//! forwarding it to a container in userspace ([`PortProxy`], like `docker-proxy`), for TCP
//! connections and UDP flows.
//!
//! Must not: block an async worker, or outlive its owner (dropping a proxy ends it).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{NetError, ioe};

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proto {
    Tcp,
    Udp,
}

/// The dynamic host port range (ECS's default on Linux).
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 49153..=65535;

/// How long a UDP flow lives without traffic (docker-proxy's 90 s).
const UDP_IDLE: Duration = Duration::from_secs(90);

/// A bound host-port socket (TCP already listening).
pub enum HostSocket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl HostSocket {
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        match self {
            HostSocket::Tcp(l) => l.into(),
            HostSocket::Udp(s) => s.into(),
        }
    }
}

/// Bind a host port now, so that a taken port is reported here as [`NetError::PortInUse`].
/// Port 0 picks a free port of [`DYNAMIC_PORTS`] (starting at a random one). Returns the
/// socket and the port bound.
pub fn bind_host_port(proto: Proto, bind: SocketAddr) -> Result<(HostSocket, u16), NetError> {
    let try_bind = |addr: SocketAddr| -> Result<Option<HostSocket>, NetError> {
        let r = match proto {
            Proto::Tcp => std::net::TcpListener::bind(addr).map(HostSocket::Tcp),
            Proto::Udp => std::net::UdpSocket::bind(addr).map(HostSocket::Udp),
        };
        match r {
            Ok(sock) => Ok(Some(sock)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
            Err(e) => Err(NetError::Io(format!("binding {proto:?} {addr}"), e)),
        }
    };
    if bind.port() != 0 {
        return try_bind(bind)?
            .map(|s| (s, bind.port()))
            .ok_or(NetError::PortInUse(bind.port()));
    }
    let (lo, hi) = (*DYNAMIC_PORTS.start(), *DYNAMIC_PORTS.end());
    let span = u32::from(hi - lo) + 1;
    let start = (RandomState::new().build_hasher().finish() % u64::from(span)) as u32;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        if let Some(s) = try_bind(SocketAddr::new(bind.ip(), port))? {
            return Ok((s, port));
        }
    }
    Err(NetError::NoFreePort)
}

/// A userspace forwarder from a host port to a container (like `docker-proxy`). Dropping it
/// (or [`PortProxy::stop`]) closes the listener and every forward in progress.
pub struct PortProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl PortProxy {
    /// Bind now, so a taken port is reported here as [`NetError::PortInUse`]. Port 0 picks a
    /// free port of [`DYNAMIC_PORTS`]. Then forward every TCP connection (or every UDP flow, by
    /// client address) to `target` until stopped.
    pub async fn start(
        proto: Proto,
        bind: SocketAddr,
        target: SocketAddr,
    ) -> Result<PortProxy, NetError> {
        let (sock, port) = bind_host_port(proto, bind)?;
        PortProxy::serve(sock, port, target)
    }

    /// Forward an already bound host socket (bound to `port`) to `target` until stopped.
    pub fn serve(sock: HostSocket, port: u16, target: SocketAddr) -> Result<PortProxy, NetError> {
        let task = match sock {
            HostSocket::Tcp(l) => {
                l.set_nonblocking(true)
                    .map_err(ioe(format!("listening on tcp port {port}")))?;
                let l = tokio::net::TcpListener::from_std(l)
                    .map_err(ioe(format!("listening on tcp port {port}")))?;
                tokio::spawn(tcp_forward(l, target))
            }
            HostSocket::Udp(s) => {
                s.set_nonblocking(true)
                    .map_err(ioe(format!("listening on udp port {port}")))?;
                let s = tokio::net::UdpSocket::from_std(s)
                    .map_err(ioe(format!("listening on udp port {port}")))?;
                tokio::spawn(udp_forward(Arc::new(s), target))
            }
        };
        Ok(PortProxy { port, task })
    }

    /// The host port bound (the one picked, when asked for port 0).
    pub fn host_port(&self) -> u16 {
        self.port
    }

    /// Close the listener and every forward in progress.
    pub fn stop(self) {}
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        // Aborting drops the listener and the set of forwards it owns.
        self.task.abort();
    }
}

async fn tcp_forward(l: tokio::net::TcpListener, target: SocketAddr) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            acc = l.accept() => match acc {
                Ok((mut inbound, _)) => {
                    conns.spawn(async move {
                        let _ = inbound.set_nodelay(true);
                        if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                            let _ = out.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                }
                // Out of descriptors and the like: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn udp_forward(s: Arc<tokio::net::UdpSocket>, target: SocketAddr) {
    // One upstream socket per client address; its task answers through the listening socket
    // and ends after UDP_IDLE without traffic either way.
    let mut flows: HashMap<SocketAddr, tokio::sync::mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            r = s.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let datagram = buf[..n].to_vec();
        if let Some(tx) = flows.get(&from) {
            match tx.try_send(datagram) {
                Ok(()) => continue,
                // Full: drop it, as a congested link would.
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => continue,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(d)) => {
                    flows.remove(&from);
                    flows.retain(|_, tx| !tx.is_closed());
                    start_flow(&mut flows, &mut tasks, &s, from, target, d).await;
                }
            }
        } else {
            flows.retain(|_, tx| !tx.is_closed());
            start_flow(&mut flows, &mut tasks, &s, from, target, datagram).await;
        }
    }
}

async fn start_flow(
    flows: &mut HashMap<SocketAddr, tokio::sync::mpsc::Sender<Vec<u8>>>,
    tasks: &mut tokio::task::JoinSet<()>,
    s: &Arc<tokio::net::UdpSocket>,
    from: SocketAddr,
    target: SocketAddr,
    first: Vec<u8>,
) {
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(up) = tokio::net::UdpSocket::bind(local).await else {
        return;
    };
    if up.connect(target).await.is_err() {
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
    let _ = tx.try_send(first);
    flows.insert(from, tx);
    let back = s.clone();
    tasks.spawn(async move {
        let mut b = vec![0u8; 65536];
        loop {
            tokio::select! {
                d = rx.recv() => match d {
                    Some(d) => { let _ = up.send(&d).await; }
                    None => return,
                },
                // Errors (ICMP unreachable and the like) keep the flow until it idles out.
                r = up.recv(&mut b) => if let Ok(n) = r {
                    let _ = back.send_to(&b[..n], from).await;
                },
                _ = tokio::time::sleep(UDP_IDLE) => return,
            }
        }
    });
}
