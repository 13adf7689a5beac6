//! `berth nsexec --pid P [--start-time T] -- cmd…`: run a command inside a running container (health checks,
//! `CMD-SHELL`, later `execute-command`) with exactly the confinement of the container's init
//! process P, as `runc exec` gives it: P's namespaces, cgroups, root directory and
//! environment; its uid, gids and supplementary groups; its five capability sets (bounding,
//! inheritable, permitted, effective, ambient); its rlimits; no_new_privs; and the container's
//! seccomp policy ([`crate::seccomp`]).
//!
//! A short-lived, single-threaded process of the same binary (namespace changes must not
//! happen inside the tokio process). It makes itself non-dumpable (no container process may
//! ptrace or read it while it is still privileged), opens a pidfd for P and notes P's start
//! time — which must be `T`, the start time the runtime noted when it started the container,
//! so a pid reused by another process after the container ended is refused — reads what it
//! will apply from `/proc/P` ([`Confinement`]), checks that P is still the same process, moves into P's cgroups, joins P's namespaces — all at once with
//! `setns(pidfd)` (Linux 5.8+), else one by one from `/proc/P/ns/*` after checking the start
//! time again — and takes P's root. It then forks (the child is inside the pid namespace);
//! the child takes on the confinement ([`confine`]), checks it, and execs the command.
//!
//! Must not: run the command less confined than the container. Any step that fails refuses
//! to run it (exit 126, a message on stderr).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::libc;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid};
use seccompiler::BpfProgram;

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum NsexecError {
    /// A file of the container process could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A file of the container process did not say what it should.
    #[error("{path}: {what}")]
    Parse { path: String, what: String },
    /// The process ended, or its pid now names another process.
    #[error("container process {0} has gone (or its pid names another process now)")]
    Gone(i32),
    /// The pid names a process that started at another time than the container's init.
    #[error(
        "process {pid} is not the container's init (it started at tick {found}, the container's init at {expected}): the container has ended"
    )]
    NotInit { pid: i32, found: u64, expected: u64 },
    /// The pid names a process in berth's own mount namespace: not a container.
    #[error("process {0} is not in a container (it shares berth's mount namespace)")]
    NotContainer(i32),
    /// A cgroup of the container could not be joined.
    #[error("joining cgroup {path}: {what}")]
    Cgroup { path: String, what: String },
    /// A namespace of the container could not be joined.
    #[error("joining the container's {what} namespace: {errno}")]
    Setns { what: String, errno: Errno },
    /// The container's root directory could not be entered.
    #[error("entering the container's root: {0}")]
    Root(Errno),
    /// The container's seccomp state cannot be reproduced.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// A step of taking on the confinement failed.
    #[error("{what}: {errno}")]
    Confine { what: &'static str, errno: Errno },
    /// The confinement taken on is not the container's.
    #[error("confinement check: {0}")]
    Mismatch(String),
}

fn read(path: String) -> Result<String, NsexecError> {
    std::fs::read_to_string(&path).map_err(|source| NsexecError::Read { path, source })
}

/// A process's capability sets, as bit masks (bit n is capability n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

/// A process's seccomp state (`Seccomp:` and `Seccomp_filters:` of `/proc/P/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompState {
    Disabled,
    Strict,
    /// Filter mode, with the number of filters when the kernel says (5.9+).
    Filter(Option<u32>),
}

/// One resource limit (`RLIMIT_*` number, soft, hard; `u64::MAX` is unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// What a container's init process runs with: everything [`confine`] gives the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// Real, effective, saved.
    pub uid: [u32; 3],
    pub gid: [u32; 3],
    pub groups: Vec<u32>,
    pub caps: CapSets,
    pub seccomp: SeccompState,
    pub rlimits: Vec<Rlimit>,
}

/// The ids, capabilities and seccomp state in a `/proc/P/status` text (rlimits empty).
pub fn parse_status(text: &str) -> Result<Confinement, String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let ids = |name: &str| -> Result<[u32; 3], String> {
        let v: Vec<u32> = field(name)
            .ok_or_else(|| format!("no {name} line"))?
            .split_whitespace()
            .map(|n| n.parse().map_err(|_| format!("bad {name} line")))
            .collect::<Result<_, _>>()?;
        match v[..] {
            [r, e, s, ..] => Ok([r, e, s]),
            _ => Err(format!("bad {name} line")),
        }
    };
    let mask = |name: &str, required: bool| -> Result<u64, String> {
        match field(name) {
            Some(v) => u64::from_str_radix(v, 16).map_err(|_| format!("bad {name} line")),
            None if required => Err(format!("no {name} line")),
            // CapAmb is missing before Linux 4.3: nothing can be ambient there.
            None => Ok(0),
        }
    };
    let groups = field("Groups")
        .ok_or("no Groups line")?
        .split_whitespace()
        .map(|g| g.parse().map_err(|_| "bad Groups line".to_string()))
        .collect::<Result<_, _>>()?;
    let seccomp = match field("Seccomp") {
        // A kernel without seccomp: nothing to reproduce.
        None | Some("0") => SeccompState::Disabled,
        Some("1") => SeccompState::Strict,
        Some("2") => SeccompState::Filter(field("Seccomp_filters").and_then(|n| n.parse().ok())),
        Some(_) => return Err("bad Seccomp line".into()),
    };
    Ok(Confinement {
        uid: ids("Uid")?,
        gid: ids("Gid")?,
        groups,
        caps: CapSets {
            inheritable: mask("CapInh", true)?,
            permitted: mask("CapPrm", true)?,
            effective: mask("CapEff", true)?,
            bounding: mask("CapBnd", true)?,
            ambient: mask("CapAmb", false)?,
        },
        seccomp,
        rlimits: vec![],
    })
}

