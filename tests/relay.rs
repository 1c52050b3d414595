//! A UDP relay that delays every datagram, to put real, different round-trip times between
//! node processes on one machine (`tc netem` is not available here). Shared by the tests and
//! the edge-mesh example.

use std::net::SocketAddr;
use std::time::Duration;

/// A UDP relay that delays every datagram by a fixed one-way time, in both directions. Point a
/// node's `--advertise` at `addr` and peers dial it through the relay.
pub struct UdpRelay {
    /// The address to dial instead of the target's.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl UdpRelay {
    /// Relays datagrams for `target`, delaying each by `one_way` in each direction.
    pub async fn start(target: SocketAddr, one_way: Duration) -> std::io::Result<Self> {
        Self::start_for(target, one_way, Vec::new()).await
    }

    /// Like [`Self::start`], but only for datagrams from the `allowed` addresses (all when
    /// empty): everyone else finds the target unreachable, as behind a partition.
    pub async fn start_for(
        target: SocketAddr,
        one_way: Duration,
        allowed: Vec<SocketAddr>,
    ) -> std::io::Result<Self> {
        use std::collections::HashMap;
        use std::sync::Arc;
        use tokio::net::UdpSocket;
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let task = tokio::spawn(async move {
            // One upstream socket per client, so answers can be sent back to the right one.
            let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    return;
                };
                if !allowed.is_empty() && !allowed.contains(&client) {
                    continue;
                }
                let upstream = match upstreams.get(&client) {
                    Some(socket) => socket.clone(),
                    None => {
                        let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        if socket.connect(target).await.is_err() {
                            continue;
                        }
                        let socket = Arc::new(socket);
                        let (back, front) = (socket.clone(), front.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            while let Ok(n) = back.recv(&mut buf).await {
                                let (front, packet) = (front.clone(), buf[..n].to_vec());
                                tokio::spawn(async move {
                                    tokio::time::sleep(one_way).await;
                                    let _ = front.send_to(&packet, client).await;
                                });
                            }
                        });
                        upstreams.insert(client, socket.clone());
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
        Ok(Self { addr, task })
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
