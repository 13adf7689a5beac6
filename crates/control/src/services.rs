//! Service operations: CreateService, UpdateService, DeleteService, DescribeServices,
//! ListServices. They store what the user asked for (a new deployment when the task
//! definition, placement, network, capacity provider strategy, platform version or
//! `forceNewDeployment` asks for one; Fargate's rules checked by [`crate::fargate`]); the service
//! controller ([`crate::controller`]) does the rest. Counts are filled from the service's
//! tasks when a service is returned.

use std::collections::BTreeMap;

use berth_model::arn::EcsResource;
use berth_model::status::{DeploymentStatus, ServiceStatus};
use berth_model::wire::ecs::{
    CreateServiceRequest, CreateServiceResponse, DeleteServiceRequest, DeleteServiceResponse,
    DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentController,
    DescribeServicesRequest, DescribeServicesResponse, Failure, ListServicesRequest,
    ListServicesResponse, Service, UpdateServiceRequest, UpdateServiceResponse,
};
use berth_store::{Compare, Op, Txn};

use crate::controller::{daemon_instances, service_tasks};
use crate::error::{ControlError, Result};
use crate::records::{ServiceControl, ServiceRecord};
use crate::rollout;
use crate::tags::validate_tags;
use crate::view::{Entry, ViewData};
use crate::{Control, keys, paging};

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Check a deployment configuration and fill in ECS's defaults.
fn deployment_configuration(
    given: Option<DeploymentConfiguration>,
    daemon: bool,
) -> Result<DeploymentConfiguration> {
    let mut c = given.unwrap_or_default();
    let min = *c
        .minimum_healthy_percent
        .get_or_insert(if daemon { 0 } else { 100 });
    let max = *c
        .maximum_percent
        .get_or_insert(if daemon { 100 } else { 200 });
    if !(0..=100).contains(&min) {
        return Err(ControlError::invalid(
            "minimumHealthyPercent must be between 0 and 100.",
        ));
    }
    if max < 0 || max < min {
        return Err(ControlError::invalid(
            "maximumPercent must be at least minimumHealthyPercent.",
        ));
    }
    if daemon && max != 100 {
        return Err(ControlError::invalid(
            "The daemon scheduling strategy requires a maximumPercent of 100.",
        ));
    }
    let cb = c
        .deployment_circuit_breaker
        .get_or_insert(DeploymentCircuitBreaker {
            enable: Some(false),
            rollback: Some(false),
        });
    if cb.enable.is_none() || cb.rollback.is_none() {
        return Err(ControlError::invalid(
            "deploymentCircuitBreaker requires both enable and rollback.",
        ));
    }
    if c.alarms.as_ref().is_some_and(|a| a.enable == Some(true)) {
        return Err(ControlError::invalid(
            "Deployment alarms are not supported by berth yet.",
        ));
    }
    if let Some(s) = c.strategy.as_deref()
        && s != "ROLLING"
    {
        return Err(ControlError::invalid(format!(
            "Deployment strategy {s} is not supported by berth yet; ROLLING is."
        )));
    }
    Ok(c)
}

fn check_propagate(p: Option<&str>) -> Result<()> {
    match p {
        None | Some("TASK_DEFINITION") | Some("SERVICE") | Some("NONE") => Ok(()),
        Some(v) => Err(ControlError::invalid(format!(
            "Invalid propagateTags value: {v}. Valid values are TASK_DEFINITION, SERVICE and NONE."
        ))),
    }
}

/// What CreateService and UpdateService refuse for now (load balancers, service registries)
/// and a negative grace period.
fn check_not_yet(
    load_balancers: Option<&[berth_model::wire::ecs::LoadBalancer]>,
    registries: Option<&[berth_model::wire::ecs::ServiceRegistry]>,
    grace: Option<i32>,
) -> Result<()> {
    if load_balancers.is_some_and(|l| !l.is_empty()) || registries.is_some_and(|l| !l.is_empty()) {
        return Err(ControlError::invalid(
            "Load balancers and service registries are not supported by berth yet.",
        ));
    }
    if grace.is_some_and(|g| g < 0) {
        return Err(ControlError::invalid(
            "healthCheckGracePeriodSeconds must be 0 or more.",
        ));
    }
    Ok(())
}

