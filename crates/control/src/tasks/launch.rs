//! Checking a launch: the parts of RunTask and StartTask (and a service's deployment) that do
//! not depend on placement — the task definition, overrides, roles, tags, network, placement
//! strategies and constraints — and the task record one placement becomes.

use std::sync::Arc;

use berth_model::status::{ContainerStatus, DesiredStatus, HealthStatus, TaskStatus};
use berth_model::taskdef::{self, Requirements};
use berth_model::wire::ecs::{
    Attachment, Container, ContainerOverride, EphemeralStorage, KeyValuePair, NetworkConfiguration,
    PlacementConstraint, PlacementStrategy, Tag, Task, TaskDefinition, TaskOverride,
};
use berth_scheduler as sched;

use crate::Control;
use crate::error::{ControlError, Result};
use crate::records::{Reservation, TaskDefRecord, TaskRecord};
use crate::tags::validate_tags;

/// Most tasks one RunTask may start.
pub const MAX_RUN_COUNT: i32 = 10;

/// Everything RunTask, StartTask and a service's deployment share once the request is
/// checked: what to start, where it may go aside.
pub(crate) struct Launch {
    pub(crate) cluster: String,
    pub(crate) td: Arc<TaskDefRecord>,
    pub(crate) overrides: TaskOverride,
    pub(crate) req: Requirements,
    pub(crate) group: String,
    pub(crate) started_by: Option<String>,
    pub(crate) launch_type: String,
    pub(crate) tags: Vec<Tag>,
    pub(crate) network: Option<NetworkConfiguration>,
    pub(crate) enable_execute_command: bool,
    /// Fargate launches: the platform version resolved (`1.4.0`).
    pub(crate) platform_version: Option<String>,
}

impl Launch {
    /// A launch of the requirements of `td` (no overrides).
    pub(crate) fn of_definition(cluster: &str, td: Arc<TaskDefRecord>, group: String) -> Launch {
        Launch {
            cluster: cluster.to_string(),
            req: taskdef::requirements(&td.def),
            td,
            overrides: TaskOverride::default(),
            group,
            started_by: None,
            launch_type: "EC2".into(),
            tags: vec![],
            network: None,
            enable_execute_command: false,
            platform_version: None,
        }
    }

    /// What one task of this launch needs, as the scheduler sees it.
    pub(super) fn sched_requirements(&self) -> sched::TaskRequirements {
        sched::TaskRequirements {
            cpu: self.req.cpu,
            memory: self.req.memory,
            ports_tcp: self.req.ports_tcp.clone(),
            ports_udp: self.req.ports_udp.clone(),
            gpus: self.req.gpus,
            group: self.group.clone(),
            attributes: self.req.attributes.clone(),
        }
    }
}

/// A new elastic network interface id, shaped as EC2 writes them (`eni-` and 17 hex digits).
fn eni_id() -> String {
    let u = berth_model::arn::new_uuid().replace('-', "");
    format!("eni-{}", &u[..17])
}

fn reservation(r: &Requirements) -> Reservation {
    Reservation {
        cpu: r.cpu,
        memory: r.memory,
        ports_tcp: r.ports_tcp.clone(),
        ports_udp: r.ports_udp.clone(),
        gpus: r.gpus,
    }
}

/// Apply container/task overrides to a definition, for what the task reserves.
fn overridden(td: &TaskDefinition, o: &TaskOverride) -> TaskDefinition {
    let mut td = td.clone();
    if let Some(c) = &o.cpu {
        td.cpu = Some(c.clone());
    }
    if let Some(m) = &o.memory {
        td.memory = Some(m.clone());
    }
    if let Some(defs) = td.container_definitions.as_mut() {
        for co in o.container_overrides.as_deref().unwrap_or_default() {
            if let Some(c) = defs.iter_mut().find(|c| c.name == co.name) {
                if co.cpu.is_some() {
                    c.cpu = co.cpu;
                }
                if co.memory.is_some() {
                    c.memory = co.memory;
                }
                if co.memory_reservation.is_some() {
                    c.memory_reservation = co.memory_reservation;
                }
            }
        }
    }
    td
}

