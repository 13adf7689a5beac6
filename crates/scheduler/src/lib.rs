//! berth-scheduler: placement as pure functions.
