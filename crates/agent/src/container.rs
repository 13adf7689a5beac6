//! From an ECS container definition (with the task's overrides) and the image config to what
//! the runtime starts — ECS's and Docker's merge rules:
//!
//! - `entryPoint` replaces the image's Entrypoint and, as with `docker run --entrypoint`,
//!   drops the image's Cmd; `command` replaces Cmd;
//! - `environment` is laid over the image's Env (same name: the definition wins);
//! - `workingDirectory` and `user` replace the image's; numeric `uid[:gid]`, or names looked
//!   up in the image's `/etc/passwd` and `/etc/group`;
//! - `memory` is the hard limit, `memoryReservation` the soft one (MiB), `cpu` the CPU shares
//!   (at least 2, as Docker takes it);
//! - `ulimits`, `readonlyRootFilesystem`, `linuxParameters.capabilities` (add/drop),
//!   `hostname`, `dockerLabels` are honoured; `privileged` gets every capability;
//! - the default seccomp policy applies unless the container has `SYS_ADMIN` (privileged) or
//!   `dockerSecurityOptions` says `seccomp=unconfined`.

use std::path::Path;

use berth_model::wire::ecs::{ContainerDefinition, ContainerOverride, KeyValuePair};
use berth_runtime::spec::{ContainerSpec, DEFAULT_CAPABILITIES};
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

/// Look a user or group name up in the image's passwd/group file.
fn lookup(rootfs: &Path, file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    let text = std::fs::read_to_string(rootfs.join("etc").join(file)).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name) && f.len() >= 3).then(|| {
            (
                f[2].parse().unwrap_or(0),
                f.get(3).and_then(|g| g.parse().ok()),
            )
        })
    })
}

/// `user` as ECS and Docker accept it: `uid`, `uid:gid`, `name`, `name:group`.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), SpecError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => {
            let (uid, gid) = lookup(rootfs, "passwd", u).ok_or_else(|| {
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
            Err(_) => lookup(rootfs, "group", g)
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
