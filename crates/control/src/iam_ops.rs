//! The IAM and STS operation tables: each operation's request shape (generated from botocore's
//! IAM and STS models), the resource AWS's service authorization reference names for it, and
//! its handler. The query protocol (`crates/api/src/query`) decodes forms into these shapes
//! and encodes their answers as XML; nothing here knows the protocol.
//!
//! Resources: role operations act on the role (`arn:aws:iam::ACCOUNT:role/PATH/NAME`),
//! managed-policy operations on the policy, attaching on the role; listing roles and policies
//! on `*`; `sts:AssumeRole` on the role assumed. `sts:GetCallerIdentity` needs no permission
//! (AWS: anyone may ask who they are).
//!
//! Members berth does not honour (permissions boundaries, session policies and tags, MFA,
//! source identity, tags on managed policies) are refused, not ignored.

use berth_model::wire::iam::*;
use berth_model::wire::sts::{
    AssumeRoleRequest, AssumeRoleResponse, AssumedRoleUser, Credentials, GetCallerIdentityRequest,
    GetCallerIdentityResponse,
};

use crate::command::{Access, Caller, Command};
use crate::iam::{NewRole, iam_page, iso8601, validation};
use crate::iam_managed::PolicyInfo;
use crate::records::RoleRecord;
use crate::{Control, ControlError, Result};

