//! ARNs and ids as ECS writes them: `arn:aws:ecs:{region}:{account}:{resource}`.
//! Formats and parses; knows nothing of whether a resource exists.

use std::fmt;

/// The region and account every ARN of one berth installation carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub region: String,
    pub account_id: String,
}

/// The kinds of ECS resources that have ARNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcsResource {
    Cluster {
        name: String,
    },
    TaskDefinition {
        family: String,
        revision: i32,
    },
    Task {
        cluster: String,
        id: String,
    },
    ContainerInstance {
        cluster: String,
        id: String,
    },
    Container {
        cluster: String,
        task_id: String,
        id: String,
    },
    Service {
        cluster: String,
        name: String,
    },
    CapacityProvider {
        name: String,
    },
}

impl Partition {
    pub fn new(region: impl Into<String>, account_id: impl Into<String>) -> Self {
        Partition {
            region: region.into(),
            account_id: account_id.into(),
        }
    }

    fn ecs(&self, resource: fmt::Arguments<'_>) -> String {
        format!(
            "arn:aws:ecs:{}:{}:{}",
            self.region, self.account_id, resource
        )
    }
    pub fn cluster(&self, name: &str) -> String {
        self.ecs(format_args!("cluster/{name}"))
    }
    pub fn task_definition(&self, family: &str, revision: i32) -> String {
        self.ecs(format_args!("task-definition/{family}:{revision}"))
    }
    pub fn task(&self, cluster: &str, id: &str) -> String {
        self.ecs(format_args!("task/{cluster}/{id}"))
    }
    pub fn container_instance(&self, cluster: &str, id: &str) -> String {
        self.ecs(format_args!("container-instance/{cluster}/{id}"))
    }
    pub fn container(&self, cluster: &str, task_id: &str, id: &str) -> String {
        self.ecs(format_args!("container/{cluster}/{task_id}/{id}"))
    }
    pub fn service(&self, cluster: &str, name: &str) -> String {
        self.ecs(format_args!("service/{cluster}/{name}"))
    }
    pub fn capacity_provider(&self, name: &str) -> String {
        self.ecs(format_args!("capacity-provider/{name}"))
    }

    /// Parse an ECS ARN of this partition. `None` when it is not an ECS ARN we know, or
    /// names another region/account.
    pub fn parse_ecs(&self, arn: &str) -> Option<EcsResource> {
        let rest = arn.strip_prefix("arn:aws:ecs:")?;
        let (region, rest) = rest.split_once(':')?;
        let (account, resource) = rest.split_once(':')?;
        if region != self.region || account != self.account_id {
            return None;
        }
        let (kind, path) = resource.split_once('/')?;
        let parts: Vec<&str> = path.split('/').collect();
        let nonempty = |s: &&str| !s.is_empty();
        if !parts.iter().all(nonempty) {
            return None;
        }
        match (kind, parts.as_slice()) {
            ("cluster", [name]) => Some(EcsResource::Cluster {
                name: name.to_string(),
            }),
            ("task-definition", [fr]) => {
                let (family, rev) = fr.rsplit_once(':')?;
                Some(EcsResource::TaskDefinition {
                    family: family.to_string(),
                    revision: rev.parse().ok()?,
                })
            }
            ("task", [cluster, id]) => Some(EcsResource::Task {
                cluster: cluster.to_string(),
                id: id.to_string(),
            }),
            ("container-instance", [cluster, id]) => Some(EcsResource::ContainerInstance {
                cluster: cluster.to_string(),
                id: id.to_string(),
            }),
            ("container", [cluster, task_id, id]) => Some(EcsResource::Container {
                cluster: cluster.to_string(),
                task_id: task_id.to_string(),
                id: id.to_string(),
            }),
            ("service", [cluster, name]) => Some(EcsResource::Service {
                cluster: cluster.to_string(),
                name: name.to_string(),
            }),
            ("capacity-provider", [name]) => Some(EcsResource::CapacityProvider {
                name: name.to_string(),
            }),
            _ => None,
        }
    }

