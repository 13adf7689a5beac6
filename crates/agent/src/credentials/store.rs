//! The credential cache: credentialsId → a role's current keys, with their task and role
//! type, in memory only. What a payload or a refresh brings goes in ([`CredentialStore::set`],
//! [`CredentialStore::take_from_task`], [`CredentialStore::refresh`]); a restarted agent
//! expects the ids its saved tasks hold until the keys come again; a task's entries go when it
//! stops. [`scrub`] strips the keys from a payload before it is saved.
//!
//! Must not: write the keys anywhere or show them in a log line (their `Debug` is redacted).

use std::collections::HashMap;

use berth_model::wire::acs::{self, IAMRoleCredentials, IAMRoleCredentialsAckRequest};
use parking_lot::RwLock;
use serde::Serialize;

/// Which role a set of credentials is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleType {
    /// The task role (`taskRoleArn`): for the containers' own calls.
    TaskApplication,
    /// The task execution role (`executionRoleArn`): for the agent (pulls, logs, secrets).
    TaskExecution,
}

impl RoleType {
    pub fn parse(s: &str) -> Option<RoleType> {
        match s {
            "TaskApplication" => Some(RoleType::TaskApplication),
            "TaskExecution" => Some(RoleType::TaskExecution),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoleType::TaskApplication => "TaskApplication",
            RoleType::TaskExecution => "TaskExecution",
        }
    }
}

/// A role's temporary credentials, as the endpoint serves them.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct RoleCredentials {
    #[serde(rename = "RoleArn")]
    pub role_arn: String,
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    pub secret_access_key: String,
    #[serde(rename = "Token")]
    pub session_token: String,
    /// ISO 8601, passed on as the control plane wrote it.
    #[serde(rename = "Expiration")]
    pub expiration: String,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("role_arn", &self.role_arn)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// What the store knows about one credentialsId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub task_arn: String,
    pub role_type: RoleType,
    /// None while a restarted agent waits for the control plane to send them again.
    pub credentials: Option<RoleCredentials>,
}

/// Credentials the control plane sent that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCredentials {
    /// No `credentialsId`.
    #[error("the credentials have no credentialsId")]
    NoId,
    /// No task to tie them to.
    #[error("credentials {0} name no task")]
    NoTask(String),
    /// A `roleType` other than `TaskApplication` and `TaskExecution`.
    #[error("credentials {0} have an unknown role type {1:?}")]
    RoleType(String, String),
    /// No access key or secret key.
    #[error("credentials {0} have no keys")]
    NoKeys(String),
    /// A refresh without a `messageId` (it could not be acknowledged).
    #[error("a credentials message without a messageId")]
    NoMessageId,
    /// A refresh for a task this agent does not run.
    #[error("credentials {0} are for task {1}, which this node does not run")]
    UnknownTask(String, String),
}

/// credentialsId → credentials, in memory only.
#[derive(Debug, Default)]
pub struct CredentialStore {
    entries: RwLock<HashMap<String, Entry>>,
}

/// What the endpoint finds for an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(RoleCredentials),
    /// A task role's id known from the task's state, its keys not received yet.
    Uninitialized,
    /// No such id, or not a task role's.
    Unknown,
}

impl CredentialStore {
    pub fn new() -> CredentialStore {
        CredentialStore::default()
    }

    /// Store (or replace) the credentials `c` of `task_arn`'s role.
    pub fn set(
        &self,
        task_arn: &str,
        role_type: RoleType,
        c: &IAMRoleCredentials,
    ) -> Result<(), InvalidCredentials> {
        let id = c
            .credentials_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(InvalidCredentials::NoId)?;
        if task_arn.is_empty() {
            return Err(InvalidCredentials::NoTask(id.into()));
        }
        let (Some(key), Some(secret)) = (
            c.access_key_id.as_deref().filter(|s| !s.is_empty()),
            c.secret_access_key.as_deref().filter(|s| !s.is_empty()),
        ) else {
            return Err(InvalidCredentials::NoKeys(id.into()));
        };
        let creds = RoleCredentials {
            role_arn: c.role_arn.clone().unwrap_or_default(),
            access_key_id: key.into(),
            secret_access_key: secret.into(),
            session_token: c.session_token.clone().unwrap_or_default(),
            expiration: c.expiration.clone().unwrap_or_default(),
        };
        self.entries.write().insert(
            id.into(),
            Entry {
                task_arn: task_arn.into(),
                role_type,
                credentials: Some(creds),
            },
        );
        Ok(())
    }

