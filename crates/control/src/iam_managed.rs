//! Managed policies: named identity policies that roles attach (`AttachRolePolicy`) beside
//! their inline ones. Customer managed ones (`arn:aws:iam::ACCOUNT:policy/NAME`) are created
//! and deleted by users, one version each (`v1`). A few AWS managed ones
//! (`arn:aws:iam::aws:policy/…`) that ECS set-ups attach by name are built in
//! ([`BUILTIN`]): berth's own documents for what those policies are for, read-only.
//! Must not: let a policy attached to a role be deleted, or a role with attached policies.

use berth_auth::policy::PolicyKind;
use berth_store::{Compare, Op, Txn};

use crate::iam::{check_document, check_name, check_path, iam, iam_page, unique_id, validation};
use crate::records::ManagedPolicyRecord;
use crate::{Control, Result, keys};

/// The AWS managed policies berth knows: (path, name, description, document). The documents
/// are berth's, granting what each policy is for on berth's services.
pub const BUILTIN: &[(&str, &str, &str, &str)] = &[
    (
        "/",
        "AdministratorAccess",
        "Everything.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    ),
    (
        "/",
        "ReadOnlyAccess",
        "Read everything, change nothing.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecs:Describe*","ecs:List*","ecr:Describe*","ecr:List*","ecr:Get*","ecr:BatchGetImage","ecr:BatchCheckLayerAvailability","iam:Get*","iam:List*"],"Resource":"*"}]}"#,
    ),
    (
        "/",
        "AmazonECS_FullAccess",
        "All of ECS, the registry, and passing roles to tasks.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecs:*","ecr:*","iam:PassRole","iam:GetRole","iam:ListRoles"],"Resource":"*"}]}"#,
    ),
    (
        "/service-role/",
        "AmazonECSTaskExecutionRolePolicy",
        "What a task's execution role needs: pull its images, write its logs.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability","ecr:GetDownloadUrlForLayer","ecr:BatchGetImage","logs:CreateLogStream","logs:PutLogEvents"],"Resource":"*"}]}"#,
    ),
    (
        "/",
        "AmazonEC2ContainerRegistryReadOnly",
        "Pull and look at images.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability","ecr:GetDownloadUrlForLayer","ecr:GetRepositoryPolicy","ecr:DescribeRepositories","ecr:ListImages","ecr:DescribeImages","ecr:BatchGetImage"],"Resource":"*"}]}"#,
    ),
    (
        "/",
        "AmazonEC2ContainerRegistryPowerUser",
        "Pull and push images; no repository deletion or policies.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability","ecr:GetDownloadUrlForLayer","ecr:GetRepositoryPolicy","ecr:DescribeRepositories","ecr:ListImages","ecr:DescribeImages","ecr:BatchGetImage","ecr:InitiateLayerUpload","ecr:UploadLayerPart","ecr:CompleteLayerUpload","ecr:PutImage"],"Resource":"*"}]}"#,
    ),
];

fn builtins() -> &'static [std::sync::Arc<ManagedPolicyRecord>] {
    static ALL: std::sync::LazyLock<Vec<std::sync::Arc<ManagedPolicyRecord>>> =
        std::sync::LazyLock::new(|| {
            BUILTIN
                .iter()
                .enumerate()
                .map(|(i, (path, name, description, document))| {
                    std::sync::Arc::new(ManagedPolicyRecord {
                        policy_name: name.to_string(),
                        policy_id: format!("ANPABERTHBUILTIN{i:05}"),
                        arn: format!("arn:aws:iam::aws:policy{path}{name}"),
                        path: path.to_string(),
                        description: Some(description.to_string()),
                        create_date: 1_704_067_200.0,
                        document: document.to_string(),
                    })
                })
                .collect()
        });
    &ALL
}

