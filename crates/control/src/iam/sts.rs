//! STS and task roles: who a role trusts, and the temporary credentials of a role session
//! (`AssumeRole`, and the task-role credentials agent sessions hand to tasks). Must not: let
//! a session outlive its expiry or its role.

use std::collections::HashMap;

use berth_auth::policy::{AccessRequest, Caller, Decision, Policy, PolicyKind};
use berth_auth::session::{self, Claims};

use super::{ECS_TASKS_SERVICE, Principal, SessionCredentials, check_name, validation};
use crate::command;
use crate::records::RoleRecord;
use crate::{Control, ControlError, Result};

impl Control {
    /// Whether `role`'s trust policy lets `caller` assume it.
    pub(super) fn trusts(
        &self,
        role: &RoleRecord,
        caller: &Caller<'_>,
        context: &HashMap<String, Vec<String>>,
    ) -> bool {
        let Ok(p) = Policy::parse(&role.assume_role_policy, PolicyKind::Trust) else {
            return false;
        };
        p.evaluate(&AccessRequest {
            action: "sts:AssumeRole",
            resource: Some(&role.arn),
            caller: Some(caller),
            context,
        }) == Decision::Allow
    }

    pub(super) fn mint(
        &self,
        role: &RoleRecord,
        session_name: &str,
        seconds: i64,
    ) -> SessionCredentials {
        let issued = self.now().as_secs();
        let claims = Claims {
            access_key_id: String::new(),
            role_name: role.role_name.clone(),
            role_id: role.role_id.clone(),
            session_name: session_name.to_string(),
            issued_at: issued,
            expires_at: issued + seconds,
        };
        let creds = session::mint(&self.session_key, claims.clone());
        SessionCredentials {
            access_key_id: creds.access_key_id,
            secret_access_key: creds.secret_access_key,
            session_token: creds.session_token.unwrap_or_default(),
            expiration: issued + seconds,
            assumed_role_arn: self.session_arn(&claims),
            assumed_role_id: format!("{}:{session_name}", role.role_id),
        }
    }

    /// STS `AssumeRole` by `p`: its identity must allow `sts:AssumeRole` on the role (the
    /// root key and users' keys may do anything; a join token may not) and the role's trust
    /// policy must name it.
    pub fn assume_role(
        &self,
        requester: &command::Caller,
        role_arn: &str,
        session_name: &str,
        duration: Option<i64>,
        external_id: Option<&str>,
    ) -> Result<SessionCredentials> {
        check_name("roleSessionName", session_name, 2, 64)?;
        if role_arn.len() < 20 || role_arn.len() > 2048 {
            return Err(validation(format!(
                "1 validation error detected: Value '{role_arn}' at 'roleArn' failed to satisfy \
                 constraint: Member must have length greater than or equal to 20"
            )));
        }
        let seconds = duration.unwrap_or(3600);
        if seconds < 900 {
            return Err(validation(format!(
                "1 validation error detected: Value '{seconds}' at 'durationSeconds' failed to \
                 satisfy constraint: Member must have value greater than or equal to 900"
            )));
        }
        let p = &requester.principal;
        let me = self.principal_arn_of(p);
        let denied = || {
            ControlError::AccessDenied(format!(
                "User: {me} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
            ))
        };
        // The caller's own permission (`sts:AssumeRole` on the role) was checked by
        // `Control::execute`; here the role's trust policy decides.
        let role = self.role_by_arn(role_arn).ok_or_else(denied)?;
        let mut arns = vec![me.clone()];
        if let Principal::Session(c) = p {
            arns.push(self.role_arn_of_session(c));
        }
        let mut ctx = self.caller_context(requester);
        ctx.insert("sts:rolesessionname".into(), vec![session_name.to_string()]);
        if let Some(x) = external_id {
            ctx.insert("sts:externalid".into(), vec![x.to_string()]);
        }
        let caller = Caller {
            account: &self.part.account_id,
            arns: &arns,
            service: None,
        };
        if !self.trusts(&role, &caller, &ctx) {
            return Err(denied());
        }
        if seconds > role.max_session_duration {
            return Err(validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            ));
        }
        Ok(self.mint(&role, session_name, seconds))
    }

    /// Whether ECS may assume `role_arn` for tasks (it exists and trusts
    /// `ecs-tasks.amazonaws.com`); the error is ECS's.
    pub fn check_task_role(
        &self,
        role_arn: &str,
        cluster_arn: &str,
    ) -> Result<std::sync::Arc<RoleRecord>> {
        let refuse = || {
            ControlError::Client(format!(
                "ECS was unable to assume the role '{role_arn}' that was provided for this \
                 task. Please verify that the role being passed has the proper trust \
                 relationship and permissions and that your IAM user has permissions to pass \
                 this role."
            ))
        };
        let role = self.role_by_arn(role_arn).ok_or_else(refuse)?;
        let mut ctx = HashMap::new();
        ctx.insert(
            "aws:sourceaccount".to_string(),
            vec![self.part.account_id.clone()],
        );
        let caller = Caller {
            account: &self.part.account_id,
            arns: &[],
            service: Some(ECS_TASKS_SERVICE),
        };
        // The source: the cluster the task runs in.
        ctx.insert("aws:sourcearn".to_string(), vec![cluster_arn.to_string()]);
        if !self.trusts(&role, &caller, &ctx) {
            return Err(refuse());
        }
        Ok(role)
    }

    /// Credentials of `role_arn` for one task, as ECS assumes task roles
    /// (`ecs-tasks.amazonaws.com`, the task's cluster as the source), valid for the configured
    /// task-credential lifetime; the session is named after the task id.
    pub fn task_role_session(
        &self,
        role_arn: &str,
        cluster_arn: &str,
        task_arn: &str,
    ) -> Result<SessionCredentials> {
        let role = self.check_task_role(role_arn, cluster_arn)?;
        let id = task_arn.rsplit('/').next().unwrap_or("task");
        Ok(self.mint(&role, id, self.task_credentials_ttl.as_secs() as i64))
    }
}
