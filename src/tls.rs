//! TLS for clients and listeners with rustls: trust anchors, certificate loading, and a stream that can upgrade.
//!
//! rustls 0.23 with the `ring` provider only (no aws-lc). Clients verify the server certificate chain against the
//! system roots plus an optional PEM CA file, and the host name, always: there is no "insecure" switch.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS handshake that takes longer than this is abandoned: a peer that stalls it must not hold a connection
/// slot forever (the POP3 inactivity timer does not run during the handshake).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How a POP3 connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext (only sensible on loopback or a trusted network).
    None,
    /// TLS from the first byte (POP3S, port 995, RFC 8314).
    Implicit,
    /// Plaintext greeting, then `STLS` (RFC 2595).
    StartTls,
}

impl FromStr for TlsMode {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "plain" => Ok(TlsMode::None),
            "implicit" | "tls" | "pop3s" => Ok(TlsMode::Implicit),
            "starttls" | "stls" => Ok(TlsMode::StartTls),
            _ => Err(TlsError::BadMode(s.to_owned())),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::None => "none",
            TlsMode::Implicit => "implicit",
            TlsMode::StartTls => "starttls",
        })
    }
}

/// What went wrong with TLS, worded so the user knows what to fix. Causes are part of the messages, not `source`s,
/// so `{e:#}` chains print each once.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("unknown TLS mode {0:?}: use none, implicit or starttls")]
    BadMode(String),
    #[error("cannot read {path}: {cause}")]
    ReadFile { path: PathBuf, cause: io::Error },
    #[error("{path}: no PEM {what} found ({detail}); give a PEM file")]
    Pem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error(
        "no trusted CA certificates: the system store is empty or unreadable; install ca-certificates or pass a CA \
         file"
    )]
    NoTrustAnchors,
    #[error("TLS configuration rejected: {0}")]
    Config(rustls::Error),
    #[error("{0:?} is not a valid server name for TLS (use the name in the server's certificate)")]
    BadServerName(String),
    #[error("certificate of {host} rejected: {reason}")]
    Certificate { host: String, reason: String },
    #[error("TLS handshake with {peer} failed: {reason}")]
    Handshake { peer: String, reason: String },
    #[error("TLS handshake with {peer} timed out after {}s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout { peer: String },
}

/// A connection that is plaintext or TLS, on either side; POP3 code reads and writes it the same way.
/// The TLS variants are boxed: a rustls connection state is large, a plain socket is not.
pub enum MaybeTls<S> {
    Plain(S),
    Client(Box<tokio_rustls::client::TlsStream<S>>),
    Server(Box<tokio_rustls::server::TlsStream<S>>),
}

impl<S> MaybeTls<S> {
    pub fn is_tls(&self) -> bool {
        !matches!(self, MaybeTls::Plain(_))
    }
}

impl<S> fmt::Debug for MaybeTls<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MaybeTls::Plain(_) => "MaybeTls::Plain",
            MaybeTls::Client(_) => "MaybeTls::Client",
            MaybeTls::Server(_) => "MaybeTls::Server",
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTls::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting the system roots plus the certificates in `ca_file` (PEM), if given.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with(ca_file, true)
}

/// Like [`client_config`]; `system_roots: false` trusts only `ca_file` (tests, private deployments).
pub fn client_config_with(
    ca_file: Option<&Path>,
    system_roots: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    if system_roots {
        // Unreadable individual system certificates are skipped, as browsers do; an empty store is reported below.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    if let Some(path) = ca_file {
        let certs = read_certs(path)?;
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsError::Pem {
                path: path.to_owned(),
                what: "CA certificate",
                detail: "no usable certificate".into(),
            });
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoTrustAnchors);
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert)?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::ReadFile {
        path: key.to_owned(),
        cause: source,
    })?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        what: "private key",
        detail: e.to_string(),
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadFile {
        path: path.to_owned(),
        cause: source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
            detail: "file has none".into(),
        });
    }
    Ok(certs)
}

/// Runs the client handshake over `stream`, verifying the chain and that the certificate is valid for `host`.
pub async fn connect<S>(
    stream: S,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<MaybeTls<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| TlsError::BadServerName(host.to_owned()))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream)).await {
        Err(_) => Err(TlsError::Timeout {
            peer: host.to_owned(),
        }),
        Ok(Ok(tls)) => Ok(MaybeTls::Client(Box::new(tls))),
        Ok(Err(e)) => Err(describe_failure(host, &e)),
    }
}

/// Runs the server handshake over `stream`. Call it inside the connection's task, never in an accept loop.
pub async fn accept<S>(stream: S, config: Arc<ServerConfig>) -> Result<MaybeTls<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Err(_) => Err(TlsError::Timeout {
            peer: "client".into(),
        }),
        Ok(Ok(tls)) => Ok(MaybeTls::Server(Box::new(tls))),
        Ok(Err(e)) => Err(TlsError::Handshake {
            peer: "client".into(),
            reason: e.to_string(),
        }),
    }
}

