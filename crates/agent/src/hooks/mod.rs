//! The task runner's hooks: everything a task needs besides its containers, each at the same
//! points of the task's life ([`Hook`]). In order:
//!
//! - [`images`]: pull every container's image (PENDING), mark it used at each start;
//! - [`cgroup`]: the task's parent cgroup with its CPU and memory limits, removed at the end;
//! - [`network`]: the `awsvpc` endpoint (reported to the control plane), a bridge-mode
//!   container's endpoint and host ports, network namespaces and hostnames, port forwarders
//!   (restored after an agent restart), all removed at the end;
//! - [`volumes`]: bind mounts of task volumes (`mountPoints`, `volumesFrom`), the task's volume
//!   directory removed at the end;
//! - [`credentials`]: the variable pointing a container at its task role's credentials; the
//!   task's credentials forgotten at the end;
//! - [`health`]: a container's health check loop while it runs.
//!
//! Container logs are the driver's (a file per container) and the agent's rotation
//! (`crate::rotate_logs`); a log shipper (awslogs) will be a hook here.
//!
//! A hook keeps its own per-task state (one set of hooks per task) and shares the task's
//! through [`Task`]. Must not: start, signal or wait for containers (the runner's), or decide
//! the task's fate other than by failing a step with a reason.

use async_trait::async_trait;

use crate::task::{Launch, Task};

pub(crate) mod cgroup;
pub(crate) mod credentials;
pub(crate) mod health;
pub(crate) mod images;
pub(crate) mod network;
pub(crate) mod volumes;

/// A part of running a task. Every method has a default that does nothing.
#[async_trait]
pub(crate) trait Hook: Send + Sync {
    /// Before any container starts, and again after an agent restart (so: idempotent). An
    /// error (a reason as ECS words it) fails the task.
    async fn prepare(&mut self, _t: &mut Task) -> Result<(), String> {
        Ok(())
    }

    /// Shape a container about to start. An error fails the task, after every hook's
    /// [`Self::undo`].
    async fn create(&mut self, _t: &mut Task, _c: &mut Launch) -> Result<(), String> {
        Ok(())
    }

    /// Take back what [`Self::create`] made for a container that did not start (called on
    /// every hook, in reverse order, whether or not its `create` ran).
    async fn undo(&mut self, _t: &mut Task, _c: &Launch) {}

    /// A container runs: just started, or (`resumed`) found running after an agent restart.
    async fn running(&mut self, _t: &mut Task, _name: &str, _pid: i32, _resumed: bool) {}

    /// A container ended.
    async fn exited(&mut self, _t: &mut Task, _name: &str) {}

    /// Every container has ended: release what the task held (reverse order).
    async fn finish(&mut self, _t: &mut Task) {}
}

/// A new task's hooks, in order.
pub(crate) fn for_task() -> Vec<Box<dyn Hook>> {
    vec![
        Box::new(images::Images),
        Box::new(cgroup::TaskCgroup),
        Box::new(network::Network::default()),
        Box::new(volumes::Volumes),
        Box::new(credentials::Credentials),
        Box::new(health::Health::default()),
    ]
}
