//! From an ECS container definition (with the task's overrides) and the image config to what
//! the runtime starts — ECS's and Docker's merge rules:
//!
//! - `entryPoint` replaces the image's Entrypoint and, as with `docker run --entrypoint`,
//!   drops the image's Cmd; `command` replaces Cmd;
//! - `environment` is laid over the image's Env (same name: the definition wins);
//! - `workingDirectory` and `user` replace the image's; numeric `uid[:gid]`, or names looked
//!   up in the image's `/etc/passwd` and `/etc/group`, read without ever leaving the image's
//!   root (symlinks resolve inside it) and only when they are regular files of at most 1 MiB;
//! - `memory` is the hard limit, `memoryReservation` the soft one (MiB), `cpu` the CPU shares
//!   (at least 2, as Docker takes it);
//! - `ulimits`, `readonlyRootFilesystem`, `linuxParameters.capabilities` (add/drop),
//!   `hostname`, `dockerLabels` are honoured; `privileged` gets every capability;
//! - the default seccomp policy applies unless the container has `SYS_ADMIN` (privileged) or
//!   `dockerSecurityOptions` says `seccomp=unconfined`.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use berth_model::wire::ecs::{ContainerDefinition, ContainerOverride, KeyValuePair};
use berth_runtime::spec::{ContainerSpec, DEFAULT_CAPABILITIES};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstat};
use serde_json::Value;

/// Why a container cannot be started as defined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

/// The largest passwd or group file of an image that is read (a bigger one is refused).
pub const MAX_USER_DB_BYTES: u64 = 1 << 20;

/// Opens `rel` (relative) below the directory `root` with `flags`, symlinks resolving as if
/// `root` were `/`.
type InRootOpener = fn(&OwnedFd, &str, OFlag) -> nix::Result<OwnedFd>;

/// Take ownership of a file descriptor a successful `open` returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open call of ours and is owned by nobody
    // else; it is closed exactly once, when the OwnedFd drops.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The kernel's resolution (`openat2`, Linux 5.6+): `RESOLVE_IN_ROOT` makes `..` stop at