/// `/proc/P/limits` names of the resource limits. (libc's constants are `u32` with glibc,
/// `c_int` with musl: the cast is needed on one of them.)
#[allow(clippy::unnecessary_cast)]
const LIMITS: [(&str, u32); 16] = [
    ("Max cpu time", libc::RLIMIT_CPU as u32),
    ("Max file size", libc::RLIMIT_FSIZE as u32),
    ("Max data size", libc::RLIMIT_DATA as u32),
    ("Max stack size", libc::RLIMIT_STACK as u32),
    ("Max core file size", libc::RLIMIT_CORE as u32),
    ("Max resident set", libc::RLIMIT_RSS as u32),
    ("Max processes", libc::RLIMIT_NPROC as u32),
    ("Max open files", libc::RLIMIT_NOFILE as u32),
    ("Max locked memory", libc::RLIMIT_MEMLOCK as u32),
    ("Max address space", libc::RLIMIT_AS as u32),
    ("Max file locks", libc::RLIMIT_LOCKS as u32),
    ("Max pending signals", libc::RLIMIT_SIGPENDING as u32),
    ("Max msgqueue size", libc::RLIMIT_MSGQUEUE as u32),
    ("Max nice priority", libc::RLIMIT_NICE as u32),
    ("Max realtime priority", libc::RLIMIT_RTPRIO as u32),
    ("Max realtime timeout", libc::RLIMIT_RTTIME as u32),
];

/// Every resource limit in a `/proc/P/limits` text; all sixteen must be there (one left out
/// would leave berth's own, perhaps higher, limit in place).
pub fn parse_limits(text: &str) -> Result<Vec<Rlimit>, String> {
    let value = |v: &str| -> Result<u64, String> {
        if v == "unlimited" {
            Ok(u64::MAX)
        } else {
            v.parse().map_err(|_| format!("bad limit {v:?}"))
        }
    };
    LIMITS
        .iter()
        .map(|(name, resource)| {
            let rest = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)
                        .filter(|r| r.starts_with("  ") || r.starts_with('\t'))
                })
                .ok_or_else(|| format!("no {name:?} line"))?;
            let mut v = rest.split_whitespace();
            let (Some(soft), Some(hard)) = (v.next(), v.next()) else {
                return Err(format!("bad {name:?} line"));
            };
            Ok(Rlimit {
                resource: *resource,
                soft: value(soft)?,
                hard: value(hard)?,
            })
        })
        .collect()
}

/// An id as seen inside a user namespace, from one as seen outside and the namespace's
/// `uid_map`/`gid_map` text (`inside outside count` lines); None if it is not mapped.
pub fn map_into(id: u32, map: &str) -> Option<u32> {
    map.lines().find_map(|l| {
        let mut f = l.split_whitespace().map(|n| n.parse::<u64>().ok());
        let (inside, outside, count) = (f.next()??, f.next()??, f.next()??);
        let id = u64::from(id);
        (id >= outside && id < outside + count)
            .then(|| u32::try_from(inside + (id - outside)).ok())
            .flatten()
    })
}

/// A cgroup hierarchy mounted in this mount namespace (from `/proc/self/mountinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The hierarchy's directory that is mounted (`/` unless a cgroup namespace's).
    pub root: String,
    pub point: PathBuf,
    /// None for cgroup v2; else the v1 super options (controllers, `name=…`).
    pub options: Option<Vec<String>>,
}

/// The cgroup mounts in a mountinfo text.
pub fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split_whitespace().collect();
            let mut post = post.split_whitespace();
            let fstype = post.next()?;
            let _source = post.next();
            let options = post.next().unwrap_or("");
            let unescape = |s: &str| s.replace("\\040", " ");
            let (root, point) = (unescape(pre.get(3)?), PathBuf::from(unescape(pre.get(4)?)));
            match fstype {
                "cgroup2" => Some(CgroupMount {
                    root,
                    point,
                    options: None,
                }),
                "cgroup" => Some(CgroupMount {
                    root,
                    point,
                    options: Some(options.split(',').map(str::to_string).collect()),
                }),
                _ => None,
            }
        })
        .collect()
}

