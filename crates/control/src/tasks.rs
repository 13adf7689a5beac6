//! Task operations: RunTask (placement by the scheduler crate), StartTask (on named
//! instances), StopTask, DescribeTasks, ListTasks, and the agent's reports
//! SubmitTaskStateChange / SubmitContainerStateChange that move tasks through their lifecycle.
//!
//! Placement plans against the view's scheduler picture, which counts the placements in
//! flight (see [`crate::view::PlanGuard`]), so concurrent RunTasks never oversubscribe an
//! instance, and their commits go to the store together.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_model::arn::EcsResource;
use berth_model::status::{
    ContainerStatus, DesiredStatus, HealthStatus, TaskStatus, UnknownStatus, stop_code,
};
use berth_model::taskdef::{self, Requirements};
use berth_model::wire::ecs::{
    Attachment, Container, ContainerInstance, ContainerOverride, DescribeTasksRequest,
    DescribeTasksResponse, Failure, KeyValuePair, ListTasksRequest, ListTasksResponse,
    NetworkConfiguration, PlacementConstraint, PlacementStrategy, RunTaskRequest, RunTaskResponse,
    StartTaskRequest, StartTaskResponse, StopTaskRequest, StopTaskResponse,
    SubmitContainerStateChangeRequest, SubmitContainerStateChangeResponse,
    SubmitTaskStateChangeRequest, SubmitTaskStateChangeResponse, Tag, Task, TaskDefinition,
    TaskOverride,
};
use berth_scheduler as sched;
use berth_store::{Compare, Op, Txn};

use crate::error::{ControlError, Result};
use crate::records::{Reservation, TaskDefRecord, TaskRecord};
use crate::tags::validate_tags;
use crate::view::{Usage, ViewData, instance_id_of};
use crate::{Control, keys, paging};

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
}

/// Tasks placed and not yet committed, with the failures of those that could not be; the
/// plan counts in the scheduler's picture until this is dropped (after the commit).
pub(crate) struct Planned {
    pub(crate) records: Vec<TaskRecord>,
    pub(crate) failures: Vec<Failure>,
    /// The allocation revisions of the instances placed on, for the commit to compare.
    pub(crate) claims: crate::alloc::Claims,
    _guard: crate::view::PlanGuard,
}

/// How many times RunTask/StartTask plan again when another server placed on the same
/// instances first.
const PLACEMENT_ATTEMPTS: usize = 5;

/// The id part of a task record's ARN.
fn task_id(r: &TaskRecord) -> &str {
    r.task
        .task_arn
        .as_deref()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default()
}

/// The store operations that create `recs` (each key must be new).
pub(crate) fn create_ops(cluster: &str, recs: &[TaskRecord]) -> Result<(Vec<Compare>, Vec<Op>)> {
    let mut compare = Vec::with_capacity(recs.len());
    let mut ops = Vec::with_capacity(recs.len());
    for r in recs {
        let key = keys::task(cluster, task_id(r));
        compare.push(Compare::missing(key.clone()));
        ops.push(Op::put(key, serde_json::to_vec(r)?));
    }
    Ok((compare, ops))
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
        }
    }

    /// What one task of this launch needs, as the scheduler sees it.
    fn sched_requirements(&self) -> sched::TaskRequirements {
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

/// A status ECS does not have, refused as ECS refuses a bad parameter.
fn invalid_status(e: UnknownStatus) -> ControlError {
    ControlError::invalid(e.to_string())
}

/// Every attempt lost the race for its instances to another server's placements.
fn placement_contended() -> ControlError {
    ControlError::Server(
        "Placement kept conflicting with placements by other servers; try again.".into(),
    )
}

fn task_failure(arn: Option<String>, reason: &str) -> Failure {
    Failure {
        arn,
        reason: Some(reason.to_string()),
        detail: None,
    }
}

/// The id part of a task ARN, or the id itself.
fn task_id_of<'a>(c: &Control, cluster: &str, s: &'a str) -> Option<&'a str> {
    if s.starts_with("arn:") {
        match c.part.parse_ecs(s) {
            Some(EcsResource::Task {
                cluster: ref tc, ..
            }) if tc == cluster => s.rsplit('/').next(),
            _ => None,
        }
    } else {
        (!s.is_empty() && !s.contains('/')).then_some(s)
    }
}

