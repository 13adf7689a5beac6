//! The ECS API (`AmazonEC2ContainerServiceV20141113.<Operation>`): decode the request shape,
//! check it against the model's constraints, call the control plane, encode the answer.
//! Nothing here decides anything about clusters or tasks.

use std::sync::Arc;

use async_trait::async_trait;
use berth_control::{Control, ControlError};
use berth_model::wire::ecs;
use bytes::Bytes;

use crate::awsjson::{JsonService, RequestContext, Resources, run};
use crate::error::AwsError;

pub struct Ecs {
    control: Arc<Control>,
}

impl Ecs {
    pub fn new(control: Arc<Control>) -> Self {
        Ecs { control }
    }
}

impl From<ControlError> for AwsError {
    fn from(e: ControlError) -> Self {
        AwsError::new(e.http_status(), e.code(), e.to_string())
    }
}

/// Operations whose request names a cluster (`cluster`; `default` when absent): IAM
/// policies of role sessions are checked against that cluster's ARN.
pub const CLUSTER_SCOPED: &[&str] = &[
    "CreateService",
    "DeleteAttributes",
    "DeleteCluster",
    "DeleteService",
    "DeregisterContainerInstance",
    "DescribeContainerInstances",
    "DescribeServices",
    "DescribeTasks",
    "DiscoverPollEndpoint",
    "ListAttributes",
    "ListContainerInstances",
    "ListServices",
    "ListTasks",
    "PutAttributes",
    "PutClusterCapacityProviders",
    "RegisterContainerInstance",
    "RunTask",
    "StartTask",
    "StopTask",
    "SubmitAttachmentStateChanges",
    "SubmitContainerStateChange",
    "SubmitTaskStateChange",
    "UpdateCluster",
    "UpdateClusterSettings",
    "UpdateContainerInstancesState",
    "UpdateService",
];

/// Operations AWS authorizes against `*` (no resource-level permissions).
pub const UNSCOPED: &[&str] = &[
    "CreateCluster",
    "DeleteTaskDefinitions",
    "DeregisterTaskDefinition",
    "DescribeTaskDefinition",
    "ListClusters",
    "ListTaskDefinitionFamilies",
    "ListTaskDefinitions",
    "RegisterTaskDefinition",
];

/// The operations berth implements, for dispatch and for the coverage table in the README.
pub const IMPLEMENTED: &[&str] = &[
    "CreateCluster",
    "CreateService",
    "DeleteCluster",
    "DeleteService",
    "DeleteAttributes",
    "DeleteTaskDefinitions",
    "DeregisterContainerInstance",
    "DeregisterTaskDefinition",
    "DescribeClusters",
    "DescribeContainerInstances",
    "DescribeServices",
    "DescribeTaskDefinition",
    "DescribeTasks",
    "DiscoverPollEndpoint",
    "ListAttributes",
    "ListClusters",
    "ListContainerInstances",
    "ListServices",
    "ListTagsForResource",
    "ListTaskDefinitionFamilies",
    "ListTaskDefinitions",
    "ListTasks",
    "PutAttributes",
    "PutClusterCapacityProviders",
    "RegisterContainerInstance",
    "RegisterTaskDefinition",
    "RunTask",
    "StartTask",
    "StopTask",
    "SubmitContainerStateChange",
    "SubmitTaskStateChange",
    "TagResource",
    "UntagResource",
    "UpdateCluster",
    "UpdateClusterSettings",
    "UpdateContainerInstancesState",
    "UpdateService",
];

