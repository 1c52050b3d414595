//! A UDP relay that delays every datagram, to put real, different round-trip times between
//! node processes on one machine (`tc netem` is not available here). Shared by the tests and
//! the edge-mesh example.
//!
//! It is also how a test keeps an address of its own for a node: the relay's socket is bound
//! first and kept, the node binds port 0 behind it and advertises the relay, and a restarted
//! node is routed to under the same address.

use std::net::SocketAddr;
use std::time::Duration;

/// A UDP relay that delays every datagram by a fixed one-way time, in both directions. Point a
/// node's `--advertise` at `addr` and peers dial it through the relay.
///
/// It binds its own address first ([`Self::bind`]) and learns its target later
/// ([`Self::route_to`]), so that a node can be started on an OS-chosen port with the relay as
/// its advertised address; datagrams that arrive before the route is set are dropped (QUIC
/// sends them again).
pub struct UdpRelay {
    /// The address to dial instead of the target's.
    pub addr: SocketAddr,
    route: std::sync::Arc<std::sync::RwLock<Route>>,
    task: tokio::task::JoinHandle<()>,
}

/// Where one client's datagrams go: a socket connected to the target of the time.
struct Upstream {
    target: SocketAddr,
    socket: std::sync::Arc<tokio::net::UdpSocket>,
    /// The task relaying the target's answers back to the client.
    answers: tokio::task::AbortHandle,
}

#[derive(Default)]
struct Route {
    target: Option<SocketAddr>,
    allowed: Vec<SocketAddr>,
}

impl UdpRelay {
    /// Where datagrams go from now on (e.g. to a node restarted on another port: each client
    /// is given a new upstream socket on its next datagram).
    pub fn route_to(&self, target: SocketAddr) {
        self.route.write().expect("relay route lock").target = Some(target);
    }

    /// Relays only datagrams from the `allowed` addresses (all when empty): everyone else finds
    /// the target unreachable, as behind a partition.
    pub fn only_from(&self, allowed: Vec<SocketAddr>) {
        self.route.write().expect("relay route lock").allowed = allowed;
    }

    /// Binds the relay's address; nothing is relayed until [`Self::route_to`].
    pub async fn bind(one_way: Duration) -> std::io::Result<Self> {
        use std::collections::HashMap;
        use std::sync::Arc;
        use tokio::net::UdpSocket;
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let route = Arc::new(std::sync::RwLock::new(Route::default()));
        let routing = route.clone();
        let task = tokio::spawn(async move {
            // One upstream socket per client, so answers can be sent back to the right one.
            let mut upstreams: HashMap<SocketAddr, Upstream> = HashMap::new();
            // The tasks relaying answers: aborted with this one when the relay is dropped.
            let mut relaying = tokio::task::JoinSet::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    return;
                };
                let target = {
                    let route = routing.read().expect("relay route lock");
                    if !route.allowed.is_empty() && !route.allowed.contains(&client) {
                        continue;
                    }
                    match route.target {
                        Some(target) => target,
                        None => continue,
                    }
                };
                let current = upstreams
                    .get(&client)
                    .filter(|upstream| upstream.target == target)
                    .map(|upstream| upstream.socket.clone());
                let upstream = match current {
                    Some(socket) => socket,
                    None => {
                        let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        if socket.connect(target).await.is_err() {
                            continue;
                        }
                        let socket = Arc::new(socket);
                        let (back, front) = (socket.clone(), front.clone());
                        let answers = relaying.spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            loop {
                                let n = match back.recv(&mut buf).await {
                                    Ok(n) => n,
                                    // The target was down for a moment (e.g. a node being
                                    // restarted on the same port): it may answer again.
                                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                        continue;
                                    }
                                    Err(_) => return,
                                };
                                let (front, packet) = (front.clone(), buf[..n].to_vec());
                                tokio::spawn(async move {
                                    tokio::time::sleep(one_way).await;
                                    let _ = front.send_to(&packet, client).await;
                                });
                            }
                        });
                        let replaced = upstreams.insert(
                            client,
                            Upstream {
                                target,
                                socket: socket.clone(),
                                answers,
                            },
                        );
                        if let Some(old) = replaced {
                            // Routed elsewhere since: the old target's answers are not wanted.
                            old.answers.abort();
                        }
                        while relaying.try_join_next().is_some() {}
                        socket
                    }
                };
                let packet = buf[..n].to_vec();
                tokio::spawn(async move {
                    tokio::time::sleep(one_way).await;
                    let _ = upstream.send(&packet).await;
                });
            }
        });
        Ok(Self { addr, route, task })
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
