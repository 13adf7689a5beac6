//! The ECS operation table: each operation's request shape, the resources and condition keys
//! AWS's service authorization reference names for it, and its handler. [`ecs::dispatch`] is
//! what every protocol in front of ECS calls; [`ecs::OPERATIONS`] lists what berth answers.
//!
//! Resources, as AWS checks them: cluster operations on the cluster; RunTask and StartTask on
//! the task definition (a family alone: its latest ACTIVE revision); StopTask and
//! DescribeTasks on each task; ListTasks on the container instance it filters by (else `*`);
//! services on the service; container instances on each instance (register, deregister,
//! attributes and state reports on the cluster); tagging on the resource tagged; listing and
//! task-definition registration on `*`. Operations in a cluster supply `ecs:cluster` (the
//! cluster's ARN); StartTask also `ecs:container-instances`. Launching tasks passes their
//! roles (`iam:PassRole`). What an agent says for its node (re-registration, deregistration,
//! draining, state reports of the node's tasks, its sessions) names the node's instance: a join
//! token speaks only for the instances it registered.

use berth_model::wire::ecs::*;

use crate::clusters::DEFAULT_CLUSTER;
use crate::command::{Access, Caller, Command};
use crate::{Control, ControlError, Result};

impl Control {
    /// The cluster a request names (`default` when absent), by name.
    fn cluster_named(&self, cluster: &Option<String>) -> String {
        let c = cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
        self.part.cluster_name(c).unwrap_or(c).to_string()
    }

    /// Access to resources in `cluster`: join tokens' scope and `ecs:cluster`.
    fn in_cluster(&self, cluster: &Option<String>, resources: Vec<String>) -> Access {
        let name = self.cluster_named(cluster);
        let arn = self.part.cluster(&name);
        let mut a = Access::on(resources).with("ecs:cluster", arn);
        a.cluster = Some(name);
        a
    }

    /// Access of an agent speaking for its node `instance` (id or ARN) in `cluster`.
    pub fn node_access(&self, cluster: &Option<String>, instance: &str) -> Access {
        let mut a = self.on_cluster(cluster);
        a.instances = vec![self.arn_in(cluster, "container-instance", instance)];
        a
    }

    /// The container instance (ARN) the task `task` (id or ARN) of `cluster` was placed on.
    fn instance_of_task(&self, cluster: &Option<String>, task: &Option<String>) -> Vec<String> {
        let name = self.cluster_named(cluster);
        let id = task
            .as_deref()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let d = self.view.data.read();
        d.tasks()
            .get(&name)
            .and_then(|m| m.get(id))
            .and_then(|t| t.summary.instance_id.clone())
            .map(|i| self.part.container_instance(&name, &i))
            .into_iter()
            .collect()
    }

    /// Access to the cluster a request names itself.
    fn on_cluster(&self, cluster: &Option<String>) -> Access {
        let arn = self.part.cluster(&self.cluster_named(cluster));
        self.in_cluster(cluster, vec![arn])
    }

    /// An ARN of `cluster`'s resource `kind` given by id, name or ARN.
    fn arn_in(&self, cluster: &Option<String>, kind: &str, id: &str) -> String {
        if id.starts_with("arn:") {
            return id.to_string();
        }
        let cluster = self.cluster_named(cluster);
        match kind {
            "task" => self.part.task(&cluster, id),
            "service" => self.part.service(&cluster, id),
            _ => self.part.container_instance(&cluster, id),
        }
    }

