//! berth-runtime: what runs containers on a node.
//!
//! - [`image_store`]: pulling images (by tag or digest, from berth's registry or any OCI
//!   registry), verifying and deduplicating their blobs, unpacking layers safely ([`unpack`])
//!   into a root filesystem per image;
//! - [`driver`]: the `Driver` trait — what the agent's task runner asks of whatever runs
//!   containers (start, attach, wait, signal, stop, exec, stats, cleanup, task cgroup);
//! - [`native`]: the native driver — overlay root filesystems, one `berth shim` process per
//!   container ([`shim`]: libcontainer, cgroups v1 and v2, namespaces), stop with timeout,
//!   a cgroup's CPU and memory use;
//! - `fake` (the `test-util` feature): a driver of modelled containers, for the agent's unit
//!   tests and for simulated nodes. A feature, so that a library user of this crate gets no
//!   fake by accident; the `berth` binary turns it on (through `berth-agent`'s `simulate`
//!   feature) because `berth agent --simulate` runs the real agent on it;
//! - [`spec`]: the OCI runtime spec of a container; [`seccomp`]: its default seccomp policy
//!   and init process; [`nsexec`]: running a command inside a running container;
//! - [`net`]: container networking — the bridge, network namespaces, veths, addresses, port
//!   forwards, the bridge's masquerade and credentials rules (rtnetlink and nf_tables over
//!   netlink, no `ip` or `iptables` processes); [`forward`]: a host-port forwarder in its own
//!   process, which outlives the agent.
//!
//! The task runner that drives all this is the agent's (`berth-agent`); it sees a driver only
//! through [`driver::Driver`].
//!
//! Must not: trust anything inside an image layer (see [`unpack`]).

pub mod driver;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod forward;
pub mod image_store;
pub mod native;
pub mod net;
pub mod nsexec;
pub mod seccomp;
pub mod shim;
pub mod spec;
pub mod unpack;

pub use driver::{Container, Driver, Exit, RuntimeError};
pub use image_store::{ImageStore, PullPolicy, PulledImage};
