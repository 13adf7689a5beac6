//! Task definitions: the checks ECS makes on RegisterTaskDefinition beyond the wire shape,
//! the normalisation it applies ("1 vCPU" → "1024", "2 GB" → "2048", defaults filled in),
//! and the resources a task of a definition reserves.
//!
//! Pure: takes a request, returns a normalised [`TaskDefinition`] body (without ARN, revision
//! and timestamps, which the control plane assigns) or the first problem found.

use std::collections::{BTreeMap, BTreeSet};

use crate::wire::ecs::{
    ContainerDefinition, PortMapping, RegisterTaskDefinitionRequest, TaskDefinition,
};

/// Largest task definition ECS accepts (its JSON form).
pub const MAX_TASK_DEFINITION_BYTES: usize = 64 * 1024;
/// Most containers in one task definition.
pub const MAX_CONTAINERS: usize = 10;

/// A task definition ECS would refuse, and why (ECS answers these with `ClientException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TaskDefError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, TaskDefError> {
    Err(TaskDefError(msg.into()))
}

/// Names of families, containers, volumes: 1–255 letters, digits, `-` and `_`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Task CPU as CPU units: `"256"`, `"1024"`, `"1 vCPU"`, `"0.5 vcpu"`, `".25 vCPU"`.
pub fn parse_cpu_units(s: &str) -> Option<i64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    if let Some(num) = lower.strip_suffix("vcpu") {
        let v: f64 = num.trim().parse().ok()?;
        if !(v.is_finite() && v > 0.0) {
            return None;
        }
        let units = v * 1024.0;
        if (units - units.round()).abs() > 1e-9 {
            return None;
        }
        return Some(units.round() as i64);
    }
    let v: i64 = t.parse().ok()?;
    (v > 0).then_some(v)
}

/// Task memory as MiB: `"512"`, `"2 GB"`, `"2GB"`, `"0.5 gb"`.
pub fn parse_memory_mib(s: &str) -> Option<i64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    if let Some(num) = lower.strip_suffix("gb") {
        let v: f64 = num.trim().parse().ok()?;
        if !(v.is_finite() && v > 0.0) {
            return None;
        }
        let mib = v * 1024.0;
        if (mib - mib.round()).abs() > 1e-9 {
            return None;
        }
        return Some(mib.round() as i64);
    }
    if let Some(num) = lower
        .strip_suffix("mb")
        .or_else(|| lower.strip_suffix("mib"))
    {
        let v: i64 = num.trim().parse().ok()?;
        return (v > 0).then_some(v);
    }
    let v: i64 = t.parse().ok()?;
    (v > 0).then_some(v)
}

/// Whether (cpu units, memory MiB) is a Fargate task size (see [`crate::fargate::size_ok`]).
pub fn fargate_size_ok(cpu: i64, mem: i64) -> bool {
    crate::fargate::size_ok(cpu, mem)
}

/// What one task of a definition reserves on a container instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    pub cpu: i64,
    pub memory: i64,
    pub ports_tcp: Vec<u16>,
    pub ports_udp: Vec<u16>,
    pub gpus: i64,
    /// Instance attributes the task needs (name, and value when one is required): the
    /// definition's `requiresAttributes`.
    pub attributes: Vec<(String, Option<String>)>,
}

/// The attribute of nodes that make `awsvpc` task networks themselves (berth's agents).
pub const TASK_NETWORK_CAPABILITY: &str = "berth.capability.task-network";

/// The capability attributes an instance must have for a task definition's features, as ECS
/// lists them in `requiresAttributes` (berth's agents register these capabilities).
pub fn required_attributes(td: &TaskDefinition) -> Vec<crate::wire::ecs::Attribute> {
    let containers = td.container_definitions.as_deref().unwrap_or_default();
    let mut names: Vec<&str> = Vec::new();
    if td.network_mode.as_deref() == Some("awsvpc") {
        names.push("ecs.capability.task-eni");
    }
    if containers.iter().any(|c| c.health_check.is_some()) {
        names.push("ecs.capability.container-health-check");
    }
    if containers
        .iter()
        .any(|c| c.depends_on.as_ref().is_some_and(|d| !d.is_empty()))
    {
        names.push("ecs.capability.container-ordering");
    }
    names
        .into_iter()
        .map(|n| crate::wire::ecs::Attribute {
            name: Some(n.to_string()),
            ..Default::default()
        })
        .collect()
}

