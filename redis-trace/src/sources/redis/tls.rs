//! TLS to Redis (rustls, no OpenSSL): what redis-cli's `--tls --cacert --cert --key
//! --insecure` mean, as `--tls-ca`, `--tls-cert`, `--tls-key` and `--tls-insecure`.
//!
//! The server is verified against `--tls-ca` (PEM), else the host's trust store; a client
//! certificate is sent when both `--tls-cert` and `--tls-key` are given (mutual TLS).
//! `--tls-insecure` skips the server's certificate check only when asked, as redis-cli's
//! `--insecure` does; the handshake's signatures are still verified.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _};

/// The TLS options of the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub insecure: bool,
}

impl TlsSettings {
    /// Whether any TLS option was given (then TLS is spoken even on a redis:// URL).
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.insecure
    }

    /// The client configuration, checked now: a missing or bad file is an error that
    /// names it, before anything connects.
    pub fn client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoServerCertCheck(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match &self.ca {
                Some(ca) => {
                    for cert in read_certs(ca, "--tls-ca")? {
                        roots.add(cert).with_context(|| {
                            format!("--tls-ca {}: a bad certificate", ca.display())
                        })?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    for cert in found.certs {
                        let _ = roots.add(cert);
                    }
                    if roots.is_empty() {
                        bail!(
                            "no trusted CA certificates on this host: name the one that signed \
                             Redis's certificate with --tls-ca FILE (or --tls-insecure)"
                        );
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "--tls-cert")?;
                let key = read_key(key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("--tls-cert and --tls-key do not make a client certificate")?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => bail!("give --tls-cert and --tls-key together (a client certificate and its key)"),
        };
        Ok(Arc::new(config))
    }
}

/// Certificates from a PEM file.
fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what} {}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("{what} {}: no certificate in it", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("--tls-key {}: no PEM private key in it", path.display()))
}

/// The name the server's certificate must hold: its IP address or host name.
pub fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .with_context(|| format!("{host:?} is not a host name TLS can verify"))
}

/// Whether `host:port` answers a TLS handshake: it sent a ServerHello (whatever comes
/// after: a certificate nobody checks here, a request for a client certificate). Nothing
/// is sent but the ClientHello.
pub fn speaks_tls(host: &str, port: u16, timeout: std::time::Duration) -> bool {
    let probe = || -> Option<bool> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerCertCheck(provider)))
            .with_no_client_auth();
        let name = server_name(host).ok()?;
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .ok()?
            .next()?;
        let mut sock = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
        sock.set_read_timeout(Some(timeout)).ok()?;
        sock.set_write_timeout(Some(timeout)).ok()?;
        while conn.is_handshaking() && conn.protocol_version().is_none() {
            if conn.complete_io(&mut sock).is_err() {
                break;
            }
        }
        Some(conn.protocol_version().is_some())
    };
    probe().unwrap_or(false)
}

/// `--tls-insecure`: any server certificate is accepted; signatures are still checked.
#[derive(Debug)]
struct NoServerCertCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoServerCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_client_certificate_is_refused() {
        let s = TlsSettings {
            cert: Some("/nonexistent/cert.pem".into()),
            insecure: true,
            ..TlsSettings::default()
        };
        let err = s.client_config().expect_err("cert without key");
        assert!(format!("{err:#}").contains("--tls-cert"), "{err:#}");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let s = TlsSettings {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        };
        let err = s.client_config().expect_err("missing CA");
        assert!(
            format!("{err:#}").contains("/nonexistent/ca.pem"),
            "{err:#}"
        );
    }

    #[test]
    fn insecure_builds_without_a_trust_store() {
        let s = TlsSettings {
            insecure: true,
            ..TlsSettings::default()
        };
        assert!(s.any());
        s.client_config().expect("insecure config");
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("redis.example").is_ok());
    }
}