    /// The ARN of the task definition `s` names (`family` alone: its latest ACTIVE revision,
    /// as ECS resolves it before authorizing), and the roles its tasks run with.
    fn task_def_access(&self, s: &Option<String>) -> (String, Vec<String>) {
        let s = s.as_deref().unwrap_or_default();
        let d = self.view.data.read();
        match self.find_task_def(&d, s) {
            Ok(td) => (
                td.value.def.task_definition_arn.clone().unwrap_or_default(),
                [
                    &td.value.def.task_role_arn,
                    &td.value.def.execution_role_arn,
                ]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            ),
            // Not there: the handler refuses it; authorization sees the name as given.
            Err(_) if s.starts_with("arn:") => (s.to_string(), vec![]),
            Err(_) => (
                format!(
                    "arn:aws:ecs:{}:{}:task-definition/{s}",
                    self.part.region, self.part.account_id
                ),
                vec![],
            ),
        }
    }

    /// Access of an operation that launches tasks from a task definition (with the roles it
    /// overrides).
    fn launch_access(
        &self,
        cluster: &Option<String>,
        task_definition: &Option<String>,
        overrides: Option<&TaskOverride>,
    ) -> Access {
        let (td, mut roles) = self.task_def_access(task_definition);
        if let Some(o) = overrides {
            roles.extend(o.task_role_arn.clone());
            roles.extend(o.execution_role_arn.clone());
        }
        let mut a = self.in_cluster(cluster, vec![td.clone()]);
        a.pass_roles = roles;
        a.with("ecs:task-definition", td)
    }
}

/// One ECS operation whose handler takes only the request.
macro_rules! ecs_command {
    ($req:ty => $out:ty, $name:literal, $method:ident, |$r:ident, $c:ident| $access:expr) => {
        impl Command<Control> for $req {
            type Output = $out;
            type Error = ControlError;
            const SERVICE: &'static str = "ecs";
            const NAME: &'static str = $name;
            async fn access(&self, _: &Control, $c: &Control) -> Access {
                let $r = self;
                $access
            }
            async fn run(self, c: &Control, _: &Control, _: &Caller) -> Result<$out> {
                c.$method(self).await
            }
        }
    };
}

ecs_command!(CreateClusterRequest => CreateClusterResponse, "CreateCluster", create_cluster,
    |r, c| Access::on([c.part.cluster(r.cluster_name.as_deref().unwrap_or(DEFAULT_CLUSTER))]));
ecs_command!(DescribeClustersRequest => DescribeClustersResponse, "DescribeClusters",
describe_clusters, |r, c| {
    let named: Vec<String> = match &r.clusters {
        Some(v) if !v.is_empty() => v
            .iter()
            .map(|n| c.part.cluster(&c.cluster_named(&Some(n.clone()))))
            .collect(),
        _ => vec![c.part.cluster(DEFAULT_CLUSTER)],
    };
    Access::on(named)
});
ecs_command!(ListClustersRequest => ListClustersResponse, "ListClusters", list_clusters,
    |_r, _c| Access::any());
ecs_command!(DeleteClusterRequest => DeleteClusterResponse, "DeleteCluster", delete_cluster,
    |r, c| c.on_cluster(&r.cluster));
ecs_command!(UpdateClusterRequest => UpdateClusterResponse, "UpdateCluster", update_cluster,
    |r, c| c.on_cluster(&r.cluster));
ecs_command!(UpdateClusterSettingsRequest => UpdateClusterSettingsResponse,
    "UpdateClusterSettings", update_cluster_settings, |r, c| c.on_cluster(&r.cluster));
ecs_command!(PutClusterCapacityProvidersRequest => PutClusterCapacityProvidersResponse,
    "PutClusterCapacityProviders", put_cluster_capacity_providers,
    |r, c| c.on_cluster(&r.cluster));
ecs_command!(DescribeCapacityProvidersRequest => DescribeCapacityProvidersResponse,
    "DescribeCapacityProviders", describe_capacity_providers, |_r, _c| Access::any());