pub(crate) fn check_strategies(s: &[PlacementStrategy]) -> Result<Vec<sched::PlacementStrategy>> {
    if s.len() > 5 {
        return Err(ControlError::invalid(
            "placementStrategy may contain at most 5 strategies.",
        ));
    }
    s.iter()
        .map(|p| match (p.r#type.as_deref(), p.field.as_deref()) {
            (Some("random"), _) => Ok(sched::PlacementStrategy::Random),
            (Some("binpack"), Some(f)) if f.eq_ignore_ascii_case("cpu") => {
                Ok(sched::PlacementStrategy::Binpack(sched::BinpackField::Cpu))
            }
            (Some("binpack"), Some(f)) if f.eq_ignore_ascii_case("memory") => Ok(
                sched::PlacementStrategy::Binpack(sched::BinpackField::Memory),
            ),
            (Some("binpack"), f) => Err(ControlError::invalid(format!(
                "Invalid field for binpack placement strategy: {}. Valid fields are cpu and memory.",
                f.unwrap_or("null")
            ))),
            (Some("spread"), Some(f)) if !f.is_empty() => {
                Ok(sched::PlacementStrategy::Spread(f.to_string()))
            }
            (Some("spread"), _) => Err(ControlError::invalid(
                "A field is required for the spread placement strategy.",
            )),
            (t, _) => Err(ControlError::invalid(format!(
                "Invalid placement strategy type: {}. Valid types are random, spread and binpack.",
                t.unwrap_or("null")
            ))),
        })
        .collect()
}

pub(crate) fn check_constraints(
    request: &[PlacementConstraint],
    td: &TaskDefinition,
) -> Result<Vec<sched::PlacementConstraint>> {
    if request.len() > 10 {
        return Err(ControlError::invalid(
            "placementConstraints may contain at most 10 constraints.",
        ));
    }
    let mut out = Vec::new();
    for c in request {
        match c.r#type.as_deref() {
            Some("distinctInstance") => {
                if c.expression.is_some() {
                    return Err(ControlError::invalid(
                        "distinctInstance constraints take no expression.",
                    ));
                }
                out.push(sched::PlacementConstraint::DistinctInstance);
            }
            Some("memberOf") => {
                let e = c.expression.as_deref().unwrap_or_default();
                out.push(sched::PlacementConstraint::MemberOf(parse_expr(e)?));
            }
            t => {
                return Err(ControlError::invalid(format!(
                    "Invalid placement constraint type: {}. Valid types are distinctInstance and memberOf.",
                    t.unwrap_or("null")
                )));
            }
        }
    }
    for c in td.placement_constraints.as_deref().unwrap_or_default() {
        if let Some(e) = c.expression.as_deref() {
            out.push(sched::PlacementConstraint::MemberOf(parse_expr(e)?));
        }
    }
    Ok(out)
}

fn parse_expr(e: &str) -> Result<sched::cql::Expr> {
    if e.is_empty() || e.len() > 2000 {
        return Err(ControlError::invalid(
            "A memberOf constraint needs an expression of 1 to 2000 characters.",
        ));
    }
    sched::cql::Expr::parse(e)
        .map_err(|err| ControlError::invalid(format!("Invalid memberOf expression: {err}")))
}

fn check_overrides(o: &TaskOverride, td: &TaskDefinition) -> Result<()> {
    let names: Vec<&str> = td
        .container_definitions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.name.as_deref())
        .collect();
    for co in o.container_overrides.as_deref().unwrap_or_default() {
        let n = co.name.as_deref().unwrap_or_default();
        if !names.contains(&n) {
            return Err(ControlError::invalid(format!(
                "Override for container named {n} is not a container in the TaskDefinition."
            )));
        }
    }
    if let Some(c) = &o.cpu
        && taskdef::parse_cpu_units(c).is_none()
    {
        return Err(ControlError::invalid(format!("Invalid cpu override: {c}")));
    }
    if let Some(m) = &o.memory
        && taskdef::parse_memory_mib(m).is_none()
    {
        return Err(ControlError::invalid(format!(
            "Invalid memory override: {m}"
        )));
    }
    Ok(())
}

pub(crate) fn check_network(td: &TaskDefinition, n: Option<&NetworkConfiguration>) -> Result<()> {
    let awsvpc = td.network_mode.as_deref() == Some("awsvpc");
    match (awsvpc, n.and_then(|n| n.awsvpc_configuration.as_ref())) {
        (true, None) => Err(ControlError::invalid(
            "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
        )),
        (false, Some(_)) => Err(ControlError::invalid(
            "Network Configuration is not valid for the given networkMode of this task definition.",
        )),
        (true, Some(c)) => {
            let subnets = c.subnets.as_deref().unwrap_or_default();
            if subnets.is_empty() || subnets.len() > 16 {
                return Err(ControlError::invalid(
                    "subnets can not be empty and can have at most 16 items.",
                ));
            }
            if c.security_groups.as_ref().is_some_and(|s| s.len() > 5) {
                return Err(ControlError::invalid(
                    "securityGroups can have at most 5 items.",
                ));
            }
            Ok(())
        }
        (false, None) => Ok(()),
    }
}

