//! Test harness: real `ganglion-node` processes on loopback, with OS-chosen ports.
//!
//! Each node prints one JSON "ready" line on stdout once its sockets are bound; the harness
//! reads the actual addresses from it. Every wait polls with a deadline.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-admin-token-0123456789";

/// Passed among a node's extra flags, makes the harness start it without `--allow-anonymous`,
/// so that every request needs an API key (the flag itself is not passed on).
pub const KEYS_REQUIRED: &str = "--keys-required";

/// Passed among a node's extra flags, makes the harness start it with its result cache (the
/// flag itself is not passed on). Without it a node keeps no cache shards: most tests send
/// identical requests and mean each of them to run.
pub const WITH_CACHE: &str = "--with-cache";

/// Passed among a node's extra flags, makes the node log warnings only (benchmarks: the tests'
/// debug logs cost time on every request). Not passed on.
pub const QUIET: &str = "--quiet";

/// The `ganglion-node` binary. Tests of the node package get its path from cargo; tests of the
/// client package (the `ganglion` CLI) find it beside their own binary, which `cargo test
/// --workspace` builds in the same folder.
pub fn binary() -> PathBuf {
    match (
        option_env!("CARGO_BIN_EXE_ganglion-node"),
        option_env!("CARGO_BIN_EXE_ganglion"),
    ) {
        (Some(node), _) => node.into(),
        (None, Some(cli)) => {
            let node = Path::new(cli).with_file_name("ganglion-node");
            assert!(
                node.exists(),
                "{} is missing: run the tests with `cargo test --workspace`",
                node.display()
            );
            node
        }
        (None, None) => panic!("the harness serves tests of the node and client packages only"),
    }
}

/// A scratch folder with a cluster CA; removed when dropped.
pub struct Cluster {
    pub dir: PathBuf,
}

