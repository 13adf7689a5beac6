//! `berth token create|list|revoke`: join tokens for `berth agent --token`, through berth's
//! administration API (see `berth_api::admin`).

use anyhow::Context;
use serde_json::{Value, json};

use crate::config::ServeArgs;

const ADMIN: &str = "BerthAdmin_20261123";

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    cmd: TokenCmd,
}

#[derive(clap::Subcommand, Debug)]
enum TokenCmd {
    /// Make a join token: prints KEY:SECRET for `berth agent --token`.
    Create {
        /// The cluster nodes joining with the token register in.
        #[arg(long, default_value = "default")]
        cluster: String,
        /// How long the token is valid: seconds, or with a unit (30m, 24h, 7d); `never` for
        /// a token that lasts until revoked.
        #[arg(long, default_value = "24h")]
        expires_in: String,
        /// A note to find the token by in `berth token list`.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        local: ServeArgs,
    },
    /// List join tokens (never their secrets).
    List {
        #[command(flatten)]
        local: ServeArgs,
    },
    /// Revoke a join token: its requests and agent sessions are refused from now on.
    Revoke {
        /// The token's access key id (the part before ':').
        access_key_id: String,
        #[command(flatten)]
        local: ServeArgs,
    },
}

/// `90`, `30m`, `24h`, `7d` → seconds; `never` → `None`.
pub fn parse_duration(s: &str) -> anyhow::Result<Option<u64>> {
    if s == "never" {
        return Ok(None);
    }
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    let n: u64 = num.parse().ok().filter(|n| *n > 0).with_context(|| {
        format!("--expires-in {s:?}: a positive number with s, m, h or d, or `never`")
    })?;
    Ok(Some(n * mult))
}

pub async fn run(a: TokenArgs) -> anyhow::Result<()> {
    match a.cmd {
        TokenCmd::Create {
            cluster,
            expires_in,
            description,
            local,
        } => {
            let secs = parse_duration(&expires_in)?;
            let aws = crate::api_client(&local)?;
            let mut body = json!({"cluster": cluster, "description": description});
            if let Some(s) = secs {
                body["expiresInSeconds"] = json!(s);
            }
            let v = aws.call(ADMIN, "berth", "CreateJoinToken", &body).await?;
            println!("{}", v["token"].as_str().unwrap_or_default());
            eprintln!(
                "join token for cluster {} ({}); use it with: berth agent --server {} --cluster {} --token <token>",
                v["cluster"].as_str().unwrap_or_default(),
                match v["expiresAt"].as_f64() {
                    Some(e) => format!("expires {}", fmt_time(e)),
                    None => "never expires".into(),
                },
                aws.endpoint(),
                v["cluster"].as_str().unwrap_or_default(),
            );
        }
        TokenCmd::List { local } => {
            let aws = crate::api_client(&local)?;
            let v = aws
                .call(ADMIN, "berth", "ListJoinTokens", &json!({}))
                .await?;
            println!(
                "{:<22} {:<20} {:<22} {:<22} DESCRIPTION",
                "ACCESS KEY ID", "CLUSTER", "CREATED", "EXPIRES"
            );
            for t in v["tokens"].as_array().into_iter().flatten() {
                let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                let when = |v: &Value| v.as_f64().map(fmt_time).unwrap_or_else(|| "never".into());
                println!(
                    "{:<22} {:<20} {:<22} {:<22} {}",
                    s("accessKeyId"),
                    s("cluster"),
                    when(&t["createdAt"]),
                    when(&t["expiresAt"]),
                    s("description")
                );
            }
        }
        TokenCmd::Revoke {
            access_key_id,
            local,
        } => {
            let aws = crate::api_client(&local)?;
            let id = access_key_id.split(':').next().unwrap_or_default();
            aws.call(
                ADMIN,
                "berth",
                "RevokeJoinToken",
                &json!({"accessKeyId": id}),
            )
            .await?;
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

/// Epoch seconds as `2026-11-23 12:00:00Z`.
fn fmt_time(t: f64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|d| d.format(fmt).ok())
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Some(90));
        assert_eq!(parse_duration("30m").unwrap(), Some(1800));
        assert_eq!(parse_duration("24h").unwrap(), Some(86400));
        assert_eq!(parse_duration("7d").unwrap(), Some(604800));
        assert_eq!(parse_duration("never").unwrap(), None);
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-5m").is_err());
    }
}