impl Control {
    /// Check the parts of RunTask/StartTask that do not depend on placement.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn prepare_launch(
        &self,
        cluster: Option<&str>,
        task_definition: Option<&str>,
        overrides: Option<TaskOverride>,
        group: Option<String>,
        started_by: Option<String>,
        launch_type: Option<String>,
        tags: Option<Vec<Tag>>,
        network: Option<NetworkConfiguration>,
        enable_execute_command: Option<bool>,
    ) -> Result<Launch> {
        let cl = self.active_cluster(cluster).await?;
        let cname = cl.value.cluster_name.clone().unwrap_or_default();
        let tdref = task_definition.unwrap_or_default();
        let td = {
            let d = self.view.data.read();
            self.find_task_def(&d, tdref)
                .map_err(|_| ControlError::invalid("TaskDefinition not found."))?
                .value
        };
        if td.def.status.as_deref() != Some("ACTIVE") {
            return Err(ControlError::invalid(format!(
                "TaskDefinition is {}.",
                td.def.status.as_deref().unwrap_or("not active")
            )));
        }
        let overrides = overrides.unwrap_or_default();
        check_overrides(&overrides, &td.def)?;
        check_network(&td.def, network.as_ref())?;
        // ECS assumes the task's roles for it: they must exist and trust ECS tasks.
        let cluster_arn = self.part.cluster(&cname);
        for role in [
            overrides
                .task_role_arn
                .as_ref()
                .or(td.def.task_role_arn.as_ref()),
            overrides
                .execution_role_arn
                .as_ref()
                .or(td.def.execution_role_arn.as_ref()),
        ]
        .into_iter()
        .flatten()
        {
            self.check_task_role(role, &cluster_arn)?;
        }
        let tags = tags.unwrap_or_default();
        validate_tags(&tags)?;
        if let Some(s) = &started_by
            && s.chars().count() > 128
        {
            return Err(ControlError::invalid(
                "startedBy may be at most 128 characters.",
            ));
        }
        if let Some(g) = &group
            && (g.is_empty() || g.chars().count() > 255)
        {
            return Err(ControlError::invalid(
                "group must be between 1 and 255 characters.",
            ));
        }
        let family = td.def.family.clone().unwrap_or_default();
        let req = taskdef::requirements(&overridden(&td.def, &overrides));
        Ok(Launch {
            cluster: cname,
            overrides,
            req,
            group: group.unwrap_or_else(|| format!("family:{family}")),
            started_by,
            launch_type: launch_type.unwrap_or_else(|| "EC2".into()),
            tags,
            network,
            enable_execute_command: enable_execute_command.unwrap_or(false),
            platform_version: None,
            td,
        })
    }

    /// The task record for one placement.
    pub(crate) fn new_task(
        &self,
        l: &Launch,
        instance: Option<(&str, &sched::Instance)>,
    ) -> TaskRecord {
        self.new_task_with(l, instance, None)
    }

    /// A Fargate task of `l` (no instance: it waits PROVISIONING for platform capacity),
    /// launched through `provider` when a strategy chose one.
    pub(crate) fn new_fargate_task(&self, l: &Launch, provider: Option<&str>) -> TaskRecord {
        self.new_task_with(l, None, provider)
    }

    fn new_task_with(
        &self,
        l: &Launch,
        instance: Option<(&str, &sched::Instance)>,
        provider: Option<&str>,
    ) -> TaskRecord {
        let fargate = l.launch_type == "FARGATE";
        let now = self.now();
        let id = berth_model::arn::new_id(now);
        let arn = self.part.task(&l.cluster, &id);
        let td = &l.td.def;
        let awsvpc = td.network_mode.as_deref() == Some("awsvpc");
        let created = now.as_secs_f64();
        let containers: Vec<Container> = td
            .container_definitions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let co: Option<&ContainerOverride> = l
                    .overrides
                    .container_overrides
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .find(|o| o.name == c.name);
                Container {
                    container_arn: Some(self.part.container(
                        &l.cluster,
                        &id,
                        &berth_model::arn::new_uuid(),
                    )),
                    task_arn: Some(arn.clone()),
                    name: c.name.clone(),
                    image: c.image.clone(),
                    last_status: Some(ContainerStatus::Pending.into()),
                    network_interfaces: Some(vec![]),
                    network_bindings: Some(vec![]),
                    cpu: Some(co.and_then(|o| o.cpu).or(c.cpu).unwrap_or(0).to_string()),
                    memory: co
                        .and_then(|o| o.memory)
                        .or(c.memory)
                        .map(|m| m.to_string()),
                    memory_reservation: co
                        .and_then(|o| o.memory_reservation)
                        .or(c.memory_reservation)
                        .map(|m| m.to_string()),
                    health_status: c
                        .health_check
                        .as_ref()
                        .map(|_| HealthStatus::Unknown.into()),
                    ..Default::default()
                }
            })
            .collect();
        let mut overrides = l.overrides.clone();
        // ECS echoes an override entry for every container.
        let mut cos = overrides.container_overrides.take().unwrap_or_default();
        for c in td.container_definitions.as_deref().unwrap_or_default() {
            if !cos.iter().any(|o| o.name == c.name) {
                cos.push(ContainerOverride {
                    name: c.name.clone(),
                    ..Default::default()
                });
            }
        }
        overrides.container_overrides = Some(cos);
        overrides
            .inference_accelerator_overrides
            .get_or_insert_with(Vec::new);
        let attachments = if awsvpc {
            let subnet = l
                .network
                .as_ref()
                .and_then(|n| n.awsvpc_configuration.as_ref())
                .and_then(|a| a.subnets.as_ref())
                .and_then(|s| s.first().cloned())
                .unwrap_or_default();
            let mut details = vec![KeyValuePair {
                name: Some("subnetId".into()),
                value: Some(subnet),
            }];
            if fargate {
                // The interface berth will make for the task; its MAC and address come from
                // the node that attaches it.
                details.push(KeyValuePair {
                    name: Some("networkInterfaceId".into()),
                    value: Some(eni_id()),
                });
            }
            vec![Attachment {
                id: Some(berth_model::arn::new_uuid()),
                r#type: Some("ElasticNetworkInterface".into()),
                status: Some("PRECREATED".into()),
                details: Some(details),
            }]
        } else {
            vec![]
        };
        let az = instance
            .and_then(|(_, i)| i.attributes.get("ecs.availability-zone").cloned().flatten());
        let task = Task {
            task_arn: Some(arn),
            cluster_arn: Some(self.part.cluster(&l.cluster)),
            task_definition_arn: td.task_definition_arn.clone(),
            container_instance_arn: instance.map(|(arn, _)| arn.to_string()),
            overrides: Some(overrides),
            last_status: Some(
                if awsvpc {
                    TaskStatus::Provisioning
                } else {
                    TaskStatus::Pending
                }
                .into(),
            ),
            desired_status: Some(DesiredStatus::Running.into()),
            cpu: l.overrides.cpu.clone().or(td.cpu.clone()),
            memory: l.overrides.memory.clone().or(td.memory.clone()),
            containers: Some(containers),
            started_by: l.started_by.clone(),
            group: Some(l.group.clone()),
            launch_type: Some(l.launch_type.clone()),
            created_at: Some(created),
            version: Some(1),
            tags: Some(l.tags.clone()),
            attachments: Some(attachments),
            availability_zone: az,
            enable_execute_command: Some(l.enable_execute_command),
            connectivity: instance.map(|_| "CONNECTED".to_string()),
            connectivity_at: instance.map(|_| created),
            health_status: Some(HealthStatus::Unknown.into()),
            ..Default::default()
        };
        let mut task = task;
        if fargate {
            task.capacity_provider_name = provider.map(str::to_string);
            task.platform_version = Some(
                l.platform_version
                    .clone()
                    .unwrap_or_else(|| berth_model::fargate::PLATFORM_VERSION.into()),
            );
            task.platform_family = Some(berth_model::fargate::PLATFORM_FAMILY.into());
            task.ephemeral_storage = Some(EphemeralStorage {
                size_in_gi_b: Some(
                    td.ephemeral_storage
                        .as_ref()
                        .and_then(|e| e.size_in_gi_b)
                        .unwrap_or(berth_model::fargate::DEFAULT_EPHEMERAL_GIB),
                ),
            });
        }
        TaskRecord {
            task,
            reserved: reservation(&l.req),
        }
    }
}