impl Command<Control> for RegisterTaskDefinitionRequest {
    type Output = RegisterTaskDefinitionResponse;
    type Error = ControlError;
    const SERVICE: &'static str = "ecs";
    const NAME: &'static str = "RegisterTaskDefinition";
    async fn access(&self, _: &Control, _: &Control) -> Access {
        Access::any()
    }
    async fn run(self, c: &Control, _: &Control, caller: &Caller) -> Result<Self::Output> {
        let by = c.principal_arn_of(&caller.principal);
        c.register_task_definition(self, &by).await
    }
}
ecs_command!(DescribeTaskDefinitionRequest => DescribeTaskDefinitionResponse,
    "DescribeTaskDefinition", describe_task_definition, |_r, _c| Access::any());
ecs_command!(ListTaskDefinitionsRequest => ListTaskDefinitionsResponse, "ListTaskDefinitions",
    list_task_definitions, |_r, _c| Access::any());
ecs_command!(ListTaskDefinitionFamiliesRequest => ListTaskDefinitionFamiliesResponse,
    "ListTaskDefinitionFamilies", list_task_definition_families, |_r, _c| Access::any());
ecs_command!(DeregisterTaskDefinitionRequest => DeregisterTaskDefinitionResponse,
    "DeregisterTaskDefinition", deregister_task_definition, |_r, _c| Access::any());
ecs_command!(DeleteTaskDefinitionsRequest => DeleteTaskDefinitionsResponse,
"DeleteTaskDefinitions", delete_task_definitions, |r, c| Access::on(
    r.task_definitions.iter().flatten().map(|t| c.task_def_access(&Some(t.clone())).0)
));

impl Command<Control> for RegisterContainerInstanceRequest {
    type Output = RegisterContainerInstanceResponse;
    type Error = ControlError;
    const SERVICE: &'static str = "ecs";
    const NAME: &'static str = "RegisterContainerInstance";
    /// On the cluster; re-registration speaks for the instance named.
    async fn access(&self, _: &Control, c: &Control) -> Access {
        match &self.container_instance_arn {
            Some(arn) => c.node_access(&self.cluster, arn),
            None => c.on_cluster(&self.cluster),
        }
    }
    async fn run(self, c: &Control, _: &Control, caller: &Caller) -> Result<Self::Output> {
        let owner = caller.owner_id(c);
        c.register_container_instance_by(self, Some(&owner)).await
    }
}
ecs_command!(DeregisterContainerInstanceRequest => DeregisterContainerInstanceResponse,
    "DeregisterContainerInstance", deregister_container_instance,
    |r, c| c.node_access(&r.cluster, r.container_instance.as_deref().unwrap_or_default()));
ecs_command!(DescribeContainerInstancesRequest => DescribeContainerInstancesResponse,
"DescribeContainerInstances", describe_container_instances, |r, c| c.in_cluster(
    &r.cluster,
    r.container_instances.iter().flatten()
        .map(|i| c.arn_in(&r.cluster, "container-instance", i)).collect(),
));
ecs_command!(ListContainerInstancesRequest => ListContainerInstancesResponse,
    "ListContainerInstances", list_container_instances, |r, c| c.on_cluster(&r.cluster));
ecs_command!(UpdateContainerInstancesStateRequest => UpdateContainerInstancesStateResponse,
"UpdateContainerInstancesState", update_container_instances_state, |r, c| {
    let arns: Vec<String> = r.container_instances.iter().flatten()
        .map(|i| c.arn_in(&r.cluster, "container-instance", i)).collect();
    Access {
        instances: arns.clone(),
        ..c.in_cluster(&r.cluster, arns)
    }
});
ecs_command!(PutAttributesRequest => PutAttributesResponse, "PutAttributes", put_attributes,
    |r, c| c.on_cluster(&r.cluster));
ecs_command!(DeleteAttributesRequest => DeleteAttributesResponse, "DeleteAttributes",
    delete_attributes, |r, c| c.on_cluster(&r.cluster));
ecs_command!(ListAttributesRequest => ListAttributesResponse, "ListAttributes",
    list_attributes, |r, c| c.on_cluster(&r.cluster));