/// The reservation of a normalised task definition: task-level cpu/memory when set, else the
/// sum over containers (memory = `memoryReservation` or else `memory`, as ECS places); fixed
/// host ports in `bridge` mode, every container port in `host` mode.
pub fn requirements(td: &TaskDefinition) -> Requirements {
    let containers = td.container_definitions.as_deref().unwrap_or_default();
    let cpu = td
        .cpu
        .as_deref()
        .and_then(parse_cpu_units)
        .unwrap_or_else(|| containers.iter().map(|c| c.cpu.unwrap_or(0) as i64).sum());
    let memory = td
        .memory
        .as_deref()
        .and_then(parse_memory_mib)
        .unwrap_or_else(|| {
            containers
                .iter()
                .map(|c| c.memory_reservation.or(c.memory).unwrap_or(0) as i64)
                .sum()
        });
    let mode = td.network_mode.as_deref().unwrap_or("bridge");
    let mut req = Requirements {
        cpu,
        memory,
        attributes: td
            .requires_attributes
            .iter()
            .flatten()
            .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
            .collect(),
        ..Default::default()
    };
    // berth's awsvpc: the node makes the task's network itself and reports its address. The
    // ECS agent registers task-eni too but needs an elastic network interface from EC2, so
    // awsvpc tasks go only to nodes that say they can do berth's (not a `requiresAttributes`
    // entry: the definition stays as ECS would show it).
    if mode == "awsvpc" {
        req.attributes
            .push((TASK_NETWORK_CAPABILITY.to_string(), None));
    }
    if mode == "bridge" || mode == "host" {
        for c in containers {
            for pm in c.port_mappings.as_deref().unwrap_or_default() {
                let host = if mode == "host" {
                    pm.container_port
                } else {
                    pm.host_port
                };
                if let Some(p) = host.filter(|p| *p > 0 && *p <= 65535) {
                    if pm.protocol.as_deref() == Some("udp") {
                        req.ports_udp.push(p as u16);
                    } else {
                        req.ports_tcp.push(p as u16);
                    }
                }
            }
        }
    }
    for c in containers {
        for r in c.resource_requirements.as_deref().unwrap_or_default() {
            if r.r#type.as_deref() == Some("GPU") {
                req.gpus += r
                    .value
                    .as_deref()
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    req
}

const HEALTH_CMD_KINDS: [&str; 3] = ["CMD", "CMD-SHELL", "NONE"];

fn check_port_mapping(
    c: &str,
    pm: &PortMapping,
    mode: &str,
    host_ports: &mut BTreeSet<(String, i32)>,
    names: &mut BTreeSet<String>,
) -> Result<(), TaskDefError> {
    let cp = pm.container_port;
    if cp.is_none() && pm.container_port_range.is_none() {
        return err(format!(
            "Invalid setting for container '{c}'. A port mapping must specify containerPort or containerPortRange."
        ));
    }
    if let Some(p) = cp
        && !(1..=65535).contains(&p)
    {
        return err(format!(
            "Invalid 'containerPort' setting for container '{c}'. Port must be between 1 and 65535."
        ));
    }
    if let Some(h) = pm.host_port
        && !(0..=65535).contains(&h)
    {
        return err(format!(
            "Invalid 'hostPort' setting for container '{c}'. Port must be between 0 and 65535."
        ));
    }
    if (mode == "awsvpc" || mode == "host")
        && let (Some(h), Some(p)) = (pm.host_port, cp)
        && h != 0
        && h != p
    {
        return err(format!(
            "When networkMode={mode}, the host ports and container ports in port mappings must match."
        ));
    }
    let proto = pm.protocol.clone().unwrap_or_else(|| "tcp".into());
    let host = match mode {
        "awsvpc" | "host" => cp,
        _ => pm.host_port.filter(|h| *h != 0),
    };
    if let Some(h) = host
        && !host_ports.insert((proto.clone(), h))
    {
        return err(format!(
            "Invalid setting for container '{c}'. Host port {h}/{proto} is used more than once in the task definition."
        ));
    }
    if let Some(n) = &pm.name {
        if !valid_port_name(n) {
            return err(format!(
                "Invalid port mapping name '{n}' for container '{c}'. Names are up to 64 lowercase letters, digits and hyphens, not starting with a hyphen."
            ));
        }
        if !names.insert(n.clone()) {
            return err(format!(
                "Port mapping name '{n}' is used more than once in the task definition."
            ));
        }
    }
    Ok(())
}

fn valid_port_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && !n.starts_with('-')
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_container(
    c: &ContainerDefinition,
    mode: &str,
    task_memory: Option<i64>,
    volumes: &BTreeSet<String>,
    all: &BTreeMap<String, &ContainerDefinition>,
    host_ports: &mut BTreeSet<(String, i32)>,
    port_names: &mut BTreeSet<String>,
) -> Result<(), TaskDefError> {
    let name = c.name.as_deref().unwrap_or_default();
    match c.image.as_deref() {
        None | Some("") => {
            return err(format!(
                "Container.image should not be null or empty (container '{name}')."
            ));
        }
        Some(i) if i.len() > 255 || i.chars().any(char::is_whitespace) => {
            return err(format!("Invalid image '{i}' for container '{name}'."));
        }
        _ => {}
    }
    if let Some(cpu) = c.cpu
        && cpu < 0
    {
        return err(format!(
            "Invalid 'cpu' setting for container '{name}'. CPU units must be 0 or more."
        ));
    }
    if task_memory.is_none() && c.memory.is_none() && c.memory_reservation.is_none() {
        return err(format!(
            "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
        ));
    }
    for (field, v) in [
        ("memory", c.memory),
        ("memoryReservation", c.memory_reservation),
    ] {
        if let Some(m) = v
            && m < 6
        {
            return err(format!(
                "Invalid '{field}' setting for container '{name}'. The minimum is 6 MiB."
            ));
        }
    }
    if let (Some(m), Some(r)) = (c.memory, c.memory_reservation)
        && m < r
    {
        return err(format!(
            "Invalid setting for container '{name}'. 'memory' must be greater than or equal to 'memoryReservation'."
        ));
    }
    if let (Some(tm), Some(m)) = (task_memory, c.memory.or(c.memory_reservation))
        && (m as i64) > tm
    {
        return err(format!(
            "Invalid setting for container '{name}'. Its memory ({m} MiB) exceeds the task memory ({tm} MiB)."
        ));
    }
    for pm in c.port_mappings.as_deref().unwrap_or_default() {
        check_port_mapping(name, pm, mode, host_ports, port_names)?;
    }
    if c.links.as_ref().is_some_and(|l| !l.is_empty()) && mode != "bridge" {
        return err(format!(
            "Invalid setting for container '{name}'. Links are only supported with networkMode bridge."
        ));
    }
    if let Some(hc) = &c.health_check {
        let cmd = hc.command.as_deref().unwrap_or_default();
        match cmd.first().map(String::as_str) {
            Some(k) if HEALTH_CMD_KINDS.contains(&k) => {}
            _ => {
                return err(format!(
                    "Invalid 'healthCheck' setting for container '{name}'. The command must start with CMD, CMD-SHELL or NONE."
                ));
            }
        }
        if cmd.first().map(String::as_str) != Some("NONE") && cmd.len() < 2 {
            return err(format!(
                "Invalid 'healthCheck' setting for container '{name}'. The command has nothing to run."
            ));
        }
        for (field, v, lo, hi) in [
            ("interval", hc.interval, 5, 300),
            ("timeout", hc.timeout, 2, 60),
            ("retries", hc.retries, 1, 10),
            ("startPeriod", hc.start_period, 0, 300),
        ] {
            if let Some(v) = v
                && !(lo..=hi).contains(&v)
            {
                return err(format!(
                    "Invalid 'healthCheck.{field}' setting for container '{name}'. It must be between {lo} and {hi}."
                ));
            }
        }
    }
    for mp in c.mount_points.as_deref().unwrap_or_default() {
        let sv = mp.source_volume.as_deref().unwrap_or_default();
        if !volumes.contains(sv) {
            return err(format!(
                "Invalid 'mountPoints' setting for container '{name}'. The source volume '{sv}' is not defined in the task definition volumes."
            ));
        }
        match mp.container_path.as_deref() {
            Some(p) if p.starts_with('/') => {}
            _ => {
                return err(format!(
                    "Invalid 'mountPoints' setting for container '{name}'. containerPath must be an absolute path."
                ));
            }
        }
    }
    for vf in c.volumes_from.as_deref().unwrap_or_default() {
        let sc = vf.source_container.as_deref().unwrap_or_default();
        if sc == name || !all.contains_key(sc) {
            return err(format!(
                "Invalid 'volumesFrom' setting for container '{name}'. The source container '{sc}' is not another container of this task definition."
            ));
        }
    }
    for d in c.depends_on.as_deref().unwrap_or_default() {
        let target = d.container_name.as_deref().unwrap_or_default();
        let cond = d.condition.as_deref().unwrap_or_default();
        if target == name {
            return err(format!(
                "Invalid 'dependsOn' setting for container '{name}'. A container cannot depend on itself."
            ));
        }
        let Some(t) = all.get(target) else {
            return err(format!(
                "Invalid 'dependsOn' setting for container '{name}'. The container '{target}' does not exist in the task definition."
            ));
        };
        if (cond == "COMPLETE" || cond == "SUCCESS") && t.essential.unwrap_or(true) {
            return err(format!(
                "Invalid 'dependsOn' setting for container '{name}'. The container '{target}' is essential; {cond} can only depend on non-essential containers."
            ));
        }
        if cond == "HEALTHY" && t.health_check.is_none() {
            return err(format!(
                "Invalid 'dependsOn' setting for container '{name}'. The container '{target}' has no healthCheck, so it can never be HEALTHY."
            ));
        }
    }
    for (field, v) in [
        ("startTimeout", c.start_timeout),
        ("stopTimeout", c.stop_timeout),
    ] {
        if let Some(v) = v
            && !(0..=3600).contains(&v)
        {
            return err(format!(
                "Invalid '{field}' setting for container '{name}'. It must be between 0 and 3600 seconds."
            ));
        }
    }
    Ok(())
}

/// The first dependency cycle among containers, if any, as "a -> b -> a".
fn find_cycle(all: &BTreeMap<String, &ContainerDefinition>) -> Option<String> {
    fn visit<'a>(
        n: &'a str,
        all: &'a BTreeMap<String, &ContainerDefinition>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<String> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|s| *s == n).unwrap_or(0);
                let mut path: Vec<&str> = stack[start..].to_vec();
                path.push(n);
                return Some(path.join(" -> "));
            }
            _ => {}
        }
        state.insert(n, 1);
        stack.push(n);
        if let Some(c) = all.get(n) {
            for d in c.depends_on.as_deref().unwrap_or_default() {
                if let Some(t) = d.container_name.as_deref()
                    && let Some((k, _)) = all.get_key_value(t)
                    && let Some(cy) = visit(k, all, state, stack)
                {
                    return Some(cy);
                }
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    let mut state = BTreeMap::new();
    for k in all.keys() {
        let mut stack = Vec::new();
        if let Some(c) = visit(k, all, &mut state, &mut stack) {
            return Some(c);
        }
    }
    None
}

/// Validate a RegisterTaskDefinition request and return the normalised definition body.
pub fn normalize(req: &RegisterTaskDefinitionRequest) -> Result<TaskDefinition, TaskDefError> {
    let family = req.family.as_deref().unwrap_or_default();
    if !valid_name(family) {
        return err(
            "Family contains invalid characters. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
        );
    }
    let containers = req.container_definitions.as_deref().unwrap_or_default();
    if containers.is_empty() {
        return err("Task definition must contain at least one container definition.");
    }
    if containers.len() > MAX_CONTAINERS {
        return err(format!(
            "Too many containers: a task definition may have at most {MAX_CONTAINERS}."
        ));
    }
    let size = serde_json::to_vec(req).map(|v| v.len()).unwrap_or(0);
    if size > MAX_TASK_DEFINITION_BYTES {
        return err(format!(
            "Task definition size {size} bytes exceeds the limit of {MAX_TASK_DEFINITION_BYTES} bytes."
        ));
    }

    let compat: Vec<String> = req.requires_compatibilities.clone().unwrap_or_default();
    let fargate = compat.iter().any(|c| c == "FARGATE");
    let mode = req.network_mode.as_deref().unwrap_or("bridge");

    let cpu = match req.cpu.as_deref() {
        None => None,
        Some(s) => Some(parse_cpu_units(s).ok_or_else(|| {
            TaskDefError(format!("Invalid 'cpu' setting for task: '{s}'. Use CPU units (e.g. 1024) or vCPUs (e.g. '1 vCPU')."))
        })?),
    };
    let memory = match req.memory.as_deref() {
        None => None,
        Some(s) => Some(parse_memory_mib(s).ok_or_else(|| {
            TaskDefError(format!(
                "Invalid 'memory' setting for task: '{s}'. Use MiB (e.g. 2048) or GB (e.g. '2 GB')."
            ))
        })?),
    };
    if let Some(c) = cpu
        && !(128..=196_608).contains(&c)
    {
        return err(format!(
            "Invalid 'cpu' setting for task. {c} CPU units is outside the range 128 to 196608."
        ));
    }
    if let Some(m) = memory
        && m < 6
    {
        return err("Invalid 'memory' setting for task. The minimum is 6 MiB.");
    }
    if let Some(size) = req.ephemeral_storage.as_ref().and_then(|e| e.size_in_gi_b) {
        crate::fargate::check_ephemeral(size).map_err(TaskDefError)?;
    }
    if fargate {
        // Task-level rules first, as ECS orders them; the rest once the body is normalised.
        let (c, m) = (cpu.map(|c| c.to_string()), memory.map(|m| m.to_string()));
        crate::fargate::check_task_level(Some(mode), c.as_deref(), m.as_deref())
            .map_err(TaskDefError)?;
    }

    let mut volume_names = BTreeSet::new();
    for v in req.volumes.as_deref().unwrap_or_default() {
        let n = v.name.as_deref().unwrap_or_default();
        if !valid_name(n) {
            return err(format!(
                "Invalid volume name '{n}'. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
            ));
        }
        if !volume_names.insert(n.to_string()) {
            return err(format!("Volume name '{n}' is used more than once."));
        }
        if let Some(h) = &v.host
            && let Some(p) = &h.source_path
            && !p.starts_with('/')
        {
            return err(format!(
                "Invalid host sourcePath '{p}' for volume '{n}'. It must be an absolute path."
            ));
        }
        // Network file systems and EBS attachments need storage berth does not have: refuse
        // them here rather than run the task on an empty scratch directory.
        let unsupported = [
            (
                v.efs_volume_configuration.is_some(),
                "efsVolumeConfiguration",
            ),
            (
                v.fsx_windows_file_server_volume_configuration.is_some(),
                "fsxWindowsFileServerVolumeConfiguration",
            ),
            (v.configured_at_launch == Some(true), "configuredAtLaunch"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(set, _)| *set) {
            return err(format!(
                "Volume '{n}' uses {what}, which this berth installation does not support; use a host or docker volume."
            ));
        }
    }

    let mut by_name: BTreeMap<String, &ContainerDefinition> = BTreeMap::new();
    for c in containers {
        let n = c.name.as_deref().unwrap_or_default();
        if n.is_empty() {
            return err("Container.name should not be null or empty.");
        }
        if !valid_name(n) {
            return err(format!(
                "Invalid container name '{n}'. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
            ));
        }
        if by_name.insert(n.to_string(), c).is_some() {
            return err(format!(
                "Duplicate container name '{n}'. Container names must be unique within a task definition."
            ));
        }
    }
    if !containers.iter().any(|c| c.essential.unwrap_or(true)) {
        return err("Task definition does not have any essential container.");
    }
    let mut host_ports = BTreeSet::new();
    let mut port_names = BTreeSet::new();
    for c in containers {
        check_container(
            c,
            mode,
            memory,
            &volume_names,
            &by_name,
            &mut host_ports,
            &mut port_names,
        )?;
    }
    if let Some(cycle) = find_cycle(&by_name) {
        return err(format!(
            "Invalid 'dependsOn' setting: the containers depend on each other in a cycle ({cycle})."
        ));
    }
    if let Some(tc) = cpu {
        let sum: i64 = containers.iter().map(|c| c.cpu.unwrap_or(0) as i64).sum();
        if sum > tc {
            return err(format!(
                "Invalid 'cpu' setting: the containers' CPU units ({sum}) exceed the task's ({tc})."
            ));
        }
    }
    if let Some(tm) = memory {
        let sum: i64 = containers
            .iter()
            .map(|c| c.memory_reservation.or(c.memory).unwrap_or(0) as i64)
            .sum();
        if sum > tm {
            return err(format!(
                "Invalid 'memory' setting: the containers' memory ({sum} MiB) exceeds the task's ({tm} MiB)."
            ));
        }
    }
    for pc in req.placement_constraints.as_deref().unwrap_or_default() {
        if pc.r#type.as_deref() != Some("memberOf") || pc.expression.is_none() {
            return err(
                "Task definition placement constraints must be of type memberOf with an expression.",
            );
        }
        if pc.expression.as_deref().is_some_and(|e| e.len() > 2000) {
            return err("Placement constraint expressions are at most 2000 characters.");
        }
    }

    // The normalised body, with the defaults ECS fills in when it describes a definition.
    let mut defs = containers.to_vec();
    for c in &mut defs {
        c.essential.get_or_insert(true);
        c.cpu.get_or_insert(0);
        c.environment.get_or_insert_with(Vec::new);
        c.mount_points.get_or_insert_with(Vec::new);
        c.volumes_from.get_or_insert_with(Vec::new);
        let pms = c.port_mappings.get_or_insert_with(Vec::new);
        for pm in pms.iter_mut() {
            pm.protocol.get_or_insert_with(|| "tcp".into());
            if (mode == "awsvpc" || mode == "host") && pm.host_port.is_none_or(|h| h == 0) {
                pm.host_port = pm.container_port;
            }
        }
    }
    let compatibilities = vec!["EC2".to_string(), "EXTERNAL".to_string()];
    let mut body = TaskDefinition {
        family: Some(family.to_string()),
        container_definitions: Some(defs),
        task_role_arn: req.task_role_arn.clone(),
        execution_role_arn: req.execution_role_arn.clone(),
        network_mode: req.network_mode.clone(),
        volumes: Some(req.volumes.clone().unwrap_or_default()),
        placement_constraints: Some(req.placement_constraints.clone().unwrap_or_default()),
        requires_compatibilities: req.requires_compatibilities.clone(),
        compatibilities: Some(compatibilities),
        cpu: cpu.map(|c| c.to_string()),
        memory: memory.map(|m| m.to_string()),
        pid_mode: req.pid_mode.clone(),
        ipc_mode: req.ipc_mode.clone(),
        proxy_configuration: req.proxy_configuration.clone(),
        inference_accelerators: req.inference_accelerators.clone(),
        ephemeral_storage: req.ephemeral_storage.clone(),
        runtime_platform: req.runtime_platform.clone(),
        enable_fault_injection: req.enable_fault_injection,
        ..Default::default()
    };
    // FARGATE is a compatibility when Fargate's rules hold; a definition that requires it
    // is refused with the first rule it breaks.
    match crate::fargate::check_definition(&body) {
        Ok(()) => body
            .compatibilities
            .get_or_insert_with(Vec::new)
            .push("FARGATE".to_string()),
        Err(e) if fargate => return Err(TaskDefError(e)),
        Err(_) => {}
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ecs::{ContainerDependency, HealthCheck};

    fn container(name: &str) -> ContainerDefinition {
        ContainerDefinition {
            name: Some(name.into()),
            image: Some("busybox".into()),
            memory: Some(64),
            ..Default::default()
        }
    }

    fn req(cs: Vec<ContainerDefinition>) -> RegisterTaskDefinitionRequest {
        RegisterTaskDefinitionRequest {
            family: Some("web".into()),
            container_definitions: Some(cs),
            ..Default::default()
        }
    }

    #[test]
    fn units() {
        assert_eq!(parse_cpu_units("1 vCPU"), Some(1024));
        assert_eq!(parse_cpu_units(".25 vcpu"), Some(256));
        assert_eq!(parse_cpu_units("512"), Some(512));
        assert_eq!(parse_cpu_units("abc"), None);
        assert_eq!(parse_cpu_units("-1"), None);
        assert_eq!(parse_memory_mib("2 GB"), Some(2048));
        assert_eq!(parse_memory_mib("0.5GB"), Some(512));
        assert_eq!(parse_memory_mib("512"), Some(512));
        assert_eq!(parse_memory_mib("1.0001 GB"), None);
        assert!(fargate_size_ok(256, 512));
        assert!(!fargate_size_ok(256, 4096));
        assert!(fargate_size_ok(8192, 20480));
        assert!(!fargate_size_ok(8192, 18432));
    }

    #[test]
    fn normalises_units_and_defaults() {
        let mut r = req(vec![container("a")]);
        r.cpu = Some("1 vCPU".into());
        r.memory = Some("2 GB".into());
        let td = normalize(&r).unwrap();
        assert_eq!(td.cpu.as_deref(), Some("1024"));
        assert_eq!(td.memory.as_deref(), Some("2048"));
        let c = &td.container_definitions.unwrap()[0];
        assert_eq!(c.essential, Some(true));
        assert_eq!(c.cpu, Some(0));
    }

    #[test]
    fn refusals() {
        let bad_family = RegisterTaskDefinitionRequest {
            family: Some("we b".into()),
            ..req(vec![container("a")])
        };
        assert!(normalize(&bad_family).is_err());
        assert!(normalize(&req(vec![])).is_err());
        assert!(normalize(&req(vec![container("a"), container("a")])).is_err());
        let mut no_mem = container("a");
        no_mem.memory = None;
        assert!(normalize(&req(vec![no_mem])).is_err());
        let mut not_essential = container("a");
        not_essential.essential = Some(false);
        assert!(normalize(&req(vec![not_essential])).is_err());
        let mut r = req(vec![container("a")]);
        r.requires_compatibilities = Some(vec!["FARGATE".into()]);
        assert!(normalize(&r).is_err(), "fargate needs awsvpc and sizes");
        r.network_mode = Some("awsvpc".into());
        r.cpu = Some("256".into());
        r.memory = Some("4096".into());
        assert!(normalize(&r).is_err(), "256/4096 is no Fargate size");
        r.memory = Some("512".into());
        assert!(normalize(&r).is_ok());
        // Storage berth does not have is refused, not run on scratch space.
        let mut r = req(vec![container("a")]);
        r.volumes = Some(vec![crate::wire::ecs::Volume {
            name: Some("shared".into()),
            efs_volume_configuration: Some(Default::default()),
            ..Default::default()
        }]);
        let e = normalize(&r).unwrap_err();
        assert!(format!("{e:?}").contains("efsVolumeConfiguration"), "{e:?}");
        r.volumes = Some(vec![crate::wire::ecs::Volume {
            name: Some("shared".into()),
            docker_volume_configuration: Some(Default::default()),
            ..Default::default()
        }]);
        assert!(normalize(&r).is_ok());
    }

    #[test]
    fn fargate_compatibility_follows_the_fargate_rules() {
        let mut r = req(vec![container("a")]);
        r.network_mode = Some("awsvpc".into());
        r.cpu = Some("512".into());
        r.memory = Some("1 GB".into());
        let td = normalize(&r).unwrap();
        assert!(td.compatibilities.unwrap().contains(&"FARGATE".to_string()));
        // A privileged container: still an EC2 definition, but not a Fargate one.
        let mut p = container("a");
        p.privileged = Some(true);
        r.container_definitions = Some(vec![p]);
        let td = normalize(&r).unwrap();
        assert!(!td.compatibilities.unwrap().contains(&"FARGATE".to_string()));
        r.requires_compatibilities = Some(vec!["FARGATE".into()]);
        let e = normalize(&r).unwrap_err();
        assert!(e.0.contains("do not support privileged"), "{e}");
        // Task-level rules come before the containers' (no container memory either).
        let mut r = req(vec![ContainerDefinition {
            memory: None,
            ..container("a")
        }]);
        r.requires_compatibilities = Some(vec!["FARGATE".into()]);
        r.network_mode = Some("awsvpc".into());
        r.cpu = Some("256".into());
        let e = normalize(&r).unwrap_err();
        assert!(e.0.contains("'memory' be defined at the task level"), "{e}");
        // Ephemeral storage out of range is refused for every definition.
        let mut r = req(vec![container("a")]);
        r.ephemeral_storage = Some(crate::wire::ecs::EphemeralStorage {
            size_in_gi_b: Some(20),
        });
        assert!(normalize(&r).unwrap_err().0.contains("between 21 and 200"));
    }

    #[test]
    fn depends_on() {
        let mut a = container("a");
        let mut b = container("b");
        a.depends_on = Some(vec![ContainerDependency {
            container_name: Some("b".into()),
            condition: Some("START".into()),
        }]);
        b.depends_on = Some(vec![ContainerDependency {
            container_name: Some("a".into()),
            condition: Some("START".into()),
        }]);
        let e = normalize(&req(vec![a.clone(), b])).unwrap_err();
        assert!(e.0.contains("cycle"), "{e}");
        let mut unknown = container("c");
        unknown.depends_on = Some(vec![ContainerDependency {
            container_name: Some("zzz".into()),
            condition: Some("START".into()),
        }]);
        assert!(normalize(&req(vec![unknown])).is_err());
        let mut healthy = container("d");
        healthy.depends_on = Some(vec![ContainerDependency {
            container_name: Some("e".into()),
            condition: Some("HEALTHY".into()),
        }]);
        let mut e = container("e");
        assert!(normalize(&req(vec![healthy.clone(), e.clone()])).is_err());
        e.health_check = Some(HealthCheck {
            command: Some(vec!["CMD-SHELL".into(), "true".into()]),
            ..Default::default()
        });
        assert!(normalize(&req(vec![healthy, e])).is_ok());
    }

    #[test]
    fn ports() {
        let mut a = container("a");
        a.port_mappings = Some(vec![PortMapping {
            container_port: Some(80),
            host_port: Some(8080),
            ..Default::default()
        }]);
        let mut r = req(vec![a.clone()]);
        assert!(normalize(&r).is_ok());
        r.network_mode = Some("awsvpc".into());
        assert!(normalize(&r).is_err(), "awsvpc host port must match");
        let mut b = container("b");
        b.port_mappings = a.port_mappings.clone();
        let r2 = req(vec![a.clone(), b]);
        assert!(normalize(&r2).is_err(), "same host port twice");
        let td = normalize(&req(vec![a])).unwrap();
        assert_eq!(requirements(&td).ports_tcp, vec![8080]);
        assert_eq!(requirements(&td).memory, 64);
    }
}
