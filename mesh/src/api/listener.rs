//! The HTTP API's server loop, with every bound a hostile client could otherwise push on:
//!
//! - at most [`Caps::connections`] connections at once, and [`Caps::per_address`] from one address
//!   (loopback counts only toward the total); past the total, new ones wait in the kernel's
//!   backlog, past the per-address cap they are closed at once;
//! - a request head must arrive within [`HEAD_TIMEOUT`], which also ends an idle keep-alive
//!   connection (slowloris);
//! - a write that makes no progress for [`crate::api::WRITE_TIMEOUT`] fails, so a client that
//!   stops reading cannot hold its connection forever;
//! - TLS (rustls) handshakes, each on a task of its own, within [`HANDSHAKE_TIMEOUT`];
//! - every connection is a task of the server's own set: stopping the server (its task
//!   dropped, e.g. when the gateway restarts) ends them all.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Connections served at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Connections from one address at once (loopback excepted).
pub const MAX_PER_ADDRESS: usize = 64;
/// A request head (or the next one, on a kept-alive connection) must arrive within this time.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
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
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How many connections a server loop takes.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// At once, in all.
    pub connections: usize,
    /// At once from one address (loopback counts only toward the total).
    pub per_address: usize,
}

/// Connections per address, for the per-address cap.
#[derive(Debug)]
struct PerAddress {
    cap: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            counts: Mutex::default(),
        }
    }

    /// Takes a place for `ip`, unless it has `cap` already. An IPv4 address
    /// mapped into IPv6 counts as itself, and an IPv6 /64 as one address (one host has one).
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressPlace> {
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return Some(AddressPlace(None));
        }
        let ip = match ip {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            v4 => v4,
        };
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(ip).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(AddressPlace(Some((self.clone(), ip))))
    }
}

/// A connection's place among its address's; given back when dropped.
struct AddressPlace(Option<(Arc<PerAddress>, IpAddr)>);

impl Drop for AddressPlace {
    fn drop(&mut self) {
        if let Some((counts, ip)) = self.0.take() {
            let mut counts = counts
                .counts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

/// Serves `router` on `listener` until dropped.
pub async fn serve(listener: TcpListener, router: Router, caps: Caps, tls: Option<TlsAcceptor>) {
    let places = Arc::new(Semaphore::new(caps.connections.max(1)));
    let per_address = Arc::new(PerAddress::new(caps.per_address.max(1)));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
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
        let Some(address_place) = per_address.take(addr.ip()) else {
            tracing::debug!(%addr, "HTTP connection refused: too many from this address");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (router, tls) = (router.clone(), tls.clone());
        connections.spawn(async move {
            let stream = match tls {
                None => Stream::Plain(tcp),
                Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => Stream::Tls(Box::new(stream)),
                    _ => {
                        tracing::debug!(%addr, "HTTP TLS handshake failed or timed out");
                        return;
                    }
                },
            };
            let connection = Connection {
                stream,
                write_stalled: None,
                _places: (place, address_place),
            };
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(connection), TowerToHyperService::new(router))
                .await;
            if let Err(e) = served {
                tracing::debug!(%addr, error = %e, "HTTP connection ended");
            }
        });
    }
}

/// A connection, plain or TLS, holding its places under the caps until it closes.
struct Connection {
    stream: Stream,
    /// Since when a write has made no progress.
    write_stalled: Option<Pin<Box<Sleep>>>,
    _places: (OwnedSemaphorePermit, AddressPlace),
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection {
    /// Passes a write's progress on, failing it once it has made none for
    /// [`crate::api::WRITE_TIMEOUT`].
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_stalled = None;
            return polled;
        }
        let stalled = self
            .write_stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(crate::api::WRITE_TIMEOUT)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
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
        let polled = match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        self.deadline(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        };
        self.deadline(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_places_and_loopback_only_the_total() {
        let counts = Arc::new(PerAddress::new(MAX_PER_ADDRESS));
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let places: Vec<_> = (0..MAX_PER_ADDRESS)
            .map(|_| counts.take(ip).expect("a place"))
            .collect();
        assert!(counts.take(ip).is_none(), "the cap");
        // The same host mapped into IPv6 is the same address.
        assert!(
            counts
                .take("::ffff:192.0.2.7".parse().expect("ip"))
                .is_none()
        );
        drop(places);
        assert!(counts.take(ip).is_some(), "places come back");
        // One IPv6 /64 is one address; loopback is never capped.
        let held: Vec<_> = (0..MAX_PER_ADDRESS)
            .map(|i| {
                counts
                    .take(format!("2001:db8::{i:x}").parse().expect("ip"))
                    .expect("a place")
            })
            .collect();
        assert!(counts.take("2001:db8::ffff".parse().expect("ip")).is_none());
        assert!(
            counts
                .take("2001:db8:0:1::1".parse().expect("ip"))
                .is_some()
        );
        drop(held);
        for _ in 0..MAX_PER_ADDRESS * 2 {
            std::mem::forget(counts.take("::1".parse().expect("ip")).expect("loopback"));
        }
    }
}
