//! Run with: cargo bench --workspace --profile dev --bench cache
//! (models must be pulled first: `ganglion-node models pull`; installs Debian's `redis-server`
//! when it is missing, which needs root)
//!
//! A cache hit end to end, with real node processes on loopback: a client of entry node `a`,
//! which keeps no shard, asks for an answer of about 2 KB stored on node `b`'s shard (two hops:
//! client → a → b's shard → a → client). Latency p50 and p99 with one client, then hits per
//! second with 32 clients at once. Then the same through entry node `c`, which keeps near
//! copies of what it finds at other nodes' shards (one hop after its first hit). In the same run, the anchor: a GET of a value of the same
//! size from a local Redis, measured by `redis-benchmark`.

#![allow(clippy::unwrap_used)] // a benchmark may panic on the unexpected

use std::cell::RefCell;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ganglion_client::protocol::{CacheStatus, Output};
use ganglion_client::{Client, GenerateRequest};
use ganglion_testkit::{
    Cluster, KEYS_REQUIRED, QUIET, SMOLLM2, WITH_CACHE, ensure_models, eventually,
};

const WARMUP: usize = 200;
const SEQUENTIAL: usize = 3_000;
const CLIENTS: usize = 32;
const LOAD_FOR: Duration = Duration::from_secs(6);

