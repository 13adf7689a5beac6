//! berth-agent: the node agent — registration of its container instance, the session with the
//! control plane (ACS payloads in, state changes out, through [`backend::Backend`]), and the
//! task runner ([`engine`]) that runs the tasks placed on this node.
//!
//! The node's kernel-facing parts are behind seams ([`NodeParts`]): containers behind
//! `berth_runtime::Driver`, images behind [`images::Images`], the container network behind
//! [`net::Network`], task records in a [`state::StateDir`]. [`Agent::start`] opens the real
//! ones (the native driver, the image store, the berth bridge, a state directory);
//! [`Agent::start_with`] takes any, which is how unit tests run the agent on fakes and how
//! `berth agent --simulate` runs thousands of real agents in one process.
//!
//! - [`config`]: how an agent is set up ([`AgentConfig`], [`NodeParts`]); [`agent`]: a
//!   running agent — start, the session loop, stop — and the state its runners share;
//!   [`register`]: the container instance's registration; [`payload`]: what the control plane
//!   sends (tasks to run or stop, reconciliation, credential refreshes); [`maintenance`]: log
//!   rotation and image collection;
//! - [`container`]: how an ECS container definition and its image's config become the
//!   driver's container spec;
//! - [`engine`]: the per-task state machine; [`hooks`]: what a task needs besides its
//!   containers (images, task cgroup, network, volumes, credentials, health);
//!   [`health`]: container health checks;
//! - [`state`]: what the agent keeps on disk so that restarting it neither kills nor forgets
//!   running containers;
//! - [`images`], [`net`]: the node's images and container network as the runner uses them;
//! - [`session`]: the ACS session with a control plane across the network, and the telemetry
//!   session beside it;
//! - [`telemetry`]: the running containers' CPU and memory, reported every interval;
//! - [`credentials`]: task role credentials (in memory only) and the endpoint containers
//!   fetch them from (the cache, the endpoint's answers, its HTTP server, its listeners and
//!   redirect on the node, what a container is told: a module each);
//! - `fake` (tests and the `simulate` feature): a fake image store and network;
//!   `simulate` (the `simulate` feature): many real agents in one process on the fake driver
//!   and those fakes, for scale tests. A feature because it brings in `berth-runtime`'s fake
//!   driver (`test-util`); the `berth` binary enables it.
//!
//! On every (re)connect the agent reconciles with the first payload: what the control plane
//! no longer lists is stopped, what ended unreported is reported, nothing starts twice.
//!
//! Must not: know how the control plane stores things (only the ECS agent protocol's messages
//! cross [`backend::Backend`]).

pub mod backend;
pub mod container;
pub mod credentials;
pub mod engine;
#[cfg(any(test, feature = "simulate"))]
pub mod fake;
pub mod guard;
pub mod health;
mod hooks;
pub mod images;
pub mod net;
pub mod session;
#[cfg(feature = "simulate")]
pub mod simulate;
pub mod state;
pub mod telemetry;

mod agent;
mod config;
mod maintenance;
mod payload;
mod register;
mod task;

pub(crate) use agent::Inner;
pub use agent::{Agent, AgentError};
pub use config::{AgentConfig, NodeParts};
pub use maintenance::rotate_logs;
pub use register::CAPABILITIES;
