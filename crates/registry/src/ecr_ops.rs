//! The ECR operation table: each operation's request shape, the repository it acts on (with
//! that repository's policy, evaluated by the control plane beside the caller's identity
//! policies — one evaluator for both), and its handler on the [`Registry`]. [`ecr::dispatch`]
//! is what every protocol in front of ECR calls.
//!
//! Resources, as AWS checks them: operations on a repository act on its ARN; DescribeRepositories
//! on each repository named (else `*`); GetAuthorizationToken on `*`; tagging on the ARN named.

use berth_control::Control;
use berth_control::command::{Access, Caller, Command};
use berth_model::wire::ecr::*;

use crate::{EcrError, Registry, keys};

impl Registry {
    /// The policy stored with repository `name`, if the repository exists and has one.
    async fn repo_policy(&self, name: &str) -> Option<std::sync::Arc<str>> {
        match self.get_json::<crate::RepoRecord>(&keys::repo(name)).await {
            Ok(Some((rec, _))) => rec.policy.map(Into::into),
            _ => None,
        }
    }

    /// Access to repository `name`: its ARN, under its policy.
    pub async fn repo_access(&self, name: &str) -> Access {
        Access {
            resource_policy: self.repo_policy(name).await,
            ..Access::on([self.repo_arn(name)])
        }
    }

    /// Access to the repository an ARN names (tagging), or to the ARN as given.
    async fn arn_access(&self, arn: &Option<String>) -> Access {
        let arn = arn.clone().unwrap_or_default();
        let prefix = format!(
            "arn:aws:ecr:{}:{}:repository/",
            self.cfg.region, self.cfg.account_id
        );
        match arn.strip_prefix(prefix.as_str()) {
            Some(name) => self.repo_access(name).await,
            None => Access::on([arn]),
        }
    }
}

/// One ECR operation on the repository its request names.
macro_rules! ecr_command {
    ($req:ty => $out:ty, $name:literal, $method:ident) => {
        ecr_command!($req => $out, $name, $method, |r, reg| reg
            .repo_access(r.repository_name.as_deref().unwrap_or_default())
            .await);
    };
    ($req:ty => $out:ty, $name:literal, $method:ident, |$r:ident, $reg:ident| $access:expr) => {
        impl Command<Registry> for $req {
            type Output = $out;
            type Error = EcrError;
            const SERVICE: &'static str = "ecr";
            const NAME: &'static str = $name;
            async fn access(&self, $reg: &Registry, _: &Control) -> Access {
                let $r = self;
                $access
            }
            async fn run(self, reg: &Registry, _: &Control, _: &Caller) -> Result<$out, EcrError> {
                reg.$method(self).await
            }
        }
    };
}

ecr_command!(CreateRepositoryRequest => CreateRepositoryResponse, "CreateRepository",
    create_repository);
ecr_command!(DescribeRepositoriesRequest => DescribeRepositoriesResponse, "DescribeRepositories",
describe_repositories, |r, reg| match r.repository_names.as_deref() {
    Some([one]) => reg.repo_access(one).await,
    Some(names) if !names.is_empty() => Access::on(names.iter().map(|n| reg.repo_arn(n))),
    _ => Access::any(),
});
ecr_command!(DeleteRepositoryRequest => DeleteRepositoryResponse, "DeleteRepository",
    delete_repository);
ecr_command!(PutImageTagMutabilityRequest => PutImageTagMutabilityResponse,
    "PutImageTagMutability", put_image_tag_mutability);
ecr_command!(ListImagesRequest => ListImagesResponse, "ListImages", list_images);
ecr_command!(DescribeImagesRequest => DescribeImagesResponse, "DescribeImages", describe_images);
ecr_command!(BatchGetImageRequest => BatchGetImageResponse, "BatchGetImage", batch_get_image);
ecr_command!(BatchDeleteImageRequest => BatchDeleteImageResponse, "BatchDeleteImage",
    batch_delete_image);
ecr_command!(PutImageRequest => PutImageResponse, "PutImage", put_image);
ecr_command!(BatchCheckLayerAvailabilityRequest => BatchCheckLayerAvailabilityResponse,
    "BatchCheckLayerAvailability", batch_check_layer_availability);
ecr_command!(PutLifecyclePolicyRequest => PutLifecyclePolicyResponse, "PutLifecyclePolicy",
    put_lifecycle_policy);
ecr_command!(GetLifecyclePolicyRequest => GetLifecyclePolicyResponse, "GetLifecyclePolicy",
    get_lifecycle_policy);
