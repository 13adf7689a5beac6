//! berth-control: the control plane.