/// The cgroup directories (in this mount namespace) a process is in, from its
/// `/proc/P/cgroup` text. A hierarchy that is not mounted here is only accepted when this
/// process (`own`, its `/proc/self/cgroup`) is already in the same cgroup of it.
pub fn cgroup_dirs(
    target: &str,
    own: &str,
    mounts: &[CgroupMount],
) -> Result<Vec<PathBuf>, NsexecError> {
    let mut dirs = Vec::new();
    for line in target.lines().filter(|l| !l.is_empty()) {
        let bad = || NsexecError::Parse {
            path: "cgroup".into(),
            what: format!("bad line {line:?}"),
        };
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let wanted: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty()).collect();
        let dir = mounts.iter().find_map(|m| {
            let same_hierarchy = match &m.options {
                None => wanted.is_empty(),
                Some(opts) => {
                    !wanted.is_empty() && wanted.iter().all(|c| opts.iter().any(|o| o == c))
                }
            };
            if !same_hierarchy {
                return None;
            }
            let rel = if m.root == "/" {
                path
            } else {
                path.strip_prefix(m.root.as_str())
                    .filter(|r| r.is_empty() || r.starts_with('/'))?
            };
            Some(m.point.join(rel.trim_start_matches('/')))
        });
        match dir {
            Some(d) => dirs.push(d),
            None if own.lines().any(|l| {
                l.split_once(':')
                    .is_some_and(|(_, rest)| rest == line.split_once(':').map_or("", |x| x.1))
            }) => {}
            None => {
                return Err(NsexecError::Cgroup {
                    path: path.to_string(),
                    what: format!("hierarchy {ctrls:?} is not mounted here"),
                });
            }
        }
    }
    Ok(dirs)
}

/// A process's start time (clock ticks after boot, field 22 of `/proc/P/stat`).
pub(crate) fn start_time(pid: i32) -> Result<u64, NsexecError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|_| NsexecError::Gone(pid))?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    text.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|t| t.parse().ok())
        .ok_or(NsexecError::Parse {
            path,
            what: "no start time".into(),
        })
}

/// `pidfd_open(2)`; None where the kernel has no pidfds (before 5.3).
fn pidfd_open(pid: i32) -> Result<Option<OwnedFd>, NsexecError> {
    match crate::native::pidfd_open(pid) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Ok(None),
        Err(_) => Err(NsexecError::Gone(pid)),
    }
}

/// Whether the process is still the one `pidfd` (if any) was opened for and started at
/// `start`; read after everything else about it, so that what was read was about it.
fn still_same(pid: i32, pidfd: Option<&OwnedFd>, start: u64) -> Result<(), NsexecError> {
    if let Some(fd) = pidfd {
        // SAFETY: pidfd_send_signal with signal 0 only checks the process; the descriptor
        // is a live pidfd and the other arguments are null/zero.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r != 0 {
            return Err(NsexecError::Gone(pid));
        }
    }
    if start_time(pid)? != start {
        return Err(NsexecError::Gone(pid));
    }
    Ok(())
}

/// The namespaces `setns` can join, `/proc/P/ns` name and flag; the user namespace first
/// (the others are then joined with the capabilities it gives).
const NAMESPACES: [(&str, libc::c_int); 8] = [
    ("user", libc::CLONE_NEWUSER),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("time", libc::CLONE_NEWTIME),
    ("mnt", libc::CLONE_NEWNS),
];

/// The namespaces of `pid` that differ from this process's (joining one's own user
/// namespace is an error; the others would be no-ops).
fn namespaces_to_join(pid: i32) -> Result<Vec<(&'static str, libc::c_int)>, NsexecError> {
    let id = |p: String| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = id(format!("/proc/{pid}/ns/{name}"));
        let ours = id(format!("/proc/self/ns/{name}"));
        match (theirs, ours) {
            (Ok(t), Ok(o)) if t == o => {}
            (Ok(_), Ok(_)) => out.push((name, flag)),
            // A kind of namespace this kernel does not have (time before 5.6, …).
            (Err(_), Err(_)) => {}
            (Err(source), _) | (_, Err(source)) => {
                return Err(NsexecError::Read {
                    path: format!("/proc/{pid}/ns/{name}"),
                    source,
                });
            }
        }
    }
    if !out.iter().any(|(n, _)| *n == "mnt") {
        return Err(NsexecError::NotContainer(pid));
    }
    Ok(out)
}

fn setns(fd: &impl AsRawFd, flags: libc::c_int) -> Result<(), Errno> {
    // SAFETY: setns with a descriptor this process owns and plain flags.
    Errno::result(unsafe { libc::setns(fd.as_raw_fd(), flags) }).map(drop)
}

