//! Fakes of the agent's own seams, beside `berth_runtime::fake::FakeDriver`: an image store
//! that pulls nothing ([`FakeImages`]) and a container network that makes nothing
//! ([`FakeNetwork`]). For the runner's unit tests and simulated nodes; failures and delays
//! are scripted per image, and time is tokio's clock.
//!
//! Must not: touch the host (no files, sockets, interfaces or processes).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_client::RegistryAuth;
use berth_runtime::PulledImage;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::images::Images;
use crate::net::{Endpoint, Network, PortForward};

#[derive(Default)]
struct ImageScript {
    failures: HashMap<String, String>,
    delays: HashMap<String, Duration>,
    configs: HashMap<String, Value>,
    pulls: Vec<String>,
    record: bool,
}

/// Images that are ready at once: the root filesystem is the reference itself as a path (so
/// that `FakeDriver` rules can match it), the config runs `/fake`.
#[derive(Default, Clone)]
pub struct FakeImages {
    s: Arc<Mutex<ImageScript>>,
}

impl FakeImages {
    /// Remember every pull ([`Self::pulls`]).
    pub fn recording(self) -> FakeImages {
        self.s.lock().record = true;
        self
    }

    /// Pulls of `image` fail with `message`.
    pub fn fail(&self, image: &str, message: &str) {
        self.s.lock().failures.insert(image.into(), message.into());
    }

    /// Pulls of `image` take `d`.
    pub fn delay(&self, image: &str, d: Duration) {
        self.s.lock().delays.insert(image.into(), d);
    }

    /// The image config of `image` (`Entrypoint`, `Cmd`, `Env`, `User`, …).
    pub fn config(&self, image: &str, config: Value) {
        self.s.lock().configs.insert(image.into(), config);
    }

    /// The images pulled so far, in order.
    pub fn pulls(&self) -> Vec<String> {
        self.s.lock().pulls.clone()
    }
}

/// A digest-shaped name for `image` (not a hash of any content: there is none).
fn fake_digest(image: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    image.hash(&mut h);
    format!("sha256:{:064x}", h.finish())
}

#[async_trait::async_trait]
impl Images for FakeImages {
    async fn pull(&self, image: &str) -> Result<PulledImage, String> {
        let (delay, failure, config) = {
            let mut s = self.s.lock();
            if s.record {
                s.pulls.push(image.to_string());
            }
            (
                s.delays.get(image).copied(),
                s.failures.get(image).cloned(),
                s.configs.get(image).cloned(),
            )
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if let Some(f) = failure {
            return Err(f);
        }
        Ok(PulledImage {
            manifest_digest: fake_digest(image),
            rootfs: PathBuf::from(image),
            config: config.unwrap_or_else(|| json!({"Cmd": ["/fake"]})),
        })
    }

    fn mark_used(&self, _img: &PulledImage) {}

    async fn collect(&self, _min_age: Duration) -> Result<usize, String> {
        Ok(0)
    }

    fn set_registry_auth(&self, _auth: RegistryAuth) {}
}

#[derive(Default)]
struct NetState {
    endpoints: HashMap<String, Endpoint>,
    next_host: u32,
    ports: HashSet<u16>,
    /// Running forwarders: pid → host port.
    forwarders: HashMap<i32, u16>,
    next_pid: i32,
    create_error: Option<String>,
}

/// A node network of `10.254.0.0/16` addresses and host ports that exist only here.
#[derive(Default, Clone)]
pub struct FakeNetwork {
    s: Arc<Mutex<NetState>>,
}

impl FakeNetwork {
    /// Endpoints fail to be made (Some) or work again (None).
    pub fn fail_create(&self, message: Option<&str>) {
        self.s.lock().create_error = message.map(str::to_string);
    }

    /// The endpoints that exist, sorted.
    pub fn endpoints(&self) -> Vec<String> {
        let mut v: Vec<String> = self.s.lock().endpoints.keys().cloned().collect();
        v.sort();
        v
    }

