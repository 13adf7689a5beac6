//! The store's key layout for control-plane objects. One place, so that the layout can be
//! read at a glance and prefixes never collide. Names in keys are validated before they get
//! here (cluster names and families never contain '/').

pub const ECS_PREFIX: &str = "ecs/";
pub const CLUSTERS: &str = "ecs/c/";
pub const FAMILIES: &str = "ecs/tdf/";
pub const TASK_DEFS: &str = "ecs/td/";
pub const TASKS: &str = "ecs/t/";
pub const INSTANCES: &str = "ecs/ci/";
pub const SERVICES: &str = "ecs/s/";
/// Who registered each container instance (the access key, or a role session's role ARN):
/// a join token may speak only for the instances it registered.
pub const INSTANCE_OWNERS: &str = "ecs/cio/";
/// Each container instance's allocation revision: written (empty) by every placement commit
/// on it and compared by the next, so that servers sharing a store never oversell it
/// ([`crate::alloc`]).
pub const ALLOCS: &str = "ecs/a/";
pub const ACCESS_KEYS: &str = "iam/k/";
/// Roles, by lower-case name (IAM names are unique regardless of case).
pub const ROLES: &str = "iam/r/";
/// Customer managed policies, by lower-case name.
pub const POLICIES: &str = "iam/p/";
/// The key that seals role sessions' tokens (not followed by the view).
pub const SESSION_KEY: &str = "iam/session-key";

pub fn cluster(name: &str) -> String {
    format!("{CLUSTERS}{name}")
}
pub fn family(family: &str) -> String {
    format!("{FAMILIES}{family}")
}
/// Revisions are zero-padded so that key order is revision order.
pub fn task_def(family: &str, revision: i32) -> String {
    format!("{TASK_DEFS}{family}/{revision:010}")
}
pub fn task(cluster: &str, id: &str) -> String {
    format!("{TASKS}{cluster}/{id}")
}
pub fn tasks_of(cluster: &str) -> String {
    format!("{TASKS}{cluster}/")
}
pub fn instance(cluster: &str, id: &str) -> String {
    format!("{INSTANCES}{cluster}/{id}")
}
pub fn instance_owner(cluster: &str, id: &str) -> String {
    format!("{INSTANCE_OWNERS}{cluster}/{id}")
}
pub fn alloc(cluster: &str, id: &str) -> String {
    format!("{ALLOCS}{cluster}/{id}")
}
pub fn service(cluster: &str, name: &str) -> String {
    format!("{SERVICES}{cluster}/{name}")
}
pub fn access_key(id: &str) -> String {
    format!("{ACCESS_KEYS}{id}")
}
pub fn role(name: &str) -> String {
    format!("{ROLES}{}", name.to_ascii_lowercase())
}
pub fn policy(name: &str) -> String {
    format!("{POLICIES}{}", name.to_ascii_lowercase())
}

/// What a key names, parsed back.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Cluster(&'a str),
    Family(&'a str),
    TaskDef(&'a str, i32),
    Task(&'a str, &'a str),
    Instance(&'a str, &'a str),
    InstanceOwner(&'a str, &'a str),
    Alloc(&'a str, &'a str),
    Service(&'a str, &'a str),
    AccessKey(&'a str),
    Role(&'a str),
    Policy(&'a str),
}

pub fn parse(key: &str) -> Option<Key<'_>> {
    if let Some(r) = key.strip_prefix(CLUSTERS) {
        return Some(Key::Cluster(r));
    }
    if let Some(r) = key.strip_prefix(FAMILIES) {
        return Some(Key::Family(r));
    }
    if let Some(r) = key.strip_prefix(TASK_DEFS) {
        let (f, rev) = r.split_once('/')?;
        return Some(Key::TaskDef(f, rev.parse().ok()?));
    }
    if let Some(r) = key.strip_prefix(TASKS) {
        let (c, id) = r.split_once('/')?;
        return Some(Key::Task(c, id));
    }
    if let Some(r) = key.strip_prefix(INSTANCES) {
        let (c, id) = r.split_once('/')?;
        return Some(Key::Instance(c, id));
    }
    if let Some(r) = key.strip_prefix(INSTANCE_OWNERS) {
        let (c, id) = r.split_once('/')?;
        return Some(Key::InstanceOwner(c, id));
    }
    if let Some(r) = key.strip_prefix(ALLOCS) {
        let (c, id) = r.split_once('/')?;
        return Some(Key::Alloc(c, id));
    }
    if let Some(r) = key.strip_prefix(SERVICES) {
        let (c, n) = r.split_once('/')?;
        return Some(Key::Service(c, n));
    }
    if let Some(r) = key.strip_prefix(ACCESS_KEYS) {
        return Some(Key::AccessKey(r));
    }
    if let Some(r) = key.strip_prefix(ROLES) {
        return Some(Key::Role(r));
    }
    if let Some(r) = key.strip_prefix(POLICIES) {
        return Some(Key::Policy(r));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        assert_eq!(parse(&cluster("dev")), Some(Key::Cluster("dev")));
        assert_eq!(parse(&task_def("web", 12)), Some(Key::TaskDef("web", 12)));
        assert!(task_def("web", 9) < task_def("web", 10));
        assert_eq!(parse(&task("dev", "abc")), Some(Key::Task("dev", "abc")));
        assert_eq!(
            parse(&instance("dev", "i")),
            Some(Key::Instance("dev", "i"))
        );
        assert_eq!(
            parse(&instance_owner("dev", "i")),
            Some(Key::InstanceOwner("dev", "i"))
        );
        assert_eq!(parse(&alloc("dev", "i")), Some(Key::Alloc("dev", "i")));
        assert_eq!(
            parse(&service("dev", "web")),
            Some(Key::Service("dev", "web"))
        );
        assert_eq!(parse(&access_key("AKIA")), Some(Key::AccessKey("AKIA")));
        assert_eq!(parse(&role("App")), Some(Key::Role("app")));
        assert_eq!(parse(&policy("Read")), Some(Key::Policy("read")));
        assert_eq!(parse(SESSION_KEY), None);
        assert_eq!(parse("other/x"), None);
    }
}
