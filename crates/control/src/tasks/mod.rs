//! Task operations, by concern: checking a launch (`launch`), placing and committing it —
//! RunTask, StartTask (`placement`) — StopTask (`stop`), DescribeTasks and ListTasks
//! (`query`), and the agents' state-change reports that move tasks through their lifecycle
//! (`report`). This module keeps what they share: task ids and ARNs, failures, and how a
//! task is marked finished.

mod launch;
mod placement;
mod query;
mod report;
mod stop;

pub use launch::MAX_RUN_COUNT;
pub(crate) use launch::{Launch, check_constraints, check_network, check_strategies};
pub(crate) use placement::create_ops;

use berth_model::arn::EcsResource;
use berth_model::status::{ContainerStatus, DesiredStatus, TaskStatus, UnknownStatus};
use berth_model::wire::ecs::{Failure, Task};

use crate::Control;
use crate::error::ControlError;
use crate::records::TaskRecord;

/// The id part of a task record's ARN.
fn task_id(r: &TaskRecord) -> &str {
    r.task
        .task_arn
        .as_deref()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default()
}

/// A status ECS does not have, refused as ECS refuses a bad parameter.
fn invalid_status(e: UnknownStatus) -> ControlError {
    ControlError::invalid(e.to_string())
}

fn task_failure(arn: Option<String>, reason: &str) -> Failure {
    Failure {
        arn,
        reason: Some(reason.to_string()),
        detail: None,
    }
}

/// The id part of a task ARN, or the id itself.
fn task_id_of<'a>(c: &Control, cluster: &str, s: &'a str) -> Option<&'a str> {
    if s.starts_with("arn:") {
        match c.part.parse_ecs(s) {
            Some(EcsResource::Task {
                cluster: ref tc, ..
            }) if tc == cluster => s.rsplit('/').next(),
            _ => None,
        }
    } else {
        (!s.is_empty() && !s.contains('/')).then_some(s)
    }
}

/// Mark a task STOPPED now (and its containers that never reported). A stopped task is
/// also desired STOPPED, as ECS shows it (and lists it).
pub(crate) fn finish(t: &mut Task, at: f64) {
    t.last_status = Some(TaskStatus::Stopped.into());
    t.desired_status = Some(DesiredStatus::Stopped.into());
    t.stopped_at.get_or_insert(at);
    t.execution_stopped_at.get_or_insert(at);
    t.connectivity = None;
    if let Some(cs) = t.containers.as_mut() {
        for c in cs {
            c.last_status = Some(ContainerStatus::Stopped.into());
        }
    }
}
