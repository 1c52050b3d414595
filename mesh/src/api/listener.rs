//! The HTTP API's server loop, with every bound a hostile client could otherwise push on:
//!
//! - at most [`Caps::connections`] connections at once, and [`Caps::per_address`] from one address
//!   (loopback counts only toward the total); past the total, new ones wait in the kernel's
//!   backlog, past the per-address cap they are closed at once;
//! - on an API door ([`serve_clients`]), at most [`Clients::unauthenticated`] of them yet to make
//!   an authenticated request; past it, new ones get a typed 503 with `retry-after: 1` at once.
//!   A connection gives that place back at its first authenticated request, and a refused one
//!   (401, 403) is closed, so keyless clients cannot take the places keyed ones need. Each
//!   request carries its [`ClientConnection`], which the API's guard checks;
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
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use ganglion_client::protocol::{ErrorCode, WireError};
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

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

/// Whom an API door serves, beyond its [`Caps`].
#[derive(Debug, Clone, Copy)]
pub struct Clients {
    /// Clients from beyond loopback are served; without it only loopback ones, the promise
    /// `--allow-anonymous` makes (the QUIC door keeps it too).
    pub remote: bool,
    /// Keyless requests are served (`--allow-anonymous`).
    pub keyless: bool,
    /// Connections at once that have not yet made an authenticated request.
    pub unauthenticated: usize,
}

/// The bounds of an API door of `connections` places: at most half of them for connections
/// yet to authenticate, and at most half of that half from one address, so that neither
/// keyless clients nor one host can take the places keyed clients need.
pub fn client_door(connections: usize, remote: bool, keyless: bool) -> (Caps, Clients) {
    let unauthenticated = (connections / 2).max(1);
    let caps = Caps {
        connections,
        per_address: MAX_PER_ADDRESS.min(unauthenticated / 2).max(1),
    };
    (
        caps,
        Clients {
            remote,
            keyless,
            unauthenticated,
        },
    )
}

/// What the API's guard learns of the connection a request came on: a request extension that
/// [`serve_clients`] adds to every request.
#[derive(Debug)]
pub struct ClientConnection {
    /// The peer may be served: it is on loopback, or the door serves remote clients.
    pub allowed: bool,
    /// The door answers only to `Host` names of this machine (see [`local_host`]).
    local_hosts_only: bool,
    /// Its place among the connections yet to authenticate, until its first authenticated
    /// request.
    unauthenticated: Mutex<Option<OwnedSemaphorePermit>>,
    /// Told when a newer connection took its place before it authenticated: it closes.
    evicted: tokio::sync::Notify,
}

impl ClientConnection {
    /// Whether `host` (the request's `Host` header) may be answered on this door.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        !self.local_hosts_only || host.is_some_and(local_host)
    }

    /// Whether it still holds a place among the connections yet to authenticate.
    fn waits(&self) -> bool {
        self.unauthenticated
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some()
    }

    /// The connection made an authenticated request: it gives its place among those yet to
    /// authenticate back, and keeps its place in the total.
    pub fn authenticated(&self) {
        drop(
            self.unauthenticated
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
    }
}

/// Whether a door answers only to names of this machine: a plain door that serves keyless
/// requests to this machine alone (bound to loopback, or serving loopback clients only). A web
/// page can make a browser on this machine reach such a door under a name of its own that it
/// then points at 127.0.0.1 (DNS rebinding) and read the answers; the `Host` it sends is that
/// name, so only names that cannot be rebound are answered. A door that wants a key needs no
/// such rule (a page has no key to send), and keeps working behind a reverse proxy that passes
/// the original `Host` on.
fn local_hosts_only(bound: SocketAddr, tls: bool, clients: Clients) -> bool {
    !tls && clients.keyless && (bound.ip().to_canonical().is_loopback() || !clients.remote)
}

