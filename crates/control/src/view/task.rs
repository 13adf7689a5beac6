//! A task as the view keeps it: the stored record's bytes and the summary that counters,
//! indexes and filters read without decoding it; how a summary reads the record's statuses.

use std::sync::Arc;

use berth_store::Revision;

use super::{Entry, instance_id_of};
use crate::records::TaskRecord;
use berth_model::status::{DesiredStatus, HealthStatus, TaskStatus, stop_code};

/// A task as the view keeps it: the stored record as it was written (JSON, decoded only
/// when asked for — a million decoded tasks would not fit the memory budget) and the few
/// fields that counters, indexes and ListTasks filters read.
pub struct TaskEntry {
    pub rev: Revision,
    pub(super) json: Box<[u8]>,
    pub summary: TaskSummary,
}

/// What the view reads of a task without decoding it.
#[derive(Debug, Clone)]
pub struct TaskSummary {
    pub arn: String,
    pub last_status: TaskStatus,
    pub desired_status: DesiredStatus,
    pub launch_type: &'static str,
    pub instance_id: Option<String>,
    pub task_definition_arn: Option<String>,
    pub started_by: Option<String>,
    pub group: Option<String>,
    pub stopped_at: Option<f64>,
    pub started_at: Option<f64>,
    pub health: HealthStatus,
    /// Stopped for a reason that counts against a deployment: it failed to start, an
    /// essential container exited, or it failed its health checks.
    pub failed: bool,
    pub reserved: crate::records::Reservation,
}

/// A launch type as a static string (a small closed set; anything else is kept as
/// "UNKNOWN", which no filter asks for).
pub(super) fn static_launch_type(s: Option<&str>) -> &'static str {
    match s {
        None => "EC2",
        Some(v) => berth_model::wire::ecs::LAUNCH_TYPE_VALUES
            .iter()
            .find(|a| **a == v)
            .copied()
            .unwrap_or("UNKNOWN"),
    }
}

/// A task's last status as the view reads it. Every writer checks it, so a stored record
/// holds one of ECS's values; absent reads as PROVISIONING, ECS's `DELETED` as STOPPED, and
/// anything else as a task still winding down (holding its resources, neither pending nor
/// running), as earlier builds read it.
pub(super) fn read_last_status(s: Option<&str>) -> TaskStatus {
    match s {
        None => TaskStatus::Provisioning,
        Some("DELETED") => TaskStatus::Stopped,
        Some(v) => v.parse().unwrap_or(TaskStatus::Stopping),
    }
}

/// A task's desired status as the view reads it: absent reads as RUNNING; a value no writer
/// sets as STOPPED (nothing runs a task whose desire cannot be read).
pub(super) fn read_desired_status(s: Option<&str>) -> DesiredStatus {
    match s {
        None => DesiredStatus::Running,
        Some(v) => v.parse().unwrap_or(DesiredStatus::Stopped),
    }
}

impl TaskSummary {
    pub fn of(r: &TaskRecord) -> TaskSummary {
        let t = &r.task;
        TaskSummary {
            arn: t.task_arn.clone().unwrap_or_default(),
            last_status: read_last_status(t.last_status.as_deref()),
            desired_status: read_desired_status(t.desired_status.as_deref()),
            launch_type: static_launch_type(t.launch_type.as_deref()),
            instance_id: t
                .container_instance_arn
                .as_deref()
                .and_then(instance_id_of)
                .map(str::to_string),
            task_definition_arn: t.task_definition_arn.clone(),
            started_by: t.started_by.clone(),
            group: t.group.clone(),
            stopped_at: t.stopped_at,
            started_at: t.started_at,
            health: HealthStatus::of(t.health_status.as_deref()).unwrap_or(HealthStatus::Unknown),
            failed: TaskStatus::of(t.last_status.as_deref()) == Some(TaskStatus::Stopped)
                && (matches!(
                    t.stop_code.as_deref(),
                    Some(stop_code::TASK_FAILED_TO_START | stop_code::ESSENTIAL_CONTAINER_EXITED)
                ) || t
                    .stopped_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(HEALTH_CHECK_FAILED))),
            reserved: r.reserved.clone(),
        }
    }

    /// The service this task belongs to (its group is `service:<name>`).
    pub fn service(&self) -> Option<&str> {
        self.group.as_deref()?.strip_prefix("service:")
    }
}

/// The start of the reason the service controller gives for a task it stops because its
/// container health checks failed.
pub const HEALTH_CHECK_FAILED: &str = "Task failed container health checks";

impl TaskEntry {
    /// The whole record, decoded.
    pub fn record(&self) -> TaskRecord {
        // The view only keeps what it decoded once already.
        serde_json::from_slice(&self.json).unwrap_or_else(|e| {
            tracing::error!("a task record the view accepted no longer decodes: {e}");
            TaskRecord {
                task: Default::default(),
                reserved: Default::default(),
            }
        })
    }

    /// The record with its revision, as the other kinds of objects are handed out.
    pub fn entry(&self) -> Entry<TaskRecord> {
        Entry {
            rev: self.rev,
            value: Arc::new(self.record()),
        }
    }
}

/// Whether a task status counts as pending, running or neither.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Pending,
    Running,
    /// Neither pending nor running, but still holding its resources (stopping).
    Other,
    Stopped,
}

pub(super) fn phase(s: TaskStatus) -> Phase {
    match s {
        s if s.is_pending() => Phase::Pending,
        TaskStatus::Running => Phase::Running,
        TaskStatus::Stopped => Phase::Stopped,
        _ => Phase::Other,
    }
}
