//! berth-runtime: what runs containers on a node. So far: the image store — pulling images
//! (by tag or digest, from berth's registry or any OCI registry), verifying and deduplicating
//! their blobs, and unpacking layers safely into a root filesystem per image.
//!
//! To come (see the runtime issue): the native driver (libcontainer from a single-threaded
//! helper process), cgroups v1/v2, networking.
//!
//! Must not: trust anything inside an image layer (see [`unpack`]).

pub mod image_store;
pub mod unpack;

pub use image_store::{ImageStore, PullPolicy, PulledImage};
