//! berth-api: the front door.
