//! A command berth runs inside a container (`berth nsexec`: health checks, `CMD-SHELL`) gets
//! exactly the confinement of the container's init, checked on the real kernel with real
//! containers from a busybox root filesystem: escapes a root container's command might try
//! (mount, unshare, core_pattern, loading a module) fail; its capability sets, no_new_privs,
//! seccomp state, ids, groups, rlimits, namespaces and cgroups are the init's; a container
//! without the seccomp policy and with CAP_SYS_ADMIN gets exactly that, not less; a pid that
//! is not a container's is refused.
//!
//! Needs root and /bin/busybox (busybox-static); skips otherwise:
//! `cargo test -p berth-runtime --test confinement`.
//!
//! No libtest harness: this binary is also the `berth` executable the runtime starts —
//! `shim …` and `nsexec …` as arguments run those roles through the same library functions
//! the `berth` binary calls, single-threaded as they must be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_runtime::native::{Container, NativeRuntime};
use berth_runtime::spec::ContainerSpec;

fn flag(args: &[String], name: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("shim") => {
            std::process::exit(berth_runtime::shim::run(&berth_runtime::shim::ShimArgs {
                id: flag(&args, "--id"),
                bundle: flag(&args, "--bundle").into(),
                state_root: flag(&args, "--state-root").into(),
                log: flag(&args, "--log").into(),
            }))
        }
        Some("nsexec") => {
            let pid = flag(&args, "--pid").parse().unwrap_or(-1);
            let cmd = args
                .iter()
                .position(|a| a == "--")
                .map_or(&[][..], |i| &args[i + 1..]);
            let start = flag(&args, "--start-time").parse().ok();
            std::process::exit(berth_runtime::nsexec::run(pid, start, cmd))
        }
        _ => {}
    }
    if NativeRuntime::check().is_err() || !Path::new("/bin/busybox").exists() {
        eprintln!("skipping: needs root and /bin/busybox (busybox-static)");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(commands_in_containers_get_the_containers_confinement());
    println!("test commands_in_containers_get_the_containers_confinement ... ok");
}

/// Ends what the test started, whatever state it stopped in: container processes by pid,
/// bundles and mounts, the test's cgroups.
struct Guard {
    rt: NativeRuntime,
    work: tempfile::TempDir,
    cgroup_parent: String,
    started: Vec<(String, i32)>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (_, pid) in &self.started {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // The shims reap their containers and remove the containers' cgroups.
        let dirs = || -> Vec<PathBuf> {
            let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
            if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
                roots.extend(rd.flatten().map(|e| e.path()));
            }
            roots
                .iter()
                .map(|r| r.join(&self.cgroup_parent))
                .filter(|d| d.is_dir())
                .collect()
        };
        for _ in 0..50 {
            let busy = dirs().iter().any(|d| {
                std::fs::read_dir(d).is_ok_and(|rd| rd.flatten().any(|e| e.path().is_dir()))
            });
            if !busy {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (id, _) in &self.started {
            self.rt.cleanup(id);
        }
        for d in dirs() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten().filter(|e| e.path().is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&d);
        }
        let _ = self.work.path();
    }
}

fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "etc", "mnt", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for tool in [
        "sh", "cat", "echo", "sleep", "id", "mount", "unshare", "insmod", "readlink", "true", "wc",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(tool)).unwrap();
    }
    // Not a module: whether the kernel would load it never comes up when the call is refused.
    std::fs::write(dir.join("etc/bogus.ko"), [0x5a; 4096]).unwrap();
}

/// `Name:\tvalue` lines of a /proc/P/status text.
fn status_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

const SAME_AS_INIT: [&str; 8] = [
    "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Uid", "Gid", "Groups",
];

struct Check<'a> {
    rt: &'a NativeRuntime,
    failures: Vec<String>,
}

