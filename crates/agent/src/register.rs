//! Registering the node's container instance: its resources (CPU, memory, the ports it keeps
//! for itself), attributes and capabilities, as the ECS agent registers them; a restarted
//! agent re-registers the instance it was, or registers a new one when the control plane no
//! longer knows it.
//!
//! Must not: register anything the node cannot do.

use std::sync::Arc;

use berth_model::wire::ecs::{Attribute, RegisterContainerInstanceRequest, Resource, VersionInfo};

use crate::{AgentError, Inner};

/// The capabilities a node registers as attributes (what task definitions' `requiresAttributes`
/// name): awsvpc networking, container health checks, container dependencies; and berth's own
/// task networks, which placement of awsvpc tasks asks for.
pub const CAPABILITIES: [&str; 5] = [
    berth_model::taskdef::TASK_NETWORK_CAPABILITY,
    "ecs.capability.task-eni",
    "com.amazonaws.ecs.capability.docker-remote-api.1.17",
    "ecs.capability.container-health-check",
    "ecs.capability.container-ordering",
];

fn node_memory_mib() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next()?.parse::<i64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn cpu_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        a => a,
    }
}

pub(crate) async fn register(inner: &Arc<Inner>) -> Result<String, AgentError> {
    let cfg = &inner.cfg;
    let arn_file = cfg.root.join("instance-arn");
    let previous = std::fs::read_to_string(&arn_file)
        .ok()
        .map(|s| s.trim().to_string());
    let (cpu_units, memory_mib) = cfg.resources.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
        (cpus * 1024, node_memory_mib() as i32)
    });
    // The credentials endpoint's ports too: a task's fixed host port there would fail.
    let mut ports: Vec<String> = cfg
        .reserved_ports
        .iter()
        .chain(&inner.credentials_access.ports())
        .map(|p| p.to_string())
        .collect();
    ports.sort();
    ports.dedup();
    let mut attrs: Vec<(String, String)> = vec![
        ("ecs.os-type".into(), "linux".into()),
        ("ecs.os-family".into(), "LINUX".into()),
        ("ecs.cpu-architecture".into(), cpu_arch().into()),
        ("berth.runtime".into(), inner.driver.name().into()),
    ];
    attrs.extend(CAPABILITIES.iter().map(|c| (c.to_string(), String::new())));
    if let Some(z) = &cfg.zone {
        attrs.push(("ecs.availability-zone".into(), z.clone()));
    }
    attrs.extend(cfg.attributes.iter().cloned());
    let attributes: Vec<Attribute> = attrs
        .into_iter()
        .map(|(n, v)| Attribute {
            name: Some(n),
            value: (!v.is_empty()).then_some(v),
            ..Default::default()
        })
        .collect();
    let resources = vec![
        Resource {
            name: Some("CPU".into()),
            r#type: Some("INTEGER".into()),
            integer_value: Some(cpu_units),
            ..Default::default()
        },
        Resource {
            name: Some("MEMORY".into()),
            r#type: Some("INTEGER".into()),
            integer_value: Some(memory_mib),
            ..Default::default()
        },
        Resource {
            name: Some("PORTS".into()),
            r#type: Some("STRINGSET".into()),
            string_set_value: Some(ports),
            ..Default::default()
        },
        Resource {
            name: Some("PORTS_UDP".into()),
            r#type: Some("STRINGSET".into()),
            string_set_value: Some(vec![]),
            ..Default::default()
        },
    ];
    let req = RegisterContainerInstanceRequest {
        cluster: Some(cfg.cluster.clone()),
        container_instance_arn: previous.clone(),
        total_resources: Some(resources),
        attributes: Some(attributes),
        version_info: Some(VersionInfo {
            agent_version: Some(env!("CARGO_PKG_VERSION").into()),
            agent_hash: Some("berth".into()),
            docker_version: Some(format!("berth-{}", inner.driver.name())),
        }),
        ..Default::default()
    };
    let ci = match inner.backend.register(req.clone()).await {
        Ok(ci) => ci,
        // The control plane no longer knows the old instance, or it was deregistered (which
        // is final): register a new one.
        Err(e)
            if previous.is_some()
                && (e.code == "InvalidParameterException"
                    || (e.code == "ClientException" && e.message.contains("is inactive"))) =>
        {
            tracing::warn!("re-registration refused ({e}); registering a new instance");
            let mut req = req;
            req.container_instance_arn = None;
            inner
                .backend
                .register(req)
                .await
                .map_err(AgentError::Register)?
        }
        Err(e) => return Err(AgentError::Register(e)),
    };
    let arn = ci.container_instance_arn.unwrap_or_default();
    std::fs::write(&arn_file, &arn)?;
    tracing::info!(instance = %arn, "container instance registered");
    Ok(arn)
}
