//! berth-model: the domain types of berth and their validation — clusters, task definitions,
//! tasks, container instances, ARNs, status enums. Pure: no I/O, no async, no clocks read here
//! (callers pass the time in); ids come from a random source. Everything else depends on it.

pub mod arn;
pub mod fargate;
pub mod payload;
pub mod status;
pub mod tags;
pub mod taskdef;
pub mod timestamp;
pub mod wire;

pub use timestamp::Timestamp;
