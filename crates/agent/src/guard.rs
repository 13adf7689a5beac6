//! Operator guard rails, as the ECS agent has them (`ECS_DISABLE_PRIVILEGED`,
//! `ECS_SELINUX_CAPABLE`-style switches): what this node refuses to run whatever a task
//! definition asks. Without them, anyone who may run tasks here is root on the node (privileged
//! containers, the host's network, host paths, added capabilities).
//!
//! Checked once per task before anything is pulled or started; a refused task stops with a
//! `CannotStartContainerError` that names the rule.

use std::path::{Component, Path, PathBuf};

use berth_model::wire::ecs::{ContainerDefinition, Volume};

/// What this node refuses. The default refuses nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Refuse `privileged` containers.
    pub disable_privileged: bool,
    /// Refuse `networkMode: host` tasks.
    pub disable_host_network: bool,
    /// Host-path volumes only under these directories (`None`: anywhere; empty: none).
    pub host_volume_allow: Option<Vec<PathBuf>>,
    /// Refuse `linuxParameters.capabilities.add`.
    pub disable_added_capabilities: bool,
}

impl Guard {
    /// Why this node will not run a task with these containers and volumes, if it will not.
    pub fn check(
        &self,
        network_mode: &str,
        defs: &[ContainerDefinition],
        volumes: &[Volume],
    ) -> Result<(), String> {
        if self.disable_host_network && network_mode == "host" {
            return Err("host network mode is disabled on this node".into());
        }
        for d in defs {
            let name = d.name.as_deref().unwrap_or_default();
            if self.disable_privileged && d.privileged == Some(true) {
                return Err(format!(
                    "container {name}: privileged containers are disabled on this node"
                ));
            }
            let added = d
                .linux_parameters
                .as_ref()
                .and_then(|l| l.capabilities.as_ref())
                .and_then(|c| c.add.as_ref())
                .is_some_and(|a| !a.is_empty());
            if self.disable_added_capabilities && added {
                return Err(format!(
                    "container {name}: added capabilities are disabled on this node"
                ));
            }
        }
        if let Some(allow) = &self.host_volume_allow {
            for v in volumes {
                let Some(src) = v.host.as_ref().and_then(|h| h.source_path.as_deref()) else {
                    continue;
                };
                if !allowed(allow, Path::new(src)) {
                    return Err(format!(
                        "volume {}: host path {src} is outside the host paths this node allows",
                        v.name.as_deref().unwrap_or_default()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether `p` (absolute, without `..`) lies under one of `allow`.
fn allowed(allow: &[PathBuf], p: &Path) -> bool {
    p.is_absolute()
        && !p.components().any(|c| c == Component::ParentDir)
        && allow.iter().any(|a| p.starts_with(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::wire::ecs::{HostVolumeProperties, KernelCapabilities, LinuxParameters};

    fn def(privileged: bool, add: &[&str]) -> ContainerDefinition {
        ContainerDefinition {
            name: Some("c".into()),
            privileged: Some(privileged),
            linux_parameters: Some(LinuxParameters {
                capabilities: Some(KernelCapabilities {
                    add: Some(add.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn host(path: &str) -> Volume {
        Volume {
            name: Some("v".into()),
            host: Some(HostVolumeProperties {
                source_path: Some(path.into()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_is_refused_by_default() {
        let g = Guard::default();
        g.check("host", &[def(true, &["SYS_ADMIN"])], &[host("/")])
            .unwrap();
    }

    #[test]
    fn each_rail_refuses_what_it_names_and_only_that() {
        let g = Guard {
            disable_privileged: true,
            ..Default::default()
        };
        assert!(
            g.check("bridge", &[def(true, &[])], &[])
                .unwrap_err()
                .contains("privileged")
        );
        g.check("host", &[def(false, &["NET_ADMIN"])], &[host("/etc")])
            .unwrap();

        let g = Guard {
            disable_host_network: true,
            ..Default::default()
        };
        assert!(
            g.check("host", &[], &[])
                .unwrap_err()
                .contains("host network")
        );
        g.check("awsvpc", &[def(true, &[])], &[]).unwrap();

        let g = Guard {
            disable_added_capabilities: true,
            ..Default::default()
        };
        assert!(
            g.check("bridge", &[def(false, &["SYS_PTRACE"])], &[])
                .unwrap_err()
                .contains("capabilities")
        );
        g.check("bridge", &[def(false, &[])], &[]).unwrap();

        let g = Guard {
            host_volume_allow: Some(vec!["/srv/data".into()]),
            ..Default::default()
        };
        g.check("bridge", &[], &[host("/srv/data/app")]).unwrap();
        for bad in ["/etc", "/srv/database", "/srv/data/../../etc", "relative"] {
            assert!(g.check("bridge", &[], &[host(bad)]).is_err(), "{bad}");
        }
        // Task-managed volumes (no source path) are always allowed.
        g.check(
            "bridge",
            &[],
            &[Volume {
                name: Some("scratch".into()),
                host: Some(HostVolumeProperties { source_path: None }),
                ..Default::default()
            }],
        )
        .unwrap();
    }
}
