//! Engines in worker processes: a worker killed in the middle of a generation, by SIGSEGV as a
//! fault in llama.cpp would, and by SIGKILL as the OOM killer would, takes down only itself.
//! The node stays up, its other model answers throughout, the running request ends with a
//! typed error, the queued ones are answered by the restarted worker, and so is the next;
//! faults in a row step the worker down to lower CPU kernels.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ganglion_client::GenerateRequest;
use ganglion_client::protocol::ErrorCode;
use ganglion_testkit::{
    self as harness, Cluster, MINILM, SMOLLM2, ensure_models, eventually, running_generation,
};

/// The worker of `model` as `/admin/models` shows it.
async fn worker(node: &harness::Node, model: &str) -> serde_json::Value {
    node.model_status(model).await["stats"]["worker"].clone()
}

/// Sends `signal` to process `pid` until it is gone. Rust's runtime catches the first SIGSEGV
/// (to tell a stack overflow from other faults), puts back the default action and returns:
/// on a real fault the instruction faults again and the default action ends the process; a
/// SIGSEGV sent from outside needs sending twice.
async fn kill(pid: u64, signal: &str) {
    let what = format!("process {pid} ends on SIG{signal}");
    eventually(Duration::from_secs(5), &what, || async {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Some(());
        }
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
        None
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_worker_takes_down_only_itself() {
    ensure_models();
    let cluster = Cluster::new("workers-crash");
    let mut node = cluster.start(
        "a",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--host",
            MINILM,
            "--model-concurrency",
            "1",
        ],
    );
    let client = Arc::new(cluster.client(&node).await);
    let llm = worker(&node, SMOLLM2).await;
    let embedder = worker(&node, MINILM).await;
    let (llm_pid, embedder_pid) = (
        llm["pid"].as_u64().unwrap(),
        embedder["pid"].as_u64().unwrap(),
    );
    assert_ne!(
        llm_pid,
        u64::from(node.child.id()),
        "the engine runs in its own process"
    );
    assert_ne!(llm_pid, embedder_pid, "one worker per model");
    assert_eq!(llm["state"], "ready");

    // The other model is asked all along; every answer must come.
    let stop = Arc::new(AtomicBool::new(false));
    let embedded = Arc::new(AtomicU64::new(0));
    let asking = {
        let (client, stop, embedded) = (client.clone(), stop.clone(), embedded.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let vectors = client
                    .embed(MINILM, vec!["the lighthouse keeper".into()])
                    .await
                    .expect("the embedder answers while the LLM's worker dies");
                assert_eq!(vectors[0].len(), 384);
                embedded.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut pid = llm_pid;
    for (crashes, signal) in [(1, "SEGV"), (2, "KILL")] {
        // One request running (its output started), two waiting behind it.
        let mut running = running_generation(&client, 2000).await;
        let queued: Vec<_> = (0..2)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    client
                        .generate(
                            GenerateRequest::new(SMOLLM2, format!("Name a colour. ({i})"))
                                .max_tokens(8),
                        )
                        .await
                })
            })
            .collect();
        eventually(Duration::from_secs(20), "two requests queued", || async {
            (node.model_status(SMOLLM2).await["stats"]["queued"] == 2).then_some(())
        })
        .await;

        let killed = Instant::now();
        kill(pid, signal).await;

        // The running request ends with a typed error: output had started, so `peer_lost`,
        // marked partial; never a stream that just stops.
        let mut ended = None;
        while let Some(event) = running.next().await {
            if let Err(e) = event {
                ended = Some(e);
                break;
            }
        }
        let error = ended.expect("the running request ends with an error");
        assert_eq!(error.code(), Some(ErrorCode::PeerLost), "{error}");
        assert!(error.to_string().contains("partial"), "{error}");
        assert!(
            error.to_string().contains(&format!("SIG{signal}")),
            "{error}"
        );

        // The queued requests are served by the restarted worker.
        for request in queued {
            let answer = request
                .await
                .unwrap()
                .expect("a queued request is answered");
            assert!(!answer.text.is_empty());
        }
        let back = worker(&node, SMOLLM2).await;
        assert_eq!(back["state"], "ready");
        assert_eq!(back["crashes"], crashes);
        assert!(
            back["last_exit"]
                .as_str()
                .unwrap()
                .contains(&format!("SIG{signal}")),
            "{back}"
        );
        let new_pid = back["pid"].as_u64().unwrap();
        assert_ne!(new_pid, pid, "a new worker");
        eprintln!(
            "SIG{signal}: worker back in {} ms (queued requests answered {} ms after the kill)",
            back["last_return_ms"],
            killed.elapsed().as_millis()
        );
        pid = new_pid;

        // And the next request too.
        let next = client
            .generate(GenerateRequest::new(SMOLLM2, "Name a fruit.").max_tokens(8))
            .await
            .unwrap();
        assert!(!next.text.is_empty());
        assert!(
            node.child.try_wait().unwrap().is_none(),
            "the node is still running"
        );
    }

    // Three quick faults in a row: the worker restarts one rung lower on llama.cpp's CPU
    // kernels, and says so.
    let best = worker(&node, SMOLLM2).await["kernels"].clone();
    for _ in 0..3 {
        let before = worker(&node, SMOLLM2).await;
        kill(before["pid"].as_u64().unwrap(), "SEGV").await;
        eventually(Duration::from_secs(30), "the worker back", || async {
            let now = worker(&node, SMOLLM2).await;
            (now["state"] == "ready" && now["crashes"] != before["crashes"]).then_some(())
        })
        .await;
    }
    let lower = worker(&node, SMOLLM2).await;
    assert_ne!(lower["kernels"], best, "{lower}");
    assert!(
        lower["fallback"]
            .as_str()
            .is_some_and(|why| why.contains("faults")),
        "{lower}"
    );
    let answer = client
        .generate(GenerateRequest::new(SMOLLM2, "Name a fruit.").max_tokens(8))
        .await
        .unwrap();
    assert!(!answer.text.is_empty());
    let models = node.json("/admin/mesh").await.to_string();
    assert!(
        models.contains("faults in a row"),
        "the dashboard's view says it"
    );

    stop.store(true, Ordering::Relaxed);
    asking.await.unwrap();
    assert!(embedded.load(Ordering::Relaxed) > 0);
    assert_eq!(
        worker(&node, MINILM).await["pid"].as_u64(),
        Some(embedder_pid),
        "the embedder's worker never died"
    );
    let log = node.log_text();
    assert!(log.contains("SIGSEGV") && log.contains("SIGKILL"), "{log}");
    node.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_lost_before_the_first_token_hands_the_request_to_a_peer() {
    ensure_models();
    let cluster = Cluster::new("workers-handoff");
    let a = cluster.start("a", &[], &["--host", SMOLLM2, "--model-concurrency", "1"]);
    let _b = cluster.start("b", &[a.quic], &["--host", SMOLLM2]);
    a.sees_serving("b", SMOLLM2).await;
    let client = cluster.client(&a).await;
    // A request queued behind a running one starts only once the worker is back: it is the
    // running one that meets the dead worker. Kill it while a long prompt is read, before
    // any token: the request is retried on b.
    let pid = worker(&a, SMOLLM2).await["pid"].as_u64().unwrap();
    let long_prompt = "Repeat after me. ".repeat(300);
    let request = {
        let client = cluster.client(&a).await;
        tokio::spawn(async move {
            client
                .generate(GenerateRequest::new(SMOLLM2, long_prompt).max_tokens(4))
                .await
        })
    };
    eventually(
        Duration::from_secs(20),
        "the request running on a",
        || async { (a.model_status(SMOLLM2).await["stats"]["in_flight"] == 1).then_some(()) },
    )
    .await;
    kill(pid, "KILL").await;
    let answer = request.await.unwrap().expect("answered by a peer");
    assert_eq!(
        answer.response.route.executed_by, "b",
        "{:?}",
        answer.response.route
    );
    assert!(
        answer.response.route.attempts.iter().any(|t| t.node == "a"),
        "{:?}",
        answer.response.route
    );
    drop(client);
}

/// A worker lives no longer than its node: when the node is killed outright (no shutdown, so
/// nothing closes the worker's socket in an orderly way), its worker goes too.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_ends_when_its_node_is_killed() {
    ensure_models();
    let cluster = Cluster::new("orphans");
    let mut node = cluster.start("gone", &[], &["--host", SMOLLM2]);
    let pid = worker(&node, SMOLLM2).await["pid"].as_u64().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    node.kill();
    eventually(
        Duration::from_secs(10),
        "the worker ends with its node",
        || async {
            // A zombie (reaped by nobody yet) has ended too.
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            (status.is_empty() || status.contains("State:\tZ")).then_some(())
        },
    )
    .await;
}
