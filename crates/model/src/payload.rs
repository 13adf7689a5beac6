//! The task payload the control plane sends an agent (ACS `PayloadMessage`'s `Task`), built
//! from an ECS task and its task definition, and read back into ECS container definitions on
//! the agent's side.
//!
//! ACS carries some container settings in first-class fields (command, entryPoint,
//! environment, portMappings, mountPoints, dependsOn, …) and the rest the way ECS hands them
//! to its agent: as Docker Engine API JSON in `dockerConfig.config` (`User`, `WorkingDir`,
//! `Hostname`, `Labels`, `Healthcheck` in nanoseconds) and `dockerConfig.hostConfig`
//! (`Ulimits`, `ReadonlyRootfs`, `MemoryReservation` in bytes). Container overrides are
//! applied before sending (command, environment, cpu, memory, memoryReservation), so the
//! agent runs exactly what the payload says.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::wire::acs;
use crate::wire::ecs::{
    ContainerDefinition, ContainerDependency, ContainerOverride, HealthCheck, HostVolumeProperties,
    KernelCapabilities, KeyValuePair, LinuxParameters, MountPoint, PortMapping, Task,
    TaskDefinition, Ulimit, Volume, VolumeFrom,
};

const NS: i64 = 1_000_000_000;

/// One container of a task as ACS sends it, overrides applied.
pub fn container_to_acs(
    def: &ContainerDefinition,
    ov: Option<&ContainerOverride>,
    container_arn: Option<String>,
) -> acs::Container {
    let mut env: Vec<KeyValuePair> = def.environment.clone().unwrap_or_default();
    for kv in ov
        .and_then(|o| o.environment.as_deref())
        .unwrap_or_default()
    {
        env.retain(|e| e.name != kv.name);
        env.push(kv.clone());
    }
    let environment: BTreeMap<String, String> = env
        .into_iter()
        .filter_map(|kv| Some((kv.name?, kv.value.unwrap_or_default())))
        .collect();
    let mut config = serde_json::Map::new();
    if let Some(u) = &def.user {
        config.insert("User".into(), json!(u));
    }
    if let Some(w) = &def.working_directory {
        config.insert("WorkingDir".into(), json!(w));
    }
    if let Some(h) = &def.hostname {
        config.insert("Hostname".into(), json!(h));
    }
    if let Some(l) = &def.docker_labels {
        config.insert("Labels".into(), json!(l));
    }
    if let Some(hc) = &def.health_check {
        let secs = |v: Option<i32>, d: i64| v.map(i64::from).unwrap_or(d) * NS;
        config.insert(
            "Healthcheck".into(),
            json!({
                "Test": hc.command.clone().unwrap_or_default(),
                "Interval": secs(hc.interval, 30),
                "Timeout": secs(hc.timeout, 5),
                "Retries": hc.retries.unwrap_or(3),
                "StartPeriod": secs(hc.start_period, 0),
            }),
        );
    }
    let mut host = serde_json::Map::new();
    if let Some(us) = &def.ulimits {
        let v: Vec<Value> = us
            .iter()
            .map(|u| json!({"Name": u.name, "Soft": u.soft_limit, "Hard": u.hard_limit}))
            .collect();
        host.insert("Ulimits".into(), Value::Array(v));
    }
    if def.readonly_root_filesystem == Some(true) {
        host.insert("ReadonlyRootfs".into(), json!(true));
    }
    let reservation = ov
        .and_then(|o| o.memory_reservation)
        .or(def.memory_reservation);
    if let Some(r) = reservation {
        host.insert(
            "MemoryReservation".into(),
            json!(i64::from(r) * 1024 * 1024),
        );
    }
    if let Some(o) = &def.docker_security_options {
        host.insert("SecurityOpt".into(), json!(o));
    }
    if def.disable_networking == Some(true) {
        config.insert("NetworkDisabled".into(), json!(true));
    }
    let lp = def.linux_parameters.as_ref().map(|l| acs::LinuxParameters {
        capabilities: l.capabilities.as_ref().map(|c| acs::KernelCapabilities {
            add: c.add.clone(),
            drop: c.drop.clone(),
        }),
        init_process_enabled: l.init_process_enabled,
        shared_memory_size: l.shared_memory_size,
        ..Default::default()
    });
    acs::Container {
        name: def.name.clone(),
        image: def.image.clone(),
        command: ov.and_then(|o| o.command.clone()).or(def.command.clone()),
        entry_point: def.entry_point.clone(),
        environment: Some(environment),
        cpu: ov.and_then(|o| o.cpu).or(def.cpu),
        memory: ov.and_then(|o| o.memory).or(def.memory),
        essential: Some(def.essential.unwrap_or(true)),
        links: def.links.clone(),
        port_mappings: def.port_mappings.as_ref().map(|ps| {
            ps.iter()
                .map(|p| acs::PortMapping {
                    container_port: p.container_port,
                    host_port: p.host_port,
                    container_port_range: p.container_port_range.clone(),
                    protocol: p.protocol.clone(),
                })
                .collect()
        }),
        mount_points: def.mount_points.as_ref().map(|ms| {
            ms.iter()
                .map(|m| acs::MountPoint {
                    source_volume: m.source_volume.clone(),
                    container_path: m.container_path.clone(),
                    read_only: m.read_only,
                })
                .collect()
        }),
        volumes_from: def.volumes_from.as_ref().map(|vs| {
            vs.iter()
                .map(|v| acs::VolumeFrom {
                    source_container: v.source_container.clone(),
                    read_only: v.read_only,
                })
                .collect()
        }),
        depends_on: def.depends_on.as_ref().map(|ds| {
            ds.iter()
                .map(|d| acs::ContainerDependency {
                    container_name: d.container_name.clone(),
                    condition: d.condition.clone(),
                })
                .collect()
        }),
        linux_parameters: lp,
        privileged: def.privileged,
        start_timeout: def.start_timeout,
        stop_timeout: def.stop_timeout,
        // The ACS enum's only value, lowercase (the ECS agent compares it exactly).
        health_check_type: def.health_check.as_ref().map(|_| "docker".to_string()),
        docker_config: Some(acs::DockerConfig {
            version: Some("1.17".into()),
            config: Some(Value::Object(config).to_string()),
            host_config: Some(Value::Object(host).to_string()),
        }),
        container_arn,
        ..Default::default()
    }
}

