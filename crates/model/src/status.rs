//! The lifecycle states of ECS objects as types — task, desired, container, health, service,
//! deployment and rollout state — and the order they move in. Records keep the wire's
//! strings (the shapes in [`crate::wire`] are generated from botocore); code that decides
//! parses them into these enums where a report comes in and compares enums inside.
//!
//! Each enum reads and writes exactly the ECS string (`as_str`, `FromStr`, `Display`, serde),
//! so records stored by earlier builds read back unchanged. A status never moves backwards:
//! reports that arrive late or twice are ignored rather than undoing progress
//! (`can_move_to`).

use std::fmt;
use std::str::FromStr;

/// A string that is not one of a status enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid {kind}: {value}")]
pub struct UnknownStatus {
    /// What was being read (`task status`, `health status`…).
    pub kind: &'static str,
    /// The value as given.
    pub value: String,
}

/// One status enum: its values in lifecycle order with their ECS strings, and the string
/// conversions every enum shares.
macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in lifecycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The ECS string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// An optional wire field read as this enum; `None` when it is absent or not
            /// one of the values.
            pub fn of(s: Option<&str>) -> Option<$name> {
                s?.parse().ok()
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<$name, UnknownStatus> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownStatus {
                        kind: $kind,
                        value: s.to_string(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$name> for String {
            fn from(s: $name) -> String {
                s.as_str().to_string()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

status_enum! {
    /// A task's `lastStatus`, in lifecycle order.
    TaskStatus, "task status" {
        Provisioning = "PROVISIONING",
        Pending = "PENDING",
        Activating = "ACTIVATING",
        Running = "RUNNING",
        Deactivating = "DEACTIVATING",
        Stopping = "STOPPING",
        Deprovisioning = "DEPROVISIONING",
        Stopped = "STOPPED",
    }
}

impl TaskStatus {
    /// Whether a task may move from `self` to `to`: forward only; staying is allowed.
    pub fn can_move_to(self, to: TaskStatus) -> bool {
        to >= self
    }

    /// Counted as pending (ECS's `pendingTasksCount`): on its way to RUNNING.
    pub fn is_pending(self) -> bool {
        self < TaskStatus::Running
    }

    /// Not STOPPED yet: it may still hold resources and serve.
    pub fn is_unfinished(self) -> bool {
        self != TaskStatus::Stopped
    }
}

status_enum! {
    /// A task's `desiredStatus` (botocore's `DesiredStatus`).
    DesiredStatus, "desired status" {
        Pending = "PENDING",
        Running = "RUNNING",
        Stopped = "STOPPED",
    }
}

impl DesiredStatus {
    /// Forward only: a task asked to stop is never asked to run again.
    pub fn can_move_to(self, to: DesiredStatus) -> bool {
        to >= self
    }
}

status_enum! {
    /// A container's `lastStatus` as ECS shows it and agents report it. The agent's own
    /// finer steps (pulled, created…) stay inside the agent: the ECS agent reports only
    /// RUNNING and STOPPED, and a container starts out PENDING.
    ContainerStatus, "container status" {
        Pending = "PENDING",
        Running = "RUNNING",
        Stopped = "STOPPED",
    }
}

impl ContainerStatus {
    /// Forward only; staying is allowed.
    pub fn can_move_to(self, to: ContainerStatus) -> bool {
        to >= self
    }
}

status_enum! {
    /// A container's steps on its node, as the agent keeps them (the ECS agent's names): not
    /// started (NONE), image ready (PULLED), being started (CREATED), RUNNING, STOPPED. Only
    /// [`NodeContainerStatus::reported`] leaves the node.
    NodeContainerStatus, "node container status" {
        None = "NONE",
        Pulled = "PULLED",
        Created = "CREATED",
        Running = "RUNNING",
        Stopped = "STOPPED",
    }
}

impl NodeContainerStatus {
    /// Forward only; staying is allowed.
    pub fn can_move_to(self, to: NodeContainerStatus) -> bool {
        to >= self
    }

    /// What the node reports for it: STOPPED once it has ended, RUNNING otherwise (the ECS
    /// agent reports only these two; a container is PENDING until its first report).
    pub fn reported(self) -> ContainerStatus {
        match self {
            NodeContainerStatus::Stopped => ContainerStatus::Stopped,
            _ => ContainerStatus::Running,
        }
    }

    /// Not started yet (its image may be ready).
    pub fn not_started(self) -> bool {
        self <= NodeContainerStatus::Pulled
    }

    /// Started (or being started) and not ended.
    pub fn live(self) -> bool {
        matches!(
            self,
            NodeContainerStatus::Created | NodeContainerStatus::Running
        )
    }
}

impl Default for NodeContainerStatus {
    /// A container the node has not done anything with yet.
    fn default() -> Self {
        NodeContainerStatus::None
    }
}

status_enum! {
    /// A container's or a task's `healthStatus` (botocore's `HealthStatus`).
    HealthStatus, "health status" {
        Healthy = "HEALTHY",
        Unhealthy = "UNHEALTHY",
        Unknown = "UNKNOWN",
    }
}

impl HealthStatus {
    /// Health has no order: a container's checks may pass, fail and pass again, and a
    /// restarted check starts UNKNOWN. Every move is allowed.
    pub fn can_move_to(self, _to: HealthStatus) -> bool {
        true
    }

    /// A task's health from its containers': UNHEALTHY if any is, HEALTHY if all are,
    /// UNKNOWN otherwise (and with no container reporting).
    pub fn of_task(containers: impl IntoIterator<Item = HealthStatus>) -> HealthStatus {
        let mut any = false;
        let mut all_healthy = true;
        for h in containers {
            any = true;
            match h {
                HealthStatus::Unhealthy => return HealthStatus::Unhealthy,
                HealthStatus::Healthy => {}
                HealthStatus::Unknown => all_healthy = false,
            }
        }
        if any && all_healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        }
    }
}

status_enum! {
    /// A service's `status`.
    ServiceStatus, "service status" {
        Active = "ACTIVE",
        /// Deleted; its tasks are stopping.
        Draining = "DRAINING",
        /// Deleted and its last task stopped.
        Inactive = "INACTIVE",
    }
}

impl ServiceStatus {
    /// ACTIVE → DRAINING → INACTIVE, forward only (a service created again under the name
    /// of an INACTIVE one is a new service, not a move).
    pub fn can_move_to(self, to: ServiceStatus) -> bool {
        to >= self
    }
}

status_enum! {
    /// A service deployment's `status`.
    DeploymentStatus, "deployment status" {
        /// The most recent deployment.
        Primary = "PRIMARY",
        /// An older deployment whose tasks are being replaced.
        Active = "ACTIVE",
        /// Done with (its service was deleted).
        Inactive = "INACTIVE",
    }
}

impl DeploymentStatus {
    /// PRIMARY → ACTIVE → INACTIVE, forward only: a rollback is a new PRIMARY deployment.
    pub fn can_move_to(self, to: DeploymentStatus) -> bool {
        to >= self
    }
}

status_enum! {
    /// A deployment's `rolloutState` (botocore's `DeploymentRolloutState`).
    RolloutState, "rollout state" {
        InProgress = "IN_PROGRESS",
        Completed = "COMPLETED",
        Failed = "FAILED",
    }
}

impl RolloutState {
    /// IN_PROGRESS ends COMPLETED or FAILED; an ended rollout stays as it ended.
    pub fn can_move_to(self, to: RolloutState) -> bool {
        self == to || self == RolloutState::InProgress
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
    use crate::wire::ecs::{DEPLOYMENT_ROLLOUT_STATE_VALUES, DESIRED_STATUS_VALUES};
    use crate::wire::ecs::{HEALTH_STATUS_VALUES, LAUNCH_TYPE_VALUES};

    /// Every value reads back from its string, by FromStr and by serde, and writes the same
    /// string by Display and serde.
    fn round_trips<T>(all: &[T])
    where
        T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr + serde::Serialize,
        T: serde::de::DeserializeOwned,
        <T as FromStr>::Err: fmt::Debug,
    {
        for v in all {
            let s = v.to_string();
            assert_eq!(s.parse::<T>().unwrap(), *v);
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), *v);
        }
    }

    fn strings<T: Copy + fmt::Display>(all: &[T]) -> Vec<String> {
        all.iter().map(|v| v.to_string()).collect()
    }

    fn sorted(v: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    fn sorted_strings<T: Copy + fmt::Display>(all: &[T]) -> Vec<String> {
        let mut v = strings(all);
        v.sort();
        v
    }

    #[test]
    fn every_enum_round_trips_its_strings() {
        round_trips(TaskStatus::ALL);
        round_trips(DesiredStatus::ALL);
        round_trips(ContainerStatus::ALL);
        round_trips(HealthStatus::ALL);
        round_trips(ServiceStatus::ALL);
        round_trips(DeploymentStatus::ALL);
        round_trips(RolloutState::ALL);
        round_trips(NodeContainerStatus::ALL);
    }

    #[test]
    fn a_nodes_container_steps_and_what_leaves_the_node() {
        use NodeContainerStatus as N;
        assert_eq!(N::default(), N::None);
        assert!(N::None.can_move_to(N::Pulled) && N::Created.can_move_to(N::Running));
        assert!(!N::Stopped.can_move_to(N::Running) && !N::Running.can_move_to(N::Created));
        let reported: Vec<_> = N::ALL.iter().map(|n| n.reported()).collect();
        use ContainerStatus as C;
        assert_eq!(
            reported,
            [C::Running, C::Running, C::Running, C::Running, C::Stopped]
        );
        let not_started: Vec<_> = N::ALL.iter().filter(|n| n.not_started()).collect();
        assert_eq!(not_started, [&N::None, &N::Pulled]);
        let live: Vec<_> = N::ALL.iter().filter(|n| n.live()).collect();
        assert_eq!(live, [&N::Created, &N::Running]);
    }

    #[test]
    fn the_strings_are_ecs_own() {
        // What botocore's ECS model lists where it has an enum.
        assert_eq!(
            sorted_strings(DesiredStatus::ALL),
            sorted(DESIRED_STATUS_VALUES)
        );
        assert_eq!(
            sorted_strings(HealthStatus::ALL),
            sorted(HEALTH_STATUS_VALUES)
        );
        assert_eq!(
            sorted_strings(RolloutState::ALL),
            sorted(DEPLOYMENT_ROLLOUT_STATE_VALUES)
        );
        // Where it documents them in prose: the task lifecycle, services and deployments.
        assert_eq!(
            strings(TaskStatus::ALL),
            [
                "PROVISIONING",
                "PENDING",
                "ACTIVATING",
                "RUNNING",
                "DEACTIVATING",
                "STOPPING",
                "DEPROVISIONING",
                "STOPPED"
            ]
        );
        assert_eq!(
            strings(ServiceStatus::ALL),
            ["ACTIVE", "DRAINING", "INACTIVE"]
        );
        assert_eq!(
            strings(DeploymentStatus::ALL),
            ["PRIMARY", "ACTIVE", "INACTIVE"]
        );
        assert_eq!(
            strings(ContainerStatus::ALL),
            ["PENDING", "RUNNING", "STOPPED"]
        );
    }

    #[test]
    fn a_bad_value_is_named_in_the_error() {
        let e = "BOGUS".parse::<TaskStatus>().unwrap_err();
        assert_eq!(e.to_string(), "Invalid task status: BOGUS");
        let e = "running".parse::<ContainerStatus>().unwrap_err();
        assert_eq!(e.to_string(), "Invalid container status: running");
        let e = serde_json::from_str::<HealthStatus>("\"SICK\"").unwrap_err();
        assert!(e.to_string().contains("Invalid health status: SICK"), "{e}");
        // Another enum's value is not this one's.
        assert!(LAUNCH_TYPE_VALUES[0].parse::<ServiceStatus>().is_err());
        assert!("PRIMARY".parse::<ServiceStatus>().is_err());
        assert_eq!(TaskStatus::of(None), None);
        assert_eq!(TaskStatus::of(Some("BOGUS")), None);
        assert_eq!(TaskStatus::of(Some("RUNNING")), Some(TaskStatus::Running));
    }

    #[test]
    fn tasks_and_containers_move_forward_only() {
        use TaskStatus as T;
        assert!(T::Pending.can_move_to(T::Running));
        assert!(T::Running.can_move_to(T::Stopped));
        assert!(T::Running.can_move_to(T::Running));
        assert!(T::Provisioning.can_move_to(T::Deprovisioning));
        assert!(!T::Stopped.can_move_to(T::Running));
        assert!(!T::Running.can_move_to(T::Pending));
        assert!(!T::Stopping.can_move_to(T::Deactivating));
        // Every pair: forward or staying is allowed, backwards never.
        for (i, a) in T::ALL.iter().enumerate() {
            for (j, b) in T::ALL.iter().enumerate() {
                assert_eq!(a.can_move_to(*b), j >= i, "{a} → {b}");
            }
        }
        use ContainerStatus as C;
        assert!(C::Pending.can_move_to(C::Stopped));
        assert!(C::Pending.can_move_to(C::Running));
        assert!(!C::Stopped.can_move_to(C::Running));
        assert!(!C::Running.can_move_to(C::Pending));
        use DesiredStatus as D;
        assert!(D::Running.can_move_to(D::Stopped));
        assert!(!D::Stopped.can_move_to(D::Running));
    }

    #[test]
    fn pending_and_unfinished_tasks() {
        let pending: Vec<&str> = TaskStatus::ALL
            .iter()
            .filter(|s| s.is_pending())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(pending, ["PROVISIONING", "PENDING", "ACTIVATING"]);
        assert!(TaskStatus::Stopping.is_unfinished());
        assert!(TaskStatus::Deprovisioning.is_unfinished());
        assert!(!TaskStatus::Stopped.is_unfinished());
    }

    #[test]
    fn services_deployments_and_rollouts() {
        use ServiceStatus as S;
        assert!(S::Active.can_move_to(S::Draining));
        assert!(S::Draining.can_move_to(S::Inactive));
        assert!(!S::Inactive.can_move_to(S::Active));
        assert!(!S::Draining.can_move_to(S::Active));
        use DeploymentStatus as D;
        assert!(D::Primary.can_move_to(D::Active));
        assert!(D::Primary.can_move_to(D::Inactive));
        assert!(!D::Active.can_move_to(D::Primary));
        use RolloutState as R;
        assert!(R::InProgress.can_move_to(R::Completed));
        assert!(R::InProgress.can_move_to(R::Failed));
        assert!(R::Completed.can_move_to(R::Completed));
        assert!(!R::Completed.can_move_to(R::Failed));
        assert!(!R::Failed.can_move_to(R::InProgress));
        assert!(!R::Completed.can_move_to(R::InProgress));
    }

    #[test]
    fn health_moves_freely_and_adds_up() {
        use HealthStatus as H;
        for a in H::ALL {
            for b in H::ALL {
                assert!(a.can_move_to(*b));
            }
        }
        assert_eq!(H::of_task([]), H::Unknown);
        assert_eq!(H::of_task([H::Healthy, H::Healthy]), H::Healthy);
        assert_eq!(H::of_task([H::Healthy, H::Unknown]), H::Unknown);
        assert_eq!(H::of_task([H::Unknown, H::Unhealthy]), H::Unhealthy);
        assert_eq!(H::of_task([H::Healthy, H::Unhealthy]), H::Unhealthy);
    }
}
