//! The task credentials endpoint on the real kernel: a container's network namespace on a
//! bridge of the test's own reaches it at `169.254.170.2:80` through the DNAT rule, a second
//! endpoint (a restarted agent) replaces the rule, and a stopping one removes its own. Needs
//! root (skips otherwise) and `nft` (Debian's `nftables`) to look at the rules:
//! `cargo test -p berth-agent --test credentials_endpoint -- --nocapture`.
//!
//! berth programs the rule over netlink: the test empties `PATH` first, so no `iptables` is
//! there to run (the credentials used to be silently off without it). It calls `ip` and `nft`
//! by the paths found before. A DNAT of another tool for the same address (a table of the
//! test's own, at iptables' `nat PREROUTING` priority, to a port where nothing listens) does
//! not take the connections first.
//!
//! The bridge is `bthcred0`, the subnet `10.214.40.0/24`; a [`Guard`] removes the bridge, the
//! namespaces, the bridge's table and the test's, even when it fails. Traffic goes only to the
//! link-local address while it is redirected to the test's bridge, and to loopback.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_agent::credentials::{CredentialStore, CredentialsEndpoint, LINK_LOCAL, RoleType};
use berth_model::wire::acs::IAMRoleCredentials;
use berth_runtime::net::{NetConfig, Network, gateway, table_name, veth_name};

const BRIDGE: &str = "bthcred0";
const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 214, 40, 0), 24);
const TASK: &str = "arn:aws:ecs:us-east-1:000000000000:task/default/creds";
/// A table of the test's own with a DNAT of the same address elsewhere.
const OTHER: &str = "berth-test-other-dnat";

/// `ip` and `nft` by absolute path, found before `PATH` is emptied.
struct Tools {
    ip: PathBuf,
    nft: PathBuf,
}

fn find(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is needed (Debian: iproute2, nftables; scripts/test.sh installs them)")
        })
}