/// An ACS container read back into the ECS container definition the agent runs.
pub fn container_from_acs(c: &acs::Container) -> ContainerDefinition {
    let parse = |s: Option<&String>| -> Value {
        s.and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null)
    };
    let dc = c.docker_config.as_ref();
    let config = parse(dc.and_then(|d| d.config.as_ref()));
    let host = parse(dc.and_then(|d| d.host_config.as_ref()));
    let text = |v: &Value| v.as_str().map(str::to_string);
    let health_check = config["Healthcheck"].as_object().map(|h| {
        let secs = |k: &str| h.get(k).and_then(Value::as_i64).map(|n| (n / NS) as i32);
        HealthCheck {
            command: h.get("Test").and_then(|t| {
                t.as_array().map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
            }),
            interval: secs("Interval"),
            timeout: secs("Timeout"),
            retries: h.get("Retries").and_then(Value::as_i64).map(|n| n as i32),
            start_period: secs("StartPeriod").filter(|s| *s > 0),
        }
    });
    let ulimits = host["Ulimits"].as_array().map(|a| {
        a.iter()
            .map(|u| Ulimit {
                name: text(&u["Name"]),
                soft_limit: u["Soft"].as_i64().map(|n| n as i32),
                hard_limit: u["Hard"].as_i64().map(|n| n as i32),
            })
            .collect()
    });
    let labels = config["Labels"].as_object().map(|m| {
        m.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect()
    });
    ContainerDefinition {
        name: c.name.clone(),
        image: c.image.clone(),
        command: c.command.clone(),
        entry_point: c.entry_point.clone(),
        environment: c.environment.as_ref().map(|m| {
            m.iter()
                .map(|(k, v)| KeyValuePair {
                    name: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect()
        }),
        cpu: c.cpu,
        memory: c.memory,
        memory_reservation: host["MemoryReservation"]
            .as_i64()
            .map(|b| (b / (1024 * 1024)) as i32),
        essential: c.essential,
        links: c.links.clone(),
        port_mappings: c.port_mappings.as_ref().map(|ps| {
            ps.iter()
                .map(|p| PortMapping {
                    container_port: p.container_port,
                    host_port: p.host_port,
                    protocol: p.protocol.clone(),
                    container_port_range: p.container_port_range.clone(),
                    ..Default::default()
                })
                .collect()
        }),
        mount_points: c.mount_points.as_ref().map(|ms| {
            ms.iter()
                .map(|m| MountPoint {
                    source_volume: m.source_volume.clone(),
                    container_path: m.container_path.clone(),
                    read_only: m.read_only,
                })
                .collect()
        }),
        volumes_from: c.volumes_from.as_ref().map(|vs| {
            vs.iter()
                .map(|v| VolumeFrom {
                    source_container: v.source_container.clone(),
                    read_only: v.read_only,
                })
                .collect()
        }),
        depends_on: c.depends_on.as_ref().map(|ds| {
            ds.iter()
                .map(|d| ContainerDependency {
                    container_name: d.container_name.clone(),
                    condition: d.condition.clone(),
                })
                .collect()
        }),
        linux_parameters: c.linux_parameters.as_ref().map(|l| LinuxParameters {
            capabilities: l.capabilities.as_ref().map(|k| KernelCapabilities {
                add: k.add.clone(),
                drop: k.drop.clone(),
            }),
            init_process_enabled: l.init_process_enabled,
            shared_memory_size: l.shared_memory_size,
            ..Default::default()
        }),
        privileged: c.privileged,
        start_timeout: c.start_timeout,
        stop_timeout: c.stop_timeout,
        user: text(&config["User"]),
        working_directory: text(&config["WorkingDir"]),
        hostname: text(&config["Hostname"]),
        docker_labels: labels,
        disable_networking: config["NetworkDisabled"].as_bool(),
        health_check,
        ulimits,
        readonly_root_filesystem: host["ReadonlyRootfs"].as_bool(),
        docker_security_options: host["SecurityOpt"].as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        }),
        ..Default::default()
    }
}