    /// Remember that `task_arn` holds credentials `id` whose keys are still to come (an agent
    /// that restarted knows its tasks' ids from their state, the keys only from the control
    /// plane). Known ids are left as they are.
    pub fn expect(&self, task_arn: &str, role_type: RoleType, id: &str) {
        if id.is_empty() || task_arn.is_empty() {
            return;
        }
        self.entries
            .write()
            .entry(id.into())
            .or_insert_with(|| Entry {
                task_arn: task_arn.into(),
                role_type,
                credentials: None,
            });
    }

    /// The ids a task (from its saved payload) holds, so that they are expected.
    pub fn expect_task(&self, task_arn: &str, t: &acs::Task) {
        for (c, role) in task_credentials(t) {
            if let Some(id) = c.credentials_id.as_deref() {
                self.expect(task_arn, role, id);
            }
        }
    }

    /// Store the credentials a payload carries for task `t` (its task role's and its execution
    /// role's). Returns what to acknowledge (without a messageId: the payload's goes there).
    pub fn take_from_task(&self, t: &acs::Task) -> Vec<IAMRoleCredentialsAckRequest> {
        let arn = t.arn.as_deref().unwrap_or_default();
        let mut acks = Vec::new();
        for (c, role) in task_credentials(t) {
            match self.set(arn, role, c) {
                Ok(()) => acks.push(IAMRoleCredentialsAckRequest {
                    message_id: None,
                    expiration: c.expiration.clone(),
                    credentials_id: c.credentials_id.clone(),
                }),
                Err(e) => {
                    tracing::warn!(task = %arn, "{} credentials not usable: {e}", role.as_str())
                }
            }
        }
        acks
    }

    /// Take a refresh (`IAMRoleCredentialsMessage`) for a task of this node (`runs` says
    /// whether it runs `taskArn`); the ack to send back.
    pub fn refresh(
        &self,
        m: &acs::IAMRoleCredentialsMessage,
        runs: impl FnOnce(&str) -> bool,
    ) -> Result<IAMRoleCredentialsAckRequest, InvalidCredentials> {
        let c = m.role_credentials.clone().unwrap_or_default();
        let id = c
            .credentials_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(InvalidCredentials::NoId)?;
        let message_id = m
            .message_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(InvalidCredentials::NoMessageId)?;
        let task = m.task_arn.clone().unwrap_or_default();
        if task.is_empty() {
            return Err(InvalidCredentials::NoTask(id));
        }
        let role_type = m.role_type.clone().unwrap_or_default();
        let role = RoleType::parse(&role_type)
            .ok_or_else(|| InvalidCredentials::RoleType(id.clone(), role_type))?;
        if !runs(&task) {
            return Err(InvalidCredentials::UnknownTask(id, task));
        }
        self.set(&task, role, &c)?;
        Ok(IAMRoleCredentialsAckRequest {
            message_id: Some(message_id),
            expiration: c.expiration.clone(),
            credentials_id: Some(id),
        })
    }

    pub fn get(&self, id: &str) -> Option<Entry> {
        self.entries.read().get(id).cloned()
    }

    /// What the endpoint may serve for `id`: only task role credentials.
    pub fn task_role(&self, id: &str) -> Lookup {
        match self.entries.read().get(id) {
            Some(e) if e.role_type == RoleType::TaskApplication => match &e.credentials {
                Some(c) => Lookup::Found(c.clone()),
                None => Lookup::Uninitialized,
            },
            _ => Lookup::Unknown,
        }
    }