/// `root` and absolute symlinks start there; magic links (`/proc/self/fd/…`) are refused.
/// Falls back to [`walk_in_root`] where `openat2` is missing or filtered by seccomp.
fn open_in_root(root: &OwnedFd, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = || {
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    // EAGAIN: a rename raced the resolution; the kernel asks for a retry.
    for _ in 0..8 {
        match openat2(root.as_raw_fd(), rel, how()) {
            Err(Errno::EAGAIN) => continue,
            Err(Errno::ENOSYS | Errno::EPERM) => return walk_in_root(root, rel, flags),
            r => return r.map(owned),
        }
    }
    Err(Errno::EAGAIN)
}

/// The same resolution done by hand, one component at a time, never following a link with
/// the kernel: each component is opened `O_PATH | O_NOFOLLOW` relative to the directory
/// reached so far; a symlink's target is spliced into the rest of the path (from `root` when
/// absolute); `..` goes back to the directory walked through before, never above `root`.
fn walk_in_root(root: &OwnedFd, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    use std::collections::VecDeque;
    use std::os::unix::ffi::OsStrExt;
    fn parts(p: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
        p.split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .map(<[u8]>::to_vec)
    }
    let path_flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut todo: VecDeque<Vec<u8>> = parts(rel.as_bytes()).collect();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == b".." {
            dirs.pop();
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(&name);
        let here = dirs.last().unwrap_or(root).as_raw_fd();
        let fd = owned(openat(Some(here), name, path_flags, Mode::empty())?);
        let kind = SFlag::from_bits_truncate(fstat(fd.as_raw_fd())?.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            links += 1;
            if links > 40 {
                return Err(Errno::ELOOP);
            }
            let target = readlinkat(Some(fd.as_raw_fd()), "")?;
            let target = target.as_bytes();
            if target.starts_with(b"/") {
                dirs.clear();
            }
            for p in parts(target).rev() {
                todo.push_front(p);
            }
        } else if todo.is_empty() {
            // O_NOFOLLOW: swapped for a symlink since it was looked at, it fails (ELOOP).
            return openat(
                Some(here),
                name,
                flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map(owned);
        } else if kind == SFlag::S_IFDIR {
            dirs.push(fd);
        } else {
            return Err(Errno::ENOTDIR);
        }
    }
    // The path named `root` itself (or a directory above it).
    Err(Errno::EISDIR)
}

/// The text of `rel` in the image at `rootfs` as the container would see it: symlinks resolve
/// inside the rootfs, so neither an absolute target nor `..` ever leads to a file of the
/// host; only a regular file of at most [`MAX_USER_DB_BYTES`] is read (opened non-blocking, so
/// a FIFO fails at once instead of hanging). `Ok(None)`: the image has no such file.
fn read_image_file(
    rootfs: &Path,
    rel: &str,
    open: InRootOpener,
) -> Result<Option<String>, SpecError> {
    let fail = |e: &dyn std::fmt::Display| SpecError(format!("reading /{rel} of the image: {e}"));
    let root = open_dir(rootfs).map_err(|e| fail(&e))?;
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let file = match open(&root, rel, flags) {
        Ok(fd) => std::fs::File::from(fd),
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(Errno::ELOOP) => {
            return Err(fail(
                &"too many symbolic links, or a link berth does not follow",
            ));
        }
        Err(e) => return Err(fail(&e)),
    };
    let meta = file.metadata().map_err(|e| fail(&e))?;
    if !meta.is_file() {
        return Err(fail(&"not a regular file"));
    }
    let too_big = || fail(&format!("larger than {MAX_USER_DB_BYTES} bytes"));
    if meta.len() > MAX_USER_DB_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // Bounded again while reading: the file may grow after the fstat.
    file.take(MAX_USER_DB_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e))?;
    if bytes.len() as u64 > MAX_USER_DB_BYTES {
        return Err(too_big());
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn open_dir(p: &Path) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(p, flags, Mode::empty()).map(owned)
}

/// Look a user or group name up in the image's passwd/group file.
fn lookup(
    rootfs: &Path,
    file: &str,
    name: &str,
    open: InRootOpener,
) -> Result<Option<(u32, Option<u32>)>, SpecError> {
    let Some(text) = read_image_file(rootfs, &format!("etc/{file}"), open)? else {
        return Ok(None);
    };
    Ok(text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name) && f.len() >= 3).then(|| {
            (
                f[2].parse().unwrap_or(0),
                f.get(3).and_then(|g| g.parse().ok()),
            )
        })
    }))
}

/// `user` as ECS and Docker accept it: `uid`, `uid:gid`, `name`, `name:group`.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), SpecError> {
    resolve_user_with(rootfs, user, open_in_root)
}

