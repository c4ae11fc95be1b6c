//! TLS for the client and peer URLs, etcd's way: `https://` URLs are served with the
//! certificate of `--cert-file`/`--key-file` (peers: `--peer-cert-file`/`--peer-key-file`);
//! `--trusted-ca-file` names the CA that signs client certificates, and `--client-cert-auth`
//! makes presenting one mandatory. `http://` URLs stay plain.
//!
//! Both ports terminate TLS here (rustls through tokio-rustls): the client port below the
//! `AuthorityFix` shim and the HTTP/2 + HTTP/1.1 server, so both gRPC and the HTTP endpoints
//! work over TLS and the shim sees plaintext; the peer port below the framed peer protocol,
//! which dials out through [`PeerDialer`].

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

use cairn_consensus::network::tcp::{host_port, Dialer, PeerIo, TcpDialer};
use futures::future::BoxFuture;

use crate::error::StartError;

/// A client that has not finished its handshake by then is dropped, so a silent peer cannot
/// hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for the server to take them.
const ACCEPTED_QUEUED_MAX: usize = 128;

/// The certificate files of one side (client or peer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse connections without a certificate signed by the trusted CA.
    pub client_cert_auth: bool,
}

fn pem_error(path: &Path, what: &str, error: impl std::fmt::Display) -> StartError {
    StartError::Config(format!("{what} {}: {error}", path.display()))
}

impl TlsFiles {
    /// Whether TLS is configured at all (a certificate and its key).
    pub fn is_set(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }

    /// The certificate and key files, both required once either is given or a URL is https.
    fn pair(&self, flag_prefix: &str) -> Result<(&Path, &Path), StartError> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Ok((cert, key)),
            _ => Err(StartError::Config(format!(
                "https URLs need --{flag_prefix}cert-file and --{flag_prefix}key-file"
            ))),
        }
    }

    /// Checks the flag combination before anything is opened.
    pub fn validate(&self, https: bool, flag_prefix: &str) -> Result<(), StartError> {
        if https || self.is_set() {
            self.pair(flag_prefix)?;
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(StartError::Config(format!(
                "--{flag_prefix}client-cert-auth needs --{flag_prefix}trusted-ca-file"
            )));
        }
        Ok(())
    }

    /// The acceptor for the client port: rustls with ALPN h2 (gRPC) and http/1.1 (the HTTP
    /// endpoints).
    pub fn client_acceptor(&self) -> Result<TlsAcceptor, StartError> {
        self.acceptor("", vec![b"h2".to_vec(), b"http/1.1".to_vec()])
    }

    /// The acceptor for the peer port (framed TCP inside; no ALPN).
    pub fn peer_acceptor(&self) -> Result<TlsAcceptor, StartError> {
        self.acceptor("peer-", Vec::new())
    }

    fn acceptor(&self, flag_prefix: &str, alpn: Vec<Vec<u8>>) -> Result<TlsAcceptor, StartError> {
        let (certs, key) = self.certificate(flag_prefix)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| StartError::Config(format!("TLS: {error}")))?;
        let builder = match &self.trusted_ca_file {
            Some(ca_path) => {
                let roots = self.roots(flag_prefix)?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let verifier = if self.client_cert_auth {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier.build().map_err(|error| {
                    pem_error(ca_path, &format!("--{flag_prefix}trusted-ca-file"), error)
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let (cert_path, _) = self.pair(flag_prefix)?;
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|error| pem_error(cert_path, &format!("--{flag_prefix}cert-file"), error))?;
        config.alpn_protocols = alpn;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The connector towards other members: this member's certificate (for peers that demand
    /// one) and the CA that signed theirs.
    pub fn peer_connector(&self) -> Result<TlsConnector, StartError> {
        let (certs, key) = self.certificate("peer-")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| StartError::Config(format!("TLS: {error}")))?
            .with_root_certificates(self.roots("peer-")?);
        let (cert_path, _) = self.pair("peer-")?;
        let config = builder
            .with_client_auth_cert(certs, key)
            .map_err(|error| pem_error(cert_path, "--peer-cert-file", error))?;
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// The certificate chain and private key of `--{flag_prefix}cert-file`/`key-file`.
    fn certificate(
        &self,
        flag_prefix: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), StartError> {
        let (cert_path, key_path) = self.pair(flag_prefix)?;
        let cert_flag = format!("--{flag_prefix}cert-file");
        let certs = CertificateDer::pem_file_iter(cert_path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| pem_error(cert_path, &cert_flag, error))?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|error| pem_error(key_path, &format!("--{flag_prefix}key-file"), error))?;
        Ok((certs, key))
    }

    /// The CAs of `--{flag_prefix}trusted-ca-file`; none when it is not given.
    fn roots(&self, flag_prefix: &str) -> Result<rustls::RootCertStore, StartError> {
        let mut roots = rustls::RootCertStore::empty();
        let Some(ca_path) = &self.trusted_ca_file else {
            return Ok(roots);
        };
        let flag = format!("--{flag_prefix}trusted-ca-file");
        for cert in CertificateDer::pem_file_iter(ca_path)
            .map_err(|error| pem_error(ca_path, &flag, error))?
        {
            let cert = cert.map_err(|error| pem_error(ca_path, &flag, error))?;
            roots
                .add(cert)
                .map_err(|error| pem_error(ca_path, &flag, error))?;
        }
        Ok(roots)
    }
}

/// Dials other members: plain TCP, then TLS when this member has a peer certificate.
pub struct PeerDialer {
    tcp: TcpDialer,
    tls: Option<TlsConnector>,
}

impl PeerDialer {
    pub fn new(tcp: TcpDialer, tls: Option<TlsConnector>) -> PeerDialer {
        PeerDialer { tcp, tls }
    }
}

impl Dialer for PeerDialer {
    fn dial(&self, url: &str) -> BoxFuture<'static, io::Result<Box<dyn PeerIo>>> {
        let Some(tls) = self.tls.clone() else {
            return self.tcp.dial(url);
        };
        let connect = self.tcp.connect(url);
        // The peer's certificate must name the host of its URL, as for any TLS server.
        let name = host_port(url).and_then(|(host, _)| {
            ServerName::try_from(host.to_string())
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))
        });
        Box::pin(async move {
            let name = name?;
            let tcp = connect.await?;
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(Box::new(stream) as Box<dyn PeerIo>)
        })
    }
}