impl Check<'_> {
    async fn sh(&self, c: &Container, script: &str) -> (i32, String) {
        let args = ["/bin/sh", "-c", script].map(String::from);
        self.rt
            .exec(c, &args, Duration::from_secs(20))
            .await
            .unwrap()
    }

    fn expect(&mut self, ok: bool, what: String) {
        if !ok {
            self.failures.push(what);
        }
    }

    /// A command that must fail inside `c`.
    async fn refused(&mut self, c: &Container, script: &str, message: Option<&str>) {
        let (code, out) = self.sh(c, script).await;
        let ok = code != 0 && message.is_none_or(|m| out.contains(m));
        self.expect(ok, format!("{}: {script:?} → {code} {out:?}", c.id));
    }

    /// The command's /proc/self/status against the init's, from the host; its limits too.
    async fn same_as_init(&mut self, c: &Container, seccomp: &str) {
        let init =
            status_fields(&std::fs::read_to_string(format!("/proc/{}/status", c.pid)).unwrap());
        let (code, out) = self.sh(c, "cat /proc/self/status").await;
        self.expect(
            code == 0,
            format!("{}: cat /proc/self/status → {code} {out}", c.id),
        );
        let mine = status_fields(&out);
        for k in SAME_AS_INIT {
            self.expect(
                mine.get(k) == init.get(k) && init.contains_key(k),
                format!(
                    "{}: {k} {:?}, the init's {:?}",
                    c.id,
                    mine.get(k),
                    init.get(k)
                ),
            );
        }
        for (k, want) in [("NoNewPrivs", "1"), ("Seccomp", seccomp)] {
            self.expect(
                mine.get(k).map(String::as_str) == Some(want)
                    && init.get(k).map(String::as_str) == Some(want),
                format!(
                    "{}: {k} {:?}, the init's {:?}, want {want}",
                    c.id,
                    mine.get(k),
                    init.get(k)
                ),
            );
        }
        self.expect(
            mine.get("Seccomp_filters") == init.get("Seccomp_filters"),
            format!(
                "{}: Seccomp_filters {:?}, the init's {:?}",
                c.id,
                mine.get("Seccomp_filters"),
                init.get("Seccomp_filters")
            ),
        );
        let init_limits = std::fs::read_to_string(format!("/proc/{}/limits", c.pid)).unwrap();
        let (_, limits) = self.sh(c, "cat /proc/self/limits").await;
        self.expect(
            limits == init_limits,
            format!("{}: limits\n{limits}\nthe init's\n{init_limits}", c.id),
        );
    }

    /// The command's namespaces are the init's (seen from the host), and so are its cgroups
    /// (seen from inside: its own against PID 1's).
    async fn same_place_as_init(&mut self, c: &Container) {
        let nss = ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user"];
        let script = format!(
            "for n in {}; do echo $n $(readlink /proc/self/ns/$n); done; echo @; \
             cat /proc/self/cgroup; echo @; cat /proc/1/cgroup",
            nss.join(" ")
        );
        let (code, out) = self.sh(c, &script).await;
        self.expect(code == 0, format!("{}: {script} → {code} {out}", c.id));
        let mut parts = out.split("@\n");
        let (links, own, init) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("-"),
            parts.next().unwrap_or(""),
        );
        for n in nss {
            let host = std::fs::read_link(format!("/proc/{}/ns/{n}", c.pid)).unwrap();
            let want = format!("{n} {}", host.display());
            self.expect(
                links.lines().any(|l| l == want),
                format!("{}: {n} namespace: {links:?}, want {want:?}", c.id),
            );
        }
        self.expect(
            own == init,
            format!("{}: cgroups {own:?}, PID 1's {init:?}", c.id),
        );
    }
}

