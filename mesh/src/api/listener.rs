//! The HTTP API's listener: at most a fixed number of connections at once (past it, new ones
//! wait in the kernel's backlog), TCP_NODELAY, and optionally TLS (rustls), each handshake on
//! a task of its own with a deadline so that a slow one holds up nobody.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Connections served at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// A TLS handshake must finish within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads a TLS server configuration from PEM files (certificate chain, private key).
pub fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A connection, plain or TLS, holding its place under the cap until it closes.
pub struct Connection {
    stream: Stream,
    _place: OwnedSemaphorePermit,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The bounded listener (an [`axum::serve::Listener`]).
pub struct BoundedListener {
    accepted: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
    _acceptor: crate::actors::AbortOnDrop,
}

impl BoundedListener {
    /// Serves `listener`, at most `max_connections` at once, with TLS if `tls` is given.
    pub fn new(
        listener: TcpListener,
        max_connections: usize,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(16);
        let places = Arc::new(Semaphore::new(max_connections.max(1)));
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok(place) = places.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                match &tls {
                    None => {
                        let connection = Connection {
                            stream: Stream::Plain(tcp),
                            _place: place,
                        };
                        if tx.send((connection, addr)).await.is_err() {
                            return;
                        }
                    }
                    Some(tls) => {
                        let (tls, tx) = (tls.clone(), tx.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                                Ok(Ok(stream)) => {
                                    let connection = Connection {
                                        stream: Stream::Tls(Box::new(stream)),
                                        _place: place,
                                    };
                                    let _ = tx.send((connection, addr)).await;
                                }
                                _ => {
                                    tracing::debug!(%addr, "HTTP TLS handshake failed or timed out")
                                }
                            }
                        });
                    }
                }
            }
        });
        Ok(Self {
            accepted,
            local,
            _acceptor: crate::actors::AbortOnDrop(acceptor),
        })
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The acceptor stopped: serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
