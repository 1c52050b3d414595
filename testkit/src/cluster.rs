//! A test's cluster: a scratch folder with a cluster CA, the nodes' identities and the API
//! keys, and the clients of its nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::node::Node;
use crate::process::{binary, cli_binary, succeed};

/// A scratch folder with a cluster CA; removed when dropped (kept when a test fails).
pub struct Cluster {
    /// The folder: the CA, identities, the nodes' data folders and logs.
    pub dir: PathBuf,
}

impl Cluster {
    /// A fresh cluster for test `test` (the name keeps the folders of tests apart).
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ganglion-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = Self { dir };
        cluster.cli(&["init-cluster", "--dir", cluster.ca_dir().to_str().unwrap()]);
        cluster
    }

    /// Node `node`'s ledger, one JSON record per charge, as `ganglion-node ledger` prints it
    /// (also once the node is gone).
    pub fn ledger(&self, node: &str) -> Vec<serde_json::Value> {
        succeed(
            Command::new(binary())
                .args(["ledger", "--data-dir"])
                .arg(self.dir.join("data").join(node))
                .env("GANGLION_ADMIN_TOKEN", crate::TOKEN),
        )
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    }

    /// The cluster's CA folder (`ca.crt` is the certificate clients trust).
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

    /// A client of `node`, trusting this cluster's CA.
    pub async fn client(&self, node: &Node) -> ganglion_client::Client {
        self.keyed_client(node, None).await
    }

    /// Runs the `ganglion` CLI (`args`: its subcommand and flags) against `node` with `key`,
    /// and parses what it prints as JSON.
    pub fn ganglion_json(&self, node: &Node, key: &str, args: &[&str]) -> serde_json::Value {
        let printed = succeed(
            Command::new(cli_binary())
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

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