/// Join `nss` of `pid`: atomically through its pidfd (Linux 5.8+); where the kernel refuses a
/// pidfd (EINVAL) or has none, one by one from `/proc/P/ns/*`, checking that the files opened
/// were the same process's (`start`).
pub fn join_namespaces(
    pid: i32,
    pidfd: Option<&OwnedFd>,
    start: u64,
    nss: &[(&'static str, libc::c_int)],
) -> Result<(), NsexecError> {
    let what =
        |nss: &[(&str, libc::c_int)]| nss.iter().map(|(n, _)| *n).collect::<Vec<_>>().join("+");
    if let Some(fd) = pidfd {
        let flags = nss.iter().fold(0, |a, (_, f)| a | f);
        match setns(fd, flags) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) => {}
            Err(errno) => {
                return Err(NsexecError::Setns {
                    what: what(nss),
                    errno,
                });
            }
        }
    }
    let mut files = Vec::new();
    for (name, flag) in nss {
        let path = format!("/proc/{pid}/ns/{name}");
        let f = File::open(&path).map_err(|source| NsexecError::Read { path, source })?;
        files.push((f, *name, *flag));
    }
    still_same(pid, pidfd, start)?;
    for (f, name, flag) in &files {
        setns(f, *flag).map_err(|errno| NsexecError::Setns {
            what: name.to_string(),
            errno,
        })?;
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// This process's (effective, permitted, inheritable) capabilities.
fn capget() -> Result<(u64, u64, u64), Errno> {
    let mut h = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: capget with a v3 header and the two data structs v3 fills.
    Errno::result(unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) })?;
    let join = |f: fn(&CapData) -> u32| u64::from(f(&d[0])) | (u64::from(f(&d[1])) << 32);
    Ok((
        join(|c| c.effective),
        join(|c| c.permitted),
        join(|c| c.inheritable),
    ))
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
    let mut h = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let split = |m: u64| [m as u32, (m >> 32) as u32];
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let d = [0, 1].map(|n| CapData {
        effective: e[n],
        permitted: p[n],
        inheritable: i[n],
    });
    // SAFETY: capset with a v3 header and the two data structs v3 reads.
    Errno::result(unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) }).map(drop)
}

fn prctl(what: &'static str, op: libc::c_int, a: libc::c_ulong) -> Result<i32, NsexecError> {
    // SAFETY: prctl with integer arguments only.
    Errno::result(unsafe { libc::prctl(op, a, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) })
        .map_err(|errno| NsexecError::Confine { what, errno })
}

/// The capabilities this kernel knows (those PR_CAPBSET_READ answers for).
fn known_caps() -> impl Iterator<Item = u32> {
    // SAFETY: PR_CAPBSET_READ only reads this process's bounding set.
    (0..64).take_while(|c| unsafe { libc::prctl(libc::PR_CAPBSET_READ, *c as libc::c_ulong) } >= 0)
}

/// This process's bounding and ambient sets.
fn bounding_and_ambient() -> (u64, u64) {
    let (mut bnd, mut amb) = (0, 0);
    for c in known_caps() {
        // SAFETY: read-only prctl queries about this process.
        let (b, a) = unsafe {
            (
                libc::prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong),
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong,
                    c as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                ),
            )
        };
        bnd |= u64::from(b == 1) << c;
        amb |= u64::from(a == 1) << c;
    }
    (bnd, amb)
}

#[repr(C)]
struct Rlimit64 {
    cur: u64,
    max: u64,
}

fn prlimit(resource: u32, new: Option<&Rlimit64>, old: Option<&mut Rlimit64>) -> Result<(), Errno> {
    let new = new.map_or(std::ptr::null(), |n| n as *const Rlimit64);
    let old = old.map_or(std::ptr::null_mut(), |o| o as *mut Rlimit64);
    // SAFETY: prlimit64 on this process with pointers to live structs (or null).
    Errno::result(unsafe { libc::syscall(libc::SYS_prlimit64, 0, resource, new, old) }).map(drop)
}

/// Set a limit. A hard limit above this process's own cannot be raised without
/// CAP_SYS_RESOURCE: then both are capped at it (tighter than the container, never looser).
fn set_rlimit(r: &Rlimit) -> Result<(), NsexecError> {
    let fail = |errno| NsexecError::Confine {
        what: "setting rlimits",
        errno,
    };
    let want = Rlimit64 {
        cur: r.soft,
        max: r.hard,
    };
    match prlimit(r.resource, Some(&want), None) {
        Err(Errno::EPERM) => {
            let mut now = Rlimit64 { cur: 0, max: 0 };
            prlimit(r.resource, None, Some(&mut now)).map_err(fail)?;
            let capped = Rlimit64 {
                cur: r.soft.min(now.max),
                max: r.hard.min(now.max),
            };
            prlimit(r.resource, Some(&capped), None).map_err(fail)
        }
        other => other.map_err(fail),
    }
}

