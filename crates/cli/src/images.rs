//! `berth push` and `berth pull`: wiring for the image client.

use std::path::PathBuf;

use anyhow::Context;
use berth_client::image::{self, ConfigOptions};
use berth_client::{ImageRef, RegistryAuth, RegistryClient};

use crate::config::ServeArgs;

/// Where credentials come from: `--creds`, else `AWS_*` variables (as `berth env` sets
/// them), else the data dir of a local `berth up`.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// Registry credentials `user:password` (default: an ECR token from berth's API).
    #[arg(long)]
    creds: Option<String>,
    /// No credentials at all (public registries).
    #[arg(long, conflicts_with = "creds")]
    anonymous: bool,
    #[command(flatten)]
    local: ServeArgs,
}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// A directory (packed as one layer), a rootfs tarball, a `docker save` archive or an OCI
    /// image layout.
    src: PathBuf,
    /// `host:port/repository:tag`.
    dest: String,
    /// Entrypoint: words split on spaces, or a JSON array.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Default command: words split on spaces, or a JSON array.
    #[arg(long)]
    cmd: Option<String>,
    /// Environment variable `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    workdir: Option<String>,
    /// User to run as.
    #[arg(long)]
    user: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// `host:port/repository:tag` or `…@sha256:…`.
    src: String,
    /// Directory for the OCI image layout.
    dest: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

fn words(s: &str) -> anyhow::Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        return serde_json::from_str(s).context("parsing a JSON array");
    }
    Ok(s.split_whitespace().map(str::to_string).collect())
}

async fn registry_client(args: &ClientArgs, host: &str) -> anyhow::Result<RegistryClient> {
    let trust = crate::client_trust(&args.local)?;
    if args.anonymous {
        return Ok(RegistryClient::new(host, RegistryAuth::Anonymous).with_trust(&trust));
    }
    if let Some(c) = &args.creds {
        let (user, password) = c.split_once(':').context("--creds must be user:password")?;
        return Ok(RegistryClient::new(
            host,
            RegistryAuth::Basic {
                user: user.into(),
                password: password.into(),
            },
        )
        .with_trust(&trust));
    }
    let aws = crate::api_client(&args.local)?;
    let endpoint = aws.endpoint().to_string();
    let password = aws
        .ecr_password()
        .await
        .with_context(|| format!("getting a registry token from {endpoint}"))?;
    // The registry of the berth we signed in to (same host:port as its API) is spoken to
    // with the API's scheme: `http://` for a `berth server` on a LAN address, which
    // `RegistryClient::new` would only try over HTTPS.
    if let Some((scheme, api_host)) = endpoint.trim_end_matches('/').split_once("://")
        && api_host == host
    {
        let auth = RegistryAuth::Basic {
            user: "AWS".into(),
            password,
        };
        return Ok(
            RegistryClient::with_base(&format!("{scheme}://{host}"), auth).with_trust(&trust),
        );
    }
    Ok(RegistryClient::new(
        host,
        RegistryAuth::Basic {
            user: "AWS".into(),
            password,
        },
    )
    .with_trust(&trust))
}

pub async fn push(a: PushArgs) -> anyhow::Result<()> {
    let dest = ImageRef::parse(&a.dest)?;
    let opts = ConfigOptions {
        entrypoint: a.entrypoint.as_deref().map(words).transpose()?,
        cmd: a.cmd.as_deref().map(words).transpose()?,
        env: a.env.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
    };
    let src = a.src.clone();
    let built = tokio::task::spawn_blocking(move || image::build(&src, &opts))
        .await?
        .with_context(|| format!("building an image from {}", a.src.display()))?;
    let client = registry_client(&a.client, &dest.host).await?;
    let digest = image::push(&client, &dest, &built).await?;
    println!("{}: digest: {digest}", a.dest);
    Ok(())
}

pub async fn pull(a: PullArgs) -> anyhow::Result<()> {
    let src = ImageRef::parse(&a.src)?;
    let client = registry_client(&a.client, &src.host).await?;
    let digest = image::pull(&client, &src, &a.dest).await?;
    println!("{} → {}: digest: {digest}", a.src, a.dest.display());
    Ok(())
}