/// The revision part of a task definition ARN (`…:task-definition/family:7` → `"7"`).
fn revision_of(arn: &str) -> Option<String> {
    arn.rsplit(':').next().map(str::to_string)
}

/// A task as its agent receives it.
pub fn task_to_acs(task: &Task, td: &TaskDefinition) -> acs::Task {
    let overrides = task
        .overrides
        .as_ref()
        .and_then(|o| o.container_overrides.as_ref());
    let containers = td
        .container_definitions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|def| {
            let ov = overrides.and_then(|os| os.iter().find(|o| o.name == def.name));
            let arn = task
                .containers
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|c| c.name == def.name)
                .and_then(|c| c.container_arn.clone());
            container_to_acs(def, ov, arn)
        })
        .collect();
    let volumes = td.volumes.as_ref().map(|vs| {
        vs.iter()
            .map(|v| acs::Volume {
                name: v.name.clone(),
                r#type: Some(if v.docker_volume_configuration.is_some() {
                    "docker".into()
                } else {
                    "host".into()
                }),
                // A host volume always carries its `host` object (empty for task scratch
                // space): the ECS agent refuses a host volume without one.
                host: v
                    .docker_volume_configuration
                    .is_none()
                    .then(|| acs::HostVolumeProperties {
                        source_path: v.host.as_ref().and_then(|h| h.source_path.clone()),
                    }),
                docker_volume_configuration: v
                    .docker_volume_configuration
                    .as_ref()
                    .and_then(|d| serde_json::to_value(d).ok())
                    .and_then(|d| serde_json::from_value(d).ok()),
                ..Default::default()
            })
            .collect()
    });
    let cpu_units: Option<f64> = task.cpu.as_deref().and_then(|c| c.parse().ok());
    acs::Task {
        arn: task.task_arn.clone(),
        task_cluster_arn: task.cluster_arn.clone(),
        family: td.family.clone(),
        version: task.task_definition_arn.as_deref().and_then(revision_of),
        desired_status: task.desired_status.clone(),
        containers: Some(containers),
        volumes,
        cpu: cpu_units.map(|u| u / 1024.0),
        memory: task.memory.as_deref().and_then(|m| m.parse().ok()),
        network_mode: Some(td.network_mode.clone().unwrap_or_else(|| "bridge".into())),
        launch_type: task.launch_type.clone(),
        group: task.group.clone(),
        pid_mode: td.pid_mode.clone(),
        ipc_mode: td.ipc_mode.clone(),
        ..Default::default()
    }
}

