//! Which HTTPS servers berth's clients trust, and dialling a connection that may be TLS.
//!
//! Trust is additive: the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace them, as
//! with OpenSSL), plus the certificates in `AWS_CA_BUNDLE` (what the aws CLI and the SDKs
//! read), plus CA files a caller names (`berth agent --ca-file`), plus certificates pinned
//! exactly (a server's own certificate, for the clients on the same machine).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::ClientError;

/// What to trust beyond the system's roots and `AWS_CA_BUNDLE`.
#[derive(Debug, Clone, Default)]
pub struct TrustOptions {
    /// PEM files of CA (or self-signed) certificates to trust as roots.
    pub ca_files: Vec<PathBuf>,
    /// PEM files whose certificates are accepted exactly as they are, whatever name the
    /// client dialled (berth's own certificate, for clients on its machine).
    pub pinned_certs: Vec<PathBuf>,
}

/// A TLS client configuration: the servers a client trusts.
#[derive(Clone, Debug)]
pub struct TlsTrust(Arc<ClientConfig>);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file; an error when there is none.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let data = std::fs::read(path).map_err(crate::io_err("reading certificates", path))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Invalid(format!(
            "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsTrust {
    /// The system's roots, `AWS_CA_BUNDLE`, and `opts`. A file that cannot be read or holds
    /// no certificate is an error; a system without roots is not (only a warning).
    pub fn load(opts: &TrustOptions) -> Result<TlsTrust, ClientError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!("system TLS roots: {e}");
        }
        let (_, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::debug!("{ignored} system TLS roots could not be used");
        }
        let mut files: Vec<PathBuf> = Vec::new();
        if let Some(b) = std::env::var_os("AWS_CA_BUNDLE").filter(|b| !b.is_empty()) {
            files.push(PathBuf::from(b));
        }
        files.extend(opts.ca_files.iter().cloned());
        for f in &files {
            for c in read_pem_certs(f)? {
                roots.add(c).map_err(|e| {
                    ClientError::Invalid(format!("{}: unusable certificate: {e}", f.display()))
                })?;
            }
        }
        let mut pinned = Vec::new();
        for f in &opts.pinned_certs {
            pinned.extend(read_pem_certs(f)?);
        }
        if roots.is_empty() && pinned.is_empty() {
            tracing::warn!(
                "no trusted TLS roots found: HTTPS servers cannot be verified \
                 (set SSL_CERT_FILE or AWS_CA_BUNDLE)"
            );
        }
        let webpki = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| ClientError::Invalid(format!("TLS roots: {e}")))?,
            )
        };
        let verifier = Arc::new(Verifier {
            webpki,
            pinned,
            algorithms: provider().signature_verification_algorithms,
        });
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Invalid(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(TlsTrust(Arc::new(config)))
    }

    /// The default trust (system roots and `AWS_CA_BUNDLE`), loaded once per process. When
    /// `AWS_CA_BUNDLE` cannot be read this says so and trusts the system's roots only.
    pub fn system() -> TlsTrust {
        static SYSTEM: OnceLock<TlsTrust> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                TlsTrust::load(&TrustOptions::default()).unwrap_or_else(|e| {
                    tracing::warn!("{e}; trusting the system's roots only");
                    let mut roots = RootCertStore::empty();
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                    let config = ClientConfig::builder_with_provider(provider())
                        .with_safe_default_protocol_versions()
                        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                        .unwrap_or_else(|_| {
                            ClientConfig::builder()
                                .with_root_certificates(RootCertStore::empty())
                                .with_no_client_auth()
                        });
                    TlsTrust(Arc::new(config))
                })
            })
            .clone()
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        (*self.0).clone()
    }

    /// Open a TCP connection to `host:port`, with TLS when `tls` (the name checked against
    /// the certificate is `host`).
    pub async fn dial(
        &self,
        authority: &str,
        tls: bool,
        timeout: Duration,
    ) -> Result<Box<dyn Io>, ClientError> {
        let (host, port) = split_authority(authority, if tls { 443 } else { 80 })?;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| ClientError::Http(format!("{authority}: connection timed out")))?
            .map_err(|e| ClientError::Http(format!("{authority}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if !tls {
            return Ok(Box::new(tcp));
        }
        let name = ServerName::try_from(host.clone())
            .map_err(|e| ClientError::Invalid(format!("{host}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(self.0.clone());
        let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| ClientError::Http(format!("{authority}: TLS handshake timed out")))?
            .map_err(|e| ClientError::Http(format!("{authority}: {}", describe(&e))))?;
        Ok(Box::new(stream))
    }
}

/// A connection [`TlsTrust::dial`] opened, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// `host:port`, `[v6]:port` or `host` → host (without brackets) and port.
fn split_authority(a: &str, default_port: u16) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::Invalid(format!("{a:?} is not host[:port]"));
    if let Some(rest) = a.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => default_port,
            None => return Err(bad()),
        };
        return Ok((h.to_string(), port));
    }
    match a.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), p.parse().map_err(|_| bad())?)),
        None if !a.is_empty() => Ok((a.to_string(), default_port)),
        None => Err(bad()),
    }
}

/// An error and its causes on one line ("client error (Connect): invalid peer certificate:
/// UnknownIssuer"), with a hint when the cause is a certificate that is not trusted.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut untrusted = is_cert_error(e);
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        untrusted |= is_cert_error(s);
        cur = s.source();
    }
    let mut out = parts.join(": ");
    if untrusted {
        out.push_str(
            " (the server's TLS certificate is not trusted: trust it or its CA with AWS_CA_BUNDLE, \
             SSL_CERT_FILE or `berth agent --ca-file`)",
        );
    }
    out
}

fn is_cert_error(e: &(dyn std::error::Error + 'static)) -> bool {
    // An io::Error's `source()` skips the error it wraps: look inside, however deep.
    let mut cur = e;
    while let Some(inner) = cur
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        cur = inner;
    }
    matches!(
        cur.downcast_ref::<rustls::Error>(),
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
    )
}

/// Whether the failure of a request was the server's certificate (not a server that does not
/// speak TLS at all).
pub(crate) fn is_untrusted(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = cur {
        if is_cert_error(s) {
            return true;
        }
        cur = s.source();
    }
    false
}

/// Roots through webpki, or an exact match with a pinned certificate.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            split_authority("127.0.0.1:8470", 80).unwrap(),
            ("127.0.0.1".into(), 8470)
        );
        assert_eq!(split_authority("[::1]:9", 80).unwrap(), ("::1".into(), 9));
        assert_eq!(
            split_authority("example.com", 443).unwrap(),
            ("example.com".into(), 443)
        );
        assert!(split_authority("h:x", 80).is_err());
        assert!(split_authority("", 80).is_err());
    }

    #[test]
    fn unreadable_or_empty_ca_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TrustOptions {
            ca_files: vec![dir.path().join("nope.pem")],
            ..Default::default()
        };
        let e = TlsTrust::load(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = TlsTrust::load(&TrustOptions {
            ca_files: vec![empty],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
