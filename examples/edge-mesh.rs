//! Run with: ./examples/edge-mesh.sh
//!
//! An edge → regional fall-back, on one machine: two edge nodes whose memory limit is too small
//! for the LLM (they host the embedder), and two regional nodes hosting the LLM, about 5 ms and
//! 60 ms of round trip away (UDP relays add real delay). A client asks an edge node for
//! the LLM; the route shows it was handed to the nearer regional node. Then that node is
//! killed, and the next request goes to the other one.

#[path = "../tests/relay.rs"]
#[allow(dead_code)] // the tests use more of the relay (partitions) than this example
mod relay;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ganglion_client::protocol::Route;
use ganglion_client::{Client, GenerateRequest};
use relay::UdpRelay;

const LLM: &str = "@ganglion/smollm2-135m-instruct";
const EMBEDDER: &str = "@ganglion/all-minilm-l6-v2";
const TOKEN: &str = "edge-mesh-example-token";

/// A node process, killed when dropped.
struct Node {
    name: String,
    child: Child,
    quic: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, dir: &Path, name: &str, args: &[String]) -> anyhow::Result<Node> {
    let mut child = Command::new(bin)
        .args(["run", "--identity"])
        .arg(dir.join(name))
        .args([
            "--admin",
            "127.0.0.1:0",
            "--admin-token",
            TOKEN,
            "--liveness-timeout",
            "2s",
            "--data-dir",
        ])
        .arg(dir.join(format!("{name}-data")))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
        .spawn()?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("node stdout")?;
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let ready: serde_json::Value = serde_json::from_str(&line).with_context(|| {
        format!(
            "{name} did not start; see {}",
            dir.join(format!("{name}.log")).display()
        )
    })?;
    let addr = |key: &str| -> anyhow::Result<SocketAddr> {
        Ok(ready[key].as_str().context("ready line")?.parse()?)
    };
    Ok(Node {
        name: name.to_owned(),
        child,
        quic: addr("quic")?,
        admin: addr("admin")?,
    })
}

async fn peers(node: &Node) -> anyhow::Result<Vec<serde_json::Value>> {
    let url = format!("http://{}/admin/peers", node.admin);
    Ok(reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?)
}

fn show(route: &Route) -> String {
    let hops: Vec<String> = route
        .per_hop
        .iter()
        .map(|h| format!("{} {:.1} ms", h.node, h.total_ms))
        .collect();
    let mut text = format!(
        "route {} (executed by {}, {} hop(s); time at each node: {})",
        route.path.join(" → "),
        route.executed_by,
        route.hops(),
        hops.join(", ")
    );
    for attempt in &route.attempts {
        text.push_str(&format!(
            "\n      tried {} first: {}",
            attempt.node, attempt.reason
        ));
    }
    text
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin: PathBuf = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .context("target folder")?
        .join("ganglion-node");
    if !bin.exists() {
        bail!(
            "{} is missing: run ./examples/edge-mesh.sh, which builds it",
            bin.display()
        );
    }
    if !Command::new(&bin)
        .args(["models", "pull"])
        .status()?
        .success()
    {
        bail!("models pull failed");
    }
    let dir = std::env::temp_dir().join(format!("ganglion-edge-mesh-{}", std::process::id()));
    ganglion::init_cluster(&dir.join("cluster"))?;
    for name in ["near", "far", "west-edge-1", "west-edge-2"] {
        ganglion::issue_cert(&dir.join("cluster"), name, &dir.join(name))?;
    }

    // Regional nodes behind relays: peers dial the relay, which adds the distance.
    let mut relays = Vec::new();
    let mut regional = Vec::new();
    for (name, one_way) in [("near", 2), ("far", 30)] {
        let relay = UdpRelay::bind(Duration::from_millis(one_way)).await?;
        let args = [
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--advertise".into(),
            relay.addr.to_string(),
            "--host".into(),
            LLM.into(),
        ];
        let node = start(&bin, &dir, name, &args)?;
        relay.route_to(node.quic);
        regional.push(node);
        relays.push(relay);
    }
    let edge_args = |seeds: &[SocketAddr]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--host",
            LLM,
            "--host",
            EMBEDDER,
            "--memory-limit",
            "200MiB",
        ]
        .map(String::from)
        .to_vec();
        for seed in seeds {
            args.extend(["--seed".to_owned(), seed.to_string()]);
        }
        args
    };
    let seeds: Vec<SocketAddr> = relays.iter().map(|r| r.addr).collect();
    let edge1 = start(&bin, &dir, "west-edge-1", &edge_args(&seeds))?;
    let edge2 = start(&bin, &dir, "west-edge-2", &edge_args(&seeds))?;

    println!("waiting for the mesh and its adverts...");
    let started = Instant::now();
    loop {
        let view = peers(&edge1).await?;
        let hosts = view
            .iter()
            .filter(|p| {
                p["models"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m == LLM))
            })
            .count();
        let advertised = view
            .iter()
            .all(|p| p["models"].as_array().is_some_and(|m| !m.is_empty()));
        if hosts == 2 && view.len() == 3 && advertised {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the mesh did not form; logs in {}", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("\n{} sees:", edge1.name);
    for p in peers(&edge1).await? {
        println!(
            "  {:<12} rtt {:>6.1} ms  hosts {}",
            p["name"].as_str().unwrap_or("?"),
            p["rtt_ms"].as_f64().unwrap_or(0.0),
            p["models"]
        );
    }

    let ca = dir.join("cluster/ca.crt");
    let key = ganglion::credentials::issue_key(
        &dir.join("cluster"),
        &ganglion::credentials::api_keys::KeyClaims {
            kid: ganglion::credentials::api_keys::new_key_id(),
            account: "edge-demo".into(),
            plan: ganglion::credentials::api_keys::Plan::Free,
            daily_limit: None,
            expires: None,
        },
    )?;
    let client = Client::builder()
        .node(edge1.quic)
        .ca_file(&ca)?
        .api_key(key.clone())
        .connect()
        .await?;
    let prompt = "What is the capital of France? Answer in one sentence.";
    let answer = client
        .generate(GenerateRequest::new(LLM, prompt).max_tokens(24))
        .await?;
    println!(
        "\nasked {} for the LLM: {:?}\n  {}",
        edge1.name,
        answer.text,
        show(&answer.response.route)
    );

    let client2 = Client::builder()
        .node(edge2.quic)
        .ca_file(&ca)?
        .api_key(key)
        .connect()
        .await?;
    let embedded = client2
        .embed_full(EMBEDDER, vec!["edge inference".into()])
        .await?;
    println!(
        "asked {} for embeddings (hosted there):\n  {}",
        edge2.name,
        show(&embedded.route)
    );

    let near = regional.remove(0);
    println!("\nkilling {} (kill -9)...", near.name);
    drop(near);
    let answer = client
        .generate(GenerateRequest::new(LLM, prompt).max_tokens(24))
        .await?;
    println!(
        "asked {} again: {:?}\n  {}",
        edge1.name,
        answer.text,
        show(&answer.response.route)
    );

    drop((edge1, edge2, regional));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