/// An accepted connection (client or peer port), plain or TLS.
pub enum ClientIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Accepts client connections on every listener, running TLS handshakes (for listeners that
/// have an acceptor) concurrently, so one slow handshake delays nobody else. Ends when every
/// listener fails or the receiver is dropped.
pub fn accept(
    listeners: Vec<(TcpListener, Option<TlsAcceptor>)>,
) -> ReceiverStream<io::Result<ClientIo>> {
    let (accepted, incoming) = mpsc::channel(ACCEPTED_QUEUED_MAX);
    for (listener, acceptor) in listeners {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(error) => {
                        // Out of descriptors and the like: report it, keep listening.
                        if accepted.send(Err(error)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                // Small request/response messages: Nagle would add up to 40 ms per round trip.
                let _ = tcp.set_nodelay(true);
                let Some(acceptor) = acceptor.clone() else {
                    if accepted.send(Ok(ClientIo::Plain(tcp))).await.is_err() {
                        return;
                    }
                    continue;
                };
                let accepted = accepted.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = accepted.send(Ok(ClientIo::Tls(Box::new(tls)))).await;
                        }
                        // A failed handshake is the client's problem (wrong CA, no
                        // certificate, plain HTTP on an https port): drop the connection.
                        Ok(Err(error)) => debug!(%error, "TLS handshake failed"),
                        Err(_) => debug!("TLS handshake timed out"),
                    }
                });
            }
        });
    }
    ReceiverStream::new(incoming)
}

impl Connected for ClientIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            ClientIo::Plain(tcp) => tcp.connect_info(),
            ClientIo::Tls(tls) => tls.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            ClientIo::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            ClientIo::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            ClientIo::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            ClientIo::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            ClientIo::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientIo::Plain(tcp) => tcp.is_write_vectored(),
            ClientIo::Tls(tls) => tls.is_write_vectored(),
        }
    }
}
