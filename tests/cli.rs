//! The `ganglion-node` command line: credentials, config errors, the generated admin token.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::process::Command;
use std::time::Duration;

use ganglion_testkit::{Cluster, NO_ADMIN_TOKEN, binary, output_within};

/// Runs `ganglion-node` with `args`, expected to end at once (a refused configuration, a
/// credentials command): its exit code and what it said on stderr.
fn run(args: &[&str]) -> (i32, String) {
    let out = output_within(
        Command::new(binary())
            .args(args)
            .env_remove("GANGLION_ADMIN_TOKEN"),
        Duration::from_secs(30),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_exits_64_naming_the_field() {
    let cluster = Cluster::new("bad-config");
    let id = cluster.identity("a");
    let id = id.to_str().unwrap();
    let config = cluster.dir.join("bad.toml");
    std::fs::write(&config, "[transport]\nliveness_timeout = \"forever\"\n").unwrap();
    let unknown = cluster.dir.join("unknown.toml");
    std::fs::write(&unknown, "[transport]\nlisen = \"127.0.0.1:1\"\n").unwrap();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "--identity", "/nonexistent/identity"],
            "node.identity",
        ),
        (vec!["run"], "node.identity"),
        (
            vec!["run", "--identity", id, "--listen", "not-an-address"],
            "transport.listen",
        ),
        (
            vec!["run", "--identity", id, "--seed", "10.0.0.1"],
            "transport.seeds",
        ),
        (
            vec!["run", "--identity", id, "--admin", "0.0.0.0:0"],
            "admin.token",
        ),
        (
            vec![
                "run",
                "--identity",
                id,
                "--config",
                config.to_str().unwrap(),
            ],
            "liveness_timeout",
        ),
        (
            vec![
                "run",
                "--identity",
                id,
                "--config",
                unknown.to_str().unwrap(),
            ],
            "lisen",
        ),
        (
            vec!["run", "--identity", id, "--liveness-timeout", "5 parsecs"],
            "liveness-timeout",
        ),
        (
            vec![
                "issue-cert",
                "--cluster-dir",
                "x",
                "--name",
                "Not A Name",
                "--out",
                "y",
            ],
            "invalid node name",
        ),
        (vec!["no-such-command"], "no-such-command"),
    ];
    for (args, field) in cases {
        let (code, stderr) = run(&args);
        assert_eq!(code, 64, "{args:?} exited {code}: {stderr}");
        assert!(
            stderr.contains(field),
            "{args:?}: message does not name `{field}`: {stderr}"
        );
    }
}

#[test]
fn credentials_commands_write_what_a_node_needs_and_never_overwrite_a_ca() {
    let cluster = Cluster::new("credentials");
    let (code, stderr) = run(&["init-cluster", "--dir", cluster.ca_dir().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    let id = cluster.identity("edge-1");
    for file in ["node.crt", "node.key", "ca.crt", "cookie"] {
        assert!(id.join(file).exists(), "{file}");
    }
    assert!(
        !id.join("ca.key").exists(),
        "a node identity must not carry the CA key"
    );
    let identity = ganglion::Identity::load(&id).unwrap();
    assert_eq!(identity.name, "edge-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_configured_token_the_node_generates_one_in_its_data_folder() {
    let cluster = Cluster::new("generated-token");
    let node = cluster.start("a", &[], &[NO_ADMIN_TOKEN]);
    let token_file = node
        .admin_token_file
        .as_ref()
        .expect("the ready line names the generated token's file");
    let token = std::fs::read_to_string(token_file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://{}/admin/node", node.admin);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    let ok = client
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}