impl Control {
    /// The scheduler's picture of one container instance.
    pub(crate) fn snapshot(
        &self,
        d: &ViewData,
        cluster: &str,
        id: &str,
        ci: &ContainerInstance,
    ) -> sched::Instance {
        let empty = Usage::default();
        let u = d
            .usage
            .get(&(cluster.to_string(), id.to_string()))
            .unwrap_or(&empty);
        crate::view::sched_instance(id, ci, u)
    }

    /// Check the parts of RunTask/StartTask that do not depend on placement.
    #[allow(clippy::too_many_arguments)]
    async fn prepare_launch(
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
            td,
        })
    }

    /// The task record for one placement.
    fn new_task(&self, l: &Launch, instance: Option<(&str, &sched::Instance)>) -> TaskRecord {
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
            vec![Attachment {
                id: Some(berth_model::arn::new_uuid()),
                r#type: Some("ElasticNetworkInterface".into()),
                status: Some("PRECREATED".into()),
                details: Some(vec![KeyValuePair {
                    name: Some("subnetId".into()),
                    value: Some(subnet),
                }]),
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
        TaskRecord {
            task,
            reserved: reservation(&l.req),
        }
    }

    /// Commit a plan's new tasks in one transaction (every key is new, every instance placed
    /// on still at the allocation revision the plan saw). `false`: another server placed on
    /// one of those instances first; nothing was written, plan again.
    async fn commit_tasks(&self, cluster: &str, p: &mut Planned) -> Result<bool> {
        let (mut compare, mut success) = create_ops(cluster, &p.records)?;
        let (c, o) = p.claims.guard().await;
        compare.extend(c);
        success.extend(o);
        let resp = self
            .commit(Txn {
                compare,
                success,
                failure: vec![],
            })
            .await?;
        p.claims.settle(resp.succeeded.then_some(resp.revision));
        Ok(resp.succeeded)
    }

    /// Place `count` tasks of `l` by the strategies and constraints, against the scheduler's
    /// picture (committed tasks and every plan in flight).
    pub(crate) fn plan_placement(
        &self,
        l: &Launch,
        count: usize,
        strategies: &[sched::PlacementStrategy],
        constraints: &[sched::PlacementConstraint],
    ) -> Planned {
        let treq = l.sched_requirements();
        let mut d = self.view.data.write();
        let mut empty = crate::view::SchedCluster::default();
        let sc = d.sched.get_mut(&l.cluster).unwrap_or(&mut empty);
        let spread: Vec<_> = strategies
            .iter()
            .filter_map(|s| match s {
                sched::PlacementStrategy::Spread(f) => Some(sc.spread_values(f)),
                _ => None,
            })
            .collect();
        let known: Vec<&sched::SpreadValues> = spread.iter().map(|v| &**v).collect();
        let instances = &sc.instances;
        let mut rng = rand::rng();
        let placement = sched::place_with(
            instances,
            Default::default(),
            &known,
            &treq,
            count,
            strategies,
            constraints,
            &mut rng,
        );
        let records: Vec<TaskRecord> = placement
            .placed
            .iter()
            .map(|&i| self.new_task(l, Some((&instances[i].arn, &instances[i]))))
            .collect();
        let mut failures: Vec<Failure> = Vec::new();
        for f in placement.failures {
            let fl = task_failure(f.arn, &f.reason);
            if !failures.contains(&fl) {
                failures.push(fl);
            }
        }
        let ids: Vec<String> = placement
            .placed
            .iter()
            .map(|&i| instances[i].id.clone())
            .collect();
        self.planned(&mut d, l, &treq, ids, records, failures)
    }

    /// Count placed tasks (`ids[i]`: the instance of `records[i]`) in the scheduler's picture
    /// until they are applied or the returned plan drops.
    fn planned(
        &self,
        d: &mut ViewData,
        l: &Launch,
        treq: &sched::TaskRequirements,
        ids: Vec<String>,
        records: Vec<TaskRecord>,
        failures: Vec<Failure>,
    ) -> Planned {
        let placed: Vec<(String, String)> = ids
            .iter()
            .cloned()
            .zip(records.iter().map(|r| task_id(r).to_string()))
            .collect();
        let plan = d.add_plan(&l.cluster, &placed, treq);
        let claims = crate::alloc::Claims::take(d, &self.view, &l.cluster, &ids);
        Planned {
            records,
            failures,
            claims,
            _guard: crate::view::PlanGuard {
                view: self.view.clone(),
                cluster: l.cluster.clone(),
                ids,
                plan,
            },
        }
    }

    /// One task of `l` on each of the named instances (ARNs or ids), where it fits.
    pub(crate) fn plan_on_instances(&self, l: &Launch, targets: &[String]) -> Planned {
        let mut d = self.view.data.write();
        let empty = crate::view::SchedCluster::default();
        let sc = d.sched.get(&l.cluster).unwrap_or(&empty);
        let mut placed_ids = Vec::new();
        let mut records = Vec::new();
        let mut failures = Vec::new();
        let treq = l.sched_requirements();
        for t in targets {
            let hit = self.instance_id(&l.cluster, t).and_then(|id| {
                let i = sc.position(id)?;
                let snap = &sc.instances[i];
                (snap.status == "ACTIVE").then(|| snap.clone())
            });
            let Some(mut snap) = hit else {
                failures.push(task_failure(Some(t.clone()), "MISSING"));
                continue;
            };
            // Account for tasks this same call already put there.
            for r in &records {
                let r: &TaskRecord = r;
                if r.task.container_instance_arn.as_deref() == Some(snap.arn.as_str()) {
                    sched::reserve(&mut snap, &treq);
                }
            }
            match sched::fits(&snap, &treq) {
                Ok(()) => {
                    placed_ids.push(snap.id.clone());
                    records.push(self.new_task(l, Some((&snap.arn.clone(), &snap))))
                }
                Err(reason) => failures.push(task_failure(Some(snap.arn.clone()), reason)),
            }
        }
        self.planned(&mut d, l, &treq, placed_ids, records, failures)
    }

    pub async fn run_task(&self, req: RunTaskRequest) -> Result<RunTaskResponse> {
        let count = req.count.unwrap_or(1);
        if !(1..=MAX_RUN_COUNT).contains(&count) {
            return Err(ControlError::invalid(format!(
                "count must be between 1 and {MAX_RUN_COUNT}."
            )));
        }
        if req.launch_type.is_some()
            && req
                .capacity_provider_strategy
                .as_ref()
                .is_some_and(|c| !c.is_empty())
        {
            return Err(ControlError::invalid(
                "Specifying both a launch type and capacity provider strategy is not supported.",
            ));
        }
        let strategies = check_strategies(req.placement_strategy.as_deref().unwrap_or_default())?;
        let l = self
            .prepare_launch(
                req.cluster.as_deref(),
                req.task_definition.as_deref(),
                req.overrides.clone(),
                req.group.clone(),
                req.started_by.clone(),
                req.launch_type.clone(),
                req.tags.clone(),
                req.network_configuration.clone(),
                req.enable_execute_command,
            )
            .await?;
        let constraints = check_constraints(
            req.placement_constraints.as_deref().unwrap_or_default(),
            &l.td.def,
        )?;
        if l.launch_type == "FARGATE" {
            // Serverless capacity comes with the Fargate part of berth; until then say so the
            // way ECS reports a launch that cannot be satisfied.
            return Ok(RunTaskResponse {
                tasks: Some(vec![]),
                failures: Some(vec![task_failure(
                    None,
                    "FARGATE capacity is not available in this berth installation yet.",
                )]),
            });
        }
        let strategies = if strategies.is_empty() {
            sched::default_run_task_strategy()
        } else {
            strategies
        };
        for _ in 0..PLACEMENT_ATTEMPTS {
            let mut p = self.plan_placement(&l, count as usize, &strategies, &constraints);
            if p.records.is_empty() || self.commit_tasks(&l.cluster, &mut p).await? {
                return Ok(RunTaskResponse {
                    tasks: Some(
                        std::mem::take(&mut p.records)
                            .into_iter()
                            .map(|r| r.task)
                            .collect(),
                    ),
                    failures: Some(std::mem::take(&mut p.failures)),
                });
            }
        }
        Err(placement_contended())
    }

    pub async fn start_task(&self, req: StartTaskRequest) -> Result<StartTaskResponse> {
        let targets = req.container_instances.clone().unwrap_or_default();
        if targets.is_empty() || targets.len() > 10 {
            return Err(ControlError::invalid(
                "containerInstances must contain between 1 and 10 elements.",
            ));
        }
        let l = self
            .prepare_launch(
                req.cluster.as_deref(),
                req.task_definition.as_deref(),
                req.overrides.clone(),
                req.group.clone(),
                req.started_by.clone(),
                Some("EC2".into()),
                req.tags.clone(),
                req.network_configuration.clone(),
                req.enable_execute_command,
            )
            .await?;
        for _ in 0..PLACEMENT_ATTEMPTS {
            let mut p = self.plan_on_instances(&l, &targets);
            if p.records.is_empty() || self.commit_tasks(&l.cluster, &mut p).await? {
                return Ok(StartTaskResponse {
                    tasks: Some(
                        std::mem::take(&mut p.records)
                            .into_iter()
                            .map(|r| r.task)
                            .collect(),
                    ),
                    failures: Some(std::mem::take(&mut p.failures)),
                });
            }
        }
        Err(placement_contended())
    }

    pub async fn stop_task(&self, req: StopTaskRequest) -> Result<StopTaskResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        if !self.view.data.read().clusters.contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let given = req.task.clone().unwrap_or_default();
        let id = task_id_of(self, &cname, &given)
            .ok_or_else(|| ControlError::invalid("The referenced task was not found."))?
            .to_string();
        let reason = req.reason.clone().unwrap_or_default();
        if reason.chars().count() > 255 {
            return Err(ControlError::invalid(
                "reason may be at most 255 characters.",
            ));
        }
        let rec = self
            .modify(
                &keys::task(&cname, &id),
                |d| d.tasks.get(&cname)?.get(&id).map(|e| e.entry()),
                || ControlError::invalid("The referenced task was not found."),
                |r| {
                    if DesiredStatus::of(r.task.desired_status.as_deref())
                        == Some(DesiredStatus::Stopped)
                    {
                        return Ok(());
                    }
                    let t = &mut r.task;
                    let at = self.now().as_secs_f64();
                    t.desired_status = Some(DesiredStatus::Stopped.into());
                    t.stop_code = Some(stop_code::USER_INITIATED.into());
                    t.stopped_reason = Some(if reason.is_empty() {
                        "Task stopped by user".into()
                    } else {
                        reason.clone()
                    });
                    t.stopping_at = Some(at);
                    t.version = Some(t.version.unwrap_or(0) + 1);
                    // A task no agent has started yet has nothing to stop: it is done.
                    if t.container_instance_arn.is_none() {
                        finish(t, at);
                    }
                    Ok(())
                },
            )
            .await?;
        Ok(StopTaskResponse {
            task: Some(rec.task),
        })
    }

    pub async fn describe_tasks(&self, req: DescribeTasksRequest) -> Result<DescribeTasksResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let list = req.tasks.clone().unwrap_or_default();
        if list.is_empty() {
            return Err(ControlError::invalid("Tasks cannot be empty."));
        }
        if list.len() > 100 {
            return Err(ControlError::invalid(
                "Tasks cannot have more than 100 elements.",
            ));
        }
        let with_tags = paging::includes(req.include.as_deref(), "TAGS");
        let d = self.view.data.read();
        if !d.clusters.contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let mut tasks = Vec::new();
        let mut failures = Vec::new();
        for s in &list {
            let hit = task_id_of(self, &cname, s).and_then(|id| d.tasks.get(&cname)?.get(id));
            match hit {
                Some(e) => {
                    let mut t = e.record().task;
                    if !with_tags {
                        t.tags = None;
                    }
                    tasks.push(t);
                }
                None => failures.push(task_failure(
                    Some(if s.starts_with("arn:") {
                        s.clone()
                    } else {
                        self.part.task(&cname, s)
                    }),
                    "MISSING",
                )),
            }
        }
        Ok(DescribeTasksResponse {
            tasks: Some(tasks),
            failures: Some(failures),
        })
    }

    pub async fn list_tasks(&self, req: ListTasksRequest) -> Result<ListTasksResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let limit = paging::max_results(req.max_results, 100, 100)?;
        let after = paging::decode(req.next_token.as_deref())?;
        if req.family.is_some() && req.service_name.is_some() {
            return Err(ControlError::invalid(
                "family and serviceName cannot both be specified.",
            ));
        }
        let desired = match req.desired_status.as_deref() {
            None => DesiredStatus::Running,
            Some(s) => s.parse().map_err(invalid_status)?,
        };
        let d = self.view.data.read();
        if !d.clusters.contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let inst_id = req
            .container_instance
            .as_deref()
            .map(|ci| instance_id_of(ci).unwrap_or(ci).to_string());
        let family_prefix = req
            .family
            .as_deref()
            .map(|f| self.part.task_definition(f, 0))
            .map(|a| a.trim_end_matches(":0").to_string() + ":");
        let group = req.service_name.as_deref().map(|s| {
            let name = s.rsplit('/').next().unwrap_or(s);
            format!("service:{name}")
        });
        let empty = BTreeMap::new();
        let m = d.tasks.get(&cname).unwrap_or(&empty);
        let (arns, next) = paging::page(
            m.iter()
                .filter(|(_, e)| {
                    let t = &e.summary;
                    t.desired_status == desired
                        && inst_id
                            .as_ref()
                            .is_none_or(|a| t.instance_id.as_ref() == Some(a))
                        && family_prefix.as_ref().is_none_or(|p| {
                            t.task_definition_arn
                                .as_deref()
                                .is_some_and(|a| a.starts_with(p.as_str()))
                        })
                        && req
                            .started_by
                            .as_ref()
                            .is_none_or(|s| t.started_by.as_ref() == Some(s))
                        && group.as_ref().is_none_or(|g| t.group.as_ref() == Some(g))
                        && req
                            .launch_type
                            .as_ref()
                            .is_none_or(|lt| t.launch_type == lt.as_str())
                })
                .map(|(id, e)| (id.clone(), e.summary.arn.clone())),
            after.as_deref(),
            limit,
        );
        Ok(ListTasksResponse {
            task_arns: Some(arns),
            next_token: next,
        })
    }

    /// A task state report from the agent running it.
    pub async fn submit_task_state_change(
        &self,
        req: SubmitTaskStateChangeRequest,
    ) -> Result<SubmitTaskStateChangeResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let given = req.task.clone().unwrap_or_default();
        let id = task_id_of(self, &cname, &given)
            .ok_or_else(|| ControlError::invalid("The referenced task was not found."))?
            .to_string();
        // Statuses are read at the edge: a report with one ECS does not have changes nothing.
        let new_status: Option<TaskStatus> = req
            .status
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(invalid_status)?;
        let reported = req.containers.as_deref().unwrap_or_default();
        let container_statuses: Vec<Option<ContainerStatus>> = reported
            .iter()
            .map(|c| c.status.as_deref().map(str::parse).transpose())
            .collect::<std::result::Result<_, _>>()
            .map_err(invalid_status)?;
        self.modify(
            &keys::task(&cname, &id),
            |d| d.tasks.get(&cname)?.get(&id).map(|e| e.entry()),
            || ControlError::invalid("The referenced task was not found."),
            |r| {
                let t = &mut r.task;
                let at = self.now().as_secs_f64();
                let mut changed = false;
                for (c, status) in reported.iter().zip(&container_statuses) {
                    changed |= apply_container_report(
                        t,
                        c.container_name.as_deref(),
                        *status,
                        c.exit_code,
                        c.reason.as_deref(),
                        c.runtime_id.as_deref(),
                        c.image_digest.as_deref(),
                        c.network_bindings.as_ref(),
                    );
                }
                if let Some(p) = req.pull_started_at {
                    t.pull_started_at.get_or_insert(p);
                }
                if let Some(p) = req.pull_stopped_at {
                    t.pull_stopped_at.get_or_insert(p);
                }
                if let Some(p) = req.execution_stopped_at {
                    t.execution_stopped_at.get_or_insert(p);
                }
                if let Some(to) = new_status {
                    changed |= apply_task_status(t, to, req.reason.as_deref(), at);
                }
                if changed {
                    t.version = Some(t.version.unwrap_or(0) + 1);
                }
                Ok(())
            },
        )
        .await?;
        Ok(SubmitTaskStateChangeResponse {
            acknowledgment: Some("ACK".into()),
        })
    }

    /// A single container's state report from the agent running it.
    pub async fn submit_container_state_change(
        &self,
        req: SubmitContainerStateChangeRequest,
    ) -> Result<SubmitContainerStateChangeResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let given = req.task.clone().unwrap_or_default();
        let id = task_id_of(self, &cname, &given)
            .ok_or_else(|| ControlError::invalid("The referenced task was not found."))?
            .to_string();
        let status: Option<ContainerStatus> = req
            .status
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(invalid_status)?;
        self.modify(
            &keys::task(&cname, &id),
            |d| d.tasks.get(&cname)?.get(&id).map(|e| e.entry()),
            || ControlError::invalid("The referenced task was not found."),
            |r| {
                let t = &mut r.task;
                let known = t
                    .containers
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.name == req.container_name);
                if !known {
                    return Err(ControlError::invalid(format!(
                        "Container {} is not part of the task.",
                        req.container_name.as_deref().unwrap_or("null")
                    )));
                }
                if apply_container_report(
                    t,
                    req.container_name.as_deref(),
                    status,
                    req.exit_code,
                    req.reason.as_deref(),
                    req.runtime_id.as_deref(),
                    None,
                    req.network_bindings.as_ref(),
                ) {
                    t.version = Some(t.version.unwrap_or(0) + 1);
                }
                Ok(())
            },
        )
        .await?;
        Ok(SubmitContainerStateChangeResponse {
            acknowledgment: Some("ACK".into()),
        })
    }
}