/// Percent-encoding of a policy document, as IAM returns documents (botocore decodes them).
pub fn url_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn role_shape(r: &RoleRecord) -> Role {
    Role {
        path: Some(r.path.clone()),
        role_name: Some(r.role_name.clone()),
        role_id: Some(r.role_id.clone()),
        arn: Some(r.arn.clone()),
        create_date: Some(iso8601(r.create_date)),
        assume_role_policy_document: Some(url_encode(&r.assume_role_policy)),
        description: r.description.clone(),
        max_session_duration: Some(r.max_session_duration as i32),
        tags: (!r.tags.is_empty()).then(|| {
            r.tags
                .iter()
                .map(|(k, v)| Tag {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect()
        }),
        ..Default::default()
    }
}

fn policy_shape(p: &PolicyInfo) -> Policy {
    let r = &p.policy;
    Policy {
        policy_name: Some(r.policy_name.clone()),
        policy_id: Some(r.policy_id.clone()),
        arn: Some(r.arn.clone()),
        path: Some(r.path.clone()),
        default_version_id: Some("v1".into()),
        attachment_count: Some(p.attachment_count as i32),
        permissions_boundary_usage_count: Some(0),
        is_attachable: Some(true),
        description: r.description.clone(),
        create_date: Some(iso8601(r.create_date)),
        update_date: Some(iso8601(r.create_date)),
        ..Default::default()
    }
}

/// Refuse a member berth does not honour.
fn unsupported(set: bool, member: &str) -> Result<()> {
    if set {
        return Err(validation(format!(
            "berth does not support {member} yet; leave it out."
        )));
    }
    Ok(())
}

/// A required member (the shape's `Validate` has checked it is there).
fn req(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or_default()
}

impl Control {
    /// The ARN of the role named `name` (as stored, with its path; as named, if it is not).
    fn role_resource(&self, name: &Option<String>) -> String {
        let n = req(name);
        self.get_role(n)
            .map(|r| r.arn)
            .unwrap_or_else(|_| format!("arn:aws:iam::{}:role/{n}", self.part.account_id))
    }

    fn path_arn(&self, kind: &str, path: &Option<String>, name: &Option<String>) -> String {
        format!(
            "arn:aws:iam::{}:{kind}{}{}",
            self.part.account_id,
            path.as_deref().unwrap_or("/"),
            req(name)
        )
    }
}

/// One IAM/STS operation: `$access` names its resource(s), `$run` its handler.
macro_rules! iam_command {
    ($svc:literal, $req:ty => $out:ty, $name:literal,
     access |$ra:ident, $ca:ident| $access:expr,
     run |$r:ident, $c:ident, $caller:ident| $run:expr) => {
        impl Command<Control> for $req {
            type Output = $out;
            type Error = ControlError;
            const SERVICE: &'static str = $svc;
            const NAME: &'static str = $name;
            async fn access(&self, _: &Control, $ca: &Control) -> Access {
                let $ra = self;
                $access
            }
            async fn run(self, _: &Control, $c: &Control, $caller: &Caller) -> Result<$out> {
                let $r = self;
                let _ = $caller;
                $run
            }
        }
    };
}

iam_command!("iam", CreateRoleRequest => CreateRoleResponse, "CreateRole",
access |r, c| Access::on([c.path_arn("role", &r.path, &r.role_name)]),
run |r, c, _caller| {
    unsupported(r.permissions_boundary.is_some(), "PermissionsBoundary")?;
    unsupported(r.max_signin_session_duration.is_some(), "MaxSigninSessionDuration")?;
    let rec = c
        .create_role(NewRole {
            role_name: req(&r.role_name).to_string(),
            path: r.path,
            assume_role_policy: req(&r.assume_role_policy_document).to_string(),
            description: r.description,
            max_session_duration: r.max_session_duration.map(i64::from),
            tags: r
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
                .collect(),
        })
        .await?;
    Ok(CreateRoleResponse { role: Some(role_shape(&rec)) })
});

iam_command!("iam", GetRoleRequest => GetRoleResponse, "GetRole",
    access |r, c| Access::on([c.role_resource(&r.role_name)]),
    run |r, c, _caller| Ok(GetRoleResponse { role: Some(role_shape(&c.get_role(req(&r.role_name))?)) }));

iam_command!("iam", ListRolesRequest => ListRolesResponse, "ListRoles",
access |_r, _c| Access::any(),
run |r, c, _caller| {
    let (roles, next) = c.list_roles(
        r.path_prefix.as_deref(),
        r.marker.as_deref(),
        r.max_items.map(i64::from),
    )?;
    Ok(ListRolesResponse {
        roles: Some(roles.iter().map(role_shape).collect()),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
});

iam_command!("iam", DeleteRoleRequest => (), "DeleteRole",
    access |r, c| Access::on([c.role_resource(&r.role_name)]),
    run |r, c, _caller| c.delete_role(req(&r.role_name)).await);

iam_command!("iam", UpdateAssumeRolePolicyRequest => (), "UpdateAssumeRolePolicy",
access |r, c| Access::on([c.role_resource(&r.role_name)]),
run |r, c, _caller| {
    c.update_assume_role_policy(req(&r.role_name), req(&r.policy_document)).await
});

iam_command!("iam", PutRolePolicyRequest => (), "PutRolePolicy",
access |r, c| Access::on([c.role_resource(&r.role_name)]),
run |r, c, _caller| {
    c.put_role_policy(req(&r.role_name), req(&r.policy_name), req(&r.policy_document))
        .await
});

iam_command!("iam", GetRolePolicyRequest => GetRolePolicyResponse, "GetRolePolicy",
access |r, c| Access::on([c.role_resource(&r.role_name)]),
run |r, c, _caller| {
    let (role, doc) = c.get_role_policy(req(&r.role_name), req(&r.policy_name))?;
    Ok(GetRolePolicyResponse {
        role_name: Some(role),
        policy_name: r.policy_name,
        policy_document: Some(url_encode(&doc)),
    })
});

iam_command!("iam", ListRolePoliciesRequest => ListRolePoliciesResponse, "ListRolePolicies",
access |r, c| Access::on([c.role_resource(&r.role_name)]),
run |r, c, _caller| {
    let (names, next) = c.list_role_policies(
        req(&r.role_name),
        r.marker.as_deref(),
        r.max_items.map(i64::from),
    )?;
    Ok(ListRolePoliciesResponse {
        policy_names: Some(names),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
});

iam_command!("iam", DeleteRolePolicyRequest => (), "DeleteRolePolicy",
    access |r, c| Access::on([c.role_resource(&r.role_name)]),
    run |r, c, _caller| c.delete_role_policy(req(&r.role_name), req(&r.policy_name)).await);

iam_command!("iam", CreatePolicyRequest => CreatePolicyResponse, "CreatePolicy",
access |r, c| Access::on([c.path_arn("policy", &r.path, &r.policy_name)]),
run |r, c, _caller| {
    unsupported(r.tags.as_ref().is_some_and(|t| !t.is_empty()), "Tags on managed policies")?;
    let info = c
        .create_policy(
            req(&r.policy_name),
            r.path.as_deref(),
            req(&r.policy_document),
            r.description.as_deref(),
        )
        .await?;
    Ok(CreatePolicyResponse { policy: Some(policy_shape(&info)) })
});

iam_command!("iam", GetPolicyRequest => GetPolicyResponse, "GetPolicy",
    access |r, _c| Access::on([req(&r.policy_arn).to_string()]),
    run |r, c, _caller| Ok(GetPolicyResponse { policy: Some(policy_shape(&c.get_policy(req(&r.policy_arn))?)) }));

iam_command!("iam", GetPolicyVersionRequest => GetPolicyVersionResponse, "GetPolicyVersion",
access |r, _c| Access::on([req(&r.policy_arn).to_string()]),
run |r, c, _caller| {
    let v = req(&r.version_id);
    let p = c.get_policy_version(req(&r.policy_arn), v)?;
    Ok(GetPolicyVersionResponse {
        policy_version: Some(PolicyVersion {
            document: Some(url_encode(&p.document)),
            version_id: Some(v.to_string()),
            is_default_version: Some(true),
            create_date: Some(iso8601(p.create_date)),
        }),
    })
});

iam_command!("iam", ListPoliciesRequest => ListPoliciesResponse, "ListPolicies",
access |_r, _c| Access::any(),
run |r, c, _caller| {
    unsupported(r.policy_usage_filter.is_some(), "PolicyUsageFilter")?;
    let (policies, next) = c.list_policies(
        r.scope.as_deref(),
        r.only_attached.unwrap_or(false),
        r.path_prefix.as_deref(),
        r.marker.as_deref(),
        r.max_items.map(i64::from),
    )?;
    Ok(ListPoliciesResponse {
        policies: Some(policies.iter().map(policy_shape).collect()),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
});

iam_command!("iam", DeletePolicyRequest => (), "DeletePolicy",
    access |r, _c| Access::on([req(&r.policy_arn).to_string()]),
    run |r, c, _caller| c.delete_policy(req(&r.policy_arn)).await);

iam_command!("iam", AttachRolePolicyRequest => (), "AttachRolePolicy",
    access |r, c| Access::on([c.role_resource(&r.role_name)]),
    run |r, c, _caller| c.attach_role_policy(req(&r.role_name), req(&r.policy_arn)).await);

iam_command!("iam", DetachRolePolicyRequest => (), "DetachRolePolicy",
    access |r, c| Access::on([c.role_resource(&r.role_name)]),
    run |r, c, _caller| c.detach_role_policy(req(&r.role_name), req(&r.policy_arn)).await);

iam_command!("iam", ListAttachedRolePoliciesRequest => ListAttachedRolePoliciesResponse, "ListAttachedRolePolicies",
access |r, c| Access::on([c.role_resource(&r.role_name)]),
run |r, c, _caller| {
    let (max, after) = iam_page(r.marker.as_deref(), r.max_items.map(i64::from))?;
    let all = c.list_attached_role_policies(req(&r.role_name), r.path_prefix.as_deref())?;
    // Attachment order, resumable by position.
    let items = all.into_iter().enumerate().map(|(i, p)| (format!("{i:08}"), p));
    let (page, next) = crate::paging::page(items, after.as_deref(), max);
    Ok(ListAttachedRolePoliciesResponse {
        attached_policies: Some(
            page.into_iter()
                .map(|(name, arn)| AttachedPolicy {
                    policy_name: Some(name),
                    policy_arn: Some(arn),
                })
                .collect(),
        ),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
});

iam_command!("sts", AssumeRoleRequest => AssumeRoleResponse, "AssumeRole",
access |r, _c| Access::on([req(&r.role_arn).to_string()]),
run |r, c, caller| {
    unsupported(
        r.policy.is_some() || r.policy_arns.as_ref().is_some_and(|p| !p.is_empty()),
        "session policies (Policy, PolicyArns)",
    )?;
    unsupported(
        r.tags.as_ref().is_some_and(|t| !t.is_empty())
            || r.transitive_tag_keys.as_ref().is_some_and(|t| !t.is_empty()),
        "session tags (Tags, TransitiveTagKeys)",
    )?;
    unsupported(r.serial_number.is_some() || r.token_code.is_some(), "MFA (SerialNumber, TokenCode)")?;
    unsupported(r.source_identity.is_some(), "SourceIdentity")?;
    unsupported(
        r.provided_contexts.as_ref().is_some_and(|p| !p.is_empty()),
        "ProvidedContexts",
    )?;
    let s = c.assume_role(
        caller,
        req(&r.role_arn),
        req(&r.role_session_name),
        r.duration_seconds.map(i64::from),
        r.external_id.as_deref(),
    )?;
    Ok(AssumeRoleResponse {
        credentials: Some(Credentials {
            access_key_id: Some(s.access_key_id),
            secret_access_key: Some(s.secret_access_key),
            session_token: Some(s.session_token),
            expiration: Some(iso8601(s.expiration as f64)),
        }),
        assumed_role_user: Some(AssumedRoleUser {
            assumed_role_id: Some(s.assumed_role_id),
            arn: Some(s.assumed_role_arn),
        }),
        ..Default::default()
    })
});

iam_command!("sts", GetCallerIdentityRequest => GetCallerIdentityResponse, "GetCallerIdentity",
access |_r, _c| Access::anyone(),
run |_r, c, caller| {
    let id = c.caller_identity(&caller.principal);
    Ok(GetCallerIdentityResponse {
        user_id: Some(id.user_id),
        account: Some(id.account),
        arn: Some(id.arn),
    })
});

crate::operation_table! {
    /// IAM (`iam` 2010-05-08, query protocol): the role and managed-policy operations.
    pub mod iam on Control {
        CreateRole => CreateRoleRequest,
        GetRole => GetRoleRequest,
        ListRoles => ListRolesRequest,
        DeleteRole => DeleteRoleRequest,
        UpdateAssumeRolePolicy => UpdateAssumeRolePolicyRequest,
        PutRolePolicy => PutRolePolicyRequest,
        GetRolePolicy => GetRolePolicyRequest,
        ListRolePolicies => ListRolePoliciesRequest,
        DeleteRolePolicy => DeleteRolePolicyRequest,
        CreatePolicy => CreatePolicyRequest,
        GetPolicy => GetPolicyRequest,
        GetPolicyVersion => GetPolicyVersionRequest,
        ListPolicies => ListPoliciesRequest,
        DeletePolicy => DeletePolicyRequest,
        AttachRolePolicy => AttachRolePolicyRequest,
        DetachRolePolicy => DetachRolePolicyRequest,
        ListAttachedRolePolicies => ListAttachedRolePoliciesRequest,
    }
}

crate::operation_table! {
    /// STS (`sts` 2011-06-15, query protocol).
    pub mod sts on Control {
        AssumeRole => AssumeRoleRequest,
        GetCallerIdentity => GetCallerIdentityRequest,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn policies_are_url_encoded() {
        assert_eq!(super::url_encode("{\"A\": 1}"), "%7B%22A%22%3A%201%7D");
    }
}