fn resolve_user_with(
    rootfs: &Path,
    user: &str,
    open: InRootOpener,
) -> Result<(u32, u32), SpecError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => {
            let (uid, gid) = lookup(rootfs, "passwd", u, open)?.ok_or_else(|| {
                SpecError(format!(
                    "unable to find user {u}: no matching entries in passwd file"
                ))
            })?;
            (uid, gid)
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(rootfs, "group", g, open)?
                .map(|(gid, _)| gid)
                .ok_or_else(|| {
                    SpecError(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        },
        None => primary.unwrap_or(0),
    };
    Ok((uid, gid))
}

fn merge_env(image: &[String], def: &[KeyValuePair], extra: &[KeyValuePair]) -> Vec<String> {
    let mut out: Vec<String> = image.to_vec();
    for kv in def.iter().chain(extra) {
        let (Some(k), v) = (kv.name.as_deref(), kv.value.as_deref().unwrap_or("")) else {
            continue;
        };
        out.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
        out.push(format!("{k}={v}"));
    }
    out
}

/// The runtime spec of one container of a task.
pub fn container_spec(
    def: &ContainerDefinition,
    ov: Option<&ContainerOverride>,
    image_config: &Value,
    rootfs: &Path,
    cgroup_path: &str,
) -> Result<ContainerSpec, SpecError> {
    let name = def.name.as_deref().unwrap_or("container");
    let img_entry = strings(&image_config["Entrypoint"]).unwrap_or_default();
    let img_cmd = strings(&image_config["Cmd"]).unwrap_or_default();
    let command = ov.and_then(|o| o.command.clone()).or(def.command.clone());
    let (entry, cmd) = match (&def.entry_point, command) {
        (Some(e), c) => (e.clone(), c.unwrap_or_default()),
        (None, Some(c)) => (img_entry, c),
        (None, None) => (img_entry, img_cmd),
    };
    let args: Vec<String> = entry.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError(format!(
            "container {name}: no command specified (the image has no Entrypoint or Cmd and the container definition sets none)"
        )));
    }
    let env = merge_env(
        &strings(&image_config["Env"]).unwrap_or_default(),
        def.environment.as_deref().unwrap_or_default(),
        ov.and_then(|o| o.environment.as_deref())
            .unwrap_or_default(),
    );
    let cwd = def
        .working_directory
        .clone()
        .or_else(|| {
            image_config["WorkingDir"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "/".into());
    let user = def.user.clone().or_else(|| {
        image_config["User"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    });
    let (uid, gid) = match user {
        Some(u) => resolve_user(rootfs, &u)?,
        None => (0, 0),
    };
    let mib = |m: i32| (m as i64) << 20;
    let memory = ov.and_then(|o| o.memory).or(def.memory);
    let reservation = ov
        .and_then(|o| o.memory_reservation)
        .or(def.memory_reservation);
    let cpu = ov.and_then(|o| o.cpu).or(def.cpu).unwrap_or(0);
    let mut caps: Vec<String> = if def.privileged == Some(true) {
        berth_runtime::spec::ALL_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    if let Some(lp) = &def.linux_parameters
        && let Some(c) = &lp.capabilities
    {
        let norm = |c: &String| {
            let up = c.to_ascii_uppercase();
            if up.starts_with("CAP_") {
                up
            } else {
                format!("CAP_{up}")
            }
        };
        for a in c.add.as_deref().unwrap_or_default() {
            let a = norm(a);
            if a == "CAP_ALL" {
                caps = berth_runtime::spec::ALL_CAPABILITIES
                    .iter()
                    .map(|c| c.to_string())
                    .collect();
            } else if !caps.contains(&a) {
                caps.push(a);
            }
        }
        for d in c.drop.as_deref().unwrap_or_default() {
            let d = norm(d);
            if d == "CAP_ALL" {
                caps.clear();
            } else {
                caps.retain(|x| *x != d);
            }
        }
    }
    let mut rlimits = vec![("RLIMIT_NOFILE".to_string(), 1024u64, 1024u64)];
    for u in def.ulimits.as_deref().unwrap_or_default() {
        let n = format!(
            "RLIMIT_{}",
            u.name.as_deref().unwrap_or_default().to_ascii_uppercase()
        );
        let soft = u.soft_limit.unwrap_or(0).max(0) as u64;
        let hard = u.hard_limit.unwrap_or(0).max(0) as u64;
        rlimits.retain(|(x, _, _)| *x != n);
        rlimits.push((n, soft, hard));
    }
    Ok(ContainerSpec {
        args,
        env,
        cwd,
        uid,
        gid,
        hostname: def.hostname.clone().unwrap_or_else(|| name.to_string()),
        memory_limit: memory.map(mib),
        memory_reservation: reservation.map(mib),
        cpu_shares: Some((cpu.max(0) as u64).max(2)),
        readonly_root: def.readonly_root_filesystem.unwrap_or(false),
        rlimits,
        seccomp: !caps.iter().any(|c| c == "CAP_SYS_ADMIN")
            && !def
                .docker_security_options
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|o| o == "seccomp=unconfined" || o == "seccomp:unconfined"),
        init: def
            .linux_parameters
            .as_ref()
            .and_then(|l| l.init_process_enabled)
            .unwrap_or(false),
        capabilities: caps,
        cgroup_path: cgroup_path.to_string(),
        ..ContainerSpec::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::wire::ecs::{KernelCapabilities, LinuxParameters, Ulimit};
    use serde_json::json;

    fn def() -> ContainerDefinition {
        ContainerDefinition {
            name: Some("web".into()),
            image: Some("x".into()),
            ..Default::default()
        }
    }

    fn kv(k: &str, v: &str) -> KeyValuePair {
        KeyValuePair {
            name: Some(k.into()),
            value: Some(v.into()),
        }
    }

    #[test]
    fn command_rules() {
        let img = json!({"Entrypoint": ["/ep"], "Cmd": ["a", "b"], "Env": ["PATH=/bin", "A=1"]});
        let root = Path::new("/nonexistent");
        let s = container_spec(&def(), None, &img, root, "/c").unwrap();
        assert_eq!(s.args, vec!["/ep", "a", "b"]);
        let mut d = def();
        d.command = Some(vec!["c".into()]);
        assert_eq!(
            container_spec(&d, None, &img, root, "/c").unwrap().args,
            vec!["/ep", "c"]
        );
        d.entry_point = Some(vec!["/other".into()]);
        d.command = None;
        assert_eq!(
            container_spec(&d, None, &img, root, "/c").unwrap().args,
            vec!["/other"],
            "a new entrypoint drops the image's Cmd"
        );
        let ov = ContainerOverride {
            command: Some(vec!["x".into()]),
            environment: Some(vec![kv("A", "3")]),
            ..Default::default()
        };
        d.environment = Some(vec![kv("A", "2"), kv("B", "2")]);
        let s = container_spec(&d, Some(&ov), &img, root, "/c").unwrap();
        assert_eq!(s.args, vec!["/other", "x"]);
        assert_eq!(s.env, vec!["PATH=/bin", "B=2", "A=3"]);
        assert!(container_spec(&def(), None, &json!({}), root, "/c").is_err());
    }

    #[test]
    fn users_limits_and_capabilities() {
        let root = tempfile_root();
        let img = json!({"Cmd": ["/bin/sh"], "User": "app"});
        let mut d = def();
        d.memory = Some(128);
        d.memory_reservation = Some(64);
        d.cpu = Some(0);
        d.ulimits = Some(vec![Ulimit {
            name: Some("nofile".into()),
            soft_limit: Some(100),
            hard_limit: Some(200),
        }]);
        d.linux_parameters = Some(LinuxParameters {
            capabilities: Some(KernelCapabilities {
                add: Some(vec!["SYS_PTRACE".into()]),
                drop: Some(vec!["NET_RAW".into()]),
            }),
            ..Default::default()
        });
        let s = container_spec(&d, None, &img, &root, "/c").unwrap();
        assert_eq!((s.uid, s.gid), (1000, 1000));
        assert_eq!(s.memory_limit, Some(128 << 20));
        assert_eq!(s.memory_reservation, Some(64 << 20));
        assert_eq!(s.cpu_shares, Some(2));
        assert_eq!(s.rlimits, vec![("RLIMIT_NOFILE".to_string(), 100, 200)]);
        assert!(s.capabilities.contains(&"CAP_SYS_PTRACE".to_string()));
        assert!(!s.capabilities.contains(&"CAP_NET_RAW".to_string()));
        assert_eq!(resolve_user(&root, "0:staff").unwrap(), (0, 50));
        assert_eq!(resolve_user(&root, "42").unwrap(), (42, 0));
        assert!(resolve_user(&root, "nobody-here").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Every way of resolving the image's files, so the fallback walk is tested on kernels
    /// that have `openat2` too.
    const OPENERS: [(&str, InRootOpener); 2] = [("openat2", open_in_root), ("walk", walk_in_root)];

    /// `resolve_user` on a thread of its own: a lookup that blocks (a FIFO) or reads forever
    /// (`/dev/zero`) fails the test after 5 s instead of hanging it.
    fn resolve_bounded(
        root: &Path,
        user: &str,
        open: InRootOpener,
    ) -> Result<(u32, u32), SpecError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (root, user) = (root.to_path_buf(), user.to_string());
        std::thread::spawn(move || {
            let _ = tx.send(resolve_user_with(&root, &user, open));
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the user lookup did not finish in 5 s")
    }

    /// A rootfs (with `usr/lib` and a FIFO at `run/fifo`) and, beside it, a host directory
    /// whose `shadow` names user `app` with uid 4242 (what a lookup that escaped would find).
    fn escape_setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (root, host) = (t.path().join("rootfs"), t.path().join("host"));
        for d in ["etc", "usr/lib", "run"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("shadow"), "app:x:4242:4242::/:/bin/sh\n").unwrap();
        std::fs::write(host.join("passwd"), "app:x:4242:4242::/:/bin/sh\n").unwrap();
        nix::unistd::mkfifo(&root.join("run/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        (t, root, host)
    }

    fn link(target: &str, at: &Path) {
        let _ = std::fs::remove_file(at);
        let _ = std::fs::remove_dir(at);
        std::os::unix::fs::symlink(target, at).unwrap();
    }

    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "a resolution that blocks on a FIFO or device would take real time"
    )]
    fn user_database_never_leaves_the_rootfs() {
        for (how, open) in OPENERS {
            let (_t, root, host) = escape_setup();
            let passwd = root.join("etc/passwd");
            let host_file = host.join("shadow");
            let cases = [
                // (what etc/passwd is, what the error must say)
                (host_file.to_str().unwrap(), "no matching entries"),
                ("../../host/shadow", "no matching entries"),
                ("/dev/zero", "no matching entries"),
                ("/run/fifo", "not a regular file"),
                (
                    "../../../../../../../../../../../../../dev/zero",
                    "no matching entries",
                ),
                ("/proc/self/root/etc/hostname", "no matching entries"),
            ];
            for (target, want) in cases {
                link(target, &passwd);
                let started = std::time::Instant::now();
                let e = resolve_bounded(&root, "app", open)
                    .expect_err(&format!("{how}: etc/passwd -> {target} resolved a user"));
                assert!(e.0.contains(want), "{how}: etc/passwd -> {target}: {e}");
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(1),
                    "{how}: slow"
                );
            }
            // A FIFO itself, and a directory on the way that leads out of the rootfs.
            std::fs::remove_file(&passwd).unwrap();
            nix::unistd::mkfifo(&passwd, Mode::from_bits_truncate(0o644)).unwrap();
            let e = resolve_bounded(&root, "app", open).unwrap_err();
            assert!(
                e.0.contains("/etc/passwd of the image: not a regular file"),
                "{how}: {e}"
            );
            std::fs::remove_file(&passwd).unwrap();
            std::fs::remove_dir(root.join("etc")).unwrap();
            link(host.to_str().unwrap(), &root.join("etc"));
            assert!(
                resolve_bounded(&root, "app", open).is_err(),
                "{how}: etc -> host dir"
            );
            link("../host", &root.join("etc"));
            assert!(
                resolve_bounded(&root, "app", open).is_err(),
                "{how}: etc -> ../host"
            );
            // Groups go the same way.
            link("/dev/zero", &root.join("etc"));
            assert!(
                resolve_bounded(&root, "0:staff", open).is_err(),
                "{how}: group"
            );
        }
    }

    #[test]
    fn user_database_links_inside_the_rootfs_and_size_limit() {
        for (how, open) in OPENERS {
            let (_t, root, _host) = escape_setup();
            std::fs::write(
                root.join("usr/lib/passwd"),
                "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
            )
            .unwrap();
            std::fs::write(root.join("usr/lib/group"), "staff:x:50:\n").unwrap();
            // Absolute links start at the rootfs; `..` stops there.
            link("/usr/lib/passwd", &root.join("etc/passwd"));
            link("../../../usr/./lib//group", &root.join("etc/group"));
            assert_eq!(
                resolve_bounded(&root, "app", open),
                Ok((1000, 1001)),
                "{how}"
            );
            assert_eq!(
                resolve_bounded(&root, "app:staff", open),
                Ok((1000, 50)),
                "{how}"
            );
            // A link loop is an error, not a hang.
            link("/etc/passwd", &root.join("etc/passwd"));
            let e = resolve_bounded(&root, "app", open).unwrap_err();
            assert!(e.0.contains("symbolic links"), "{how}: {e}");
            // Over 1 MiB: refused, even though the user is on the first line.
            std::fs::remove_file(root.join("etc/passwd")).unwrap();
            let f = std::fs::File::create(root.join("etc/passwd")).unwrap();
            use std::io::Write;
            (&f).write_all(b"app:x:7:7::/:/bin/sh\n").unwrap();
            f.set_len(MAX_USER_DB_BYTES + 1).unwrap();
            let e = resolve_bounded(&root, "app", open).unwrap_err();
            assert!(e.0.contains("larger than 1048576 bytes"), "{how}: {e}");
            f.set_len(MAX_USER_DB_BYTES).unwrap();
            assert_eq!(resolve_bounded(&root, "app", open), Ok((7, 7)), "{how}");
            // No passwd at all: the usual message; numeric ids need none.
            std::fs::remove_file(root.join("etc/passwd")).unwrap();
            let e = resolve_bounded(&root, "app", open).unwrap_err();
            assert!(e.0.contains("unable to find user app"), "{how}: {e}");
            assert_eq!(resolve_bounded(&root, "5:6", open), Ok((5, 6)), "{how}");
        }
    }

    fn tempfile_root() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("berth-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(
            d.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        d
    }
}