fn quiet(cmd: &Path, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The bridge's table as `nft -j` lists it (None: no such table).
fn table(nft: &Path) -> Option<serde_json::Value> {
    let out = Command::new(nft)
        .args(["-j", "list", "table", "ip", &table_name(BRIDGE)])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Where the DNAT rules of the bridge's table send connections.
fn redirects(nft: &Path) -> Vec<SocketAddrV4> {
    let Some(t) = table(nft) else {
        return Vec::new();
    };
    t["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["chain"] == "prerouting")
        .flat_map(|r| r["expr"].as_array().unwrap().clone())
        .filter_map(|e| {
            let d = e.get("dnat")?;
            let ip: Ipv4Addr = d["addr"].as_str()?.parse().ok()?;
            Some(SocketAddrV4::new(
                ip,
                u16::try_from(d["port"].as_u64()?).ok()?,
            ))
        })
        .collect()
}

/// Removes everything the test may have created, whatever state it stopped in.
struct Guard {
    dir: tempfile::TempDir,
    ids: Vec<String>,
    tools: Tools,
}

impl Guard {
    fn cfg(&self) -> NetConfig {
        NetConfig {
            bridge: BRIDGE.into(),
            subnet: SUBNET,
            state_dir: self.dir.path().join("net"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let netns = self.dir.path().join("net").join("netns");
        if let Ok(rd) = std::fs::read_dir(&netns) {
            for e in rd.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(e.path());
            }
        }
        for id in &self.ids {
            let v = veth_name(id);
            if Path::new("/sys/class/net").join(&v).exists() {
                quiet(&self.tools.ip, &["link", "del", &v]);
            }
        }
        if Path::new("/sys/class/net").join(BRIDGE).exists() {
            quiet(&self.tools.ip, &["link", "del", BRIDGE]);
        }
        for t in [table_name(BRIDGE).as_str(), OTHER] {
            quiet(&self.tools.nft, &["delete", "table", "ip", t]);
        }
        let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `GET path` from inside the namespace file `ns` to `addr`: the status and the body.
fn get_in_netns(ns: &Path, addr: SocketAddrV4, path: &str) -> (u16, String) {
    let ns = ns.to_path_buf();
    let path = path.to_string();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("connecting to {addr} from the namespace: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 169.254.170.2\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_containers_reach_their_credentials_at_the_link_local_address() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let tools = Tools {
        ip: find("ip"),
        nft: find("nft"),
    };
    // SAFETY: the only test of this binary, before it starts a thread of its own; nothing in
    // this process reads the environment outside std's lock.
    unsafe { std::env::set_var("PATH", "") };
    let mut g = Guard {
        dir: tempfile::tempdir().unwrap(),
        ids: vec![],
        tools,
    };
    let nft = g.tools.nft.clone();
    // Another tool's DNAT of the same address, at iptables' nat PREROUTING priority.
    let other = format!(
        "table ip {OTHER} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat;\n    \
         iifname \"{BRIDGE}\" ip daddr 169.254.170.2 tcp dport 80 dnat to {}:9\n  }}\n}}\n",
        gateway(SUBNET)
    );
    let mut child = Command::new(&nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(other.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{other}");
    let id = format!("{BRIDGE}-c1");
    g.ids.push(id.clone());
    let net = Network::open(g.cfg()).await.unwrap();
    let ep = net.create_endpoint(&id).await.unwrap();

    let store = Arc::new(CredentialStore::new());
    store
        .set(
            TASK,
            RoleType::TaskApplication,
            &IAMRoleCredentials {
                credentials_id: Some("app-id".into()),
                role_arn: Some("arn:aws:iam::000000000000:role/app".into()),
                access_key_id: Some("AKIATEST".into()),
                secret_access_key: Some("secret".into()),
                session_token: Some("token".into()),
                expiration: Some("2026-11-23T21:00:00Z".into()),
                credential_scope: None,
            },
        )
        .unwrap();
    let gw = gateway(SUBNET);
    let bridge = Some((BRIDGE.to_string(), gw));

    let first = CredentialsEndpoint::start(store.clone(), bridge.clone(), &g.path("a")).await;
    let to = first.access().bridge.expect("the bridge part is up");
    assert_eq!(*to.ip(), gw);
    assert_eq!(redirects(&nft), vec![to]);
    let (status, body) = get_in_netns(&ep.netns, LINK_LOCAL, "/v2/credentials/app-id");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["AccessKeyId"], "AKIATEST");
    assert_eq!(v["RoleArn"], "arn:aws:iam::000000000000:role/app");
    let (status, body) = get_in_netns(&ep.netns, LINK_LOCAL, "/v2/credentials/other");
    assert_eq!(status, 400);
    assert!(body.contains("InvalidIdInRequest"), "{body}");

    // Another agent on the bridge (a restarted one; the old port is still held here) takes
    // the rule over: one rule, to its own port.
    let second = CredentialsEndpoint::start(store.clone(), bridge.clone(), &g.path("b")).await;
    let to2 = second.access().bridge.expect("the bridge part is up");
    assert_ne!(to2, to);
    assert_eq!(redirects(&nft), vec![to2]);
    // Installing again changes nothing.
    second.redirect().unwrap().install().unwrap();
    assert_eq!(redirects(&nft), vec![to2]);
    // The first one stopping leaves the second's rule alone.
    drop(first);
    assert_eq!(redirects(&nft), vec![to2]);
    let (status, _) = get_in_netns(&ep.netns, LINK_LOCAL, "/v2/credentials/app-id");
    assert_eq!(status, 200);
    // The last one stopping removes its rule.
    drop(second);
    assert!(redirects(&nft).is_empty(), "{:?}", table(&nft));

    net.remove_endpoint(&ep.id).await.unwrap();
    net.destroy().await.unwrap();
    assert_eq!(table(&nft), None, "the bridge's table outlived destroy");
}
