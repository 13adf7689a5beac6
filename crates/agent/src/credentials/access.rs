//! What a container is told about the credentials endpoint: the variable that points it at
//! its task role's credentials for its network mode (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
//! on the bridge, `AWS_CONTAINER_CREDENTIALS_FULL_URI` in `host` mode, nothing in `none`
//! mode), set unless the container definition sets it itself.
//!
//! Must not: point a container at a part of the endpoint that is not up.

use std::net::SocketAddrV4;

use berth_model::wire::ecs::ContainerDefinition;

use super::answer::V2_PATH;

/// The variable a `bridge` or `awsvpc` container finds the endpoint's path in (the SDKs add
/// `http://169.254.170.2`).
pub const RELATIVE_URI_ENV: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
/// The variable a `host` container finds the endpoint's full URL in.
pub const FULL_URI_ENV: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";

/// Where containers can reach the endpoint on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    /// The loopback listener (for `host` containers).
    pub loopback: Option<SocketAddrV4>,
    /// The gateway listener, when `169.254.170.2:80` leads to it (for `bridge` and `awsvpc`).
    pub bridge: Option<SocketAddrV4>,
}

impl Access {
    /// The variable that points a container at its task role's credentials `id`, for the
    /// task's network mode; None where the container cannot reach the endpoint.
    pub fn env(
        &self,
        network_mode: &str,
        networking_disabled: bool,
        id: &str,
    ) -> Option<(&'static str, String)> {
        if networking_disabled || id.is_empty() {
            return None;
        }
        match network_mode {
            "host" => self
                .loopback
                .map(|a| (FULL_URI_ENV, format!("http://{a}{V2_PATH}/{id}"))),
            "bridge" | "awsvpc" => self
                .bridge
                .map(|_| (RELATIVE_URI_ENV, format!("{V2_PATH}/{id}"))),
            _ => None,
        }
    }

    /// The host ports the endpoint holds (kept from tasks' port mappings).
    pub fn ports(&self) -> Vec<u16> {
        self.loopback
            .iter()
            .chain(self.bridge.iter())
            .map(|a| a.port())
            .collect()
    }
}

/// Put `name=value` in a container's environment, unless the container definition sets
/// `name` itself (the user's value wins; one from the image does not).
pub fn set_env(env: &mut Vec<String>, def: &ContainerDefinition, name: &str, value: &str) {
    let user_set = def
        .environment
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|kv| kv.name.as_deref() == Some(name));
    if user_set {
        return;
    }
    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != name);
    env.push(format!("{name}={value}"));
}

#[cfg(test)]
mod tests {
    use berth_model::wire::ecs::KeyValuePair;

    use super::*;

    #[test]
    fn the_environment_follows_the_network_mode() {
        let both = Access {
            loopback: Some("127.0.0.1:40001".parse().unwrap()),
            bridge: Some("10.213.0.1:40002".parse().unwrap()),
        };
        assert_eq!(
            both.env("host", false, "abc"),
            Some((
                FULL_URI_ENV,
                "http://127.0.0.1:40001/v2/credentials/abc".into()
            ))
        );
        for mode in ["bridge", "awsvpc"] {
            assert_eq!(
                both.env(mode, false, "abc"),
                Some((RELATIVE_URI_ENV, "/v2/credentials/abc".into()))
            );
            assert_eq!(both.env(mode, true, "abc"), None, "networking disabled");
        }
        assert_eq!(both.env("none", false, "abc"), None);
        assert_eq!(both.env("bridge", false, ""), None);
        // A part of the endpoint that is not up gives no variable.
        let loopback_only = Access {
            bridge: None,
            ..both
        };
        assert_eq!(loopback_only.env("bridge", false, "abc"), None);
        assert!(loopback_only.env("host", false, "abc").is_some());
        assert_eq!(Access::default().env("host", false, "abc"), None);
        assert_eq!(both.ports(), vec![40001, 40002]);
    }

    #[test]
    fn the_users_variable_wins() {
        let mut def = ContainerDefinition::default();
        let mut env = vec![format!("{RELATIVE_URI_ENV}=/from-image"), "A=1".into()];
        set_env(&mut env, &def, RELATIVE_URI_ENV, "/v2/credentials/x");
        assert_eq!(
            env,
            vec![
                "A=1".to_string(),
                format!("{RELATIVE_URI_ENV}=/v2/credentials/x")
            ]
        );
        def.environment = Some(vec![KeyValuePair {
            name: Some(RELATIVE_URI_ENV.into()),
            value: Some("/mine".into()),
        }]);
        let mut env = vec![format!("{RELATIVE_URI_ENV}=/mine")];
        set_env(&mut env, &def, RELATIVE_URI_ENV, "/v2/credentials/x");
        assert_eq!(env, vec![format!("{RELATIVE_URI_ENV}=/mine")]);
    }
}