async fn commands_in_containers_get_the_containers_confinement() {
    let tag = std::process::id();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("image");
    busybox_rootfs(&image);
    let rt =
        NativeRuntime::new(&work.path().join("rt"), &std::env::current_exe().unwrap()).unwrap();
    let mut g = Guard {
        rt,
        work,
        cgroup_parent: format!("berth-confine-{tag}"),
        started: vec![],
    };
    let spec = |id: &str| ContainerSpec {
        args: vec!["/bin/sleep".into(), "600".into()],
        hostname: format!("h-{id}"),
        cgroup_path: format!("/berth-confine-{tag}/{id}"),
        ..Default::default()
    };
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok();

    // A root container with the default capabilities and seccomp policy.
    let id = format!("root-{tag}");
    let root = g.rt.start(&id, &image, &spec(&id)).await.unwrap();
    g.started.push((id, root.pid));
    // A container of uid 1234 with supplementary groups and its own open-files limit.
    let id = format!("user-{tag}");
    let mut s = spec(&id);
    (s.uid, s.gid, s.additional_gids) = (1234, 1235, vec![2000, 2001]);
    s.rlimits = vec![("RLIMIT_NOFILE".into(), 512, 777)];
    let user = g.rt.start(&id, &image, &s).await.unwrap();
    g.started.push((id, user.pid));
    // A container without the seccomp policy and with CAP_SYS_ADMIN (as Docker runs one).
    let id = format!("admin-{tag}");
    let mut s = spec(&id);
    s.seccomp = false;
    s.capabilities.push("CAP_SYS_ADMIN".into());
    let admin = g.rt.start(&id, &image, &s).await.unwrap();
    g.started.push((id, admin.pid));

    let mut check = Check {
        rt: &g.rt,
        failures: vec![],
    };
    // Escapes from the root container's command fail.
    check.refused(&root, "mount -t tmpfs x /mnt", None).await;
    check.refused(&root, "unshare -m true", None).await;
    check
        .refused(
            &root,
            "echo '|/tmp/x' > /proc/sys/kernel/core_pattern",
            None,
        )
        .await;
    // Refused by the policy (EPERM), not by the kernel finding no module in it.
    check
        .refused(
            &root,
            "insmod /etc/bogus.ko",
            Some("Operation not permitted"),
        )
        .await;
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", root.pid)).unwrap();
    check.expect(
        !mounts
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some("/mnt")),
        "a tmpfs was mounted on /mnt in the container".into(),
    );
    check.expect(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok() == core_pattern,
        "core_pattern changed".into(),
    );
    // A harmless command runs, as the container's uid, with the init's confinement.
    let (code, out) = check.sh(&root, "id -u").await;
    check.expect(
        code == 0 && out == "0\n",
        format!("root: id -u → {code} {out:?}"),
    );
    check.same_as_init(&root, "2").await;
    check.same_place_as_init(&root).await;
    // The container has its own cgroup namespace; /proc/interrupts is masked.
    let host_cgroupns = std::fs::read_link("/proc/self/ns/cgroup").unwrap();
    let init_cgroupns = std::fs::read_link(format!("/proc/{}/ns/cgroup", root.pid)).unwrap();
    check.expect(
        host_cgroupns != init_cgroupns,
        "the container has no cgroup namespace of its own".into(),
    );
    let (code, out) = check.sh(&root, "cat /proc/interrupts | wc -c").await;
    check.expect(
        code == 0 && out.trim() == "0",
        format!("/proc/interrupts is not masked: {code} {out:?}"),
    );

    let (code, out) = check.sh(&user, "id -u; id -g").await;
    check.expect(
        code == 0 && out == "1234\n1235\n",
        format!("user: id → {code} {out:?}"),
    );
    check.same_as_init(&user, "2").await;
    check.same_place_as_init(&user).await;

    check.same_as_init(&admin, "0").await;
    // Not less than the container has either: CAP_SYS_ADMIN without the policy unshares.
    let (code, out) = check.sh(&admin, "unshare -m true").await;
    check.expect(
        code == 0,
        format!("admin: unshare -m true → {code} {out:?}"),
    );

    // Not a container (this process shares berth's mount namespace), and no such process.
    let args = ["/bin/true".to_string()];
    for (pid, why) in [
        (std::process::id() as i32, "not in a container"),
        (i32::MAX, "has gone"),
    ] {
        let (code, out) =
            g.rt.exec_pid("none", pid, &args, Duration::from_secs(10))
                .await
                .unwrap();
        check.expect(
            code == 126 && out.contains(why),
            format!("pid {pid}: {code} {out:?}, want 126 and {why:?}"),
        );
    }

    // Another process under a container's name is not the container: nothing runs.
    let r = g.rt.exec_pid(
        &root.id,
        std::process::id() as i32,
        &args,
        Duration::from_secs(10),
    );
    check.expect(
        r.await
            .is_err_and(|e| e.to_string().contains("not the container's init")),
        "a pid that is not the container's init was not refused".into(),
    );

    for mut c in [root, user, admin] {
        let _ = g.rt.stop(&mut c, Duration::from_millis(200)).await;
        // Once it has ended nothing runs in it, even if its pid comes back.
        let after =
            g.rt.exec_pid(&c.id, c.pid, &args, Duration::from_secs(10))
                .await;
        check.expect(
            match &after {
                Err(e) => e.to_string().contains("has ended"),
                Ok((code, _)) => *code == 126,
            },
            format!("{}: exec after the end → {after:?}", c.id),
        );
    }
    let failures = std::mem::take(&mut check.failures);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
