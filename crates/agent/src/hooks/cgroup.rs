//! The task cgroup hook: the parent cgroup of a task's containers, with the task-level `cpu`
//! and `memory` limits, made before any container starts and removed at the end.

use async_trait::async_trait;

use super::Hook;
use crate::task::Task;

pub(crate) struct TaskCgroup;

#[async_trait]
impl Hook for TaskCgroup {
    async fn prepare(&mut self, t: &mut Task) -> Result<(), String> {
        if !t.unfinished() {
            return Ok(());
        }
        t.inner
            .driver
            .task_cgroup(
                &t.cgroup(),
                t.st.payload.cpu,
                t.st.payload.memory.map(i64::from),
            )
            .await
            .map_err(|e| format!("CannotStartContainerError: task limits: {e}"))
    }

    async fn finish(&mut self, t: &mut Task) {
        t.inner.driver.remove_task_cgroup(&t.cgroup()).await;
    }
}
