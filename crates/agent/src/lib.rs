//! berth-agent: the node agent — registration, the session with the control plane, and the
//! task engine that runs the tasks placed on this node.
//!
//! So far: [`container`], how an ECS container definition, its task and its image's config
//! become the runtime's [`berth_runtime::spec::ContainerSpec`] (the same rules Docker and
//! the ECS agent apply). The session and the task engine come next.

pub mod container;
