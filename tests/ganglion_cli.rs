//! The `ganglion` command-line client against a real node.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::process::{Command, Stdio};
use std::time::Duration;

use ganglion_client::protocol::ErrorCode;
use ganglion_testkit::{Cluster, MINILM, QUIET, SMOLLM2, ensure_models};

/// Exit code of a command the mesh was too busy to serve within its timeout (EX_TEMPFAIL).
const EXIT_OVERLOADED: i32 = 75;

/// What a client must never see: its connection lost without a word, or a node that answered
/// taken for unreachable.
const UNEXPLAINED: [&str; 4] = [
    "frame i/o failed",
    "no handshake",
    "closed by peer",
    "no node reachable",
];

fn ganglion(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ganglion"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_embed_and_models_from_the_command_line() {
    ensure_models();
    let cluster = Cluster::new("ganglion-cli");
    let node = cluster.start("edge", &[], &["--host", SMOLLM2, "--host", MINILM]);
    let addr = node.quic.to_string();
    let ca = cluster.ca_dir().join("ca.crt");
    let ca = ca.to_str().unwrap();
    let base = ["--node", addr.as_str(), "--ca", ca];

    let (ok, stdout, stderr) = ganglion(
        &[
            &["generate"][..],
            &base,
            &[
                "--model",
                SMOLLM2,
                "--max-tokens",
                "24",
                "--json",
                "What is the capital of France? Answer in one sentence.",
            ],
        ]
        .concat(),
    );
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(json["text"].as_str().unwrap().contains("Paris"), "{json}");
    assert_eq!(json["route"]["executed_by"], "edge");
    assert!(json["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(json["timings"]["total_ms"].as_f64().unwrap() > 0.0);

    let (ok, streamed, stderr) = ganglion(
        &[
            &["generate"][..],
            &base,
            &[
                "--model",
                SMOLLM2,
                "--max-tokens",
                "24",
                "What is the capital of France? Answer in one sentence.",
            ],
        ]
        .concat(),
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        streamed.trim_end(),
        json["text"].as_str().unwrap().trim_end()
    );

    let (ok, stdout, stderr) = ganglion(
        &[
            &["embed"][..],
            &base,
            &["--model", MINILM, "--json", "hello", "world"],
        ]
        .concat(),
    );
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(json["embeddings"][0].as_array().unwrap().len(), 384);

    let (ok, stdout, stderr) = ganglion(&[&["models"][..], &base].concat());
    assert!(ok, "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(SMOLLM2) && l.contains("edge")),
        "{stdout}"
    );

    // Errors: a clear message and a non-zero exit.
    let (ok, _, stderr) =
        ganglion(&[&["generate"][..], &base, &["--model", "@nope/none", "hi"]].concat());
    assert!(!ok);
    assert!(
        stderr.contains("unknown_model") && stderr.contains("@nope/none"),
        "{stderr}"
    );
    let (ok, _, stderr) = ganglion(&[
        "models",
        "--node",
        "127.0.0.1:1",
        "--ca",
        ca,
        "--timeout",
        "2",
    ]);
    assert!(!ok);
    assert!(stderr.contains("no node reachable"), "{stderr}");
}

/// How many `ganglion generate` processes start at once in the storm.
const STORM: usize = 150;

/// One model slot, a queue of 4 and 48 connection places, and 150 CLI processes started at
/// once right after the node is ready: each one answers, or ends with a typed `overloaded`
/// (exit 75) once its timeout is up; none loses its connection without a word.
#[test]
fn a_storm_of_cli_clients_gets_answers_or_overloaded() {
    ensure_models();
    let cluster = Cluster::new("ganglion-cli-storm");
    let node = cluster.start(
        "edge",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--model-concurrency",
            "1",
            "--model-queue",
            "4",
            "--max-connections",
            "48",
            QUIET,
        ],
    );
    let addr = node.quic.to_string();
    let ca = cluster.ca_dir().join("ca.crt");
    let generate = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ganglion"));
        command
            .args(["generate", "--node", addr.as_str(), "--ca"])
            .arg(&ca)
            .args(["--model", SMOLLM2, "--max-tokens", "4", "--timeout", "60"])
            .arg("What is the capital of France?");
        command
    };
    let storm: Vec<_> = (0..STORM)
        .map(|_| {
            generate()
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();

    let (mut answered, mut overloaded, mut otherwise) = (0, 0, Vec::new());
    for client in storm {
        let out = client.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            answered += 1;
        } else if out.status.code() == Some(EXIT_OVERLOADED)
            && stderr.contains("overloaded")
            && !UNEXPLAINED.iter().any(|lost| stderr.contains(lost))
        {
            overloaded += 1;
        } else {
            otherwise.push(format!("{:?}: {stderr}", out.status.code()));
        }
    }
    eprintln!(
        "{STORM} clients at once: {answered} answered, {overloaded} overloaded, {} otherwise",
        otherwise.len()
    );
    assert!(otherwise.is_empty(), "{otherwise:#?}");
    assert!(answered > 0, "not one answer");

    // The node serves on.
    let out = generate().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With every connection place taken, a new client is refused at once with a typed
/// `overloaded` that says when to retry; the CLI retries until its timeout, then exits 75,
/// and gets in once a place is free.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_node_turns_new_clients_away_with_a_typed_overloaded() {
    let cluster = Cluster::new("ganglion-cli-full");
    let node = cluster.start("edge", &[], &["--max-connections", "2"]);
    let held = [cluster.client(&node).await, cluster.client(&node).await];
    let ca = cluster.ca_dir().join("ca.crt");

    let refused = ganglion_client::Client::builder()
        .node(node.quic)
        .ca_file(&ca)
        .unwrap()
        .connect()
        .await
        .expect_err("every place is taken");
    assert_eq!(refused.code(), Some(ErrorCode::Overloaded), "{refused}");
    assert_eq!(
        refused.retry_after(),
        Some(Duration::from_secs(1)),
        "{refused}"
    );

    let addr = node.quic.to_string();
    let ca = ca.to_str().unwrap();
    let models = ["models", "--node", addr.as_str(), "--ca", ca, "--timeout"];
    let out = Command::new(env!("CARGO_BIN_EXE_ganglion"))
        .args(models)
        .arg("2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_OVERLOADED), "{stderr}");
    assert!(
        stderr.contains("overloaded") && stderr.contains("try again later"),
        "{stderr}"
    );
    assert!(
        !UNEXPLAINED.iter().any(|lost| stderr.contains(lost)),
        "{stderr}"
    );

    for client in held {
        client.close().await;
    }
    let (ok, _, stderr) = ganglion(&[&models[..], &["10"]].concat());
    assert!(ok, "{stderr}");
}