impl Cluster {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ganglion-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = Self { dir };
        cluster.cli(&["init-cluster", "--dir", cluster.ca_dir().to_str().unwrap()]);
        cluster
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("cluster")
    }

    /// Issues (once) and returns the identity folder of node `name`.
    pub fn identity(&self, name: &str) -> PathBuf {
        let out = self.dir.join("identities").join(name);
        if !out.exists() {
            self.cli(&[
                "issue-cert",
                "--cluster-dir",
                self.ca_dir().to_str().unwrap(),
                "--name",
                name,
                "--out",
                out.to_str().unwrap(),
            ]);
        }
        out
    }

    fn cli(&self, args: &[&str]) {
        succeed(Command::new(binary()).args(args));
    }

    /// Issues an API key for `account` with extra `issue-key` flags (e.g. `--plan paid`).
    pub fn issue_key(&self, account: &str, extra: &[&str]) -> String {
        let key = succeed(
            Command::new(binary())
                .args([
                    "issue-key",
                    "--cluster-dir",
                    self.ca_dir().to_str().unwrap(),
                ])
                .args(["--account", account])
                .args(extra),
        );
        key.trim().to_owned()
    }

    /// Starts node `name` seeded with `seeds`, plus any extra flags.
    pub fn start(&self, name: &str, seeds: &[SocketAddr], extra: &[&str]) -> Node {
        Node::start(self, name, &self.identity(name), seeds, extra)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running node process; killed when dropped.
pub struct Node {
    pub name: String,
    pub child: Child,
    pub quic: SocketAddr,
    pub admin: SocketAddr,
    pub cluster_tcp: SocketAddr,
    /// The HTTP API, when started with `--http`.
    pub http: Option<SocketAddr>,
    pub log: PathBuf,
}

impl Node {
    pub fn start(
        cluster: &Cluster,
        name: &str,
        identity: &Path,
        seeds: &[SocketAddr],
        extra: &[&str],
    ) -> Node {
        Self::start_program(&binary(), cluster, name, identity, seeds, extra)
    }

    /// Starts node `name`, without seeds, from another build of `ganglion-node`.
    pub fn start_binary(cluster: &Cluster, program: &Path, name: &str, extra: &[&str]) -> Node {
        Self::start_program(program, cluster, name, &cluster.identity(name), &[], extra)
    }

    fn start_program(
        program: &Path,
        cluster: &Cluster,
        name: &str,
        identity: &Path,
        seeds: &[SocketAddr],
        extra: &[&str],
    ) -> Node {
        let log = cluster.dir.join(format!("{name}.log"));
        let mut cmd = Command::new(program);
        cmd.args(["run", "--identity", identity.to_str().unwrap()])
            .args(["--admin", "127.0.0.1:0", "--admin-token", TOKEN])
            .args([
                "--data-dir",
                cluster.dir.join("data").join(name).to_str().unwrap(),
            ])
            .args(
                extra
                    .iter()
                    .filter(|a| ![KEYS_REQUIRED, WITH_CACHE, QUIET].contains(*a)),
            );
        if !extra.contains(&WITH_CACHE) {
            cmd.args(["--cache-size", "0"]);
        }
        if !extra.contains(&KEYS_REQUIRED) {
            // Most tests are about something else than keys.
            cmd.arg("--allow-anonymous");
        }
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        for seed in seeds {
            cmd.args(["--seed", &seed.to_string()]);
        }
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = cmd
            .env(
                "RUST_LOG",
                if extra.contains(&QUIET) {
                    "warn"
                } else {
                    "info,ganglion=debug"
                },
            )
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"event\":\"ready\"") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "node {name} did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = |key: &str| ready[key].as_str().unwrap().parse().unwrap();
        Node {
            name: name.to_owned(),
            child,
            quic: addr("quic"),
            admin: addr("admin"),
            cluster_tcp: addr("cluster_tcp"),
            http: ready["http"].as_str().map(|a| a.parse().unwrap()),
            log,
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .get(format!("http://{}{path}", self.admin))
            .timeout(Duration::from_secs(10));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// `DELETE` on an admin route, with the admin token; its JSON answer.
    pub async fn delete(&self, path: &str) -> serde_json::Value {
        let response = reqwest::Client::new()
            .delete(format!("http://{}{path}", self.admin))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path, Some(TOKEN)).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Names of peers in state `connected`, sorted.
    pub async fn connected_peers(&self) -> Vec<String> {
        let peers = self.json("/admin/peers").await;
        let mut names: Vec<String> = peers
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"] == "connected")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Nodes with a member in process group `group`, as this node sees it, sorted.
    pub async fn group_nodes(&self, group: &str) -> Vec<String> {
        let actors = self.json("/admin/actors").await;
        let mut nodes: Vec<String> = actors["process_groups"][group]
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .map(|m| m["node"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        nodes.sort();
        nodes
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log_text());
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 100 ms for `period`, panicking the first time it fails: for what must
/// stay true, not merely become true.
pub async fn stays<F, Fut>(period: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < period {
        assert!(
            check().await,
            "stopped holding after {:?}: {what}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub const SMOLLM2: &str = "@ganglion/smollm2-135m-instruct";

/// A prompt SmolLM2 answers at length, to keep a slot busy.
pub const LONG_STORY: &str = "Tell me a very long story about a lighthouse.";

/// A long SmolLM2 generation that is already producing output: started, first delta read.
pub async fn running_generation(
    client: &ganglion_client::Client,
    max_tokens: u32,
) -> ganglion_client::GenerationStream {
    use futures::StreamExt;
    let request = ganglion_client::GenerateRequest::new(SMOLLM2, LONG_STORY).max_tokens(max_tokens);
    let mut stream = client.generate_stream(request).await.unwrap();
    let first = stream.next().await;
    assert!(
        matches!(first, Some(Ok(ganglion_client::StreamEvent::Delta(_)))),
        "no output: {first:?}"
    );
    stream
}
pub const MINILM: &str = "@ganglion/all-minilm-l6-v2";

/// Runs `command` to its end and returns what it printed; panics, with what it said on stderr,
/// unless it succeeded.
pub fn succeed(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Pulls the built-in models into the shared model store once per test binary (idempotent:
/// a complete model is not fetched again).
pub fn ensure_models() {
    static PULLED: std::sync::Once = std::sync::Once::new();
    PULLED.call_once(|| {
        succeed(Command::new(binary()).args(["models", "pull"]));
    });
}

impl Cluster {
    /// A client of `node`, trusting this cluster's CA.
    pub async fn client(&self, node: &Node) -> ganglion_client::Client {
        self.keyed_client(node, None).await
    }

    /// Runs the `ganglion` CLI (`args`: its subcommand and flags) against `node` with `key`,
    /// and parses what it prints as JSON.
    pub fn ganglion_json(&self, node: &Node, key: &str, args: &[&str]) -> serde_json::Value {
        let printed = succeed(
            Command::new(binary().with_file_name("ganglion"))
                .args(args)
                .args(["--node", &node.quic.to_string(), "--ca"])
                .arg(self.ca_dir().join("ca.crt"))
                .env("GANGLION_API_KEY", key),
        );
        serde_json::from_str(&printed).unwrap()
    }

    /// A client of `node` that presents `key`.
    pub async fn keyed_client(&self, node: &Node, key: Option<&str>) -> ganglion_client::Client {
        self.client_with_timeout(node, key, Duration::from_secs(120))
            .await
    }

    /// A client of `node` with `key` whose requests have `timeout` as their deadline.
    pub async fn client_with_timeout(
        &self,
        node: &Node,
        key: Option<&str>,
        timeout: Duration,
    ) -> ganglion_client::Client {
        let mut builder = ganglion_client::Client::builder()
            .node(node.quic)
            .ca_file(self.ca_dir().join("ca.crt"))
            .unwrap()
            .request_timeout(timeout);
        if let Some(key) = key {
            builder = builder.api_key(key);
        }
        builder.connect().await.unwrap()
    }
}

impl Node {
    /// `/admin/models` entry of `model`.
    pub async fn model_status(&self, model: &str) -> serde_json::Value {
        let models = self.json("/admin/models").await;
        models["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == model)
            .cloned()
            .unwrap_or_default()
    }
}

#[path = "relay.rs"]
mod relay;
#[allow(unused_imports)] // not every test file uses it
pub use relay::UdpRelay;

impl Node {
    /// Waits until this node sees `peer` connected and serving `model` (from its adverts).
    pub async fn sees_serving(&self, peer: &str, model: &str) {
        let what = format!("{} sees {peer} serving {model}", self.name);
        eventually(Duration::from_secs(20), &what, || async {
            let view = self.peer(peer).await?;
            (view["state"] == "connected" && view["models"].as_array()?.iter().any(|m| m == model))
                .then_some(())
        })
        .await;
    }

    /// The `/admin/peers` entry of `peer`, if listed.
    pub async fn peer(&self, peer: &str) -> Option<serde_json::Value> {
        let peers = self.json("/admin/peers").await;
        peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == peer)
            .cloned()
    }
}

/// An npm package at a pinned version, installed once into a folder cached outside the repo;
/// returns its `node_modules` (for `NODE_PATH`).
pub fn npm_package(name: &str, version: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap();
    let prefix = Path::new(&home)
        .join(".cache/ganglion/node")
        .join(format!("{name}-{version}"));
    let modules = prefix.join("node_modules");
    if !modules.join(name).join("package.json").exists() {
        std::fs::create_dir_all(&prefix).unwrap();
        succeed(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .arg(format!("{name}@{version}")),
        );
    }
    modules
}

/// Debian's Chromium, installed with apt-get when missing and running as root (as on CI);
/// otherwise the test says how to install it.
pub fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    let root = succeed(Command::new("id").arg("-u")).trim() == "0";
    assert!(
        path.exists() || root,
        "the dashboard test needs Debian's chromium: run scripts/install-chromium.sh as root"
    );
    if !path.exists() {
        succeed(&mut Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-chromium.sh"),
        ));
    }
    assert!(path.exists(), "chromium was not installed");
    path
}