    /// A cluster given by name or ARN → its name.
    pub fn cluster_name<'a>(&self, name_or_arn: &'a str) -> Option<&'a str> {
        if let Some(rest) = name_or_arn.strip_prefix("arn:") {
            let prefix = format!("aws:ecs:{}:{}:cluster/", self.region, self.account_id);
            let name = rest.strip_prefix(prefix.as_str())?;
            (!name.is_empty() && !name.contains('/')).then_some(name)
        } else {
            Some(name_or_arn)
        }
    }
}

/// A new 32-hex-digit id, as ECS uses for tasks and container instances, made at `at`. The
/// first 12 digits are that time in milliseconds and the other 20 are random (80 bits), so ids
/// made later sort later: the store appends new tasks at the end of its tree instead of
/// rewriting pages all over it, and listings come out in creation order.
pub fn new_id(at: crate::Timestamp) -> String {
    let ms = at.as_millis() & 0xffff_ffff_ffff;
    let v = ((ms as u128) << 80) | (random_u128() >> 48);
    let mut s = String::with_capacity(32);
    push_hex(&mut s, &v.to_be_bytes());
    s
}

/// A new lowercase random UUID, version 4 (container ids, deployment ids, upload ids).
pub fn new_uuid() -> String {
    let mut a = random_u128().to_be_bytes();
    a[6] = (a[6] & 0x0f) | 0x40;
    a[8] = (a[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, r) in [0..4, 4..6, 6..8, 8..10, 10..16].into_iter().enumerate() {
        if i > 0 {
            s.push('-');
        }
        push_hex(&mut s, &a[r]);
    }
    s
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
}

fn random_u128() -> u128 {
    rand::random::<u128>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_ordered_by_time() {
        let t = crate::Timestamp::from_millis(1_700_000_000_000);
        let a = new_id(t);
        let b = new_id(t + std::time::Duration::from_millis(1));
        assert_eq!(&a[..12], &format!("{:012x}", t.as_millis()));
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(a < b, "{a} !< {b}");
        assert_ne!(new_id(t), new_id(t), "the same millisecond still differs");
        let u = new_uuid();
        let parts: Vec<usize> = u.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&u[14..15], "4");
        assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn round_trip() {
        let p = Partition::new("us-east-1", "000000000000");
        let cases = [
            (
                p.cluster("dev"),
                EcsResource::Cluster { name: "dev".into() },
            ),
            (
                p.task_definition("web", 3),
                EcsResource::TaskDefinition {
                    family: "web".into(),
                    revision: 3,
                },
            ),
            (
                p.task("dev", "abc"),
                EcsResource::Task {
                    cluster: "dev".into(),
                    id: "abc".into(),
                },
            ),
            (
                p.container_instance("dev", "i1"),
                EcsResource::ContainerInstance {
                    cluster: "dev".into(),
                    id: "i1".into(),
                },
            ),
        ];
        for (arn, want) in cases {
            assert_eq!(p.parse_ecs(&arn), Some(want), "{arn}");
        }
        assert_eq!(
            p.parse_ecs("arn:aws:ecs:eu-west-1:000000000000:cluster/x"),
            None
        );
        assert_eq!(
            p.parse_ecs("arn:aws:ecs:us-east-1:000000000000:cluster/"),
            None
        );
        assert_eq!(p.cluster_name("dev"), Some("dev"));
        assert_eq!(p.cluster_name(&p.cluster("dev")), Some("dev"));
        assert_eq!(p.cluster_name("arn:aws:ecs:us-east-1:1:cluster/dev"), None);
    }

    #[test]
    fn ids_are_unique_and_hex() {
        let a = new_id(crate::Timestamp::UNIX_EPOCH);
        let b = new_id(crate::Timestamp::UNIX_EPOCH);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(new_uuid().len(), 36);
    }
}