/// Take on `c` and `programs` (in the forked child, before exec): supplementary groups,
/// rlimits, the bounding set (dropped while CAP_SETPCAP is still there), gids and uids
/// (keeping capabilities across the change), inheritable/permitted/effective, ambient; then
/// checks what was set, sets no_new_privs and installs the seccomp programs. On error the
/// caller must not exec.
pub fn confine(c: &Confinement, programs: &[BpfProgram]) -> Result<(), NsexecError> {
    let groups: Vec<Gid> = c.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|errno| NsexecError::Confine {
        what: "setgroups",
        errno,
    })?;
    for r in &c.rlimits {
        set_rlimit(r)?;
    }
    for cap in known_caps() {
        if c.caps.bounding & (1 << cap) == 0 {
            prctl(
                "dropping bounding capabilities",
                libc::PR_CAPBSET_DROP,
                cap.into(),
            )?;
        }
    }
    prctl("PR_SET_KEEPCAPS", libc::PR_SET_KEEPCAPS, 1)?;
    let [rg, eg, sg] = c.gid.map(Gid::from_raw);
    nix::unistd::setresgid(rg, eg, sg).map_err(|errno| NsexecError::Confine {
        what: "setresgid",
        errno,
    })?;
    let [ru, eu, su] = c.uid.map(Uid::from_raw);
    nix::unistd::setresuid(ru, eu, su).map_err(|errno| NsexecError::Confine {
        what: "setresuid",
        errno,
    })?;
    capset(c.caps.effective, c.caps.permitted, c.caps.inheritable).map_err(|errno| {
        NsexecError::Confine {
            what: "capset",
            errno,
        }
    })?;
    prctl(
        "clearing ambient capabilities",
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )?;
    for cap in known_caps().filter(|cap| c.caps.ambient & (1 << cap) != 0) {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        Errno::result(r).map_err(|errno| NsexecError::Confine {
            what: "raising ambient capabilities",
            errno,
        })?;
    }
    // The command dies with this process's parent (a health check that timed out).
    prctl(
        "PR_SET_PDEATHSIG",
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
    )?;
    // Check: never run with more than the container has.
    let sets = capget().map_err(|errno| NsexecError::Confine {
        what: "capget",
        errno,
    })?;
    let want = (c.caps.effective, c.caps.permitted, c.caps.inheritable);
    if sets != want {
        return Err(NsexecError::Mismatch(format!(
            "capabilities (eff, prm, inh) {sets:x?}, want {want:x?}"
        )));
    }
    let (bnd, amb) = bounding_and_ambient();
    if bnd & !c.caps.bounding != 0 || amb != c.caps.ambient {
        return Err(NsexecError::Mismatch(format!(
            "bounding {bnd:x} ambient {amb:x}, want {:x} {:x}",
            c.caps.bounding, c.caps.ambient
        )));
    }
    let uids = nix::unistd::getresuid().map(|r| [r.real, r.effective, r.saved].map(Uid::as_raw));
    let gids = nix::unistd::getresgid().map(|r| [r.real, r.effective, r.saved].map(Gid::as_raw));
    if uids != Ok(c.uid) || gids != Ok(c.gid) {
        return Err(NsexecError::Mismatch(format!(
            "ids {uids:?} {gids:?}, want {:?} {:?}",
            c.uid, c.gid
        )));
    }
    prctl("PR_SET_NO_NEW_PRIVS", libc::PR_SET_NO_NEW_PRIVS, 1)?;
    if prctl("PR_GET_NO_NEW_PRIVS", libc::PR_GET_NO_NEW_PRIVS, 0)? != 1 {
        return Err(NsexecError::Mismatch("no_new_privs is not set".into()));
    }
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| NsexecError::Seccomp(e.to_string()))?;
    }
    Ok(())
}

/// The seccomp programs that reproduce a container's state. berth's containers have its
/// default policy ([`crate::seccomp::default_programs`]) or none. The policy only grows by
/// programs appended at its end, so a container started by an older berth, with fewer
/// filters, gets that many of the first programs: exactly what it has. More filters than the
/// policy (the workload added its own) get the policy alone, as `runc exec` gives the spec's.
pub fn programs_for(state: SeccompState) -> Result<Vec<BpfProgram>, NsexecError> {
    match state {
        SeccompState::Disabled => Ok(vec![]),
        SeccompState::Strict => Err(NsexecError::Seccomp(
            "the container is in strict mode, which cannot run a command".into(),
        )),
        SeccompState::Filter(Some(0)) => Err(NsexecError::Seccomp(
            "the kernel says filter mode with no filter".into(),
        )),
        SeccompState::Filter(n) => {
            let mut p = crate::seccomp::default_programs().map_err(NsexecError::Seccomp)?;
            if let Some(n) = n {
                p.truncate(n as usize);
            }
            Ok(p)
        }
    }
}