#[async_trait]
impl JsonService for Ecs {
    fn name(&self) -> &'static str {
        "ecs"
    }
    fn target_prefix(&self) -> &'static str {
        ecs::TARGET_PREFIX
    }
    fn signing_name(&self) -> &'static str {
        ecs::SIGNING_NAME
    }
    fn operation(&self, op: &str) -> Option<&'static str> {
        ecs::OPERATIONS
            .iter()
            .find(|o| o.name == op)
            .map(|o| o.name)
    }

    /// Operations in a cluster act on the cluster (named, or `default`); DescribeClusters on
    /// each cluster it names; tagging on the resource it names; the operations AWS checks
    /// against `*` on nothing; for the rest berth names no resource.
    fn resources(&self, op: &str, body: &serde_json::Value) -> Resources {
        let part = self.control.partition();
        let cluster_arn = |c: &str| match part.cluster_name(c) {
            Some(name) => part.cluster(name),
            None => c.to_string(),
        };
        if CLUSTER_SCOPED.contains(&op) {
            return Resources::Named(vec![cluster_arn(
                body["cluster"].as_str().unwrap_or("default"),
            )]);
        }
        match op {
            "DescribeClusters" => {
                let names: Vec<String> = match body["clusters"].as_array() {
                    Some(a) if !a.is_empty() => a
                        .iter()
                        .map(|c| cluster_arn(c.as_str().unwrap_or_default()))
                        .collect(),
                    _ => vec![cluster_arn("default")],
                };
                Resources::Named(names)
            }
            "TagResource" | "UntagResource" | "ListTagsForResource" => {
                match body["resourceArn"].as_str() {
                    Some(a) => Resources::Named(vec![a.to_string()]),
                    None => Resources::Unknown,
                }
            }
            _ if UNSCOPED.contains(&op) => Resources::Any,
            _ => Resources::Unknown,
        }
    }

    async fn call(
        &self,
        op: &'static str,
        body: Bytes,
        ctx: &RequestContext,
    ) -> Result<Vec<u8>, AwsError> {
        let c = &self.control;
        let b = &body[..];
        match op {
            "CreateCluster" => run(b, |r| c.create_cluster(r)).await,
            "DescribeClusters" => run(b, |r| c.describe_clusters(r)).await,
            "ListClusters" => run(b, |r| c.list_clusters(r)).await,
            "DeleteCluster" => run(b, |r| c.delete_cluster(r)).await,
            "UpdateCluster" => run(b, |r| c.update_cluster(r)).await,
            "UpdateClusterSettings" => run(b, |r| c.update_cluster_settings(r)).await,
            "PutClusterCapacityProviders" => run(b, |r| c.put_cluster_capacity_providers(r)).await,
            "RegisterTaskDefinition" => {
                let by = c.principal_arn_of(&ctx.principal);
                run(
                    b,
                    |r| async move { c.register_task_definition(r, &by).await },
                )
                .await
            }
            "DescribeTaskDefinition" => run(b, |r| c.describe_task_definition(r)).await,
            "ListTaskDefinitions" => run(b, |r| c.list_task_definitions(r)).await,
            "ListTaskDefinitionFamilies" => run(b, |r| c.list_task_definition_families(r)).await,
            "DeregisterTaskDefinition" => run(b, |r| c.deregister_task_definition(r)).await,
            "DeleteTaskDefinitions" => run(b, |r| c.delete_task_definitions(r)).await,
            "RegisterContainerInstance" => run(b, |r| c.register_container_instance(r)).await,
            "DeregisterContainerInstance" => run(b, |r| c.deregister_container_instance(r)).await,
            "DescribeContainerInstances" => run(b, |r| c.describe_container_instances(r)).await,
            "ListContainerInstances" => run(b, |r| c.list_container_instances(r)).await,
            "UpdateContainerInstancesState" => {
                run(b, |r| c.update_container_instances_state(r)).await
            }
            "PutAttributes" => run(b, |r| c.put_attributes(r)).await,
            "DeleteAttributes" => run(b, |r| c.delete_attributes(r)).await,
            "ListAttributes" => run(b, |r| c.list_attributes(r)).await,
            "RunTask" => run(b, |r| c.run_task(r)).await,
            "StartTask" => run(b, |r| c.start_task(r)).await,
            "StopTask" => run(b, |r| c.stop_task(r)).await,
            "DescribeTasks" => run(b, |r| c.describe_tasks(r)).await,
            "ListTasks" => run(b, |r| c.list_tasks(r)).await,
            "SubmitTaskStateChange" => run(b, |r| c.submit_task_state_change(r)).await,
            "DiscoverPollEndpoint" => {
                // The agent session (ACS) and telemetry are served on this same front door,
                // unless the operator names another URL for it (a proxy on port 443, say).
                let endpoint = c
                    .agent_endpoint()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}://{}", ctx.scheme, ctx.host));
                run(b, |r: ecs::DiscoverPollEndpointRequest| async move {
                    c.discover_poll_endpoint(r)?;
                    Ok::<_, ControlError>(ecs::DiscoverPollEndpointResponse {
                        endpoint: Some(endpoint.clone()),
                        telemetry_endpoint: Some(endpoint.clone()),
                        service_connect_endpoint: None,
                    })
                })
                .await
            }
            "SubmitContainerStateChange" => run(b, |r| c.submit_container_state_change(r)).await,
            "CreateService" => run(b, |r| c.create_service(r)).await,
            "UpdateService" => run(b, |r| c.update_service(r)).await,
            "DeleteService" => run(b, |r| c.delete_service(r)).await,
            "DescribeServices" => run(b, |r| c.describe_services(r)).await,
            "ListServices" => run(b, |r| c.list_services(r)).await,
            "TagResource" => run(b, |r| c.tag_resource(r)).await,
            "UntagResource" => run(b, |r| c.untag_resource(r)).await,
            "ListTagsForResource" => run(b, |r| c.list_tags_for_resource(r)).await,
            _ => {
                let _ = ctx;
                Err(AwsError::client(
                    "UnsupportedFeatureException",
                    format!("{op} is not supported by berth yet."),
                ))
            }
        }
    }
}
