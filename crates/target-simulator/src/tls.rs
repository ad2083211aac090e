//! HTTPS for the simulator: the identity it serves (a certificate chain and key
//! from PEM files, or a test CA generated on the spot that signs a certificate for
//! `127.0.0.1`, `::1` and `localhost`), and the TLS listener axum serves through.
//! Handshakes run in their own tasks, so a slow or failing client never holds up
//! the accept loop; only finished handshakes reach the HTTP server.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The names a generated certificate is valid for.
pub const GENERATED_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];
/// A handshake not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the HTTP server.
const ACCEPTED_BACKLOG: usize = 256;

/// Setting up TLS failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{path}: no PEM certificate in it")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error("{path}: no PEM private key in it")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// Generating the test CA or certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refuses the certificate and key.
    #[error("the certificate and key do not make a TLS server: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
}

/// What an HTTPS simulator presents: a certificate chain and its key, and the
/// PEM clients should trust to accept it.
#[derive(Clone)]
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    trust_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A fresh test CA and a certificate it signs for [`GENERATED_NAMES`]; clients
    /// trust [`TlsIdentity::trust_pem`], the CA's certificate.
    pub fn generate() -> Result<TlsIdentity, TlsSetupError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pos-profile-sync simulator CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let names: Vec<String> = GENERATED_NAMES.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "pos-profile-sync simulator");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok(TlsIdentity {
            chain: vec![cert.der().clone(), ca.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(key.serialize_der().into())),
            trust_pem: ca.pem(),
        })
    }

    /// The chain (leaf first) and key from PEM files; clients trust the chain's
    /// last certificate (its root, or the leaf itself when self-signed).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsSetupError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsSetupError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        let Some(root) = chain.last() else {
            return Err(TlsSetupError::NoCertificate {
                path: cert.to_owned(),
            });
        };
        let trust_pem = pem_certificate(root);
        let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| TlsSetupError::NoKey {
            path: key.to_owned(),
        })?;
        let identity = TlsIdentity {
            chain,
            key: Arc::new(key),
            trust_pem,
        };
        identity.server_config()?;
        Ok(identity)
    }

    /// PEM of the certificate clients should add to their trust roots.
    pub fn trust_pem(&self) -> &str {
        &self.trust_pem
    }

    /// The rustls server configuration (HTTP/1.1 only, as the simulator serves).
    pub(crate) fn server_config(&self) -> Result<Arc<ServerConfig>, TlsSetupError> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn pem_certificate(der: &CertificateDer<'_>) -> String {
    pem_lf("CERTIFICATE", der.to_vec())
}

/// PEM with Unix line endings, as rcgen writes it.
fn pem_lf(tag: &str, der: Vec<u8>) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A TCP listener whose connections come out TLS-terminated.
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` in a background task that stops when this is dropped.
    pub(crate) fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = sender.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::debug!(%error, "The simulator could not accept a connection.");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                // Small answers must not wait for Nagle; failure only costs latency.
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "A TLS handshake with the simulator failed.")
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "A TLS handshake with the simulator timed out.")
                        }
                    }
                });
            }
        });
        Ok(TlsListener { accepted, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// TLS connections carry a switch nobody can throw: the reset fault needs the plain
/// listener ([`super::reset`]), so over TLS a drawn reset is answered with a 503.
impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for super::reset::ResetSwitch
{
    fn connect_info(_: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_round_trips_through_pem_files() {
        let identity = TlsIdentity::generate().unwrap();
        assert!(identity
            .trust_pem()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let chain: String = identity.chain.iter().map(|c| pem_certificate(c)).collect();
        std::fs::write(&cert, chain).unwrap();
        let key_pem = match &*identity.key {
            PrivateKeyDer::Pkcs8(der) => pem_lf("PRIVATE KEY", der.secret_pkcs8_der().to_vec()),
            _ => unreachable!("generated keys are PKCS#8"),
        };
        std::fs::write(&key, key_pem).unwrap();
        let loaded = TlsIdentity::from_pem_files(&cert, &key).unwrap();
        assert_eq!(loaded.trust_pem(), identity.trust_pem());
        assert_eq!(loaded.chain, identity.chain);
    }

    #[test]
    fn files_without_a_certificate_or_key_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here").unwrap();
        let error = TlsIdentity::from_pem_files(&empty, &empty).unwrap_err();
        assert!(
            matches!(error, TlsSetupError::NoCertificate { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("empty.pem"), "{error}");
        let missing = dir.path().join("missing.pem");
        let error = TlsIdentity::from_pem_files(&missing, &empty).unwrap_err();
        assert!(error.to_string().contains("missing.pem"), "{error}");
    }
}