ecs_command!(RunTaskRequest => RunTaskResponse, "RunTask", run_task,
    |r, c| c.launch_access(&r.cluster, &r.task_definition, r.overrides.as_ref()));
ecs_command!(StartTaskRequest => StartTaskResponse, "StartTask", start_task, |r, c| {
    let mut a = c.launch_access(&r.cluster, &r.task_definition, r.overrides.as_ref());
    for i in r.container_instances.iter().flatten() {
        a = a.with("ecs:container-instances", c.arn_in(&r.cluster, "container-instance", i));
    }
    a
});
ecs_command!(StopTaskRequest => StopTaskResponse, "StopTask", stop_task, |r, c| c.in_cluster(
    &r.cluster,
    vec![c.arn_in(&r.cluster, "task", r.task.as_deref().unwrap_or_default())],
));
ecs_command!(DescribeTasksRequest => DescribeTasksResponse, "DescribeTasks", describe_tasks,
|r, c| c.in_cluster(
    &r.cluster,
    r.tasks.iter().flatten().map(|t| c.arn_in(&r.cluster, "task", t)).collect(),
));
ecs_command!(ListTasksRequest => ListTasksResponse, "ListTasks", list_tasks, |r, c| c.in_cluster(
    &r.cluster,
    vec![match &r.container_instance {
        Some(i) => c.arn_in(&r.cluster, "container-instance", i),
        None => "*".to_string(),
    }],
));
ecs_command!(SubmitTaskStateChangeRequest => SubmitTaskStateChangeResponse,
"SubmitTaskStateChange", submit_task_state_change, |r, c| Access {
    instances: c.instance_of_task(&r.cluster, &r.task),
    ..c.on_cluster(&r.cluster)
});
ecs_command!(SubmitContainerStateChangeRequest => SubmitContainerStateChangeResponse,
"SubmitContainerStateChange", submit_container_state_change, |r, c| Access {
    instances: c.instance_of_task(&r.cluster, &r.task),
    ..c.on_cluster(&r.cluster)
});

impl Command<Control> for DiscoverPollEndpointRequest {
    type Output = DiscoverPollEndpointResponse;
    type Error = ControlError;
    const SERVICE: &'static str = "ecs";
    const NAME: &'static str = "DiscoverPollEndpoint";
    async fn access(&self, _: &Control, c: &Control) -> Access {
        c.in_cluster(&self.cluster, vec!["*".to_string()])
    }
    async fn run(self, c: &Control, _: &Control, caller: &Caller) -> Result<Self::Output> {
        c.discover_poll_endpoint(self)?;
        // The agent session (ACS) and telemetry are served on this same front door, unless the
        // operator names another URL for it (a proxy on port 443, say).
        let endpoint = c
            .agent_endpoint()
            .map(str::to_string)
            .unwrap_or_else(|| caller.endpoint.clone());
        Ok(DiscoverPollEndpointResponse {
            endpoint: Some(endpoint.clone()),
            telemetry_endpoint: Some(endpoint),
            service_connect_endpoint: None,
        })
    }
}

ecs_command!(CreateServiceRequest => CreateServiceResponse, "CreateService", create_service,
|r, c| {
    let svc = c.arn_in(&r.cluster, "service", r.service_name.as_deref().unwrap_or_default());
    service_access(c, &r.cluster, svc, &r.task_definition)
});
ecs_command!(UpdateServiceRequest => UpdateServiceResponse, "UpdateService", update_service,
|r, c| {
    let svc = c.arn_in(&r.cluster, "service", r.service.as_deref().unwrap_or_default());
    service_access(c, &r.cluster, svc, &r.task_definition)
});
ecs_command!(DeleteServiceRequest => DeleteServiceResponse, "DeleteService", delete_service,
|r, c| c.in_cluster(
    &r.cluster,
    vec![c.arn_in(&r.cluster, "service", r.service.as_deref().unwrap_or_default())],
));
ecs_command!(DescribeServicesRequest => DescribeServicesResponse, "DescribeServices",
describe_services, |r, c| c.in_cluster(
    &r.cluster,
    r.services.iter().flatten().map(|s| c.arn_in(&r.cluster, "service", s)).collect(),
));
ecs_command!(ListServicesRequest => ListServicesResponse, "ListServices", list_services,
    |r, c| c.in_cluster(&r.cluster, vec!["*".to_string()]));

