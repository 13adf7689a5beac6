//! The ECR API (`AmazonEC2ContainerRegistry_V20150921.<Operation>`): decode, check against the
//! model, call the registry, encode. No registry logic here.

use std::sync::Arc;

use async_trait::async_trait;
use berth_model::wire::ecr;
use berth_registry::{EcrError, Registry};
use bytes::Bytes;

use crate::awsjson::{JsonService, RequestContext, Resources, run};
use crate::error::AwsError;

pub struct Ecr {
    registry: Arc<Registry>,
    control: Arc<berth_control::Control>,
}

impl Ecr {
    pub fn new(registry: Arc<Registry>, control: Arc<berth_control::Control>) -> Self {
        Ecr { registry, control }
    }
}

impl From<EcrError> for AwsError {
    fn from(e: EcrError) -> Self {
        AwsError::new(e.http_status(), e.code(), e.to_string())
    }
}

/// The ECR operations berth implements.
pub const IMPLEMENTED: &[&str] = &[
    "BatchCheckLayerAvailability",
    "BatchDeleteImage",
    "DeleteLifecyclePolicy",
    "DeleteRepositoryPolicy",
    "GetLifecyclePolicy",
    "GetLifecyclePolicyPreview",
    "GetRepositoryPolicy",
    "PutLifecyclePolicy",
    "SetRepositoryPolicy",
    "StartLifecyclePolicyPreview",
    "BatchGetImage",
    "CreateRepository",
    "DeleteRepository",
    "DescribeImages",
    "DescribeRepositories",
    "GetAuthorizationToken",
    "ListImages",
    "ListTagsForResource",
    "PutImage",
    "PutImageTagMutability",
    "TagResource",
    "UntagResource",
];

impl Ecr {
    /// The repository (or repositories) a request names; GetAuthorizationToken and listing
    /// every repository act on nothing (`*` in AWS).
    fn resources(&self, op: &str, body: &[u8]) -> Resources {
        let body = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
        if let Some(name) = body["repositoryName"].as_str() {
            return Resources::Named(vec![self.registry.repo_arn(name)]);
        }
        if let Some(arn) = body["resourceArn"].as_str() {
            return Resources::Named(vec![arn.to_string()]);
        }
        match op {
            "DescribeRepositories" => match body["repositoryNames"].as_array() {
                Some(a) if !a.is_empty() => Resources::Named(
                    a.iter()
                        .map(|n| self.registry.repo_arn(n.as_str().unwrap_or_default()))
                        .collect(),
                ),
                _ => Resources::Any,
            },
            "GetAuthorizationToken" => Resources::Any,
            _ => Resources::Unknown,
        }
    }
}

#[async_trait]
impl JsonService for Ecr {
    fn name(&self) -> &'static str {
        "ecr"
    }
    fn target_prefix(&self) -> &'static str {
        ecr::TARGET_PREFIX
    }
    fn signing_name(&self) -> &'static str {
        ecr::SIGNING_NAME
    }
    fn operation(&self, op: &str) -> Option<&'static str> {
        ecr::OPERATIONS
            .iter()
            .find(|o| o.name == op)
            .map(|o| o.name)
    }

    async fn call(
        &self,
        op: &'static str,
        body: Bytes,
        ctx: &RequestContext,
    ) -> Result<Vec<u8>, AwsError> {
        ctx.authorize_legacy(&self.control, "ecr", op, self.resources(op, &body))?;
        let r = &self.registry;
        let b = &body[..];
        match op {
            "CreateRepository" => run(b, |q| r.create_repository(q)).await,
            "DescribeRepositories" => run(b, |q| r.describe_repositories(q)).await,
            "DeleteRepository" => run(b, |q| r.delete_repository(q)).await,
            "PutImageTagMutability" => run(b, |q| r.put_image_tag_mutability(q)).await,
            "ListImages" => run(b, |q| r.list_images(q)).await,
            "DescribeImages" => run(b, |q| r.describe_images(q)).await,
            "BatchGetImage" => run(b, |q| r.batch_get_image(q)).await,
            "BatchDeleteImage" => run(b, |q| r.batch_delete_image(q)).await,
            "PutImage" => run(b, |q| r.put_image(q)).await,
            "BatchCheckLayerAvailability" => run(b, |q| r.batch_check_layer_availability(q)).await,
            "GetAuthorizationToken" => {
                let akid =
                    crate::registry::token_subject(ctx.principal(), ctx.session_token.as_deref());
                run(
                    b,
                    |q| async move { r.get_authorization_token(q, &akid).await },
                )
                .await
            }
            "PutLifecyclePolicy" => run(b, |q| r.put_lifecycle_policy(q)).await,
            "GetLifecyclePolicy" => run(b, |q| r.get_lifecycle_policy(q)).await,
            "DeleteLifecyclePolicy" => run(b, |q| r.delete_lifecycle_policy(q)).await,
            "StartLifecyclePolicyPreview" => run(b, |q| r.start_lifecycle_policy_preview(q)).await,
            "GetLifecyclePolicyPreview" => run(b, |q| r.get_lifecycle_policy_preview(q)).await,
            "SetRepositoryPolicy" => {
                let arn = self.control.principal_arn_of(ctx.principal());
                run(b, |q| async move { r.set_repository_policy(q, &arn).await }).await
            }
            "GetRepositoryPolicy" => run(b, |q| r.get_repository_policy(q)).await,
            "DeleteRepositoryPolicy" => run(b, |q| r.delete_repository_policy(q)).await,
            "TagResource" => run(b, |q| r.tag_resource(q)).await,
            "UntagResource" => run(b, |q| r.untag_resource(q)).await,
            "ListTagsForResource" => run(b, |q| r.list_tags_for_resource(q)).await,
            _ => Err(AwsError::client(
                "UnsupportedFeatureException",
                format!("{op} is not supported by berth yet."),
            )),
        }
    }
}
