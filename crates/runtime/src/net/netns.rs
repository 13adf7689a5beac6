//! Network namespace files: a namespace per endpoint, bind-mounted to a file under
//! `state_dir/netns/` (a shared mount point, so unmounting a file there frees the namespace in
//! every mount namespace that copied it), and the wiring of a new one to the bridge.
//!
//! Must not: change the namespace of any thread but a short-lived one of its own
//! ([`on_own_thread`]).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use super::rtnl::{Rtnl, msg_addr, msg_default_route, msg_up};
use super::{Endpoint, NetError, ioe, nixe};

/// Run `f` on a new thread of our own and wait for it without blocking the runtime. Anything
/// that changes namespace runs here; the thread ends with `f`, taking its namespace with it.
pub(crate) async fn on_own_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(ioe("starting a network thread"))?;
    rx.await
        .map_err(|_| NetError::Io("network thread".into(), io::Error::other("panicked")))?
}

/// Whether `p` is a bind-mounted namespace file (an nsfs mount).
pub(crate) fn is_netns_mount(p: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // f_type's integer type differs between targets.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 as i64 == NSFS_MAGIC)
}

/// Make `dir` a mount point with shared propagation, as `ip netns add` does for /run/netns:
/// unmounting a namespace file here then unmounts it in every mount namespace that copied it,
/// so the namespace is freed.
pub(crate) fn make_shared_mount(dir: &Path) -> Result<(), NetError> {
    let mut made = false;
    loop {
        match nix::mount::mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(nix::Error::EINVAL) if !made => {
                nix::mount::mount(
                    Some(dir),
                    dir,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(nixe(format!("mount --bind {0} {0}", dir.display())))?;
                made = true;
            }
            Err(e) => {
                return Err(NetError::Io(
                    format!("mount --make-shared {}", dir.display()),
                    e.into(),
                ));
            }
        }
    }
}

/// Unmount a namespace file (if mounted) and delete it (if present).
pub(crate) fn drop_netns_file(p: &Path) -> Result<(), NetError> {
    match nix::mount::umount2(p, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(NetError::Io(format!("umount {}", p.display()), e.into())),
    }
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(NetError::Io(format!("removing {}", p.display()), e))
        }
        _ => Ok(()),
    }
}

pub(crate) fn remove_if_present(p: &Path) -> Result<(), NetError> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(NetError::Io(format!("removing {}", p.display()), e))
        }
        _ => Ok(()),
    }
}

/// On a thread of its own: a new namespace, bind-mounted at `ep.netns`, wired to the bridge.
pub(crate) fn build_endpoint(bridge: &str, ep: &Endpoint, mac: [u8; 6]) -> Result<(), NetError> {
    // Still in the host namespace.
    let mut host = Rtnl::open().map_err(ioe("netlink"))?;
    let bridge_idx = host
        .index(bridge)
        .map_err(ioe("netlink"))?
        .ok_or_else(|| NetError::Io(format!("bridge {bridge}"), io::Error::other("missing")))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&ep.netns)
        .map_err(ioe(format!("creating {}", ep.netns.display())))?;

    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(nixe("unshare(NEWNET)"))?;
    // From here on this thread is in the new namespace; it ends when we return.
    let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
    nix::mount::mount(
        Some(own.as_str()),
        &ep.netns,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(nixe(format!("mount --bind {own} {}", ep.netns.display())))?;
    let ns = fs::File::open(&own).map_err(ioe(own.clone()))?;
    let mut inside = Rtnl::open().map_err(ioe("netlink in the namespace"))?;

    host.add_veth(&ep.host_veth, bridge_idx, "eth0", mac, ns.as_raw_fd())
        .map_err(|e| NetError::Io(format!("creating veth {} on {bridge}", ep.host_veth), e))?;
    let eth0 = inside
        .index("eth0")
        .map_err(ioe("netlink in the namespace"))?
        .ok_or_else(|| NetError::Io("eth0".into(), io::Error::other("missing")))?;
    // One write: lo up (always index 1), eth0 up, its address, the default route.
    inside
        .batch(vec![
            msg_up(1),
            msg_up(eth0),
            msg_addr(eth0, ep.ip, ep.prefix),
            msg_default_route(ep.gateway, eth0),
        ])
        .map_err(|(i, e)| {
            let what = [
                "setting lo up",
                "setting eth0 up",
                "adding eth0's address",
                "adding the default route",
            ];
            NetError::Io(
                format!(
                    "{} in {}",
                    what.get(i).unwrap_or(&"netlink"),
                    ep.netns.display()
                ),
                e,
            )
        })?;
    Ok(())
}
