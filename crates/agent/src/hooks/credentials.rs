//! The credentials hook: a container of a task with a role is pointed at its credentials (the
//! variable its network mode reaches the endpoint by); the task's credentials are forgotten
//! when it ends.
//!
//! The variable is built at every start from the task's saved credentials id, so a container
//! started after an agent restart gets it too; one that kept running keeps its own, which
//! stays right: the loopback port is kept across restarts and the bridge's address is
//! redirected to wherever the endpoint listens now.

use async_trait::async_trait;

use super::Hook;
use crate::credentials;
use crate::task::{Launch, Task};

pub(crate) struct Credentials;

#[async_trait]
impl Hook for Credentials {
    async fn create(&mut self, t: &mut Task, c: &mut Launch) -> Result<(), String> {
        let Some(id) = credentials::task_role_id(&t.st.payload) else {
            return Ok(());
        };
        let mode = t.network_mode();
        let Some(d) = t.def(&c.name) else {
            return Ok(());
        };
        let disabled = d.disable_networking == Some(true);
        match t.inner.credentials_access.env(&mode, disabled, id) {
            Some((name, value)) => credentials::set_env(&mut c.spec.env, d, name, &value),
            None if !disabled && mode != "none" => tracing::warn!(
                container = d.name.as_deref().unwrap_or_default(),
                "the task has a role, but its credentials endpoint is not available in network mode {mode} on this node"
            ),
            None => {}
        }
        Ok(())
    }

    async fn finish(&mut self, t: &mut Task) {
        t.inner.credentials.remove_task(&t.st.arn);
    }
}