/// Whether `host` (a `Host` header, with or without a port) names this machine in a way no
/// DNS answer can change: `localhost` or an IP address.
pub fn local_host(host: &str) -> bool {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

/// An API door's admission of new connections.
struct Door {
    clients: Clients,
    /// It answers only to `Host` names of this machine.
    local_hosts_only: bool,
    /// Places for connections yet to authenticate.
    unauthenticated: Arc<Semaphore>,
    /// Connections admitted, oldest first, while they may still hold such a place.
    waiting: Mutex<std::collections::VecDeque<std::sync::Weak<ClientConnection>>>,
    /// The answer to a connection that finds none free.
    busy: Vec<u8>,
}

impl Door {
    fn new(clients: Clients, bound: io::Result<SocketAddr>, tls: bool) -> Self {
        Self {
            clients,
            local_hosts_only: bound
                .ok()
                .is_some_and(|bound| local_hosts_only(bound, tls, clients)),
            unauthenticated: Arc::new(Semaphore::new(clients.unauthenticated.max(1))),
            waiting: Mutex::default(),
            busy: busy_answer(),
        }
    }

    /// A new connection from `peer`, holding a place among those yet to authenticate. When
    /// none is free, it takes the place of the oldest connection that has not authenticated
    /// yet, which is closed: connections that send nothing, or only what is refused, cannot
    /// keep a newcomer (perhaps with a key) out; they would have to outpace every newcomer's
    /// first request. `None` only when no place could be found.
    fn admit(&self, peer: IpAddr) -> Option<Arc<ClientConnection>> {
        let place = match self.unauthenticated.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => self.evict_oldest()?,
        };
        let connection = Arc::new(ClientConnection {
            allowed: self.clients.remote || peer.to_canonical().is_loopback(),
            local_hosts_only: self.local_hosts_only,
            unauthenticated: Mutex::new(Some(place)),
            evicted: tokio::sync::Notify::new(),
        });
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.len() >= 2 * self.clients.unauthenticated.max(1) {
            waiting.retain(|c| c.upgrade().is_some_and(|c| c.waits()));
        }
        waiting.push_back(Arc::downgrade(&connection));
        Some(connection)
    }

    /// Takes the place of the oldest connection still waiting to authenticate, and tells it to
    /// close.
    fn evict_oldest(&self) -> Option<OwnedSemaphorePermit> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(oldest) = waiting.pop_front() {
            let Some(connection) = oldest.upgrade() else {
                continue;
            };
            let place = connection
                .unauthenticated
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(place) = place {
                connection.evicted.notify_one();
                return Some(place);
            }
        }
        None
    }
}