    /// Forget every credential of a task (it has stopped); how many there were.
    pub fn remove_task(&self, task_arn: &str) -> usize {
        let mut m = self.entries.write();
        let before = m.len();
        m.retain(|_, e| e.task_arn != task_arn);
        before - m.len()
    }

    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A task's credentials in a payload, with their role.
fn task_credentials(t: &acs::Task) -> impl Iterator<Item = (&IAMRoleCredentials, RoleType)> {
    t.role_credentials
        .iter()
        .map(|c| (c, RoleType::TaskApplication))
        .chain(
            t.execution_role_credentials
                .iter()
                .map(|c| (c, RoleType::TaskExecution)),
        )
}

/// Strip the keys from a task's payload before it is saved: only the ids and role ARNs stay
/// (what a restarted agent needs to set the containers' environment and expect the keys).
pub fn scrub(t: &mut acs::Task) {
    for c in [&mut t.role_credentials, &mut t.execution_role_credentials]
        .into_iter()
        .flatten()
    {
        *c = IAMRoleCredentials {
            credentials_id: c.credentials_id.take(),
            role_arn: c.role_arn.take(),
            ..Default::default()
        };
    }
}

/// The task role's credentialsId of a task, if it has a task role.
pub fn task_role_id(t: &acs::Task) -> Option<&str> {
    t.role_credentials
        .as_ref()?
        .credentials_id
        .as_deref()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{TASK, creds, task};
    use super::*;

    #[test]
    fn the_store_takes_payloads_and_refreshes_and_forgets_stopped_tasks() {
        let s = CredentialStore::new();
        let acks = s.take_from_task(&task());
        assert_eq!(acks.len(), 2);
        assert_eq!(acks[0].credentials_id.as_deref(), Some("app-id"));
        assert_eq!(acks[0].expiration.as_deref(), Some("2026-11-23T21:00:00Z"));
        assert_eq!(acks[0].message_id, None);
        let e = s.get("app-id").unwrap();
        assert_eq!(e.task_arn, TASK);
        assert_eq!(e.role_type, RoleType::TaskApplication);
        assert_eq!(s.get("exec-id").unwrap().role_type, RoleType::TaskExecution);

        // A refresh replaces the keys under the same id.
        let mut m = acs::IAMRoleCredentialsMessage {
            message_id: Some("m1".into()),
            task_arn: Some(TASK.into()),
            task_cluster_arn: None,
            role_type: Some("TaskApplication".into()),
            role_credentials: Some(IAMRoleCredentials {
                expiration: Some("2026-11-24T03:00:00Z".into()),
                ..creds("app-id", "AKIANEW")
            }),
        };
        let ack = s.refresh(&m, |t| t == TASK).unwrap();
        assert_eq!(ack.message_id.as_deref(), Some("m1"));
        assert_eq!(ack.credentials_id.as_deref(), Some("app-id"));
        assert_eq!(ack.expiration.as_deref(), Some("2026-11-24T03:00:00Z"));
        let Lookup::Found(c) = s.task_role("app-id") else {
            panic!("found")
        };
        assert_eq!(c.access_key_id, "AKIANEW");

        // Refreshes that cannot be taken: not acknowledged.
        assert!(matches!(
            s.refresh(&m, |_| false),
            Err(InvalidCredentials::UnknownTask(..))
        ));
        m.role_type = Some("Other".into());
        assert!(matches!(
            s.refresh(&m, |_| true),
            Err(InvalidCredentials::RoleType(..))
        ));
        m.role_type = Some("TaskApplication".into());
        m.message_id = None;
        assert_eq!(
            s.refresh(&m, |_| true),
            Err(InvalidCredentials::NoMessageId)
        );
        m.message_id = Some("m2".into());
        m.role_credentials.as_mut().unwrap().secret_access_key = None;
        assert!(matches!(
            s.refresh(&m, |_| true),
            Err(InvalidCredentials::NoKeys(_))
        ));

        // Execution-role credentials are never served.
        assert_eq!(s.task_role("exec-id"), Lookup::Unknown);
        assert_eq!(s.remove_task(TASK), 2);
        assert!(s.is_empty());
        assert_eq!(s.task_role("app-id"), Lookup::Unknown);
    }

    #[test]
    fn ids_from_saved_tasks_wait_for_their_keys() {
        let s = CredentialStore::new();
        let mut t = task();
        scrub(&mut t);
        s.expect_task(TASK, &t);
        assert_eq!(s.task_role("app-id"), Lookup::Uninitialized);
        assert_eq!(s.task_role("exec-id"), Lookup::Unknown);
        // The keys arrive; expecting again changes nothing.
        s.take_from_task(&task());
        s.expect_task(TASK, &t);
        assert!(matches!(s.task_role("app-id"), Lookup::Found(_)));
    }

    #[test]
    fn saved_payloads_keep_ids_not_keys() {
        let mut t = task();
        scrub(&mut t);
        let text = serde_json::to_string(&t).unwrap();
        for secret in ["AKIAAPP", "secret-", "token-", "AKIAEXEC"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(task_role_id(&t), Some("app-id"));
        assert_eq!(
            t.execution_role_credentials
                .unwrap()
                .credentials_id
                .as_deref(),
            Some("exec-id")
        );
        let shown = format!("{:?}", CredentialStore::new().get("x"));
        assert_eq!(shown, "None");
        let s = CredentialStore::new();
        s.take_from_task(&task());
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("secret-") && !shown.contains("token-"),
            "{shown}"
        );
    }
}