/// Mark a task STOPPED now (and its containers that never reported). A stopped task is
/// also desired STOPPED, as ECS shows it (and lists it).
pub(crate) fn finish(t: &mut Task, at: f64) {
    t.last_status = Some(TaskStatus::Stopped.into());
    t.desired_status = Some(DesiredStatus::Stopped.into());
    t.stopped_at.get_or_insert(at);
    t.execution_stopped_at.get_or_insert(at);
    t.connectivity = None;
    if let Some(cs) = t.containers.as_mut() {
        for c in cs {
            c.last_status = Some(ContainerStatus::Stopped.into());
        }
    }
}

/// Move a task to the status its agent reported, if that is forward; returns whether it
/// moved. A record whose status cannot be read (none can: every writer checks it) is not
/// moved.
fn apply_task_status(t: &mut Task, to: TaskStatus, reason: Option<&str>, at: f64) -> bool {
    let cur = match t.last_status.as_deref() {
        None => TaskStatus::Pending,
        Some(s) => match s.parse::<TaskStatus>() {
            Ok(cur) => cur,
            Err(_) => return false,
        },
    };
    if to == cur || !cur.can_move_to(to) {
        return false;
    }
    t.last_status = Some(to.into());
    match to {
        TaskStatus::Running => {
            t.started_at.get_or_insert(at);
        }
        TaskStatus::Stopping => {
            t.stopping_at.get_or_insert(at);
        }
        TaskStatus::Stopped => {
            if t.stop_code.is_none() {
                // A task that never ran failed to start (image pull, container creation);
                // one that ran lost an essential container.
                t.stop_code = Some(
                    if t.started_at.is_none() {
                        stop_code::TASK_FAILED_TO_START
                    } else {
                        stop_code::ESSENTIAL_CONTAINER_EXITED
                    }
                    .into(),
                );
            }
            if t.stopped_reason.is_none() {
                // The ECS agent sends an empty reason when it has none.
                t.stopped_reason = Some(
                    reason
                        .filter(|r| !r.is_empty())
                        .unwrap_or("Essential container in task exited")
                        .to_string(),
                );
            }
            finish(t, at);
        }
        _ => {}
    }
    true
}