    /// The host ports bound or forwarded, sorted.
    pub fn ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.s.lock().ports.iter().copied().collect();
        v.sort();
        v
    }

    /// Take `port` as something else on the host would.
    pub fn take_port(&self, port: u16) {
        self.s.lock().ports.insert(port);
    }
}

const FAKE_SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 254, 0, 0), 16);

#[async_trait::async_trait]
impl Network for FakeNetwork {
    fn subnet(&self) -> String {
        format!("{}/{}", FAKE_SUBNET.0, FAKE_SUBNET.1)
    }

    fn bridge(&self) -> (String, Ipv4Addr) {
        ("fake0".into(), Ipv4Addr::new(10, 254, 0, 1))
    }

    async fn create(&self, id: &str) -> Result<Endpoint, String> {
        let mut s = self.s.lock();
        if let Some(ep) = s.endpoints.get(id) {
            return Ok(ep.clone());
        }
        if let Some(e) = &s.create_error {
            return Err(e.clone());
        }
        s.next_host += 1;
        let n = s.next_host % 65_000 + 2;
        let ip = Ipv4Addr::from(u32::from(FAKE_SUBNET.0) + n);
        let o = ip.octets();
        let ep = Endpoint {
            id: id.to_string(),
            netns: PathBuf::from(format!("/fake/netns/{id}")),
            ip,
            prefix: FAKE_SUBNET.1,
            gateway: Ipv4Addr::new(10, 254, 0, 1),
            mac: format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
            host_veth: format!("fake{n}"),
        };
        s.endpoints.insert(id.to_string(), ep.clone());
        Ok(ep)
    }

    async fn remove(&self, id: &str) {
        self.s.lock().endpoints.remove(id);
    }

    fn bind_port(
        &self,
        _proto: &str,
        host_port: u16,
        _container_port: u16,
    ) -> Result<Box<dyn PortForward>, String> {
        let mut s = self.s.lock();
        let port = if host_port == 0 {
            (49153..=65535)
                .find(|p| !s.ports.contains(p))
                .ok_or("no free port in the dynamic range")?
        } else if s.ports.contains(&host_port) {
            return Err("Address already in use (os error 98)".into());
        } else {
            host_port
        };
        s.ports.insert(port);
        Ok(Box::new(FakeForward {
            net: self.clone(),
            port,
            pid: None,
        }))
    }

    fn adopt_port(
        &self,
        pid: i32,
        _proto: &str,
        host_port: u16,
        _ip: Ipv4Addr,
        _container_port: u16,
        _watch_pid: i32,
    ) -> Option<Box<dyn PortForward>> {
        let s = self.s.lock();
        (s.forwarders.get(&pid) == Some(&host_port)).then(|| {
            Box::new(FakeForward {
                net: self.clone(),
                port: host_port,
                pid: Some(pid),
            }) as Box<dyn PortForward>
        })
    }
}

/// A host port of [`FakeNetwork`]: released when stopped, or dropped before it forwards (a
/// running forwarder outlives the agent, as a real one does).
struct FakeForward {
    net: FakeNetwork,
    port: u16,
    pid: Option<i32>,
}

impl PortForward for FakeForward {
    fn host_port(&self) -> u16 {
        self.port
    }

    fn pid(&self) -> Option<i32> {
        self.pid
    }

    fn run(&mut self, _ip: Ipv4Addr, _watch_pid: i32) -> Result<i32, String> {
        let mut s = self.net.s.lock();
        s.next_pid += 1;
        let pid = 50_000 + s.next_pid;
        s.forwarders.insert(pid, self.port);
        self.pid = Some(pid);
        Ok(pid)
    }

    fn stop(&mut self) {
        let mut s = self.net.s.lock();
        if let Some(pid) = self.pid.take() {
            s.forwarders.remove(&pid);
        }
        s.ports.remove(&self.port);
    }
}

impl Drop for FakeForward {
    fn drop(&mut self) {
        if self.pid.is_none() {
            self.net.s.lock().ports.remove(&self.port);
        }
    }
}