/// A 503 with `retry-after: 1` (which the SDKs honour) and a typed `overloaded` body, that
/// closes its connection.
fn busy_answer() -> Vec<u8> {
    let error = WireError::new(
        ErrorCode::Overloaded,
        "too many connections are waiting to authenticate; retry in 1 s",
    );
    let body = crate::api::errors::openai_body(&error).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nx-should-retry: true\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a plain connection the door has no place for, then closes it, without waiting: the
/// answer fits in a new connection's empty send buffer. What the client already sent is read
/// first, so that closing sends a FIN, not a reset that could discard the answer unread.
fn turn_away(tcp: TcpStream, answer: &[u8]) {
    use std::io::{Read, Write};
    let Ok(mut tcp) = tcp.into_std() else {
        return;
    };
    let _ = tcp.read(&mut [0u8; 4096]);
    let _ = tcp.write_all(answer);
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

/// Serves `router` on `listener` until dropped (the admin listener: its routes check their own
/// token).
pub async fn serve(listener: TcpListener, router: Router, caps: Caps, tls: Option<TlsAcceptor>) {
    run(listener, router, caps, None, tls).await;
}

/// Serves the API's `router` on `listener` until dropped, admitting `clients` as
/// [`ClientConnection`]s for the API's guard to check.
pub async fn serve_clients(
    listener: TcpListener,
    router: Router,
    caps: Caps,
    clients: Clients,
    tls: Option<TlsAcceptor>,
) {
    run(listener, router, caps, Some(clients), tls).await;
}

async fn run(
    listener: TcpListener,
    router: Router,
    caps: Caps,
    clients: Option<Clients>,
    tls: Option<TlsAcceptor>,
) {
    let places = Arc::new(Semaphore::new(caps.connections.max(1)));
    let per_address = Arc::new(PerAddress::new(caps.per_address.max(1)));
    let door = clients.map(|clients| Door::new(clients, listener.local_addr(), tls.is_some()));
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
        let client = match &door {
            None => None,
            Some(door) => match door.admit(addr.ip()) {
                Some(client) => Some(client),
                None => {
                    tracing::debug!(
                        %addr,
                        "HTTP connection turned away: too many yet to authenticate"
                    );
                    // Behind TLS there is no answering before a handshake: the close says it.
                    if tls.is_none() {
                        turn_away(tcp, &door.busy);
                    }
                    continue;
                }
            },
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
            let evicted = client.clone();
            let router = TowerToHyperService::new(router);
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    if let Some(client) = &client {
                        request.extensions_mut().insert(client.clone());
                    }
                    router.call(request)
                },
            );
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(connection), service);
            tokio::select! {
                served = served => if let Err(e) = served {
                    tracing::debug!(%addr, error = %e, "HTTP connection ended");
                },
                () = async {
                    match &evicted {
                        Some(client) => client.evicted.notified().await,
                        None => std::future::pending().await,
                    }
                } => tracing::debug!(%addr, "HTTP connection closed: a newer one took its place before it authenticated"),
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
    use crate::config::http::DEFAULT_MAX_CONNECTIONS;

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

    #[test]
    fn keyless_connections_get_half_the_places_and_one_host_half_of_that() {
        let (caps, clients) = client_door(DEFAULT_MAX_CONNECTIONS, false, true);
        assert_eq!(clients.unauthenticated, 512);
        assert_eq!(caps.per_address, MAX_PER_ADDRESS);
        let (caps, clients) = client_door(64, true, false);
        assert_eq!((caps.connections, clients.unauthenticated), (64, 32));
        assert!(caps.per_address < clients.unauthenticated);
        let (_, clients) = client_door(1, true, false);
        assert_eq!(clients.unauthenticated, 1);
    }

    #[test]
    fn a_connection_gives_its_unauthenticated_place_back_once_it_authenticates() {
        let (_, clients) = client_door(4, false, true);
        let bound: io::Result<SocketAddr> = Ok("127.0.0.1:8080".parse().expect("addr"));
        let door = Door::new(clients, bound, false);
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        let first = door.admit(ip("127.0.0.1")).expect("a place");
        let second = door.admit(ip("192.0.2.7")).expect("a place");
        assert!(first.allowed);
        assert!(!second.allowed, "beyond loopback, on a loopback-only node");
        // Full: a newcomer takes the oldest waiting connection's place, which is told to close.
        let third = door.admit(ip("127.0.0.1")).expect("the oldest's place");
        assert!(!first.waits() && second.waits() && third.waits());
        assert!(
            futures::FutureExt::now_or_never(first.evicted.notified()).is_some(),
            "told"
        );
        // A connection that authenticated is never evicted, and gives its place back.
        second.authenticated();
        second.authenticated();
        let fourth = door.admit(ip("127.0.0.1")).expect("given back");
        let fifth = door
            .admit(ip("127.0.0.1"))
            .expect("the oldest waiting's place");
        assert!(!third.waits() && fourth.waits() && fifth.waits());
        assert!(String::from_utf8_lossy(&door.busy).starts_with("HTTP/1.1 503"));
    }

    #[test]
    fn a_loopback_door_answers_only_to_names_no_dns_answer_can_change() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(local_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost:x",
            "[::1",
            "[nope]:1",
            "127.0.0.1.evil.example",
        ] {
            assert!(!local_host(host), "{host}");
        }
        let at = |addr: &str| addr.parse::<SocketAddr>().expect("addr");
        let clients = |remote, keyless| Clients {
            remote,
            keyless,
            unauthenticated: 1,
        };
        let keyless_here = clients(false, true);
        assert!(
            local_hosts_only(at("127.0.0.1:8080"), false, clients(true, true)),
            "on loopback"
        );
        assert!(
            local_hosts_only(at("0.0.0.0:8080"), false, keyless_here),
            "loopback clients only"
        );
        assert!(
            !local_hosts_only(at("0.0.0.0:8080"), false, clients(true, true)),
            "any client"
        );
        assert!(
            !local_hosts_only(at("127.0.0.1:8080"), true, keyless_here),
            "TLS checks the name"
        );
        assert!(
            !local_hosts_only(at("127.0.0.1:8080"), false, clients(false, false)),
            "keys"
        );
        let connection = ClientConnection {
            allowed: true,
            local_hosts_only: true,
            unauthenticated: Mutex::new(None),
            evicted: tokio::sync::Notify::new(),
        };
        assert!(connection.host_allowed(Some("localhost:8080")));
        assert!(!connection.host_allowed(Some("evil.example")));
        assert!(!connection.host_allowed(None));
    }
}