/// Turns a handshake failure into a message that says why the certificate was refused.
fn describe_failure(host: &str, e: &io::Error) -> TlsError {
    let Some(rustls_error) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return TlsError::Handshake {
            peer: host.to_owned(),
            reason: e.to_string(),
        };
    };
    let rustls::Error::InvalidCertificate(cert_error) = rustls_error else {
        return TlsError::Handshake {
            peer: host.to_owned(),
            reason: rustls_error.to_string(),
        };
    };
    let reason = match cert_error {
        CertificateError::UnknownIssuer => {
            "unknown issuer: it is not signed by a trusted CA (self-signed or private CA? pass its PEM with --ca-file)"
                .to_owned()
        }
        CertificateError::NotValidForName => {
            format!("name mismatch: the certificate is not valid for {host:?} (connect with the name it was issued for)")
        }
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "name mismatch: the certificate is not valid for {host:?}; it is for {} (connect with one of those names)",
            presented.join(", ")
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "expired: the server must renew its certificate (or check this machine's clock)".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "not valid yet: check this machine's clock".to_owned()
        }
        CertificateError::Revoked => "revoked by its issuer".to_owned(),
        CertificateError::BadSignature => {
            "bad signature: the chain does not verify against a trusted CA of the same name (wrong --ca-file?)"
                .to_owned()
        }
        other => format!("{other:?}"),
    };
    TlsError::Certificate {
        host: host.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        /// A CA, a leaf for "localhost" signed by it, and an unrelated second CA, as PEM files.
        fn new() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(DnType::CommonName, "popguard test CA");
            let ca = CertifiedIssuer::self_signed(ca_params.clone(), KeyPair::generate().unwrap())
                .unwrap();
            let leaf_key = KeyPair::generate().unwrap();
            let leaf = CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .signed_by(&leaf_key, &ca)
                .unwrap();
            // A different name too: with the same name webpki would try it as the issuer and report a bad signature.
            let mut other_params = ca_params;
            other_params
                .distinguished_name
                .push(DnType::CommonName, "Other test CA");
            let other_ca =
                CertifiedIssuer::self_signed(other_params, KeyPair::generate().unwrap()).unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
            std::fs::write(dir.path().join("other-ca.pem"), other_ca.pem()).unwrap();
            std::fs::write(dir.path().join("leaf.pem"), leaf.pem()).unwrap();
            std::fs::write(dir.path().join("leaf.key"), leaf_key.serialize_pem()).unwrap();
            Pki { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    /// Handshakes over a duplex pipe; the server side echoes one line. Returns the client's result.
    async fn handshake(
        pki: &Pki,
        client: Arc<ClientConfig>,
        host: &str,
    ) -> Result<Vec<u8>, TlsError> {
        let server_cfg = server_config(&pki.path("leaf.pem"), &pki.path("leaf.key")).unwrap();
        let (a, b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            if let Ok(mut tls) = accept(b, server_cfg).await {
                let mut buf = [0u8; 5];
                if tls.read_exact(&mut buf).await.is_ok() {
                    let _ = tls.write_all(&buf).await;
                    let _ = tls.flush().await;
                }
            }
        });
        let run = async {
            let mut tls = connect(a, host, client).await?;
            assert!(tls.is_tls());
            tls.write_all(b"hello").await.unwrap();
            tls.flush().await.unwrap();
            let mut buf = vec![0u8; 5];
            tls.read_exact(&mut buf).await.unwrap();
            Ok(buf)
        };
        let result = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("handshake hung");
        let _ = server.await;
        result
    }

    #[tokio::test]
    async fn handshake_succeeds_with_the_ca_file() {
        let pki = Pki::new();
        let cfg = client_config_with(Some(&pki.path("ca.pem")), false).unwrap();
        assert_eq!(handshake(&pki, cfg, "localhost").await.unwrap(), b"hello");
        // With the system roots added too.
        let cfg = client_config(Some(&pki.path("ca.pem"))).unwrap();
        assert_eq!(handshake(&pki, cfg, "localhost").await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn unknown_issuer_is_explained() {
        let pki = Pki::new();
        let cfg = client_config_with(Some(&pki.path("other-ca.pem")), false).unwrap();
        let err = handshake(&pki, cfg, "localhost").await.unwrap_err();
        assert!(err.to_string().contains("unknown issuer"), "{err}");
        // The system roots alone do not trust a private CA either (or there are none on this machine).
        match client_config(None) {
            Ok(cfg) => assert!(handshake(&pki, cfg, "localhost").await.is_err()),
            Err(e) => assert!(matches!(e, TlsError::NoTrustAnchors), "{e}"),
        }
    }

    #[tokio::test]
    async fn wrong_host_name_is_explained() {
        let pki = Pki::new();
        let cfg = client_config_with(Some(&pki.path("ca.pem")), false).unwrap();
        let err = handshake(&pki, cfg, "mail.example.org").await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("name mismatch") && msg.contains("mail.example.org"),
            "{msg}"
        );
    }

    #[test]
    fn modes_and_file_errors() {
        assert_eq!("STARTTLS".parse::<TlsMode>().unwrap(), TlsMode::StartTls);
        assert_eq!("implicit".parse::<TlsMode>().unwrap(), TlsMode::Implicit);
        assert_eq!("none".parse::<TlsMode>().unwrap(), TlsMode::None);
        assert!(
            "ssl3"
                .parse::<TlsMode>()
                .unwrap_err()
                .to_string()
                .contains("none, implicit or starttls")
        );
        assert_eq!(TlsMode::StartTls.to_string(), "starttls");

        let pki = Pki::new();
        assert!(matches!(
            client_config_with(Some(&pki.path("missing.pem")), false),
            Err(TlsError::ReadFile { .. })
        ));
        assert!(matches!(
            client_config_with(Some(&pki.path("leaf.key")), false),
            Err(TlsError::Pem { .. })
        ));
        assert!(matches!(
            client_config_with(None, false),
            Err(TlsError::NoTrustAnchors)
        ));
        assert!(matches!(
            server_config(&pki.path("leaf.pem"), &pki.path("ca.pem")),
            Err(TlsError::Pem { .. })
        ));
    }
}