/// Everything about the container process, read (from the host's view) before joining it.
struct Target {
    pidfd: Option<OwnedFd>,
    start: u64,
    confinement: Confinement,
    programs: Vec<BpfProgram>,
    cgroups: Vec<PathBuf>,
    namespaces: Vec<(&'static str, libc::c_int)>,
    root: File,
    environ: Vec<CString>,
}

fn inspect(pid: i32, expected_start: Option<u64>) -> Result<Target, NsexecError> {
    let pidfd = pidfd_open(pid)?;
    let start = start_time(pid)?;
    if let Some(expected) = expected_start
        && expected != start
    {
        return Err(NsexecError::NotInit {
            pid,
            found: start,
            expected,
        });
    }
    let proc = |what: &str| format!("/proc/{pid}/{what}");
    let status = read(proc("status"))?;
    let mut confinement = parse_status(&status).map_err(|what| NsexecError::Parse {
        path: proc("status"),
        what,
    })?;
    confinement.rlimits =
        parse_limits(&read(proc("limits"))?).map_err(|what| NsexecError::Parse {
            path: proc("limits"),
            what,
        })?;
    let programs = programs_for(confinement.seccomp)?;
    let namespaces = namespaces_to_join(pid)?;
    if namespaces.iter().any(|(n, _)| *n == "user") {
        // /proc shows ids as the host sees them; inside they are what the maps say.
        let (umap, gmap) = (read(proc("uid_map"))?, read(proc("gid_map"))?);
        let unmapped = |id| NsexecError::Parse {
            path: proc("uid_map"),
            what: format!("id {id} is not mapped in the container"),
        };
        let c = &mut confinement;
        for (ids, map) in [(&mut c.uid[..], &umap), (&mut c.gid[..], &gmap)] {
            for id in ids.iter_mut() {
                *id = map_into(*id, map).ok_or_else(|| unmapped(*id))?;
            }
        }
        for g in c.groups.iter_mut() {
            *g = map_into(*g, &gmap).ok_or_else(|| unmapped(*g))?;
        }
    }
    let mountinfo = read("/proc/self/mountinfo".into())?;
    let cgroups = cgroup_dirs(
        &read(proc("cgroup"))?,
        &read("/proc/self/cgroup".into())?,
        &cgroup_mounts(&mountinfo),
    )?;
    let root = File::open(proc("root")).map_err(|source| NsexecError::Read {
        path: proc("root"),
        source,
    })?;
    let environ = std::fs::read(proc("environ"))
        .map_err(|source| NsexecError::Read {
            path: proc("environ"),
            source,
        })?
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|e| CString::new(e).ok())
        .collect();
    // Everything above was about this very process only if it is still there.
    still_same(pid, pidfd.as_ref(), start)?;
    Ok(Target {
        pidfd,
        start,
        confinement,
        programs,
        cgroups,
        namespaces,
        root,
        environ,
    })
}

fn join_cgroups(dirs: &[PathBuf]) -> Result<(), NsexecError> {
    let me = std::process::id().to_string();
    for d in dirs {
        let procs = d.join("cgroup.procs");
        std::fs::write(&procs, &me).map_err(|e| NsexecError::Cgroup {
            path: d.display().to_string(),
            what: e.to_string(),
        })?;
    }
    Ok(())
}

/// Enter the container: its cgroups, namespaces and root directory.
fn enter(pid: i32, t: &Target) -> Result<(), NsexecError> {
    join_cgroups(&t.cgroups)?;
    join_namespaces(pid, t.pidfd.as_ref(), t.start, &t.namespaces)?;
    nix::unistd::fchdir(t.root.as_raw_fd()).map_err(NsexecError::Root)?;
    nix::unistd::chroot(".").map_err(NsexecError::Root)?;
    nix::unistd::chdir("/").map_err(NsexecError::Root)
}