impl Control {
    /// The service name in a name or ARN, checked against the cluster.
    fn service_name_of<'a>(&self, cluster: &str, s: &'a str) -> Result<&'a str> {
        if s.starts_with("arn:") {
            match self.part.parse_ecs(s) {
                Some(EcsResource::Service { cluster: ref c, .. }) if c == cluster => {
                    Ok(s.rsplit('/').next().unwrap_or_default())
                }
                Some(EcsResource::Service { .. }) => Err(ControlError::invalid(
                    "The service ARN names another cluster.",
                )),
                _ => Err(ControlError::invalid(format!("Invalid service ARN: {s}"))),
            }
        } else if valid_name(s) {
            Ok(s)
        } else {
            Err(ControlError::ServiceNotFound)
        }
    }

    /// The cluster and service name an Update/DeleteService request names.
    fn service_target(
        &self,
        cluster: Option<&str>,
        service: Option<&str>,
    ) -> Result<(String, String)> {
        let cname = self.cluster_name_of(cluster)?.to_string();
        if !self.view.data.read().clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let name = self
            .service_name_of(&cname, service.unwrap_or_default())?
            .to_string();
        Ok((cname, name))
    }

    /// The service as DescribeServices shows it: counts filled from its tasks.
    pub(crate) fn service_view(
        &self,
        d: &ViewData,
        cluster: &str,
        rec: &ServiceRecord,
        with_tags: bool,
    ) -> Service {
        let mut s = rec.service.clone();
        let name = s.service_name.clone().unwrap_or_default();
        let tasks = service_tasks(d, cluster, &name);
        let daemon_desired = (rollout::is_daemon(&s)
            && rollout::service_status(&s) == Some(ServiceStatus::Active))
        .then(|| {
            let cons = s
                .task_definition
                .as_deref()
                .and_then(|a| self.find_task_def(d, a).ok())
                .and_then(|td| {
                    crate::tasks::check_constraints(
                        s.placement_constraints.as_deref().unwrap_or_default(),
                        &td.value.def,
                    )
                    .ok()
                })
                .unwrap_or_default();
            daemon_instances(d, cluster, &cons).len() as i32
        });
        rollout::fill_counts(&mut s, &tasks, daemon_desired);
        if !with_tags {
            s.tags = None;
        }
        s
    }

    fn service_entry(
        &self,
        cluster: &str,
        name: &str,
    ) -> impl Fn(&ViewData) -> Option<Entry<ServiceRecord>> {
        let (cluster, name) = (cluster.to_string(), name.to_string());
        move |d: &ViewData| d.services().get(&cluster)?.get(&name).cloned()
    }

    pub async fn create_service(&self, req: CreateServiceRequest) -> Result<CreateServiceResponse> {
        let cl = self.active_cluster(req.cluster.as_deref()).await?;
        let cluster = cl.value.cluster_name.clone().unwrap_or_default();
        let name = req.service_name.clone().unwrap_or_default();
        if !valid_name(&name) {
            return Err(ControlError::invalid(
                "Service names may contain only letters, numbers, underscores and hyphens, up to 255 characters.",
            ));
        }
        let strategy = req
            .scheduling_strategy
            .clone()
            .unwrap_or_else(|| "REPLICA".into());
        let daemon = match strategy.as_str() {
            "REPLICA" => false,
            "DAEMON" => true,
            other => {
                return Err(ControlError::invalid(format!(
                    "Invalid schedulingStrategy: {other}. Valid values are REPLICA and DAEMON."
                )));
            }
        };
        let desired = match (daemon, req.desired_count) {
            (true, Some(_)) => {
                return Err(ControlError::invalid(
                    "The daemon scheduling strategy does not support a desired count for services.",
                ));
            }
            (true, None) => 0,
            (false, None) => {
                return Err(ControlError::invalid(
                    "desiredCount is required for services with the REPLICA scheduling strategy.",
                ));
            }
            (false, Some(n)) if n < 0 => {
                return Err(ControlError::invalid("desiredCount must be 0 or more."));
            }
            (false, Some(n)) => n,
        };
        if daemon
            && req
                .placement_strategy
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        {
            return Err(ControlError::invalid(
                "The daemon scheduling strategy does not support placement strategies.",
            ));
        }
        let td_ref = req.task_definition.clone().unwrap_or_default();
        if td_ref.is_empty() {
            return Err(ControlError::invalid("TaskDefinition can not be blank."));
        }
        let td = {
            let d = self.view.data.read();
            self.find_task_def(&d, &td_ref)
                .map_err(|_| ControlError::invalid("TaskDefinition not found."))?
                .value
        };
        if td.def.status.as_deref() != Some("ACTIVE") {
            return Err(ControlError::invalid("TaskDefinition is inactive."));
        }
        crate::tasks::check_strategies(req.placement_strategy.as_deref().unwrap_or_default())?;
        crate::tasks::check_constraints(
            req.placement_constraints.as_deref().unwrap_or_default(),
            &td.def,
        )?;
        crate::tasks::check_network(&td.def, req.network_configuration.as_ref())?;
        let resolved = crate::fargate::resolve(
            &cl.value,
            req.launch_type.as_deref(),
            req.capacity_provider_strategy.as_deref(),
        )?;
        crate::fargate::check_assign_public_ip(req.network_configuration.as_ref())?;
        let platform_version = if resolved.is_fargate() {
            if daemon {
                return Err(ControlError::invalid(
                    "The daemon scheduling strategy is not supported with FARGATE launch type.",
                ));
            }
            crate::fargate::check_launch(
                &td.def,
                (None, None),
                req.network_configuration.as_ref(),
                req.placement_constraints.as_deref().unwrap_or_default(),
                req.placement_strategy.as_deref().unwrap_or_default(),
                req.platform_version.as_deref(),
            )?;
            Some(
                req.platform_version
                    .clone()
                    .unwrap_or_else(|| "LATEST".into()),
            )
        } else {
            crate::fargate::check_no_platform_version(req.platform_version.as_deref())?;
            None
        };
        // A strategy given (or the cluster's default) is what the service keeps; a launch
        // type otherwise.
        let by_strategy = !resolved.strategy.is_empty();
        let launch_type = (!by_strategy).then(|| resolved.launch_type.clone());
        check_not_yet(
            req.load_balancers.as_deref(),
            req.service_registries.as_deref(),
            req.health_check_grace_period_seconds,
        )?;
        if let Some(dc) = &req.deployment_controller
            && dc.r#type.as_deref() != Some("ECS")
        {
            return Err(ControlError::invalid(
                "Only the ECS (rolling update) deployment controller is supported by berth.",
            ));
        }
        check_propagate(req.propagate_tags.as_deref())?;
        let tags = req.tags.clone().unwrap_or_default();
        validate_tags(&tags)?;
        let cfg = deployment_configuration(req.deployment_configuration.clone(), daemon)?;
        let at = self.now().as_secs_f64();
        let mut svc = Service {
            service_arn: Some(self.part.service(&cluster, &name)),
            service_name: Some(name.clone()),
            cluster_arn: Some(self.part.cluster(&cluster)),
            load_balancers: Some(vec![]),
            service_registries: Some(vec![]),
            status: Some(ServiceStatus::Active.into()),
            desired_count: Some(desired),
            running_count: Some(0),
            pending_count: Some(0),
            launch_type,
            capacity_provider_strategy: by_strategy.then(|| resolved.strategy.clone()),
            platform_version: platform_version.clone(),
            platform_family: platform_version
                .as_ref()
                .map(|_| berth_model::fargate::PLATFORM_FAMILY.to_string()),
            task_definition: td.def.task_definition_arn.clone(),
            deployment_configuration: Some(cfg),
            events: Some(vec![]),
            created_at: Some(at),
            placement_constraints: Some(req.placement_constraints.clone().unwrap_or_default()),
            placement_strategy: Some(req.placement_strategy.clone().unwrap_or_default()),
            network_configuration: req.network_configuration.clone(),
            health_check_grace_period_seconds: Some(
                req.health_check_grace_period_seconds.unwrap_or(0),
            ),
            scheduling_strategy: Some(strategy),
            deployment_controller: Some(DeploymentController {
                r#type: Some("ECS".into()),
            }),
            tags: Some(tags),
            created_by: Some(format!("arn:aws:iam::{}:root", self.part.account_id)),
            enable_ecs_managed_tags: Some(req.enable_ecs_managed_tags.unwrap_or(false)),
            propagate_tags: Some(req.propagate_tags.clone().unwrap_or_else(|| "NONE".into())),
            enable_execute_command: Some(req.enable_execute_command.unwrap_or(false)),
            ..Default::default()
        };
        let dep = rollout::new_deployment(&svc, at);
        svc.deployments = Some(vec![dep]);
        let key = keys::service(&cluster, &name);
        let rec = ServiceRecord {
            service: svc,
            ctl: ServiceControl::default(),
        };
        let existing = self.service_entry(&cluster, &name)(&self.view.data.read());
        let compare = match existing {
            None => Compare::missing(key.clone()),
            Some(e)
                if rollout::service_status(&e.value.service) == Some(ServiceStatus::Inactive) =>
            {
                Compare::mod_revision_is(key.clone(), e.rev)
            }
            Some(_) => {
                return Err(ControlError::invalid(
                    "Creation of service was not idempotent.",
                ));
            }
        };
        let resp = self
            .commit(Txn {
                compare: vec![compare],
                success: vec![Op::put(key, serde_json::to_vec(&rec)?)],
                failure: vec![],
            })
            .await?;
        if !resp.succeeded {
            return Err(ControlError::invalid(
                "Creation of service was not idempotent.",
            ));
        }
        let d = self.view.data.read();
        Ok(CreateServiceResponse {
            service: Some(self.service_view(&d, &cluster, &rec, true)),
        })
    }

    pub async fn update_service(&self, req: UpdateServiceRequest) -> Result<UpdateServiceResponse> {
        let (cname, name) = self.service_target(req.cluster.as_deref(), req.service.as_deref())?;
        // Resolve what does not depend on the stored service first.
        let new_td = match req.task_definition.as_deref() {
            None => None,
            Some(r) => {
                let d = self.view.data.read();
                let td = self
                    .find_task_def(&d, r)
                    .map_err(|_| ControlError::invalid("TaskDefinition not found."))?
                    .value;
                if td.def.status.as_deref() != Some("ACTIVE") {
                    return Err(ControlError::invalid("TaskDefinition is inactive."));
                }
                Some(td)
            }
        };
        if let Some(s) = &req.placement_strategy {
            crate::tasks::check_strategies(s)?;
        }
        check_propagate(req.propagate_tags.as_deref())?;
        check_not_yet(
            req.load_balancers.as_deref(),
            req.service_registries.as_deref(),
            req.health_check_grace_period_seconds,
        )?;
        crate::fargate::check_assign_public_ip(req.network_configuration.as_ref())?;
        let cluster_rec = self
            .view
            .data
            .read()
            .clusters()
            .get(&cname)
            .map(|e| e.value.clone())
            .ok_or(ControlError::ClusterNotFound)?;
        let new_strategy = match req.capacity_provider_strategy.as_deref() {
            Some(s) if !s.is_empty() => {
                Some(crate::fargate::resolve(&cluster_rec, None, Some(s))?.strategy)
            }
            _ => None,
        };
        let key = keys::service(&cname, &name);
        let rec = self
            .modify(
                &key,
                self.service_entry(&cname, &name),
                || ControlError::ServiceNotFound,
                |r| {
                    let s = &mut r.service;
                    if rollout::service_status(s) != Some(ServiceStatus::Active) {
                        return Err(ControlError::ServiceNotActive);
                    }
                    let daemon = rollout::is_daemon(s);
                    let mut redeploy = req.force_new_deployment == Some(true);
                    if let Some(n) = req.desired_count {
                        if daemon {
                            return Err(ControlError::invalid(
                                "The daemon scheduling strategy does not support a desired count for services.",
                            ));
                        }
                        if n < 0 {
                            return Err(ControlError::invalid("desiredCount must be 0 or more."));
                        }
                        s.desired_count = Some(n);
                    }
                    let td_def = match &new_td {
                        Some(td) => {
                            if td.def.task_definition_arn != s.task_definition {
                                s.task_definition = td.def.task_definition_arn.clone();
                                redeploy = true;
                            }
                            Some(td.def.clone())
                        }
                        None => None,
                    };
                    if let Some(given) = &req.deployment_configuration {
                        let mut merged = s.deployment_configuration.clone().unwrap_or_default();
                        if given.maximum_percent.is_some() {
                            merged.maximum_percent = given.maximum_percent;
                        }
                        if given.minimum_healthy_percent.is_some() {
                            merged.minimum_healthy_percent = given.minimum_healthy_percent;
                        }
                        if given.deployment_circuit_breaker.is_some() {
                            merged.deployment_circuit_breaker =
                                given.deployment_circuit_breaker.clone();
                        }
                        if given.alarms.is_some() {
                            merged.alarms = given.alarms.clone();
                        }
                        if given.strategy.is_some() {
                            merged.strategy = given.strategy.clone();
                        }
                        s.deployment_configuration =
                            Some(deployment_configuration(Some(merged), daemon)?);
                    }
                    if let Some(p) = &req.placement_strategy {
                        if daemon && !p.is_empty() {
                            return Err(ControlError::invalid(
                                "The daemon scheduling strategy does not support placement strategies.",
                            ));
                        }
                        if s.placement_strategy.as_ref() != Some(p) {
                            s.placement_strategy = Some(p.clone());
                            redeploy = true;
                        }
                    }
                    if let Some(p) = &req.placement_constraints
                        && s.placement_constraints.as_ref() != Some(p)
                    {
                        s.placement_constraints = Some(p.clone());
                        redeploy = true;
                    }
                    if let Some(n) = &req.network_configuration
                        && s.network_configuration.as_ref() != Some(n)
                    {
                        s.network_configuration = Some(n.clone());
                        redeploy = true;
                    }
                    // A new strategy moves the service onto it (from a launch type too), in a
                    // new deployment, as on ECS.
                    if let Some(st) = &new_strategy
                        && s.capacity_provider_strategy.as_ref() != Some(st)
                    {
                        s.capacity_provider_strategy = Some(st.clone());
                        s.launch_type = None;
                        redeploy = true;
                    }
                    let fargate = s.launch_type.as_deref() == Some("FARGATE")
                        || s.capacity_provider_strategy.as_ref().is_some_and(|c| !c.is_empty());
                    if let Some(v) = &req.platform_version
                        && s.platform_version.as_ref() != Some(v)
                    {
                        if !fargate {
                            crate::fargate::check_no_platform_version(Some(v))?;
                        }
                        s.platform_version = Some(v.clone());
                        redeploy = true;
                    }
                    if fargate {
                        s.platform_version.get_or_insert_with(|| "LATEST".into());
                        s.platform_family =
                            Some(berth_model::fargate::PLATFORM_FAMILY.to_string());
                    }
                    if let Some(g) = req.health_check_grace_period_seconds {
                        s.health_check_grace_period_seconds = Some(g);
                    }
                    if let Some(e) = req.enable_execute_command {
                        s.enable_execute_command = Some(e);
                    }
                    if let Some(e) = req.enable_ecs_managed_tags {
                        s.enable_ecs_managed_tags = Some(e);
                    }
                    if let Some(p) = &req.propagate_tags {
                        s.propagate_tags = Some(p.clone());
                    }
                    // What the deployment will run must still hold together.
                    if redeploy {
                        let td = match td_def {
                            Some(t) => t,
                            None => {
                                let d = self.view.data.read();
                                self.find_task_def(&d, s.task_definition.as_deref().unwrap_or_default())
                                    .map_err(|_| ControlError::invalid("TaskDefinition not found."))?
                                    .value
                                    .def
                                    .clone()
                            }
                        };
                        crate::tasks::check_constraints(
                            s.placement_constraints.as_deref().unwrap_or_default(),
                            &td,
                        )?;
                        crate::tasks::check_network(&td, s.network_configuration.as_ref())?;
                        if fargate {
                            crate::fargate::check_launch(
                                &td,
                                (None, None),
                                s.network_configuration.as_ref(),
                                s.placement_constraints.as_deref().unwrap_or_default(),
                                s.placement_strategy.as_deref().unwrap_or_default(),
                                s.platform_version.as_deref(),
                            )?;
                        }
                        let at = self.now().as_secs_f64();
                        let dep = rollout::new_deployment(s, at);
                        let deps = s.deployments.get_or_insert_with(Vec::new);
                        for old in deps.iter_mut() {
                            old.status = Some(DeploymentStatus::Active.into());
                            old.updated_at = Some(at);
                        }
                        deps.insert(0, dep);
                    }
                    r.ctl.steady = false;
                    Ok(())
                },
            )
            .await?;
        let d = self.view.data.read();
        Ok(UpdateServiceResponse {
            service: Some(self.service_view(&d, &cname, &rec, true)),
        })
    }

    pub async fn delete_service(&self, req: DeleteServiceRequest) -> Result<DeleteServiceResponse> {
        let (cname, name) = self.service_target(req.cluster.as_deref(), req.service.as_deref())?;
        let force = req.force.unwrap_or(false);
        let rec = self
            .modify(
                &keys::service(&cname, &name),
                self.service_entry(&cname, &name),
                || ControlError::ServiceNotFound,
                |r| {
                    let s = &mut r.service;
                    match rollout::service_status(s) {
                        Some(ServiceStatus::Active) => {}
                        Some(ServiceStatus::Draining) => return Ok(()),
                        _ => return Err(ControlError::ServiceNotActive),
                    }
                    if !rollout::is_daemon(s) && s.desired_count.unwrap_or(0) > 0 && !force {
                        return Err(ControlError::invalid(
                            "The service cannot be stopped while it is scaled above 0.",
                        ));
                    }
                    s.status = Some(ServiceStatus::Draining.into());
                    s.desired_count = Some(0);
                    r.ctl.steady = false;
                    Ok(())
                },
            )
            .await?;
        let d = self.view.data.read();
        Ok(DeleteServiceResponse {
            service: Some(self.service_view(&d, &cname, &rec, false)),
        })
    }

    pub async fn describe_services(
        &self,
        req: DescribeServicesRequest,
    ) -> Result<DescribeServicesResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let list = paging::batch(req.services.as_ref(), 10, "services")?;
        let with_tags = paging::includes(req.include.as_deref(), "TAGS");
        let d = self.view.data.read();
        if !d.clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let mut services = Vec::new();
        let mut failures = Vec::new();
        for s in &list {
            let hit = self
                .service_name_of(&cname, s)
                .ok()
                .and_then(|n| d.services().get(&cname)?.get(n));
            match hit {
                Some(e) => services.push(self.service_view(&d, &cname, &e.value, with_tags)),
                None => failures.push(Failure {
                    arn: Some(if s.starts_with("arn:") {
                        s.clone()
                    } else {
                        self.part.service(&cname, s)
                    }),
                    reason: Some("MISSING".into()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeServicesResponse {
            services: Some(services),
            failures: Some(failures),
        })
    }

    pub async fn list_services(&self, req: ListServicesRequest) -> Result<ListServicesResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let limit = paging::max_results(req.max_results, 10, 100)?;
        let after = paging::decode(req.next_token.as_deref())?;
        let d = self.view.data.read();
        if !d.clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let empty = BTreeMap::new();
        let m = d.services().get(&cname).unwrap_or(&empty);
        let (arns, next) = paging::page(
            m.iter()
                .filter(|(_, e)| {
                    let s = &e.value.service;
                    rollout::service_status(s) != Some(ServiceStatus::Inactive)
                        && req
                            .launch_type
                            .as_ref()
                            .is_none_or(|l| s.launch_type.as_ref() == Some(l))
                        && req
                            .scheduling_strategy
                            .as_ref()
                            .is_none_or(|l| s.scheduling_strategy.as_ref() == Some(l))
                })
                .map(|(n, e)| {
                    (
                        n.clone(),
                        e.value.service.service_arn.clone().unwrap_or_default(),
                    )
                }),
            after.as_deref(),
            limit,
        );
        Ok(ListServicesResponse {
            service_arns: Some(arns),
            next_token: next,
        })
    }

    /// ACTIVE or DRAINING services of a cluster.
    pub(crate) fn active_services(d: &ViewData, cluster: &str) -> i32 {
        d.services()
            .get(cluster)
            .map(|m| {
                m.values()
                    .filter(|e| {
                        rollout::service_status(&e.value.service) != Some(ServiceStatus::Inactive)
                    })
                    .count() as i32
            })
            .unwrap_or(0)
    }
}
