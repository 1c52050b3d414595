//! The `ganglion` command-line client against a real node.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

mod harness;

use std::process::Command;

use harness::{Cluster, MINILM, SMOLLM2, ensure_models};

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
