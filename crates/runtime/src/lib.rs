//! berth-runtime: what runs containers on a node.
//!
//! - [`image_store`]: pulling images (by tag or digest, from berth's registry or any OCI
//!   registry), verifying and deduplicating their blobs, unpacking layers safely ([`unpack`])
//!   into a root filesystem per image;
//! - [`native`]: the native driver — overlay root filesystems, one `berth shim` process per
//!   container ([`shim`]: libcontainer, cgroups v1 and v2, namespaces), stop with timeout,
//!   a cgroup's CPU and memory use;
//! - [`spec`]: the OCI runtime spec of a container; [`seccomp`]: its default seccomp policy
//!   and init process; [`nsexec`]: running a command inside a running container;
//! - [`net`]: container networking — the bridge, network namespaces, veths, addresses, port
//!   forwards, the bridge's masquerade and credentials rules (rtnetlink and nf_tables over
//!   netlink, no `ip` or `iptables` processes); [`forward`]: a host-port forwarder in its own
//!   process, which outlives the agent.
//!
//! The task engine that drives all this is the agent's (`berth-agent`).
//!
//! Must not: trust anything inside an image layer (see [`unpack`]).

pub mod forward;
pub mod image_store;
pub mod native;
pub mod net;
pub mod nsexec;
pub mod seccomp;
pub mod shim;
pub mod spec;
pub mod unpack;

pub use image_store::{ImageStore, PullPolicy, PulledImage};
