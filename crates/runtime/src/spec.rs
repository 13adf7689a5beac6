//! The OCI runtime spec (`config.json` of a bundle) for one container, from the runtime's own
//! description of it. ECS semantics (merging the image config with a container definition)
//! are the agent's; this module only knows how a container is isolated.

use std::path::PathBuf;

use serde_json::{Value, json};

/// Docker's default capability set: what a container gets unless it asks for more.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability (privileged containers, `add: ["ALL"]`).
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// What a container cannot see (a file reads as `/dev/null`, a directory as an empty
/// read-only tmpfs), as runc's default spec masks: kernel memory, keys, timers and debug
/// files that leak the host's state; `/proc/interrupts` (which CPUs serve which devices);
/// `/sys/devices/virtual/powercap` (energy counters, the PLATYPUS side channel).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Which network namespace a container lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkNs {
    /// A new, empty one (network mode `none`).
    New,
    /// The host's (network mode `host`).
    Host,
    /// An existing one (a task's `awsvpc` namespace, a bridge endpoint).
    Path(PathBuf),
}

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// How one container runs and is confined.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    /// Hard memory limit, bytes.
    pub memory_limit: Option<i64>,
    /// Soft memory limit, bytes.
    pub memory_reservation: Option<i64>,
    /// CPU shares (ECS cpu units map 1:1, minimum 2).
    pub cpu_shares: Option<u64>,
    pub pids_limit: Option<i64>,
    pub readonly_root: bool,
    /// (RLIMIT_NAME, soft, hard)
    pub rlimits: Vec<(String, u64, u64)>,
    pub capabilities: Vec<String>,
    pub network: NetworkNs,
    pub mounts: Vec<BindMount>,
    /// cgroup path relative to each hierarchy's root.
    pub cgroup_path: String,
    /// Apply the default seccomp policy ([`crate::seccomp`]).
    pub seccomp: bool,
    /// Run an init as PID 1 that forwards signals and reaps orphans.
    pub init: bool,
}

impl Default for ContainerSpec {
    fn default() -> Self {
        ContainerSpec {
            args: vec!["/bin/sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            hostname: "berth".into(),
            memory_limit: None,
            memory_reservation: None,
            cpu_shares: None,
            pids_limit: Some(4096),
            readonly_root: false,
            rlimits: vec![("RLIMIT_NOFILE".into(), 1024, 1024)],
            capabilities: DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            network: NetworkNs::New,
            mounts: vec![],
            cgroup_path: "/berth/container".into(),
            seccomp: true,
            init: false,
        }
    }
}

/// The bundle's `config.json`; the root filesystem is the bundle's `rootfs` directory.
pub fn oci_config(s: &ContainerSpec) -> Value {
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        // Its own cgroup namespace: /proc/self/cgroup shows "/", not the host's hierarchy.
        json!({"type": "cgroup"}),
    ];
    match &s.network {
        NetworkNs::New => namespaces.push(json!({"type": "network"})),
        NetworkNs::Host => {}
        NetworkNs::Path(p) => namespaces.push(json!({"type": "network", "path": p})),
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for m in &s.mounts {
        let mut opts = vec!["rbind", "rprivate"];
        if m.readonly {
            opts.push("ro");
        }
        mounts.push(json!({"destination": m.destination, "type": "bind",
                           "source": m.source, "options": opts}));
    }
    let mut memory = serde_json::Map::new();
    if let Some(l) = s.memory_limit {
        memory.insert("limit".into(), json!(l));
        // No swap beyond the limit, as ECS configures Docker.
        memory.insert("swap".into(), json!(l));
    }
    if let Some(r) = s.memory_reservation {
        memory.insert("reservation".into(), json!(r));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if !memory.is_empty() {
        resources["memory"] = Value::Object(memory);
    }
    if let Some(sh) = s.cpu_shares {
        resources["cpu"] = json!({"shares": sh.max(2)});
    }
    if let Some(p) = s.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    json!({
        "ociVersion": "1.0.2",
        "annotations": {
            crate::seccomp::ANNOTATION: if s.seccomp { "default" } else { "unconfined" },
            crate::seccomp::INIT_ANNOTATION: if s.init { "true" } else { "false" },
        },
        "root": {"path": "rootfs", "readonly": s.readonly_root},
        "hostname": s.hostname,
        "process": {
            "terminal": false,
            "user": {"uid": s.uid, "gid": s.gid, "additionalGids": s.additional_gids},
            "args": s.args,
            "env": s.env,
            "cwd": s.cwd,
            "capabilities": {
                "bounding": s.capabilities,
                "effective": s.capabilities,
                "permitted": s.capabilities,
            },
            "rlimits": s.rlimits.iter().map(|(t, soft, hard)| json!({"type": t, "soft": soft, "hard": hard})).collect::<Vec<_>>(),
            "noNewPrivileges": true,
        },
        "mounts": mounts,
        "linux": {
            "cgroupsPath": s.cgroup_path,
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_namespaces() {
        let s = ContainerSpec {
            memory_limit: Some(64 << 20),
            cpu_shares: Some(256),
            network: NetworkNs::Host,
            readonly_root: true,
            ..Default::default()
        };
        let c = oci_config(&s);
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(c["linux"]["resources"]["cpu"]["shares"], 256);
        assert_eq!(c["root"]["readonly"], true);
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!ns.contains(&"network"), "host network: no new namespace");
        for own in ["pid", "ipc", "uts", "mount", "cgroup"] {
            assert!(ns.contains(&own), "its own {own} namespace");
        }
        let masked = c["linux"]["maskedPaths"].as_array().unwrap();
        for p in [
            "/proc/interrupts",
            "/sys/devices/virtual/powercap",
            "/proc/kcore",
        ] {
            assert!(masked.iter().any(|m| m == p), "{p} masked");
        }
        assert_eq!(
            c["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
    }
}
