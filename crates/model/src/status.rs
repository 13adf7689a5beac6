//! Task and container statuses and the order they move in. A status never moves backwards:
//! reports that arrive late or twice are ignored rather than undoing progress.

/// Task `lastStatus` values in lifecycle order.
pub const TASK_STATUSES: [&str; 8] = [
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
];

/// Container `lastStatus` values in lifecycle order.
pub const CONTAINER_STATUSES: [&str; 3] = ["PENDING", "RUNNING", "STOPPED"];

/// `desiredStatus` values.
pub const DESIRED_STATUSES: [&str; 3] = ["PENDING", "RUNNING", "STOPPED"];

/// Position of a task status in the lifecycle.
pub fn task_rank(s: &str) -> Option<usize> {
    TASK_STATUSES.iter().position(|x| *x == s)
}

/// Whether a task may move from `from` to `to` (forward only; staying is allowed).
pub fn task_can_move(from: &str, to: &str) -> bool {
    match (task_rank(from), task_rank(to)) {
        (Some(a), Some(b)) => b >= a,
        _ => false,
    }
}

/// Whether a container may move from `from` to `to`.
pub fn container_can_move(from: &str, to: &str) -> bool {
    let r = |s: &str| CONTAINER_STATUSES.iter().position(|x| *x == s);
    match (r(from), r(to)) {
        (Some(a), Some(b)) => b >= a,
        _ => false,
    }
}

/// `stopCode` values.
pub mod stop_code {
    pub const TASK_FAILED_TO_START: &str = "TaskFailedToStart";
    pub const ESSENTIAL_CONTAINER_EXITED: &str = "EssentialContainerExited";
    pub const USER_INITIATED: &str = "UserInitiated";
    pub const SERVICE_SCHEDULER_INITIATED: &str = "ServiceSchedulerInitiated";
    /// The task's container instance was lost (berth: its agent stayed disconnected).
    pub const TERMINATION_NOTICE: &str = "TerminationNotice";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_only() {
        assert!(task_can_move("PENDING", "RUNNING"));
        assert!(task_can_move("RUNNING", "STOPPED"));
        assert!(task_can_move("RUNNING", "RUNNING"));
        assert!(!task_can_move("STOPPED", "RUNNING"));
        assert!(!task_can_move("RUNNING", "PENDING"));
        assert!(!task_can_move("RUNNING", "BOGUS"));
        assert!(container_can_move("PENDING", "STOPPED"));
        assert!(!container_can_move("STOPPED", "RUNNING"));
    }
}
