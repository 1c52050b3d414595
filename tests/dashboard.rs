//! The dashboard in a real browser: a 3-node mesh of real processes, the page opened from the
//! edge node's admin listener in headless Chromium, signed in, checked for its nodes and links,
//! and a request sent through "try it" that must show up with its route. Also: nothing is shown
//! without the token. The screenshot is saved beside the test's output.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::process::Command;
use std::time::Duration;

use ganglion_testkit::{
    self as harness, Cluster, KEYS_REQUIRED, MINILM, SMOLLM2, TOKEN, WITH_CACHE, ensure_models,
};

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_mesh_and_a_request_sent_through_try_it() {
    ensure_models();
    let chromium = harness::chromium();
    let modules = harness::npm_package("playwright-core", "1.65.1");
    let cluster = Cluster::new("dashboard");
    let regional = |name| {
        cluster.start(
            name,
            &[],
            &[
                "--host",
                SMOLLM2,
                "--host",
                MINILM,
                KEYS_REQUIRED,
                WITH_CACHE,
            ],
        )
    };
    let north = regional("regional-north");
    let south = cluster.start(
        "regional-south",
        &[north.quic],
        &["--host", SMOLLM2, KEYS_REQUIRED, WITH_CACHE],
    );
    // Too little memory for the LLM: requests for it are handed to a regional node.
    let edge = cluster.start(
        "edge-west",
        &[north.quic],
        &[
            "--host",
            SMOLLM2,
            "--host",
            MINILM,
            "--memory-limit",
            "200MiB",
            KEYS_REQUIRED,
            WITH_CACHE,
        ],
    );
    for node in [&north, &south] {
        edge.sees_serving(&node.name, SMOLLM2).await;
    }
    harness::eventually(Duration::from_secs(20), "a full mesh", || async {
        for node in [&north, &south, &edge] {
            if node.connected_peers().await.len() != 2 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let key = cluster.issue_key("acme", &["--daily-limit", "50"]);

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let output = harness::succeed(
        Command::new("node")
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../tests/dashboard/drive.js"),
            )
            .env("NODE_PATH", &modules)
            .env("URL", format!("http://{}/", edge.admin))
            .env("TOKEN", TOKEN)
            .env("KEY", &key)
            .env("MODEL", SMOLLM2)
            .env("NODES", "regional-north,regional-south,edge-west")
            .env("CHROMIUM", &chromium)
            .env("SCREENSHOT", &screenshot),
    );
    println!("screenshot: {}", screenshot.display());
    let seen: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    println!("{seen:#}");

    let route = seen["try"]["route"].as_str().unwrap();
    let executor = seen["try"]["executed_by"].as_str().unwrap();
    assert!(
        executor.starts_with("regional-"),
        "the edge hands the LLM on: {seen}"
    );
    assert_eq!(route, format!("edge-west → {executor}"));
    assert_eq!(
        seen["try"]["cache"].as_str().unwrap().split(' ').next(),
        Some("MISS")
    );
    assert_eq!(seen["links"].as_array().unwrap().len(), 3);
    assert!(
        seen["not_hosted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item.as_str().unwrap().contains(SMOLLM2)),
        "the edge says why it does not host the LLM: {seen}"
    );
    assert_eq!(seen["accounts"][0]["account"], "acme");
    assert_eq!(
        seen["error_row"],
        serde_json::json!(["unauthenticated", "edge-west", SMOLLM2])
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);

    // The mesh view the page draws, as an operator's script reads it.
    let view = edge.json("/admin/mesh").await;
    assert_eq!(view["node"], "edge-west");
    assert_eq!(view["nodes"].as_array().unwrap().len(), 3);
    let id = seen["try"]["id"].as_str().unwrap();
    let recent = view["nodes"][0]["activity"]["requests"].as_array().unwrap();
    let entries: Vec<_> = recent.iter().filter(|r| r["id"] == id).collect();
    assert_eq!(
        entries.len(),
        1,
        "counted once, where it entered: {recent:?}"
    );
    let entry = entries[0];
    assert_eq!(entry["account"], "acme");
    assert_eq!(entry["outcome"], "ok");
    assert_eq!(
        view["accounts"][0]["limit_micro"].as_u64(),
        Some(50_000_000),
        "the key's daily limit is the allocation shown"
    );
}
