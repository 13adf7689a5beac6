//! The front door's certificate: files the operator gave, or a self-signed one berth makes
//! once and keeps in the data dir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::config::TlsSource;

/// A loaded certificate, ready to serve.
pub struct ServerTls {
    pub config: Arc<berth_api::tls::ServerConfig>,
    /// The certificate file (chain), for the endpoint file and the local node's trust.
    pub cert: PathBuf,
    /// Whether berth made it.
    pub self_signed: bool,
}

/// Load (or make) the certificate `source` names; any problem is an error for the start.
pub fn load(source: &TlsSource, data_dir: &Path, listen: SocketAddr) -> anyhow::Result<ServerTls> {
    let (cert, key, self_signed) = match source {
        TlsSource::Files { cert, key } => (absolute(cert), absolute(key), false),
        TlsSource::SelfSigned => {
            let (c, k) = self_signed_files(data_dir, listen)?;
            (c, k, true)
        }
    };
    let config = berth_api::tls::server_config(&cert, &key)
        .context("the HTTPS certificate (--tls-cert, --tls-key) cannot be used")?;
    Ok(ServerTls {
        config,
        cert,
        self_signed,
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The names a self-signed certificate covers: loopback, the listen address when it is a
/// specific one, and the host's name.
fn self_signed_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" {
            names.push(h.to_string());
        }
    }
    names
}

/// `<data-dir>/tls/cert.pem` and `key.pem`, made on the first start and kept (clients that
/// trust the certificate go on trusting it across restarts).
fn self_signed_files(data_dir: &Path, listen: SocketAddr) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = absolute(&data_dir.join("tls"));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        tracing::info!(
            cert = %cert.display(),
            "using the self-signed certificate made earlier (delete it to make a new one)"
        );
        return Ok((cert, key));
    }
    crate::create_private_dir(&dir)?;
    let names = self_signed_names(listen);
    let made = rcgen::generate_simple_self_signed(names.clone())
        .context("making a self-signed certificate")?;
    crate::write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
    crate::write_private(&cert, made.cert.pem().as_bytes())?;
    tracing::info!(
        cert = %cert.display(),
        names = %names.join(","),
        "made a self-signed certificate; clients trust it with --ca-file / AWS_CA_BUNDLE {}",
        cert.display()
    );
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_and_serves() {
        let dir = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = load(&TlsSource::SelfSigned, dir.path(), listen).unwrap();
        assert!(a.self_signed);
        let pem = std::fs::read(&a.cert).unwrap();
        let b = load(&TlsSource::SelfSigned, dir.path(), listen).unwrap();
        assert_eq!(std::fs::read(&b.cert).unwrap(), pem, "kept, not made again");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = load(&TlsSource::SelfSigned, dir.path(), listen).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = dir.path().join("other.key");
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let e = load(
            &TlsSource::Files {
                cert: a.cert.clone(),
                key,
            },
            dir.path(),
            listen,
        )
        .err()
        .expect("mismatched key refused");
        assert!(format!("{e:#}").contains("other.key"), "{e:#}");
    }
}