/// The task volumes of an ACS task, as the task definition declared them.
pub fn volumes_from_acs(t: &acs::Task) -> Vec<Volume> {
    t.volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|v| Volume {
            name: v.name.clone(),
            // An empty `host` is task scratch space, declared without one.
            host: v
                .host
                .as_ref()
                .and_then(|h| h.source_path.clone())
                .map(|p| HostVolumeProperties {
                    source_path: Some(p),
                }),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> ContainerDefinition {
        ContainerDefinition {
            name: Some("web".into()),
            image: Some("busybox:latest".into()),
            command: Some(vec!["httpd".into(), "-f".into()]),
            entry_point: Some(vec!["/bin/sh".into(), "-c".into()]),
            environment: Some(vec![
                KeyValuePair {
                    name: Some("A".into()),
                    value: Some("1".into()),
                },
                KeyValuePair {
                    name: Some("B".into()),
                    value: Some("2".into()),
                },
            ]),
            cpu: Some(128),
            memory: Some(64),
            memory_reservation: Some(32),
            essential: Some(true),
            port_mappings: Some(vec![PortMapping {
                container_port: Some(80),
                host_port: Some(8080),
                protocol: Some("tcp".into()),
                ..Default::default()
            }]),
            mount_points: Some(vec![MountPoint {
                source_volume: Some("data".into()),
                container_path: Some("/data".into()),
                read_only: Some(true),
            }]),
            depends_on: Some(vec![ContainerDependency {
                container_name: Some("db".into()),
                condition: Some("HEALTHY".into()),
            }]),
            user: Some("nobody".into()),
            working_directory: Some("/srv".into()),
            hostname: Some("h1".into()),
            readonly_root_filesystem: Some(true),
            ulimits: Some(vec![Ulimit {
                name: Some("nofile".into()),
                soft_limit: Some(100),
                hard_limit: Some(200),
            }]),
            health_check: Some(HealthCheck {
                command: Some(vec!["CMD-SHELL".into(), "true".into()]),
                interval: Some(5),
                timeout: Some(2),
                retries: Some(3),
                start_period: Some(10),
            }),
            linux_parameters: Some(LinuxParameters {
                capabilities: Some(KernelCapabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: None,
                }),
                init_process_enabled: Some(true),
                ..Default::default()
            }),
            stop_timeout: Some(7),
            docker_security_options: Some(vec!["seccomp=unconfined".into()]),
            ..Default::default()
        }
    }

    #[test]
    fn container_round_trip() {
        let d = def();
        let back = container_from_acs(&container_to_acs(&d, None, None));
        // environment comes back ordered by name; everything else as given
        assert_eq!(back, d);
    }

    #[test]
    fn survives_json() {
        let a = container_to_acs(&def(), None, Some("arn:c".into()));
        let s = serde_json::to_string(&a).unwrap();
        let b: acs::Container = serde_json::from_str(&s).unwrap();
        assert_eq!(container_from_acs(&b), def());
        assert_eq!(b.container_arn.as_deref(), Some("arn:c"));
    }

    #[test]
    fn overrides_are_applied() {
        let ov = ContainerOverride {
            name: Some("web".into()),
            command: Some(vec!["echo".into(), "hi".into()]),
            environment: Some(vec![KeyValuePair {
                name: Some("B".into()),
                value: Some("over".into()),
            }]),
            memory: Some(128),
            memory_reservation: Some(16),
            ..Default::default()
        };
        let back = container_from_acs(&container_to_acs(&def(), Some(&ov), None));
        assert_eq!(
            back.command,
            Some(vec!["echo".to_string(), "hi".to_string()])
        );
        let env = back.environment.unwrap();
        assert!(
            env.iter()
                .any(|e| e.name.as_deref() == Some("B") && e.value.as_deref() == Some("over"))
        );
        assert_eq!(back.memory, Some(128));
        assert_eq!(back.memory_reservation, Some(16));
    }

    #[test]
    fn task_fields() {
        let td = TaskDefinition {
            family: Some("web".into()),
            container_definitions: Some(vec![def()]),
            volumes: Some(vec![
                Volume {
                    name: Some("data".into()),
                    ..Default::default()
                },
                Volume {
                    name: Some("logs".into()),
                    host: Some(HostVolumeProperties {
                        source_path: Some("/var/log".into()),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let task = Task {
            task_arn: Some("arn:aws:ecs:us-east-1:0:task/default/abc".into()),
            task_definition_arn: Some("arn:aws:ecs:us-east-1:0:task-definition/web:3".into()),
            desired_status: Some("RUNNING".into()),
            cpu: Some("512".into()),
            memory: Some("256".into()),
            ..Default::default()
        };
        let a = task_to_acs(&task, &td);
        assert_eq!(a.version.as_deref(), Some("3"));
        assert_eq!(a.cpu, Some(0.5));
        assert_eq!(a.memory, Some(256));
        assert_eq!(a.network_mode.as_deref(), Some("bridge"));
        let acs_vols = a.volumes.as_deref().unwrap();
        assert!(acs_vols.iter().all(|v| v.r#type.as_deref() == Some("host")));
        assert!(
            acs_vols.iter().all(|v| v.host.is_some()),
            "the ECS agent needs `host` on every host volume"
        );
        let vols = volumes_from_acs(&a);
        assert_eq!(vols, td.volumes.unwrap());
    }
}