ecs_command!(TagResourceRequest => TagResourceResponse, "TagResource", tag_resource,
    |r, _c| Access::on(r.resource_arn.clone()));
ecs_command!(UntagResourceRequest => UntagResourceResponse, "UntagResource", untag_resource,
    |r, _c| Access::on(r.resource_arn.clone()));
ecs_command!(ListTagsForResourceRequest => ListTagsForResourceResponse, "ListTagsForResource",
    list_tags_for_resource, |r, _c| Access::on(r.resource_arn.clone()));

/// A service's access: the service, in its cluster, with the task definition it runs (passing
/// its roles) when the request names one.
fn service_access(
    c: &Control,
    cluster: &Option<String>,
    service: String,
    task_definition: &Option<String>,
) -> Access {
    let mut a = c.in_cluster(cluster, vec![service]);
    if task_definition.is_some() {
        let (td, roles) = c.task_def_access(task_definition);
        a.pass_roles = roles;
        a = a.with("ecs:task-definition", td);
    }
    a
}

crate::operation_table! {
    /// The ECS API (`AmazonEC2ContainerServiceV20141113`).
    pub mod ecs on Control {
        CreateCluster => CreateClusterRequest,
        DescribeClusters => DescribeClustersRequest,
        ListClusters => ListClustersRequest,
        DeleteCluster => DeleteClusterRequest,
        UpdateCluster => UpdateClusterRequest,
        UpdateClusterSettings => UpdateClusterSettingsRequest,
        PutClusterCapacityProviders => PutClusterCapacityProvidersRequest,
        DescribeCapacityProviders => DescribeCapacityProvidersRequest,
        RegisterTaskDefinition => RegisterTaskDefinitionRequest,
        DescribeTaskDefinition => DescribeTaskDefinitionRequest,
        ListTaskDefinitions => ListTaskDefinitionsRequest,
        ListTaskDefinitionFamilies => ListTaskDefinitionFamiliesRequest,
        DeregisterTaskDefinition => DeregisterTaskDefinitionRequest,
        DeleteTaskDefinitions => DeleteTaskDefinitionsRequest,
        RegisterContainerInstance => RegisterContainerInstanceRequest,
        DeregisterContainerInstance => DeregisterContainerInstanceRequest,
        DescribeContainerInstances => DescribeContainerInstancesRequest,
        ListContainerInstances => ListContainerInstancesRequest,
        UpdateContainerInstancesState => UpdateContainerInstancesStateRequest,
        PutAttributes => PutAttributesRequest,
        DeleteAttributes => DeleteAttributesRequest,
        ListAttributes => ListAttributesRequest,
        RunTask => RunTaskRequest,
        StartTask => StartTaskRequest,
        StopTask => StopTaskRequest,
        DescribeTasks => DescribeTasksRequest,
        ListTasks => ListTasksRequest,
        SubmitTaskStateChange => SubmitTaskStateChangeRequest,
        SubmitContainerStateChange => SubmitContainerStateChangeRequest,
        DiscoverPollEndpoint => DiscoverPollEndpointRequest,
        CreateService => CreateServiceRequest,
        UpdateService => UpdateServiceRequest,
        DeleteService => DeleteServiceRequest,
        DescribeServices => DescribeServicesRequest,
        ListServices => ListServicesRequest,
        TagResource => TagResourceRequest,
        UntagResource => UntagResourceRequest,
        ListTagsForResource => ListTagsForResourceRequest,
    }
}