/// IAM's limit on one managed policy's document.
pub const MAX_MANAGED_POLICY_BYTES: usize = 6_144;
/// IAM's default limit on managed policies attached to one role.
pub const MAX_ATTACHED_PER_ROLE: usize = 10;

fn not_found(arn: &str) -> crate::ControlError {
    iam(
        "NoSuchEntity",
        404,
        format!("Policy {arn} does not exist or is not attachable."),
    )
}

/// A managed policy and how many roles it is attached to.
#[derive(Debug, Clone)]
pub struct PolicyInfo {
    pub policy: ManagedPolicyRecord,
    pub attachment_count: usize,
}

impl Control {
    /// The managed policy an ARN names, if it exists.
    pub fn policy_by_arn(&self, arn: &str) -> Option<std::sync::Arc<ManagedPolicyRecord>> {
        if arn.starts_with("arn:aws:iam::aws:policy/") {
            return builtins().iter().find(|p| p.arn == arn).cloned();
        }
        let rest = arn.strip_prefix(&format!("arn:aws:iam::{}:policy/", self.part.account_id))?;
        let name = rest.rsplit('/').next()?;
        let d = self.view.data.read();
        let e = d.policies().get(&name.to_ascii_lowercase())?;
        (e.value.arn == arn).then(|| e.value.clone())
    }

    fn attachment_count(&self, arn: &str) -> usize {
        self.view
            .data
            .read()
            .roles()
            .values()
            .filter(|r| r.value.attached.iter().any(|a| a == arn))
            .count()
    }

    fn info(&self, p: ManagedPolicyRecord) -> PolicyInfo {
        let attachment_count = self.attachment_count(&p.arn);
        PolicyInfo {
            policy: p,
            attachment_count,
        }
    }

    /// `CreatePolicy`.
    pub async fn create_policy(
        &self,
        name: &str,
        path: Option<&str>,
        document: &str,
        description: Option<&str>,
    ) -> Result<PolicyInfo> {
        check_name("policyName", name, 1, 128)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        check_document(
            document,
            PolicyKind::Identity,
            MAX_MANAGED_POLICY_BYTES,
            "PolicySize",
        )?;
        if description.is_some_and(|d| d.chars().count() > 1000) {
            return Err(validation(
                "1 validation error detected: Value at 'description' failed to satisfy \
                 constraint: Member must have length less than or equal to 1000",
            ));
        }
        let rec = ManagedPolicyRecord {
            policy_name: name.to_string(),
            policy_id: unique_id("ANPA"),
            arn: format!("arn:aws:iam::{}:policy{path}{name}", self.part.account_id),
            path: path.to_string(),
            description: description.map(str::to_string),
            create_date: self.now().as_secs_f64().floor(),
            document: document.to_string(),
        };
        if !self.put_new(&keys::policy(name), &rec).await? {
            return Err(iam(
                "EntityAlreadyExists",
                409,
                format!("A policy called {name} already exists. Duplicate names are not allowed."),
            ));
        }
        Ok(self.info(rec))
    }

    /// `GetPolicy`.
    pub fn get_policy(&self, arn: &str) -> Result<PolicyInfo> {
        let p = self.policy_by_arn(arn).ok_or_else(|| not_found(arn))?;
        Ok(self.info((*p).clone()))
    }

    /// `GetPolicyVersion`: berth keeps one version, `v1`.
    pub fn get_policy_version(&self, arn: &str, version: &str) -> Result<ManagedPolicyRecord> {
        let p = self.policy_by_arn(arn).ok_or_else(|| not_found(arn))?;
        if version != "v1" {
            return Err(iam(
                "NoSuchEntity",
                404,
                format!("Policy {arn} version {version} does not exist."),
            ));
        }
        Ok((*p).clone())
    }

