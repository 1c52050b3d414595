//! A running `ganglion-node` process: started with a deadline on its ready line, killed when
//! dropped, and asked through its admin endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::poll::eventually;
use crate::process::{binary, first_match};

/// The admin token every node is started with (unless [`NO_ADMIN_TOKEN`]).
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

/// Passed among a node's extra flags, starts it with no admin token configured (no
/// `--admin-token`, no `GANGLION_ADMIN_TOKEN`), so that it generates one in its data folder:
/// see [`Node::admin_token_file`]. Not passed on.
pub const NO_ADMIN_TOKEN: &str = "--no-admin-token";

/// The flags above: they tell the harness how to start a node, and are not the node's own.
const HARNESS_FLAGS: [&str; 4] = [KEYS_REQUIRED, WITH_CACHE, QUIET, NO_ADMIN_TOKEN];

/// How long a node has to print its ready line.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Owned names, to compare with [`Node::connected_peers`] and [`Node::group_nodes`].
pub fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A running node process; killed when dropped.
pub struct Node {
    /// Its name (the name in its certificate).
    pub name: String,
    /// The process.
    pub child: Child,
    /// Its QUIC address (peers and clients).
    pub quic: SocketAddr,
    /// Its admin HTTP endpoint.
    pub admin: SocketAddr,
    /// The address of its ractor_cluster listener.
    pub cluster_tcp: SocketAddr,
    /// The HTTP API, when started with `--http`.
    pub http: Option<SocketAddr>,
    /// The file holding the admin token it generated, when started with [`NO_ADMIN_TOKEN`].
    pub admin_token_file: Option<PathBuf>,
    /// Its log (stderr).
    pub log: PathBuf,
}

impl Node {
    /// Starts node `name` of `cluster` with the identity in folder `identity` (which may come
    /// from another cluster), seeded with `seeds`, plus any extra flags.
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
            .args(["--admin", "127.0.0.1:0"])
            .args([
                "--data-dir",
                cluster.dir.join("data").join(name).to_str().unwrap(),
            ])
            .args(extra.iter().filter(|a| !HARNESS_FLAGS.contains(*a)));
        if extra.contains(&NO_ADMIN_TOKEN) {
            cmd.env_remove("GANGLION_ADMIN_TOKEN");
        } else {
            cmd.args(["--admin-token", TOKEN]);
        }
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
        let child = cmd
            .env(
                "RUST_LOG",
                if extra.contains(&QUIET) {
                    "warn"
                } else {
                    "info,ganglion=debug"
                },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        // From here on the child is killed, and its log shown, if anything below panics.
        let mut node = Node {
            name: name.to_owned(),
            child,
            quic: unbound(),
            admin: unbound(),
            cluster_tcp: unbound(),
            http: None,
            admin_token_file: None,
            log,
        };
        let stdout = node.child.stdout.take().unwrap();
        let ready = first_match(stdout, |line| {
            if !line.contains("\"event\":\"ready\"") {
                return None;
            }
            serde_json::from_str::<serde_json::Value>(line).ok()
        });
        let ready = match ready.recv_timeout(READY_WITHIN) {
            Ok(ready) => ready,
            Err(RecvTimeoutError::Timeout) => {
                panic!("node {name} was not ready within {READY_WITHIN:?}")
            }
            Err(RecvTimeoutError::Disconnected) => panic!("node {name} ended before it was ready"),
        };
        let addr = |key: &str| -> SocketAddr {
            let value = ready[key].as_str();
            value
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("ready line of {name}: `{key}` is {:?}", ready[key]))
        };
        node.quic = addr("quic");
        node.admin = addr("admin");
        node.cluster_tcp = addr("cluster_tcp");
        node.http = ready["http"].as_str().map(|a| a.parse().unwrap());
        node.admin_token_file = ready["admin_token_file"].as_str().map(PathBuf::from);
        node
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET` on an admin route, with `token` if given.
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

    /// `GET` on an admin route, with the admin token; its JSON answer.
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

/// Where a node's address stands until its ready line says.
fn unbound() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log_text());
        }
    }
}
