//! IAM's role operations: create, get, list, update and delete roles and their inline
//! policies, over the store (roles are read from the view).

use berth_auth::policy::{Policy, PolicyKind};
use berth_store::{Compare, Op, Txn};

use super::{
    MAX_ROLE_POLICY_BYTES, MAX_TRUST_POLICY_BYTES, NewRole, check_document, check_name, check_path,
    iam, iam_page, malformed, no_such_role, unique_id, validation,
};
use crate::records::RoleRecord;
use crate::{Control, Result, keys};

impl Control {
    /// A role as the view holds it (shared, not copied: role sessions look their role up on
    /// every request).
    pub(super) fn role_entry(&self, name: &str) -> Option<std::sync::Arc<RoleRecord>> {
        self.view
            .data
            .read()
            .roles()
            .get(&name.to_ascii_lowercase())
            .map(|e| e.value.clone())
    }

    pub(super) fn role_arn(&self, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:role{path}{name}", self.part.account_id)
    }

    /// The role an ARN names (`arn:aws:iam::ACCOUNT:role/[path/]NAME`), if it exists.
    pub fn role_by_arn(&self, arn: &str) -> Option<std::sync::Arc<RoleRecord>> {
        let rest = arn.strip_prefix(&format!("arn:aws:iam::{}:role/", self.part.account_id))?;
        let name = rest.rsplit('/').next()?;
        self.role_entry(name).filter(|r| r.arn == arn)
    }

    /// Whether `arn` is shaped like a role ARN (`arn:aws:iam::ACCOUNT:role/NAME`).
    pub fn is_role_arn(arn: &str) -> bool {
        let p: Vec<&str> = arn.splitn(6, ':').collect();
        p.len() == 6
            && p[0] == "arn"
            && p[2] == "iam"
            && p[4].len() == 12
            && p[4].bytes().all(|b| b.is_ascii_digit())
            && p[5].strip_prefix("role/").is_some_and(|n| !n.is_empty())
    }