/// Run the command in the container whose init is `pid` (started at `start_time`, clock
/// ticks after boot, when the runtime knows it); returns this process's exit code (the
/// command's, or 126/127 as a shell would for "cannot run" / "not found"; 126 when the
/// container's confinement could not be taken on).
pub fn run(pid: i32, start_time: Option<u64>, args: &[String]) -> i32 {
    if args.is_empty() {
        eprintln!("nsexec: no command");
        return 126;
    }
    let refuse = |e: NsexecError| {
        eprintln!("nsexec: refusing to run the command in container process {pid}: {e}");
        126
    };
    // Nothing in the container may ptrace or read this process while it is privileged; the
    // exec of the command makes it dumpable again, as the container's own processes are.
    if let Err(e) = prctl("PR_SET_DUMPABLE", libc::PR_SET_DUMPABLE, 0) {
        return refuse(e);
    }
    let target = match inspect(pid, start_time) {
        Ok(t) => t,
        Err(e) => return refuse(e),
    };
    if let Err(e) = enter(pid, &target) {
        return refuse(e);
    }
    let argv: Vec<CString> = args
        .iter()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let envp = &target.environ;
    let path = envp
        .iter()
        .find_map(|e| e.to_str().ok()?.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    // SAFETY: this process is single-threaded (no tokio, no other threads started), so the
    // child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            if let Err(e) = confine(&target.confinement, &target.programs) {
                std::process::exit(refuse(e));
            }
            drop(target.root);
            drop(target.pidfd);
            let prog = &args[0];
            let candidates: Vec<String> = if prog.contains('/') {
                vec![prog.clone()]
            } else {
                path.split(':').map(|d| format!("{d}/{prog}")).collect()
            };
            let mut code = 127;
            for c in candidates {
                let Ok(p) = CString::new(c) else { continue };
                if let Err(e) = nix::unistd::execve(&p, &argv, envp)
                    && e != Errno::ENOENT
                {
                    code = 126;
                }
            }
            eprintln!("nsexec: {prog}: cannot run");
            std::process::exit(code);
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => return c,
                Ok(WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(_) => return 126,
            }
        },
        Err(e) => {
            eprintln!("nsexec: fork: {e}");
            126
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const STATUS: &str = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\n\
        Uid:\t1234\t1234\t1234\t1234\nGid:\t1235\t1235\t1235\t1235\nFDSize:\t64\n\
        Groups:\t2000 2001 \nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\n\
        CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n\
        CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000400\n";

    #[test]
    fn status_gives_ids_caps_and_seccomp() {
        let c = parse_status(STATUS).unwrap();
        assert_eq!(c.uid, [1234; 3]);
        assert_eq!(c.gid, [1235; 3]);
        assert_eq!(c.groups, vec![2000, 2001]);
        assert_eq!(
            c.caps,
            CapSets {
                inheritable: 0,
                permitted: 0xa80425fb,
                effective: 0xa80425fb,
                bounding: 0xa80425fb,
                ambient: 0x400,
            }
        );
        assert_eq!(c.seccomp, SeccompState::Filter(Some(3)));
        let empty_groups = STATUS.replace("Groups:\t2000 2001 ", "Groups:\t");
        assert!(parse_status(&empty_groups).unwrap().groups.is_empty());
        let unconfined = STATUS.replace("Seccomp:\t2", "Seccomp:\t0");
        assert_eq!(
            parse_status(&unconfined).unwrap().seccomp,
            SeccompState::Disabled
        );
        // A missing or garbled capability set is an error, never "no capabilities".
        assert!(parse_status(&STATUS.replace("CapBnd:\t00000000a80425fb\n", "")).is_err());
        assert!(parse_status(&STATUS.replace("CapEff:\t00000000a80425fb", "CapEff:\tzz")).is_err());
        assert!(parse_status(&STATUS.replace("Uid:\t1234\t1234\t1234\t1234", "Uid:\t1")).is_err());
    }

    #[test]
    fn limits_are_all_read() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max cpu time              unlimited            unlimited            seconds   \n\
            Max file size             unlimited            unlimited            bytes     \n\
            Max data size             unlimited            unlimited            bytes     \n\
            Max stack size            8388608              unlimited            bytes     \n\
            Max core file size        0                    unlimited            bytes     \n\
            Max resident set          unlimited            unlimited            bytes     \n\
            Max processes             63704                63704                processes \n\
            Max open files            512                  777                  files     \n\
            Max locked memory         8388608              8388608              bytes     \n\
            Max address space         unlimited            unlimited            bytes     \n\
            Max file locks            unlimited            unlimited            locks     \n\
            Max pending signals       63704                63704                signals   \n\
            Max msgqueue size         819200               819200               bytes     \n\
            Max nice priority         0                    0                    \n\
            Max realtime priority     0                    0                    \n\
            Max realtime timeout      unlimited            unlimited            us        \n";
        let l = parse_limits(text).unwrap();
        assert_eq!(l.len(), 16);
        let limit = |name: &str| {
            let res = LIMITS.iter().find(|(n, _)| *n == name).unwrap().1;
            let r = l.iter().find(|r| r.resource == res).unwrap();
            (r.soft, r.hard)
        };
        assert_eq!(limit("Max open files"), (512, 777));
        assert_eq!(limit("Max stack size"), (8388608, u64::MAX));
        assert_eq!(limit("Max realtime priority"), (0, 0));
        assert_eq!(limit("Max realtime timeout"), (u64::MAX, u64::MAX));
        // One missing: refused (berth's own limit would stay).
        let missing: String = text
            .lines()
            .filter(|l| !l.starts_with("Max file locks"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_limits(&missing).is_err());
    }

    #[test]
    fn ids_map_into_a_user_namespace() {
        let map = "         0     100000      65536\n     65536          0          1\n";
        assert_eq!(map_into(100000, map), Some(0));
        assert_eq!(map_into(101234, map), Some(1234));
        assert_eq!(map_into(0, map), Some(65536));
        assert_eq!(map_into(165536, map), None);
    }

    #[test]
    fn cgroups_are_found_in_v1_v2_and_hybrid_mounts() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let m = cgroup_mounts(mountinfo);
        assert_eq!(m.len(), 4);
        let target = "12:cpu,cpuacct:/berth/t/c\n4:memory:/berth/t/c\n\
            1:name=systemd:/berth/t/c\n0::/berth/t/c\n";
        let dirs = cgroup_dirs(target, "", &m).unwrap();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/cpu,cpuacct/berth/t/c",
                "/sys/fs/cgroup/memory/berth/t/c",
                "/sys/fs/cgroup/systemd/berth/t/c",
                "/sys/fs/cgroup/unified/berth/t/c",
            ]
            .map(PathBuf::from)
        );
        // Pure v2.
        let v2 = cgroup_mounts("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        assert_eq!(
            cgroup_dirs("0::/berth/t/c\n", "0::/\n", &v2).unwrap(),
            [PathBuf::from("/sys/fs/cgroup/berth/t/c")]
        );
        // A hierarchy not mounted here: fine only if this process is in that cgroup already.
        assert!(cgroup_dirs("5:pids:/berth/t/c\n", "5:pids:/\n", &v2).is_err());
        assert!(
            cgroup_dirs("5:pids:/\n", "5:pids:/\n", &v2)
                .unwrap()
                .is_empty()
        );
        // A mount of a sub-tree (a cgroup namespace's view): paths outside it are unreachable.
        let sub = cgroup_mounts("30 23 0:26 /a /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            cgroup_dirs("0::/a/b\n", "", &sub).unwrap(),
            [PathBuf::from("/sys/fs/cgroup/b")]
        );
        assert!(cgroup_dirs("0::/ab\n", "", &sub).is_err());
    }

    #[test]
    fn seccomp_states_map_to_programs() {
        let policy = crate::seccomp::default_programs().unwrap();
        assert!(programs_for(SeccompState::Disabled).unwrap().is_empty());
        assert_eq!(
            programs_for(SeccompState::Filter(None)).unwrap(),
            policy.clone()
        );
        assert_eq!(
            programs_for(SeccompState::Filter(Some(policy.len() as u32 + 1))).unwrap(),
            policy
        );
        // Started by a berth whose policy had fewer programs: the ones it had.
        assert_eq!(
            programs_for(SeccompState::Filter(Some(2))).unwrap(),
            policy[..2]
        );
        assert!(programs_for(SeccompState::Filter(Some(0))).is_err());
        assert!(programs_for(SeccompState::Strict).is_err());
    }

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skipping: needs root");
        false
    }

    /// In a forked (single-threaded) child, run `f`; its Ok(true) is the test's success.
    fn in_child(f: impl FnOnce() -> bool) -> bool {
        // SAFETY: the child runs `f` (plain syscalls and /proc reads) and exits without
        // returning into the test harness.
        match unsafe { nix::unistd::fork() }.unwrap() {
            ForkResult::Child => {
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            ForkResult::Parent { child } => {
                waitpid(child, None).unwrap() == WaitStatus::Exited(child, 0)
            }
        }
    }

    /// A pid whose start time is not the one the runtime noted for the container's init is
    /// refused before anything is read or joined: a pid reused after the container ended.
    #[test]
    fn a_reused_pid_is_not_the_container() {
        if !is_root() || !Path::new("/bin/busybox").exists() {
            return;
        }
        let mut sleeper = std::process::Command::new("/bin/busybox")
            .args(["unshare", "-u", "-m", "/bin/busybox", "sleep", "30"])
            .spawn()
            .unwrap();
        let pid = sleeper.id() as i32;
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
        for _ in 0..500 {
            if ns(&pid.to_string()) != ns("self") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let start = start_time(pid).unwrap();
        let other = inspect(pid, Some(start + 7)).err();
        let same = inspect(pid, Some(start)).err();
        let unknown = inspect(pid, None).err();
        let refused = run(
            pid,
            Some(start + 7),
            &["/bin/busybox".into(), "true".into()],
        );
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert!(
            matches!(other, Some(NsexecError::NotInit { expected, .. }) if expected == start + 7),
            "{other:?}"
        );
        assert!(same.is_none(), "{same:?}");
        assert!(unknown.is_none(), "{unknown:?}");
        assert_eq!(refused, 126);
    }

    /// The fallback for kernels without setns(pidfd): the namespaces of /proc/P/ns are
    /// joined when P is still the process that was inspected, and refused when its start
    /// time differs (a recycled pid).
    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "waits on a real process, in real time"
    )]
    fn namespaces_join_by_proc_files_only_for_the_same_process() {
        if !is_root() || !Path::new("/bin/busybox").exists() {
            return;
        }
        let mut sleeper = std::process::Command::new("/bin/busybox")
            .args(["unshare", "-u", "-n", "-m", "/bin/busybox", "sleep", "30"])
            .spawn()
            .unwrap();
        let pid = sleeper.id() as i32;
        let ns = |p: &str, n: &str| std::fs::read_link(format!("/proc/{p}/ns/{n}")).ok();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ns(&pid.to_string(), "uts") == ns("self", "uts") {
            assert!(std::time::Instant::now() < deadline, "unshare did not run");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let start = start_time(pid).unwrap();
        let nss = namespaces_to_join(pid).unwrap();
        let names: Vec<&str> = nss.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["uts", "net", "mnt"]);
        let joined = in_child(|| {
            join_namespaces(pid, None, start, &nss).is_ok()
                && ["uts", "net", "mnt"]
                    .iter()
                    .all(|n| ns("self", n) == ns(&pid.to_string(), n))
        });
        let refused = in_child(|| {
            matches!(
                join_namespaces(pid, None, start + 1, &nss),
                Err(NsexecError::Gone(_))
            ) && ns("self", "uts") != ns(&pid.to_string(), "uts")
        });
        // Not a container: this process shares berth's mount namespace.
        let own = namespaces_to_join(std::process::id() as i32);
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert!(joined, "joined through /proc/P/ns");
        assert!(
            refused,
            "a different start time is refused before any setns"
        );
        assert!(matches!(own, Err(NsexecError::NotContainer(_))));
    }
}