fn ask() -> GenerateRequest {
    GenerateRequest::new(
        SMOLLM2,
        "Tell me a very long story about a lighthouse keeper and the sea.",
    )
    .max_tokens(600)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One hit: as the client saw it, and inside the entry node (arrival to final frame).
async fn hit(client: &Client) -> (Duration, Duration) {
    let start = Instant::now();
    let answer = client.generate(ask()).await.unwrap();
    let took = start.elapsed();
    assert_eq!(answer.response.cache.status, CacheStatus::Hit);
    let inside = Duration::from_secs_f64(answer.response.timings.total_ms / 1000.0);
    (took, inside)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    ensure_models();
    let cluster = Cluster::new("bench-cache");
    let b = cluster.start(
        "b",
        &[],
        &["--host", SMOLLM2, KEYS_REQUIRED, WITH_CACHE, QUIET],
    );
    let a = cluster.start(
        "a",
        &[b.quic],
        &["--max-connections-per-address", "64", KEYS_REQUIRED, QUIET],
    );
    let key = cluster.issue_key("bench", &["--plan", "paid"]);
    a.sees_serving("b", SMOLLM2).await;
    eventually(Duration::from_secs(20), "a sees b's shards", || async {
        let cache = a.json("/admin/cache").await;
        (cache["mesh_shards"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let client = cluster.keyed_client(&a, Some(&key)).await;
    let filled = client.generate(ask()).await.unwrap();
    assert_eq!(filled.response.cache.status, CacheStatus::Miss);
    let Output::Text { text, .. } = &filled.response.output else {
        panic!("not text");
    };
    let size = text.len();
    let shard = filled.response.cache.shard.clone().unwrap();
    assert!(shard.starts_with("b/"), "the shard is on b: {shard}");
    println!("answer: {size} bytes of text, stored on shard {shard}; entry node a keeps no shard");

    let far = measure(&cluster, &a, &key).await;

    // Entry node c keeps no shard either, but keeps near copies of what it finds at b's.
    let c = cluster.start(
        "c",
        &[b.quic],
        &[
            "--max-connections-per-address",
            "64",
            KEYS_REQUIRED,
            WITH_CACHE,
            "--cache-shards",
            "0",
            "--cache-size",
            "32MiB",
            QUIET,
        ],
    );
    c.sees_serving("b", SMOLLM2).await;
    eventually(Duration::from_secs(20), "c sees b's shards", || async {
        let cache = c.json("/admin/cache").await;
        (cache["mesh_shards"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let near = measure(&cluster, &c, &key).await;
    let copies = c.json("/admin/cache").await["near"].clone();

    let redis = redis_anchor(size).await;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!();
    println!("| {size}-byte answer | p50 | p99 | per second |");
    println!("|---|---|---|---|");
    for (label, run) in [
        ("shard on another node", &far),
        ("near copy at the entry node", &near),
    ] {
        println!(
            "| ganglion HIT, {label}, 1 client | {:.0} µs | {:.0} µs | {:.0} |",
            us(percentile(&run.one, 0.5)),
            us(percentile(&run.one, 0.99)),
            run.one_rate,
        );
        println!(
            "| ganglion HIT, {label}, {CLIENTS} clients | {:.0} µs | {:.0} µs | {:.0} |",
            us(percentile(&run.many, 0.5)),
            us(percentile(&run.many, 0.99)),
            run.many_rate,
        );
        println!(
            "| of which inside the entry node, 1 client | {:.0} µs | {:.0} µs | |",
            us(percentile(&run.inside, 0.5)),
            us(percentile(&run.inside, 0.99)),
        );
    }
    for (clients, row) in redis {
        println!(
            "| redis GET, {clients} client{} | {:.0} µs | {:.0} µs | {:.0} |",
            if clients == 1 { "" } else { "s" },
            row.p50_ms * 1000.0,
            row.p99_ms * 1000.0,
            row.rps
        );
    }
    let cache = b.json("/admin/cache").await;
    let hits: u64 = cache["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["hits"].as_u64().unwrap())
        .sum();
    println!("\nb's shards answered {hits} hits; c's near copies {copies}");
}

/// Hits through one entry node: one client in turn, then many at once.
struct Measured {
    one: Vec<Duration>,
    one_rate: f64,
    inside: Vec<Duration>,
    many: Vec<Duration>,
    many_rate: f64,
}

async fn measure(cluster: &Cluster, entry: &ganglion_testkit::Node, key: &str) -> Measured {
    let client = cluster.keyed_client(entry, Some(key)).await;
    for _ in 0..WARMUP {
        hit(&client).await;
    }
    let mut one = Vec::with_capacity(SEQUENTIAL);
    let mut inside = Vec::with_capacity(SEQUENTIAL);
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        let (took, within) = hit(&client).await;
        one.push(took);
        inside.push(within);
    }
    let one_rate = SEQUENTIAL as f64 / started.elapsed().as_secs_f64();
    one.sort();
    inside.sort();

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(cluster.keyed_client(entry, Some(key)).await);
    }
    let until = Instant::now() + LOAD_FOR;
    let started = Instant::now();
    let runs = futures::future::join_all(clients.iter().map(|c| async move {
        let mut took = Vec::new();
        while Instant::now() < until {
            took.push(hit(c).await.0);
        }
        took
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut many: Vec<Duration> = runs.into_iter().flatten().collect();
    let many_rate = many.len() as f64 / elapsed;
    many.sort();
    Measured {
        one,
        one_rate,
        inside,
        many,
        many_rate,
    }
}

struct RedisRow {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// GETs of a `size`-byte value from a Redis started for the purpose, with 1 and with 32 clients.
async fn redis_anchor(size: usize) -> Vec<(usize, RedisRow)> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        let installed = Command::new("apt-get")
            .args(["install", "-y", "-q", "redis-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "redis-server is missing and could not be installed"
        );
    }
    let (mut server, port) = redis_server().await;
    let rows = [1, CLIENTS]
        .iter()
        .map(|&clients| {
            let out = Command::new("redis-benchmark")
                .args(["-p", &port.to_string(), "-t", "set,get", "-n", "50000"])
                .args(["-c", &clients.to_string(), "-d", &size.to_string()])
                .args(["--csv", "--precision", "3"])
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            let line = text
                .lines()
                .find(|l| l.starts_with("\"GET\""))
                .unwrap_or_else(|| panic!("no GET line in {text}"));
            let fields: Vec<f64> = line
                .split(',')
                .skip(1)
                .map(|f| f.trim_matches('"').parse().unwrap())
                .collect();
            (
                clients,
                RedisRow {
                    rps: fields[0],
                    p50_ms: fields[3],
                    p99_ms: fields[5],
                },
            )
        })
        .collect();
    let _ = server.kill();
    let _ = server.wait();
    rows
}

/// A Redis server of this benchmark's own on loopback, answering, and its port.
///
/// Redis binds its port itself and cannot report one the OS chose (`--port 0` turns TCP
/// off), so a port found free is given to it. Should another process take that port first,
/// the server exits, or another server answers there (`INFO` names another pid), and the
/// next try takes another port.
async fn redis_server() -> (Child, u16) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = RefCell::new(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let ours = eventually(
            Duration::from_secs(10),
            "redis-server answers or exits",
            || async {
                if server.borrow_mut().try_wait().unwrap().is_some() {
                    return Some(false);
                }
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "info", "server"])
                    .output()
                    .ok()?;
                let info = String::from_utf8_lossy(&info.stdout);
                let pid: u32 = info
                    .lines()
                    .find_map(|line| line.strip_prefix("process_id:"))?
                    .trim()
                    .parse()
                    .ok()?;
                Some(pid == server.borrow().id())
            },
        )
        .await;
        let mut server = server.into_inner();
        if ours {
            return (server, port);
        }
        let _ = server.kill();
        let _ = server.wait();
    }
    panic!("redis-server found no free port in 5 tries");
}
