//! The agents' reports SubmitTaskStateChange and SubmitContainerStateChange, which move tasks
//! and their containers through their lifecycle. Statuses are read here, at the edge: a
//! report with one ECS does not have is refused and changes nothing; a late or repeated one
//! never moves a task backwards.

use berth_model::status::{ContainerStatus, TaskStatus, stop_code};
use berth_model::wire::ecs::{
    SubmitContainerStateChangeRequest, SubmitContainerStateChangeResponse,
    SubmitTaskStateChangeRequest, SubmitTaskStateChangeResponse, Task,
};

use super::{finish, invalid_status, task_id_of};
use crate::error::{ControlError, Result};
use crate::{Control, keys};

/// Move a task to the status its agent reported, if that is forward; returns whether it
/// moved. A record whose status cannot be read (none can: every writer checks it) is not
/// moved.
fn apply_task_status(t: &mut Task, to: TaskStatus, reason: Option<&str>, at: f64) -> bool {
    let cur = match t.last_status.as_deref() {
        None => TaskStatus::Pending,
        Some(s) => match s.parse::<TaskStatus>() {
            Ok(cur) => cur,
            Err(_) => return false,
        },
    };
    if to == cur || !cur.can_move_to(to) {
        return false;
    }
    t.last_status = Some(to.into());
    match to {
        TaskStatus::Running => {
            t.started_at.get_or_insert(at);
        }
        TaskStatus::Stopping => {
            t.stopping_at.get_or_insert(at);
        }
        TaskStatus::Stopped => {
            if t.stop_code.is_none() {
                // A task that never ran failed to start (image pull, container creation);
                // one that ran lost an essential container.
                t.stop_code = Some(
                    if t.started_at.is_none() {
                        stop_code::TASK_FAILED_TO_START
                    } else {
                        stop_code::ESSENTIAL_CONTAINER_EXITED
                    }
                    .into(),
                );
            }
            if t.stopped_reason.is_none() {
                // The ECS agent sends an empty reason when it has none.
                t.stopped_reason = Some(
                    reason
                        .filter(|r| !r.is_empty())
                        .unwrap_or("Essential container in task exited")
                        .to_string(),
                );
            }
            finish(t, at);
        }
        _ => {}
    }
    true
}

/// Fold one container report into the task; returns whether anything changed.
#[allow(clippy::too_many_arguments)]
fn apply_container_report(
    t: &mut Task,
    name: Option<&str>,
    status: Option<ContainerStatus>,
    exit_code: Option<i32>,
    reason: Option<&str>,
    runtime_id: Option<&str>,
    image_digest: Option<&str>,
    bindings: Option<&Vec<berth_model::wire::ecs::NetworkBinding>>,
) -> bool {
    let Some(cs) = t.containers.as_mut() else {
        return false;
    };
    let Some(c) = cs.iter_mut().find(|c| c.name.as_deref() == name) else {
        return false;
    };
    let before = c.clone();
    if let Some(s) = status {
        let cur = match c.last_status.as_deref() {
            None => Some(ContainerStatus::Pending),
            Some(v) => v.parse().ok(),
        };
        if cur.is_some_and(|cur| cur.can_move_to(s)) {
            c.last_status = Some(s.into());
        }
    }
    if exit_code.is_some() {
        c.exit_code = exit_code;
    }
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        c.reason = Some(r.chars().take(255).collect());
    }
    if let Some(r) = runtime_id {
        c.runtime_id = Some(r.to_string());
    }
    if let Some(d) = image_digest {
        c.image_digest = Some(d.to_string());
    }
    if let Some(b) = bindings {
        c.network_bindings = Some(b.clone());
    }
    *c != before
}

impl Control {
    /// A task state report from the agent running it.
    pub async fn submit_task_state_change(
        &self,
        req: SubmitTaskStateChangeRequest,
    ) -> Result<SubmitTaskStateChangeResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let given = req.task.clone().unwrap_or_default();
        let id = task_id_of(self, &cname, &given)
            .ok_or_else(|| ControlError::invalid("The referenced task was not found."))?
            .to_string();
        // Statuses are read at the edge: a report with one ECS does not have changes nothing.
        let new_status: Option<TaskStatus> = req
            .status
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(invalid_status)?;
        let reported = req.containers.as_deref().unwrap_or_default();
        let container_statuses: Vec<Option<ContainerStatus>> = reported
            .iter()
            .map(|c| c.status.as_deref().map(str::parse).transpose())
            .collect::<std::result::Result<_, _>>()
            .map_err(invalid_status)?;
        self.modify(
            &keys::task(&cname, &id),
            |d| d.tasks().get(&cname)?.get(&id).map(|e| e.entry()),
            || ControlError::invalid("The referenced task was not found."),
            |r| {
                let t = &mut r.task;
                let at = self.now().as_secs_f64();
                let mut changed = false;
                for (c, status) in reported.iter().zip(&container_statuses) {
                    changed |= apply_container_report(
                        t,
                        c.container_name.as_deref(),
                        *status,
                        c.exit_code,
                        c.reason.as_deref(),
                        c.runtime_id.as_deref(),
                        c.image_digest.as_deref(),
                        c.network_bindings.as_ref(),
                    );
                }
                if let Some(p) = req.pull_started_at {
                    t.pull_started_at.get_or_insert(p);
                }
                if let Some(p) = req.pull_stopped_at {
                    t.pull_stopped_at.get_or_insert(p);
                }
                if let Some(p) = req.execution_stopped_at {
                    t.execution_stopped_at.get_or_insert(p);
                }
                if let Some(to) = new_status {
                    changed |= apply_task_status(t, to, req.reason.as_deref(), at);
                }
                if changed {
                    t.version = Some(t.version.unwrap_or(0) + 1);
                }
                Ok(())
            },
        )
        .await?;
        Ok(SubmitTaskStateChangeResponse {
            acknowledgment: Some("ACK".into()),
        })
    }

    /// A single container's state report from the agent running it.
    pub async fn submit_container_state_change(
        &self,
        req: SubmitContainerStateChangeRequest,
    ) -> Result<SubmitContainerStateChangeResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let given = req.task.clone().unwrap_or_default();
        let id = task_id_of(self, &cname, &given)
            .ok_or_else(|| ControlError::invalid("The referenced task was not found."))?
            .to_string();
        let status: Option<ContainerStatus> = req
            .status
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(invalid_status)?;
        self.modify(
            &keys::task(&cname, &id),
            |d| d.tasks().get(&cname)?.get(&id).map(|e| e.entry()),
            || ControlError::invalid("The referenced task was not found."),
            |r| {
                let t = &mut r.task;
                let known = t
                    .containers
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.name == req.container_name);
                if !known {
                    return Err(ControlError::invalid(format!(
                        "Container {} is not part of the task.",
                        req.container_name.as_deref().unwrap_or("null")
                    )));
                }
                if apply_container_report(
                    t,
                    req.container_name.as_deref(),
                    status,
                    req.exit_code,
                    req.reason.as_deref(),
                    req.runtime_id.as_deref(),
                    None,
                    req.network_bindings.as_ref(),
                ) {
                    t.version = Some(t.version.unwrap_or(0) + 1);
                }
                Ok(())
            },
        )
        .await?;
        Ok(SubmitContainerStateChangeResponse {
            acknowledgment: Some("ACK".into()),
        })
    }
}
