//! berth-runtime: what runs containers on a node.
//!
//! - [`image_store`]: pulling images (by tag or digest, from berth's registry or any OCI
//!   registry), verifying and deduplicating their blobs, unpacking layers safely ([`unpack`])
//!   into a root filesystem per image;
//! - [`native`]: the native driver — overlay root filesystems, one `berth shim` process per
//!   container ([`shim`]: libcontainer, cgroups v1 and v2, namespaces), stop with timeout;
//! - [`spec`]: the OCI runtime spec of a container.
//!
//! To come (see the runtime issue): networking (bridge, veth, awsvpc), OOM reporting, the
//! task engine that drives this from the agent.
//!
//! Must not: trust anything inside an image layer (see [`unpack`]).

pub mod image_store;
pub mod native;
pub mod network;
pub mod nsexec;
pub mod seccomp;
pub mod shim;
pub mod spec;
pub mod unpack;

pub use image_store::{ImageStore, PullPolicy, PulledImage};