    /// `ListPolicies`: the built-in AWS managed policies (`Scope` `AWS`), customer managed
    /// ones (`Local`) or both (`All`), in name order, paged like ListRoles.
    pub fn list_policies(
        &self,
        scope: Option<&str>,
        only_attached: bool,
        path_prefix: Option<&str>,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<(Vec<PolicyInfo>, Option<String>)> {
        let scope = scope.unwrap_or("All");
        if !matches!(scope, "All" | "AWS" | "Local") {
            return Err(validation(format!(
                "1 validation error detected: Value '{scope}' at 'scope' failed to satisfy \
                 constraint: Member must satisfy enum value set: [All, AWS, Local]"
            )));
        }
        let (max, after) = iam_page(marker, max_items)?;
        let prefix = path_prefix.unwrap_or("/");
        let mut all: Vec<ManagedPolicyRecord> = Vec::new();
        if scope != "Local" {
            all.extend(builtins().iter().map(|p| (**p).clone()));
        }
        if scope != "AWS" {
            let d = self.view.data.read();
            all.extend(d.policies().values().map(|e| (*e.value).clone()));
        }
        all.sort_by_key(|p| p.policy_name.to_ascii_lowercase());
        let items = all
            .into_iter()
            .filter(|p| p.path.starts_with(prefix))
            .filter(|p| !only_attached || self.attachment_count(&p.arn) > 0)
            .map(|p| (p.policy_name.to_ascii_lowercase(), p));
        let (page, next) = crate::paging::page(items, after.as_deref(), max);
        Ok((page.into_iter().map(|p| self.info(p)).collect(), next))
    }

    /// `DeletePolicy`: only a policy no role has attached.
    pub async fn delete_policy(&self, arn: &str) -> Result<()> {
        let p = self.policy_by_arn(arn).ok_or_else(|| not_found(arn))?;
        if arn.starts_with("arn:aws:iam::aws:") {
            return Err(iam(
                "InvalidInput",
                400,
                format!("{arn} is an AWS managed policy: it cannot be deleted."),
            ));
        }
        if self.attachment_count(arn) > 0 {
            return Err(iam(
                "DeleteConflict",
                409,
                "Cannot delete a policy attached to entities.",
            ));
        }
        let key = keys::policy(&p.policy_name);
        self.commit(Txn {
            compare: vec![Compare::exists(key.clone())],
            success: vec![Op::delete(key)],
            failure: vec![],
        })
        .await?;
        Ok(())
    }

    /// `AttachRolePolicy` (attaching twice is harmless).
    pub async fn attach_role_policy(&self, role: &str, arn: &str) -> Result<()> {
        if self.policy_by_arn(arn).is_none() {
            return Err(not_found(arn));
        }
        self.modify_role(role, |r| {
            if r.attached.iter().any(|a| a == arn) {
                return Ok(());
            }
            if r.attached.len() >= MAX_ATTACHED_PER_ROLE {
                return Err(iam(
                    "LimitExceeded",
                    409,
                    format!("Cannot exceed quota for PoliciesPerRole: {MAX_ATTACHED_PER_ROLE}"),
                ));
            }
            r.attached.push(arn.to_string());
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `DetachRolePolicy`.
    pub async fn detach_role_policy(&self, role: &str, arn: &str) -> Result<()> {
        self.modify_role(role, |r| {
            let before = r.attached.len();
            r.attached.retain(|a| a != arn);
            if r.attached.len() == before {
                return Err(iam(
                    "NoSuchEntity",
                    404,
                    format!("Policy {arn} was not found."),
                ));
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `ListAttachedRolePolicies`: (name, ARN) of each, in attachment order.
    pub fn list_attached_role_policies(
        &self,
        role: &str,
        path_prefix: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        let r = self.get_role(role)?;
        let prefix = path_prefix.unwrap_or("/");
        Ok(r.attached
            .iter()
            .filter_map(|a| {
                let p = self.policy_by_arn(a)?;
                p.path
                    .starts_with(prefix)
                    .then(|| (p.policy_name.clone(), p.arn.clone()))
            })
            .collect())
    }
}
