//! Run with: cargo bench -p ganglion --bench round_trip
//!
//! A 64-byte request and 64-byte response between two nodes' QUIC endpoints (mutual TLS, the
//! node's own transport configuration), against plain TCP ping-pong, on loopback, in one run:
//! - `quic, stream per request`: what the data plane does (open, send, finish, read to end);
//! - `quic, one stream`: ping-pong on one long-lived stream;
//! - `tcp`: ping-pong on one TCP connection with TCP_NODELAY.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ganglion::ClusterSecrets;
use ganglion::transport::endpoint::{self, Accepted, Liveness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIZE: usize = 64;
const WARMUP: usize = 1_000;
const ROUNDS: usize = 20_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let secrets = ClusterSecrets::generate().expect("ca");
    let liveness = Liveness {
        idle_timeout: Duration::from_secs(10),
        keep_alive: Duration::from_secs(2),
    };
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server = endpoint::bind(
        &secrets.identity("bench-server").expect("id"),
        loopback,
        liveness,
    )
    .expect("bind");
    let client = endpoint::bind(
        &secrets.identity("bench-client").expect("id"),
        loopback,
        liveness,
    )
    .expect("bind");
    let server_addr = server.local_addr().expect("addr");
    tokio::spawn(quic_echo(server));
    let peer = endpoint::dial(&client, server_addr, Duration::from_secs(5))
        .await
        .expect("dial");
    let connection = peer.connection;

    let mut per_request = measure(|| async {
        let (mut send, mut recv) = connection.open_bi().await.expect("open");
        send.write_all(&[ONE_SHOT; SIZE]).await.expect("write");
        send.finish().expect("finish");
        let reply = recv.read_to_end(SIZE).await.expect("read");
        assert_eq!(reply.len(), SIZE);
    })
    .await;

    let (mut send, mut recv) = connection.open_bi().await.expect("open");
    let mut buf = [0u8; SIZE];
    let mut one_stream = Vec::with_capacity(ROUNDS);
    for i in 0..WARMUP + ROUNDS {
        let start = Instant::now();
        send.write_all(&[PING; SIZE]).await.expect("write");
        recv.read_exact(&mut buf).await.expect("read");
        if i >= WARMUP {
            one_stream.push(start.elapsed());
        }
    }

    let listener = tokio::net::TcpListener::bind(loopback)
        .await
        .expect("tcp bind");
    let tcp_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        socket.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; SIZE];
        while socket.read_exact(&mut buf).await.is_ok() {
            if socket.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut tcp = tokio::net::TcpStream::connect(tcp_addr)
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut tcp_times = Vec::with_capacity(ROUNDS);
    for i in 0..WARMUP + ROUNDS {
        let start = Instant::now();
        tcp.write_all(&[PING; SIZE]).await.expect("write");
        tcp.read_exact(&mut buf).await.expect("read");
        if i >= WARMUP {
            tcp_times.push(start.elapsed());
        }
    }

    let tcp_p50 = report("tcp ping-pong", &mut tcp_times);
    let one_p50 = report("quic, one stream", &mut one_stream);
    let per_p50 = report("quic, stream per request", &mut per_request);
    println!(
        "ratio to tcp (p50): quic one stream {:.2}x, quic stream per request {:.2}x",
        one_p50.as_secs_f64() / tcp_p50.as_secs_f64(),
        per_p50.as_secs_f64() / tcp_p50.as_secs_f64(),
    );
}

async fn measure<F, Fut>(mut round: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(ROUNDS);
    for i in 0..WARMUP + ROUNDS {
        let start = Instant::now();
        round().await;
        if i >= WARMUP {
            times.push(start.elapsed());
        }
    }
    times
}

fn report(what: &str, times: &mut [Duration]) -> Duration {
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{what:<26} p50 {:>7.1} µs  p99 {:>7.1} µs  mean {:>7.1} µs  ({} rounds of {SIZE} B)",
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        times.len(),
    );
    pct(0.5)
}

/// First byte of a request on a stream of its own (answered once, then finished); any other
/// first byte marks the long-lived ping-pong stream.
const ONE_SHOT: u8 = 7;
const PING: u8 = 9;

/// Echoes every stream of every accepted connection in 64-byte steps.
async fn quic_echo(server: quinn::Endpoint) {
    while let Some(incoming) = server.accept().await {
        let Ok(Accepted::Peer(peer)) = endpoint::accept(incoming, Duration::from_secs(5)).await
        else {
            continue;
        };
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = peer.connection.accept_bi().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; SIZE];
                    loop {
                        if recv.read_exact(&mut buf).await.is_err() {
                            break;
                        }
                        if send.write_all(&buf).await.is_err() {
                            break;
                        }
                        if buf[0] == ONE_SHOT {
                            let _ = send.finish();
                            break;
                        }
                    }
                });
            }
        });
    }
}