ecr_command!(DeleteLifecyclePolicyRequest => DeleteLifecyclePolicyResponse,
    "DeleteLifecyclePolicy", delete_lifecycle_policy);
ecr_command!(StartLifecyclePolicyPreviewRequest => StartLifecyclePolicyPreviewResponse,
    "StartLifecyclePolicyPreview", start_lifecycle_policy_preview);
ecr_command!(GetLifecyclePolicyPreviewRequest => GetLifecyclePolicyPreviewResponse,
    "GetLifecyclePolicyPreview", get_lifecycle_policy_preview);
ecr_command!(GetRepositoryPolicyRequest => GetRepositoryPolicyResponse, "GetRepositoryPolicy",
    get_repository_policy);
ecr_command!(DeleteRepositoryPolicyRequest => DeleteRepositoryPolicyResponse,
    "DeleteRepositoryPolicy", delete_repository_policy);
ecr_command!(TagResourceRequest => TagResourceResponse, "TagResource", tag_resource,
    |r, reg| reg.arn_access(&r.resource_arn).await);
ecr_command!(UntagResourceRequest => UntagResourceResponse, "UntagResource", untag_resource,
    |r, reg| reg.arn_access(&r.resource_arn).await);
ecr_command!(ListTagsForResourceRequest => ListTagsForResourceResponse, "ListTagsForResource",
    list_tags_for_resource, |r, reg| reg.arn_access(&r.resource_arn).await);

impl Command<Registry> for SetRepositoryPolicyRequest {
    type Output = SetRepositoryPolicyResponse;
    type Error = EcrError;
    const SERVICE: &'static str = "ecr";
    const NAME: &'static str = "SetRepositoryPolicy";
    async fn access(&self, reg: &Registry, _: &Control) -> Access {
        reg.repo_access(self.repository_name.as_deref().unwrap_or_default())
            .await
    }
    async fn run(
        self,
        reg: &Registry,
        control: &Control,
        caller: &Caller,
    ) -> Result<Self::Output, EcrError> {
        let arn = reg.repo_arn(self.repository_name.as_deref().unwrap_or_default());
        // Lock-out protection: would the new policy stop the caller from changing it again?
        let locks_out = |p: &berth_auth::policy::Policy| {
            control.resource_policy_denies(p, caller, "ecr:SetRepositoryPolicy", &arn)
        };
        reg.set_repository_policy(self, locks_out).await
    }
}

impl Command<Registry> for GetAuthorizationTokenRequest {
    type Output = GetAuthorizationTokenResponse;
    type Error = EcrError;
    const SERVICE: &'static str = "ecr";
    const NAME: &'static str = "GetAuthorizationToken";
    async fn access(&self, _: &Registry, _: &Control) -> Access {
        Access::any()
    }
    async fn run(
        self,
        reg: &Registry,
        _: &Control,
        caller: &Caller,
    ) -> Result<Self::Output, EcrError> {
        reg.get_authorization_token(self, &caller.token_subject())
            .await
    }
}

berth_control::operation_table! {
    /// The ECR API (`AmazonEC2ContainerRegistry_V20150921`).
    pub mod ecr on Registry {
        BatchCheckLayerAvailability => BatchCheckLayerAvailabilityRequest,
        BatchDeleteImage => BatchDeleteImageRequest,
        BatchGetImage => BatchGetImageRequest,
        CreateRepository => CreateRepositoryRequest,
        DeleteLifecyclePolicy => DeleteLifecyclePolicyRequest,
        DeleteRepository => DeleteRepositoryRequest,
        DeleteRepositoryPolicy => DeleteRepositoryPolicyRequest,
        DescribeImages => DescribeImagesRequest,
        DescribeRepositories => DescribeRepositoriesRequest,
        GetAuthorizationToken => GetAuthorizationTokenRequest,
        GetLifecyclePolicy => GetLifecyclePolicyRequest,
        GetLifecyclePolicyPreview => GetLifecyclePolicyPreviewRequest,
        GetRepositoryPolicy => GetRepositoryPolicyRequest,
        ListImages => ListImagesRequest,
        ListTagsForResource => ListTagsForResourceRequest,
        PutImage => PutImageRequest,
        PutImageTagMutability => PutImageTagMutabilityRequest,
        PutLifecyclePolicy => PutLifecyclePolicyRequest,
        SetRepositoryPolicy => SetRepositoryPolicyRequest,
        StartLifecyclePolicyPreview => StartLifecyclePolicyPreviewRequest,
        TagResource => TagResourceRequest,
        UntagResource => UntagResourceRequest,
    }
}
