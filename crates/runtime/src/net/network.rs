//! The node's bridge and its endpoints: [`Network::open`] makes (or adopts) the bridge, turns
//! on IPv4 forwarding and programs the bridge's rules (`rules`); endpoints are created and
//! removed over rtnetlink, their addresses allocated from files under `state_dir/ipam/` and
//! recorded under `state_dir/endpoints/`; [`teardown`] undoes all of it once the agent stopped.
//!
//! Must not: run a process, or change the namespace of a tokio worker (namespace work goes to
//! `netns::on_own_thread`).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use nix::mount::MntFlags;

use super::netns::{
    build_endpoint, drop_netns_file, is_netns_mount, make_shared_mount, on_own_thread,
    remove_if_present,
};
use super::rtnl::Rtnl;
use super::{
    Endpoint, NetConfig, NetError, gateway, host_range, ioe, mac_for, mac_string, netmask,
    nth_host, rules, valid_id, valid_ifname, veth_name,
};

// ---- background deletion -----------------------------------------------------------------------

/// Deletes host veths on a thread of its own. Unregistering a device costs the kernel ~20 ms of
/// RCU waits (`rcu_barrier` in `netdev_run_todo`), which `remove_endpoint` need not wait for:
/// the veth is set down (off the bridge's forwarding) at once and deleted here.
struct Reaper {
    tx: Option<std::sync::mpsc::Sender<String>>,
    pending: Arc<Pending>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Pending {
    names: parking_lot::Mutex<HashSet<String>>,
    changed: tokio::sync::Notify,
}

impl Reaper {
    fn start() -> io::Result<Reaper> {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let pending = Arc::new(Pending {
            names: parking_lot::Mutex::new(HashSet::new()),
            changed: tokio::sync::Notify::new(),
        });
        let p = pending.clone();
        let thread = std::thread::Builder::new()
            .name("berth-veth-reaper".into())
            .spawn(move || {
                let mut nl: Option<Rtnl> = None;
                while let Ok(name) = rx.recv() {
                    let r = match nl.as_mut() {
                        Some(nl) => nl.del_link(&name),
                        None => Rtnl::open().and_then(|mut n| {
                            let r = n.del_link(&name);
                            nl = Some(n);
                            r
                        }),
                    };
                    if let Err(e) = r {
                        tracing::warn!(veth = %name, error = %e, "deleting a veth");
                        nl = None;
                    }
                    p.names.lock().remove(&name);
                    p.changed.notify_waiters();
                }
            })?;
        Ok(Reaper {
            tx: Some(tx),
            pending,
            thread: Some(thread),
        })
    }

    fn queue(&self, name: String) {
        self.pending.names.lock().insert(name.clone());
        if let Some(tx) = &self.tx
            && tx.send(name.clone()).is_err()
        {
            self.pending.names.lock().remove(&name);
        }
    }