/// Fold one container report into the task; returns whether anything changed.
#[allow(clippy::too_many_arguments)]
fn apply_container_report(
    t: &mut Task,
    name: Option<&str>,
    status: Option<ContainerStatus>,
    exit_code: Option<i32>,
    reason: Option<&str>,
    runtime_id: Option<&str>,
    image_digest: Option<&str>,
    bindings: Option<&Vec<berth_model::wire::ecs::NetworkBinding>>,
) -> bool {
    let Some(cs) = t.containers.as_mut() else {
        return false;
    };
    let Some(c) = cs.iter_mut().find(|c| c.name.as_deref() == name) else {
        return false;
    };
    let before = c.clone();
    if let Some(s) = status {
        let cur = match c.last_status.as_deref() {
            None => Some(ContainerStatus::Pending),
            Some(v) => v.parse().ok(),
        };
        if cur.is_some_and(|cur| cur.can_move_to(s)) {
            c.last_status = Some(s.into());
        }
    }
    if exit_code.is_some() {
        c.exit_code = exit_code;
    }
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        c.reason = Some(r.chars().take(255).collect());
    }
    if let Some(r) = runtime_id {
        c.runtime_id = Some(r.to_string());
    }
    if let Some(d) = image_digest {
        c.image_digest = Some(d.to_string());
    }
    if let Some(b) = bindings {
        c.network_bindings = Some(b.clone());
    }
    *c != before
}