    /// `CreateRole`.
    pub async fn create_role(&self, r: NewRole) -> Result<RoleRecord> {
        check_name("roleName", &r.role_name, 1, 64)?;
        let path = r.path.unwrap_or_else(|| "/".into());
        check_path(&path)?;
        self.check_trust_policy(&r.assume_role_policy)?;
        let max = r.max_session_duration.unwrap_or(3600);
        if !(3600..=43_200).contains(&max) {
            return Err(validation(format!(
                "1 validation error detected: Value '{max}' at 'maxSessionDuration' failed to \
                 satisfy constraint: Member must have value between 3600 and 43200"
            )));
        }
        if r.description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1000)
        {
            return Err(validation(
                "1 validation error detected: Value at 'description' failed to satisfy \
                 constraint: Member must have length less than or equal to 1000",
            ));
        }
        if r.tags.len() > 50 {
            return Err(iam(
                "LimitExceeded",
                409,
                "A role can have at most 50 tags.",
            ));
        }
        for (k, v) in &r.tags {
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
                return Err(validation(format!(
                    "Tag {k:?}: keys need 1 to 128 characters and values at most 256."
                )));
            }
        }
        let rec = RoleRecord {
            arn: self.role_arn(&path, &r.role_name),
            role_name: r.role_name,
            role_id: unique_id("AROA"),
            path,
            create_date: self.now().as_secs_f64().floor(),
            assume_role_policy: r.assume_role_policy,
            description: r.description,
            max_session_duration: max,
            tags: r.tags,
            policies: Default::default(),
            attached: vec![],
        };
        if !self.put_new(&keys::role(&rec.role_name), &rec).await? {
            return Err(iam(
                "EntityAlreadyExists",
                409,
                format!("Role with name {} already exists.", rec.role_name),
            ));
        }
        Ok(rec)
    }

    pub(super) fn check_trust_policy(&self, doc: &str) -> Result<()> {
        check_document(
            doc,
            PolicyKind::Trust,
            MAX_TRUST_POLICY_BYTES,
            "ACLSizePerRole",
        )
    }

    /// `GetRole`.
    pub fn get_role(&self, name: &str) -> Result<RoleRecord> {
        check_name("roleName", name, 1, 64)?;
        self.role_entry(name)
            .map(|r| (*r).clone())
            .ok_or_else(|| no_such_role(name))
    }

    /// `ListRoles`: roles in name order under `path_prefix`, a page of `max_items` (default
    /// 100) after `marker` (the previous page's, see [`iam_page`]).
    pub fn list_roles(
        &self,
        path_prefix: Option<&str>,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<(Vec<RoleRecord>, Option<String>)> {
        let (max, after) = iam_page(marker, max_items)?;
        let prefix = path_prefix.unwrap_or("/");
        let d = self.view.data.read();
        let roles = d
            .roles()
            .iter()
            .filter(|(_, e)| e.value.path.starts_with(prefix))
            .map(|(k, e)| (k.clone(), (*e.value).clone()));
        Ok(crate::paging::page(roles, after.as_deref(), max))
    }

    pub(crate) async fn modify_role(
        &self,
        name: &str,
        f: impl FnMut(&mut RoleRecord) -> Result<()>,
    ) -> Result<RoleRecord> {
        check_name("roleName", name, 1, 64)?;
        let lname = name.to_ascii_lowercase();
        self.modify(
            &keys::role(name),
            |d| d.roles().get(&lname).cloned(),
            || no_such_role(name),
            f,
        )
        .await
    }

    /// `DeleteRole`: only once its inline policies are gone, as IAM insists.
    pub async fn delete_role(&self, name: &str) -> Result<()> {
        check_name("roleName", name, 1, 64)?;
        let e = self
            .view
            .data
            .read()
            .roles()
            .get(&name.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| no_such_role(name))?;
        if !e.value.policies.is_empty() {
            return Err(iam(
                "DeleteConflict",
                409,
                "Cannot delete entity, must delete policies first.",
            ));
        }
        if !e.value.attached.is_empty() {
            return Err(iam(
                "DeleteConflict",
                409,
                "Cannot delete entity, must detach all policies first.",
            ));
        }
        let key = keys::role(name);
        let r = self
            .commit(Txn {
                compare: vec![Compare::mod_revision_is(key.clone(), e.rev)],
                success: vec![Op::delete(key)],
                failure: vec![],
            })
            .await?;
        if !r.succeeded {
            return Err(iam(
                "ConcurrentModification",
                409,
                "The role changed while it was being deleted; try again.",
            ));
        }
        Ok(())
    }

    /// `UpdateAssumeRolePolicy`.
    pub async fn update_assume_role_policy(&self, name: &str, doc: &str) -> Result<()> {
        self.check_trust_policy(doc)?;
        self.modify_role(name, |r| {
            r.assume_role_policy = doc.to_string();
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `PutRolePolicy`: add or replace an inline policy.
    pub async fn put_role_policy(&self, role: &str, policy: &str, doc: &str) -> Result<()> {
        check_name("policyName", policy, 1, 128)?;
        Policy::parse(doc, PolicyKind::Identity).map_err(malformed)?;
        self.modify_role(role, |r| {
            r.policies.insert(policy.to_string(), doc.to_string());
            let total: usize = r.policies.values().map(String::len).sum();
            if total > MAX_ROLE_POLICY_BYTES {
                return Err(iam(
                    "LimitExceeded",
                    409,
                    format!(
                        "Maximum policy size of {MAX_ROLE_POLICY_BYTES} bytes exceeded for role {}",
                        r.role_name
                    ),
                ));
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `GetRolePolicy`.
    pub fn get_role_policy(&self, role: &str, policy: &str) -> Result<(String, String)> {
        check_name("policyName", policy, 1, 128)?;
        let r = self.get_role(role)?;
        let doc = r.policies.get(policy).cloned().ok_or_else(|| {
            iam(
                "NoSuchEntity",
                404,
                format!("The role policy with name {policy} cannot be found."),
            )
        })?;
        Ok((r.role_name, doc))
    }

    /// `ListRolePolicies`: inline policy names in order, paged like [`Control::list_roles`].
    pub fn list_role_policies(
        &self,
        role: &str,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<(Vec<String>, Option<String>)> {
        let r = self.get_role(role)?;
        let (max, after) = iam_page(marker, max_items)?;
        let names = r.policies.keys().map(|k| (k.clone(), k.clone()));
        Ok(crate::paging::page(names, after.as_deref(), max))
    }

    /// `DeleteRolePolicy`.
    pub async fn delete_role_policy(&self, role: &str, policy: &str) -> Result<()> {
        check_name("policyName", policy, 1, 128)?;
        self.modify_role(role, |r| {
            r.policies.remove(policy).map(|_| ()).ok_or_else(|| {
                iam(
                    "NoSuchEntity",
                    404,
                    format!("The role policy with name {policy} cannot be found."),
                )
            })
        })
        .await?;
        Ok(())
    }
}