    /// Wait until `name` (or, with `None`, every queued veth) is deleted.
    async fn wait(&self, name: Option<&str>) {
        loop {
            let changed = self.pending.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let names = self.pending.names.lock();
                let busy = match name {
                    Some(n) => names.contains(n),
                    None => !names.is_empty(),
                };
                if !busy {
                    return;
                }
            }
            changed.await;
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Let the thread finish what is queued (a shutting-down agent leaves no veth behind).
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- the network ------------------------------------------------------------------------------

/// The node's bridge and its endpoints.
pub struct Network {
    cfg: NetConfig,
    gateway: Ipv4Addr,
    /// The next offset into [`host_range`] to try, so a released address is not reused at once.
    cursor: parking_lot::Mutex<u32>,
    reaper: Reaper,
}

impl Network {
    /// Program the bridge's rules (its nf_tables table, replaced whole: the masquerade of the
    /// subnet's traffic leaving through another interface, and the credentials guard), then
    /// create (or adopt) the bridge with the gateway address, set it up and enable IPv4
    /// forwarding. Without nf_tables this fails before anything is made
    /// ([`NetError::Netfilter`]).
    pub async fn open(cfg: NetConfig) -> Result<Network, NetError> {
        if !valid_ifname(&cfg.bridge) {
            return Err(NetError::Config(format!("bridge name {:?}", cfg.bridge)));
        }
        if !(8..=30).contains(&cfg.subnet.1) {
            return Err(NetError::Config(format!(
                "prefix /{} (must be 8..=30)",
                cfg.subnet.1
            )));
        }
        // The canonical network address.
        let cfg = NetConfig {
            subnet: (
                Ipv4Addr::from(u32::from(cfg.subnet.0) & netmask(cfg.subnet.1)),
                cfg.subnet.1,
            ),
            ..cfg
        };
        // First, so that a node without nf_tables is refused before it changes anything.
        let (bridge, subnet) = (cfg.bridge.clone(), cfg.subnet);
        tokio::task::spawn_blocking(move || rules::install_node_rules(&bridge, subnet))
            .await
            .map_err(|e| NetError::Io("nf_tables".into(), io::Error::other(e)))??;
        for d in ["ipam", "endpoints", "netns"] {
            let p = cfg.state_dir.join(d);
            fs::create_dir_all(&p).map_err(ioe(format!("creating {}", p.display())))?;
        }
        make_shared_mount(&cfg.state_dir.join("netns"))?;

        let gw = gateway(cfg.subnet);
        let (bridge, prefix) = (cfg.bridge.clone(), cfg.subnet.1);
        tokio::task::spawn_blocking(move || -> Result<(), NetError> {
            let mut nl = Rtnl::open().map_err(ioe("netlink"))?;
            if nl.index(&bridge).map_err(ioe("netlink"))?.is_none() {
                match nl.add_bridge(&bridge, mac_for(gw)) {
                    Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {}
                    r => r.map_err(ioe(format!("creating bridge {bridge}")))?,
                }
            }
            let idx = nl
                .index(&bridge)
                .map_err(ioe("netlink"))?
                .ok_or_else(|| NetError::Io(bridge.clone(), io::Error::other("vanished")))?;
            nl.add_addr(idx, gw, prefix)
                .map_err(ioe(format!("adding {gw}/{prefix} to {bridge}")))?;
            nl.set_up(idx)
                .map_err(ioe(format!("setting {bridge} up")))?;
            Ok(())
        })
        .await
        .map_err(|e| NetError::Io("bridge setup".into(), io::Error::other(e)))??;

        let fwd = "/proc/sys/net/ipv4/ip_forward";
        if fs::read_to_string(fwd)
            .map(|s| s.trim() != "1")
            .unwrap_or(true)
        {
            fs::write(fwd, "1").map_err(ioe("enabling net.ipv4.ip_forward"))?;
        }

        let net = Network {
            gateway: gw,
            cursor: parking_lot::Mutex::new(0),
            reaper: Reaper::start().map_err(ioe("starting the veth reaper"))?,
            cfg,
        };
        // Continue after the highest address in use, as before a restart.
        let range = host_range(net.cfg.subnet);
        let highest = fs::read_dir(net.cfg.state_dir.join("ipam"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| range.contains(ip))
            .max();
        if let Some(h) = highest {
            *net.cursor.lock() = h - range.start() + 1;
        }
        Ok(net)
    }

    /// The configuration in force (the subnet canonicalised).
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.cfg
            .state_dir
            .join("endpoints")
            .join(format!("{id}.json"))
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("netns").join(id)
    }

    fn ipam_path(&self, ip: Ipv4Addr) -> PathBuf {
        self.cfg.state_dir.join("ipam").join(ip.to_string())
    }

    /// Reserve the next free address for `id`: a file per address, created exclusively.
    fn allocate(&self, id: &str) -> Result<Ipv4Addr, NetError> {
        let range = host_range(self.cfg.subnet);
        let size = range.end() - range.start() + 1;
        let mut cursor = self.cursor.lock();
        for i in 0..size {
            let off = (*cursor + i) % size;
            let ip = nth_host(self.cfg.subnet, off);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(self.ipam_path(ip))
            {
                Ok(mut f) => {
                    f.write_all(id.as_bytes())
                        .map_err(ioe(format!("recording {ip}")))?;
                    *cursor = (off + 1) % size;
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(NetError::Io(format!("allocating {ip}"), e)),
            }
        }
        Err(NetError::Exhausted(format!(
            "{}/{}",
            self.cfg.subnet.0, self.cfg.subnet.1
        )))
    }

    fn owner(&self, ip: Ipv4Addr) -> Option<String> {
        let mut s = String::new();
        fs::File::open(self.ipam_path(ip))
            .ok()?
            .read_to_string(&mut s)
            .ok()?;
        Some(s)
    }

    /// Release the address of `id`: `ip` when known, else whatever the allocation files say.
    fn release(&self, id: &str, ip: Option<Ipv4Addr>) -> Result<(), NetError> {
        let ips: Vec<Ipv4Addr> = match ip {
            Some(ip) => vec![ip],
            // No record (a crash between allocating and recording): look for it.
            None => fs::read_dir(self.cfg.state_dir.join("ipam"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect(),
        };
        for ip in ips {
            if self.owner(ip).as_deref() == Some(id) {
                remove_if_present(&self.ipam_path(ip))?;
            }
        }
        Ok(())
    }

    fn read_record(&self, id: &str) -> Option<Endpoint> {
        serde_json::from_slice(&fs::read(self.record_path(id)).ok()?).ok()
    }

    /// A new network namespace for `id`, bind-mounted at `state_dir/netns/<id>`, with `lo` up
    /// and `eth0` on the bridge: the next free address, a default route via the gateway.
    pub async fn create_endpoint(&self, id: &str) -> Result<Endpoint, NetError> {
        if !valid_id(id) {
            return Err(NetError::InvalidId(id.to_string()));
        }
        // The record, created exclusively, claims the id before anything else exists.
        let rec_path = self.record_path(id);
        let mut rec = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&rec_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.endpoint(id).await.is_some() {
                    return Err(NetError::Exists(id.to_string()));
                }
                // Left over from a crash or a reboot: clear it and claim again.
                self.remove_endpoint(id).await?;
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&rec_path)
                    .map_err(ioe(format!("creating {}", rec_path.display())))?
            }
            Err(e) => return Err(NetError::Io(format!("creating {}", rec_path.display()), e)),
        };
        let ip = match self.allocate(id) {
            Ok(ip) => ip,
            Err(e) => {
                let _ = fs::remove_file(&rec_path);
                return Err(e);
            }
        };
        let mac = mac_for(ip);
        let ep = Endpoint {
            id: id.to_string(),
            netns: self.netns_path(id),
            ip,
            prefix: self.cfg.subnet.1,
            gateway: self.gateway,
            mac: mac_string(mac),
            host_veth: veth_name(id),
        };
        let built = match rec.write_all(&serde_json::to_vec(&ep).unwrap_or_default()) {
            Err(e) => Err(NetError::Io(format!("writing {}", rec_path.display()), e)),
            Ok(()) => {
                drop(rec);
                // The same id removed a moment ago: its veth name frees up shortly.
                self.reaper.wait(Some(&ep.host_veth)).await;
                let (bridge, ep2) = (self.cfg.bridge.clone(), ep.clone());
                on_own_thread(move || build_endpoint(&bridge, &ep2, mac)).await
            }
        };
        match built {
            Ok(()) => Ok(ep),
            Err(e) => {
                if let Err(e2) = self.remove_endpoint(id).await {
                    tracing::warn!(id, error = %e2, "cleaning up a failed endpoint");
                }
                Err(e)
            }
        }
    }

    /// The endpoint of `id` as it exists (say after an agent restart): its record, if its
    /// namespace is still mounted.
    pub async fn endpoint(&self, id: &str) -> Option<Endpoint> {
        if !valid_id(id) {
            return None;
        }
        let ep = self.read_record(id)?;
        is_netns_mount(&ep.netns).then_some(ep)
    }

    /// The ids of every endpoint on record, live or not (after a reboot none is live; the
    /// agent removes those it no longer wants, which releases their addresses).
    pub fn recorded_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(self.cfg.state_dir.join("endpoints"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                Some(n.strip_suffix(".json")?.to_string())
            })
            .filter(|id| valid_id(id))
            .collect();
        ids.sort();
        ids
    }

    /// Remove the endpoint of `id`: its veth pair, its namespace file (unmounted), its
    /// address, its record. Idempotent: whatever is already gone is skipped.
    ///
    /// The host veth is set down before this returns and deleted in the background moments
    /// later (the kernel needs ~20 ms to unregister a device); [`Network::settle`] waits for
    /// that, and re-creating the same id waits for it by itself.
    pub async fn remove_endpoint(&self, id: &str) -> Result<(), NetError> {
        if !valid_id(id) {
            return Err(NetError::InvalidId(id.to_string()));
        }
        let rec = self.read_record(id);
        let veth = rec
            .as_ref()
            .map_or_else(|| veth_name(id), |e| e.host_veth.clone());
        if fs::metadata(format!("/sys/class/net/{veth}")).is_ok() {
            let v = veth.clone();
            tokio::task::spawn_blocking(move || Rtnl::open()?.set_down(&v))
                .await
                .map_err(|e| NetError::Io("netlink".into(), io::Error::other(e)))?
                .map_err(ioe(format!("setting {veth} down")))?;
            self.reaper.queue(veth);
        }
        drop_netns_file(&self.netns_path(id))?;
        self.release(id, rec.as_ref().map(|e| e.ip))?;
        remove_if_present(&self.record_path(id))
    }

    /// Wait until the veths of removed endpoints are deleted from the kernel.
    pub async fn settle(&self) {
        self.reaper.wait(None).await
    }

    /// Remove every recorded endpoint, the bridge, its rules (the bridge's nf_tables table) and
    /// the mount of `state_dir/netns`. For tests and uninstalling.
    pub async fn destroy(self) -> Result<(), NetError> {
        for id in self.recorded_ids() {
            self.remove_endpoint(&id).await?;
        }
        self.settle().await;
        let bridge = self.cfg.bridge.clone();
        tokio::task::spawn_blocking(move || Rtnl::open()?.del_link(&bridge))
            .await
            .map_err(|e| NetError::Io("netlink".into(), io::Error::other(e)))?
            .map_err(ioe(format!("deleting {}", self.cfg.bridge)))?;
        let bridge = self.cfg.bridge.clone();
        tokio::task::spawn_blocking(move || rules::remove_table(&bridge))
            .await
            .map_err(|e| NetError::Io("nf_tables".into(), io::Error::other(e)))??;
        // Busy (not detached) if namespace files of others are still mounted below.
        let _ = nix::mount::umount2(&self.cfg.state_dir.join("netns"), MntFlags::empty());
        Ok(())
    }
}

/// Undo [`Network::open`] of `cfg` once the agent that opened it has stopped and none of its
/// tasks runs (a graceful stop of `berth up` or `berth agent`): [`Network::destroy`], the
/// bridge's table with it, whichever run made them. Whatever is already gone is skipped.
pub async fn teardown(cfg: NetConfig) -> Result<(), NetError> {
    if !valid_ifname(&cfg.bridge) {
        return Err(NetError::Config(format!("bridge name {:?}", cfg.bridge)));
    }
    let subnet = (
        Ipv4Addr::from(u32::from(cfg.subnet.0) & netmask(cfg.subnet.1)),
        cfg.subnet.1,
    );
    Network {
        gateway: gateway(subnet),
        cursor: parking_lot::Mutex::new(0),
        reaper: Reaper::start().map_err(ioe("starting the veth reaper"))?,
        cfg: NetConfig { subnet, ..cfg },
    }
    .destroy()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn offline(dir: &Path, subnet: (Ipv4Addr, u8)) -> Network {
        fs::create_dir_all(dir.join("ipam")).unwrap();
        Network {
            cfg: NetConfig {
                bridge: "x".into(),
                subnet,
                state_dir: dir.to_path_buf(),
            },
            gateway: gateway(subnet),
            cursor: parking_lot::Mutex::new(0),
            reaper: Reaper::start().unwrap(),
        }
    }

    #[test]
    fn allocation_is_exclusive_persistent_and_released() {
        let d = tempfile::tempdir().unwrap();
        let s = (Ipv4Addr::new(10, 9, 0, 0), 29);
        let n = offline(d.path(), s);
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| n.allocate(&format!("e{i}")).unwrap())
            .collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 9, 0, 6));
        assert!(matches!(n.allocate("x"), Err(NetError::Exhausted(_))));
        // Releasing checks the owner.
        n.release("not-e1", Some(got[1])).unwrap();
        assert!(matches!(n.allocate("x"), Err(NetError::Exhausted(_))));
        n.release("e1", None).unwrap();
        // Another network on the same directory (a restarted agent) sees the rest.
        let n2 = offline(d.path(), s);
        assert_eq!(n2.allocate("y").unwrap(), got[1]);
        assert_eq!(n2.owner(got[1]).as_deref(), Some("y"));
    }
}
