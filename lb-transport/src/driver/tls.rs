//! TLS for client connections and our server (available with the `tls` feature):
//! rustls with ALPN `h2`.
//!
//! Server certificates are verified by default, against the Mozilla root store
//! (webpki-roots), or against roots the program gives.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// TLS settings of a transport.
///
/// ```
/// let tls = lb_transport::driver::tls::TlsConfig::with_webpki_roots();
/// assert_eq!(tls.client_config().alpn_protocols, [b"h2".to_vec()]);
/// ```
#[derive(Clone, Debug)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

/// Why TLS settings could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The PEM text held no certificate, or a malformed one.
    #[error("invalid PEM certificates: {0}")]
    Pem(String),
    /// A certificate could not be used as a root.
    #[error("unusable root certificate: {0}")]
    Root(String),
    /// The private key is missing, malformed or does not fit the certificate.
    #[error("invalid private key: {0}")]
    Key(String),
}

impl TlsConfig {
    /// Verifies servers against the Mozilla root store.
    pub fn with_webpki_roots() -> Self {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::with_roots(roots)
    }

    /// Verifies servers against the certificates in `pem` (for example a private
    /// CA, or a test's self-signed certificate).
    ///
    /// # Errors
    ///
    /// `pem` holds no certificate, a malformed one, or one that cannot be a root.
    pub fn with_root_pem(pem: &[u8]) -> Result<Self, TlsConfigError> {
        let mut roots = RootCertStore::empty();
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| TlsConfigError::Pem(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| TlsConfigError::Root(e.to_string()))?;
            found += 1;
        }
        if found == 0 {
            return Err(TlsConfigError::Pem("no certificate found".into()));
        }
        Ok(Self::with_roots(roots))
    }

    fn with_roots(roots: RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::from_client_config(config)
    }

    /// Uses a rustls config of the program's own (client certificates, a custom
    /// verifier…). Its ALPN protocols are replaced by `h2`.
    pub fn from_client_config(mut config: ClientConfig) -> Self {
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            config: Arc::new(config),
            server_name: None,
        }
    }

    /// Verifies the server's certificate for `name` instead of the connection's
    /// authority host.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The rustls config in use.
    pub fn client_config(&self) -> &ClientConfig {
        &self.config
    }

    /// Starts a TLS session for a connection whose authority is `authority`
    /// (`host:port`).
    pub(crate) fn start(&self, authority: &str) -> Result<ClientConnection, String> {
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => host_of(authority),
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("invalid TLS server name {host:?}: {e}"))?;
        ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())
    }
}

/// TLS settings of a server: its certificate chain and key, ALPN `h2`.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use lb_transport::driver::tls::TlsServerConfig;
/// let tls = TlsServerConfig::from_pem(&std::fs::read("cert.pem")?, &std::fs::read("key.pem")?)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TlsServerConfig {
    config: Arc<ServerConfig>,
}

impl TlsServerConfig {
    /// A server presenting the certificate chain in `cert_pem` with the private key
    /// in `key_pem`.
    ///
    /// # Errors
    ///
    /// No certificate, no key, or a key that does not fit.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsConfigError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsConfigError::Pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsConfigError::Pem("no certificate found".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsConfigError::Key(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsConfigError::Key(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// Starts a TLS session for an accepted connection.
    pub(crate) fn start(&self) -> Result<ServerConnection, String> {
        ServerConnection::new(self.config.clone()).map_err(|e| e.to_string())
    }
}

/// A TLS failure as a sentence that says what happened and what to change, instead
/// of rustls's debug text (`invalid peer certificate: Other(OtherError(
/// CaUsedAsEndEntity))`). The original follows in parentheses for searching.
///
/// ```
/// use lb_transport::driver::tls::explain;
/// use rustls::{CertificateError, Error};
/// let why = explain(&Error::InvalidCertificate(CertificateError::UnknownIssuer));
/// assert!(why.starts_with("the server's certificate is not signed by a root this client trusts"));
/// ```
pub fn explain(error: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    let advice = match error {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "the server's certificate is not signed by a root this client trusts: give \
                 its CA with TlsConfig::with_root_pem, or serve a chain to a public root"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired: renew it (or check this machine's \
                 clock)"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet: check the clocks of this machine \
                 and of whoever issued it"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate does not name the host this channel connects to: \
                 use a target (or TlsConfig::with_server_name) that matches one of its \
                 names, or reissue it with the name as a subject alternative name"
            }
            CertificateError::Revoked => "the server's certificate has been revoked",
            CertificateError::BadSignature => "the server's certificate chain has a bad signature",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "the server's certificate is not for TLS servers (its extended key usage \
                 lacks serverAuth)"
            }
            CertificateError::Other(other)
                if format!("{other:?}").contains("CaUsedAsEndEntity") =>
            {
                "the server presents a CA certificate as its own: serve a leaf certificate \
                 issued by that CA (with the CA in the chain or the client's roots)"
            }
            _ => "the server's certificate was refused",
        },
        Error::AlertReceived(AlertDescription::BadCertificate | AlertDescription::UnknownCA) => {
            "the server refused this client's certificate (or has none it trusts)"
        }
        Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate, and this client sent none"
        }
        Error::AlertReceived(AlertDescription::NoApplicationProtocol)
        | Error::NoApplicationProtocol => "the server does not speak HTTP/2 over TLS (no ALPN h2)",
        Error::AlertReceived(AlertDescription::ProtocolVersion) | Error::PeerIncompatible(_) => {
            "the server and this client share no TLS version or cipher suite"
        }
        Error::InvalidMessage(_) => {
            "the server did not answer with TLS (is it serving plaintext on this port?)"
        }
        _ => "the TLS handshake failed",
    };
    format!("{advice} ({error})")
}

fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_authority() {
        assert_eq!(host_of("example.com:443"), "example.com");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("example.com"), "example.com");
        let tls = TlsConfig::with_webpki_roots();
        assert!(tls.start("example.com:443").is_ok());
        assert!(tls.start("bad name!:443").is_err());
    }

    #[test]
    fn tls_failures_read_as_advice() {
        use rustls::{CertificateError, Error, OtherError};
        #[derive(Debug)]
        struct CaUsedAsEndEntity;
        impl std::fmt::Display for CaUsedAsEndEntity {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("CaUsedAsEndEntity")
            }
        }
        impl std::error::Error for CaUsedAsEndEntity {}
        for (error, want) in [
            (
                Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    CaUsedAsEndEntity,
                )))),
                "presents a CA certificate as its own",
            ),
            (
                Error::InvalidCertificate(CertificateError::Expired),
                "has expired",
            ),
            (
                Error::InvalidCertificate(CertificateError::NotValidForName),
                "does not name the host",
            ),
            (Error::NoApplicationProtocol, "does not speak HTTP/2"),
        ] {
            let why = explain(&error);
            assert!(why.contains(want), "{why}");
            assert!(!why.starts_with("invalid peer certificate"), "{why}");
        }
    }

    #[test]
    fn pem_without_certificates_is_an_error() {
        assert!(matches!(
            TlsConfig::with_root_pem(b"not pem"),
            Err(TlsConfigError::Pem(_))
        ));
    }
}
