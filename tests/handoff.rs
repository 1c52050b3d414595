//! Handoff across the mesh with real node processes: the nearest capable peer by measured RTT
//! (UDP relays add real delay), failover when it dies, load awareness, clear errors instead of
//! loops, and cancellation that travels along the path.
//!
//! Node names are chosen so that the edge nodes sort last: of two connections between a pair,
//! the one dialed by the later name survives, so edges' connections (through the relays) are
//! the ones kept and measured.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::time::{Duration, Instant};

use futures::StreamExt;
use ganglion_client::protocol::{ErrorCode, FinalResponse, Output};
use ganglion_client::{GenerateRequest, GenerationStream, StreamEvent};
use ganglion_testkit::{
    Cluster, MINILM, Node, QWEN_05B, SMOLLM2, UdpRelay, ensure_models, eventually,
    running_generation,
};

const PROMPT: &str = "What is the capital of France? Answer in one sentence.";
const LIVENESS: [&str; 2] = ["--liveness-timeout", "2s"];

/// A node that hosts the LLM behind a relay adding `one_way` each way.
async fn regional(
    cluster: &Cluster,
    name: &str,
    one_way: Duration,
    extra: &[&str],
) -> (Node, UdpRelay) {
    let relay = UdpRelay::bind(one_way).await.unwrap();
    let advertise = relay.addr.to_string();
    let mut args = vec!["--advertise", advertise.as_str(), "--host", SMOLLM2];
    args.extend_from_slice(&LIVENESS);
    args.extend_from_slice(extra);
    let node = cluster.start(name, &[], &args);
    relay.route_to(node.quic);
    (node, relay)
}

/// An edge box: too little memory for the LLM, hosts the embedder.
fn edge(cluster: &Cluster, name: &str, seeds: &[std::net::SocketAddr]) -> Node {
    let mut args = vec![
        "--host",
        SMOLLM2,
        "--host",
        MINILM,
        "--memory-limit",
        "200MiB",
    ];
    args.extend_from_slice(&LIVENESS);
    cluster.start(name, seeds, &args)
}

/// Waits until `node` sees `peers` connected and advertising the LLM.
async fn sees_hosts(node: &Node, peers: &[&str]) {
    for peer in peers {
        node.sees_serving(peer, SMOLLM2).await;
    }
}

/// A request may name fallback models: when its own has no host anywhere, the next one
/// answers, and the route says which model answered and why the first did not. An error that
/// another model would meet too (bad input) does not fall back.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_falls_back_to_the_next_model_when_its_own_cannot_answer() {
    ensure_models();
    let cluster = Cluster::new("fallbacks");
    let node = cluster.start("solo", &[], &["--host", SMOLLM2]);
    let client = cluster.client(&node).await;

    let answer = client
        .generate(
            GenerateRequest::new(QWEN_05B, PROMPT)
                .max_tokens(16)
                .fallbacks(vec!["@nobody/unknown".into(), SMOLLM2.into()]),
        )
        .await
        .unwrap();
    assert!(answer.text.contains("Paris"), "{}", answer.text);
    let route = &answer.response.route;
    assert_eq!(route.model, SMOLLM2);
    assert_eq!(route.executed_by, "solo");
    let tried: Vec<(&str, ErrorCode)> = route
        .models_tried
        .iter()
        .map(|m| (m.model.as_str(), m.code))
        .collect();
    assert_eq!(
        tried,
        [
            (QWEN_05B, ErrorCode::Unavailable),
            ("@nobody/unknown", ErrorCode::UnknownModel)
        ]
    );
    assert!(
        answer.response.usage.micro_neurons > 0,
        "the answer is charged"
    );

    // Without a fallback that can answer, the error names every model tried.
    let failed = client
        .generate(GenerateRequest::new(QWEN_05B, PROMPT).fallbacks(vec!["@nobody/unknown".into()]))
        .await
        .unwrap_err();
    let ganglion_client::ClientError::Server(error) = failed else {
        panic!("{failed:?}")
    };
    assert_eq!(error.code, ErrorCode::UnknownModel);
    assert!(error.message.contains(QWEN_05B), "{}", error.message);

    // Bad input is bad for every model: it does not fall back.
    let refused = client
        .generate(
            GenerateRequest::new(SMOLLM2, PROMPT)
                .temperature(-1.0)
                .fallbacks(vec![SMOLLM2.into(), MINILM.into()]),
        )
        .await
        .unwrap_err();
    let ganglion_client::ClientError::Server(error) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(error.code, ErrorCode::InvalidInput);
}

/// The regional LLM is a real chat model: joined from six chunk wheels at pull time, too big
/// for the edge box, so the edge hands it to the regional node, which answers sensibly where
/// the 135M model could not ("Name one colour." got "One colour is not possible.").
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_box_hands_the_regional_llm_to_a_regional_node_that_answers_sensibly() {
    ensure_models();
    let cluster = Cluster::new("regional-llm");
    let regional = cluster.start("regional", &[], &["--host", QWEN_05B]);
    let edge = cluster.start(
        "edge",
        &[regional.quic],
        &[
            "--host",
            QWEN_05B,
            "--host",
            SMOLLM2,
            "--memory-limit",
            "600MiB",
        ],
    );
    edge.sees_serving("regional", QWEN_05B).await;
    assert_eq!(edge.model_status(QWEN_05B).await["hosted"], false);
    assert_eq!(edge.model_status(SMOLLM2).await["hosted"], true);

    let client = cluster.client(&edge).await;
    let answer = client
        .generate(
            GenerateRequest::new(QWEN_05B, "Name one colour. Answer with one word.").max_tokens(8),
        )
        .await
        .unwrap();
    assert_eq!(answer.response.route.executed_by, "regional");
    assert_eq!(answer.response.route.path, ["edge", "regional"]);
    let colours = [
        "red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink",
    ];
    let text = answer.text.to_lowercase();
    assert!(
        colours.iter().any(|c| text.contains(c)),
        "not a colour: {:?}",
        answer.text
    );
    // The small model still answers at the edge itself.
    let small = client
        .generate(GenerateRequest::new(SMOLLM2, PROMPT).max_tokens(16))
        .await
        .unwrap();
    assert_eq!(small.response.route.executed_by, "edge");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_node_hands_the_llm_to_the_nearest_regional_node_and_fails_over_when_it_dies() {
    ensure_models();
    let cluster = Cluster::new("nearest");
    let (mut near, _near_relay) = regional(&cluster, "near", Duration::from_millis(2), &[]).await;
    let (far, _far_relay) = regional(&cluster, "far", Duration::from_millis(60), &[]).await;
    let edge = edge(&cluster, "west-edge", &[_near_relay.addr, _far_relay.addr]);
    sees_hosts(&edge, &["near", "far"]).await;
    assert_eq!(edge.model_status(SMOLLM2).await["hosted"], false);

    // The measured RTTs reflect the relays, not a configured number.
    let rtt = |v: serde_json::Value| v["rtt_ms"].as_f64().unwrap();
    let (near_rtt, far_rtt) = (
        rtt(edge.peer("near").await.unwrap()),
        rtt(edge.peer("far").await.unwrap()),
    );
    // The relays differ by 116 ms of round trip; a loaded machine adds noise to both.
    assert!(
        far_rtt > near_rtt + 60.0,
        "near {near_rtt} ms, far {far_rtt} ms"
    );

    let client = cluster.client(&edge).await;
    let answer = client
        .generate(GenerateRequest::new(SMOLLM2, PROMPT).max_tokens(16))
        .await
        .unwrap();
    let route = &answer.response.route;
    assert_eq!(route.executed_by, "near");
    assert_eq!(route.entry, "west-edge");
    assert_eq!(route.path, ["west-edge", "near"]);
    assert_eq!(route.hops(), 1);
    assert!(route.attempts.is_empty());
    assert_eq!(route.per_hop.len(), 2);
    assert!(route.per_hop[0].total_ms >= route.per_hop[1].total_ms);
    assert!(answer.text.contains("Paris"), "{}", answer.text);
    let routing = edge.json("/admin/routing").await;
    assert_eq!(routing["models"][SMOLLM2]["forwarded"], 1);
    assert_eq!(routing["peers"]["near"]["forwarded"], 1);

    // The serving node dies; the very next request is served by the other, without an error.
    near.kill();
    let answer = client
        .generate(GenerateRequest::new(SMOLLM2, PROMPT).max_tokens(16))
        .await
        .unwrap();
    assert_eq!(answer.response.route.executed_by, "far");
    assert!(answer.text.contains("Paris"));
    let _ = far;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_both_regional_nodes_busy_the_less_loaded_one_is_chosen() {
    ensure_models();
    let cluster = Cluster::new("busy");
    let queue = ["--model-concurrency", "1", "--model-queue", "8"];
    let (r1, relay1) = regional(&cluster, "r1", Duration::from_millis(1), &queue).await;
    let (r2, relay2) = regional(&cluster, "r2", Duration::from_millis(1), &queue).await;
    let edge = edge(&cluster, "west-edge", &[relay1.addr, relay2.addr]);
    sees_hosts(&edge, &["r1", "r2"]).await;

    // Give both a recent service time, then load r1 with three long requests and r2 with one.
    let (c1, c2) = (cluster.client(&r1).await, cluster.client(&r2).await);
    for c in [&c1, &c2] {
        c.generate(GenerateRequest::new(SMOLLM2, PROMPT).max_tokens(8))
            .await
            .unwrap();
    }
    let long = || {
        GenerateRequest::new(SMOLLM2, "Tell me a very long story about the sea.").max_tokens(600)
    };
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(c1.generate_stream(long()).await.unwrap());
    }
    streams.push(c2.generate_stream(long()).await.unwrap());
    eventually(
        Duration::from_secs(10),
        "the edge sees the loads",
        || async {
            let load = |v: serde_json::Value| {
                let l = v["loads"]
                    .as_array()?
                    .iter()
                    .find(|l| l["model"] == SMOLLM2)?
                    .clone();
                Some(l["queued"].as_u64()? + l["in_flight"].as_u64()?)
            };
            (load(edge.peer("r1").await?)? == 3 && load(edge.peer("r2").await?)? == 1).then_some(())
        },
    )
    .await;

    let client = cluster.client(&edge).await;
    let mut stream = client
        .generate_stream(GenerateRequest::new(SMOLLM2, PROMPT).max_tokens(8))
        .await
        .unwrap();
    let mut executed_by = None;
    while let Some(event) = stream.next().await {
        if let StreamEvent::Final(response) = event.unwrap() {
            executed_by = Some(response.route.executed_by);
        }
    }
    assert_eq!(executed_by.as_deref(), Some("r2"));
    drop(streams);
}

/// Chats that begin with the same long system prompt go to one node whichever node they enter
/// at: the node that holds the prompt's work or, before anyone does, the one it belongs to by
/// rendezvous. There its engine reads only the new tokens.
#[tokio::test(flavor = "multi_thread")]
async fn repeats_of_a_system_prompt_go_to_the_node_holding_it() {
    use ganglion_client::protocol::{ChatMessage, Role};
    ensure_models();
    let cluster = Cluster::new("prefix-affinity");
    let a = cluster.start("a", &[], &["--host", SMOLLM2]);
    let b = cluster.start("b", &[a.quic], &["--host", SMOLLM2]);
    let c = cluster.start("c", &[a.quic], &["--host", SMOLLM2]);
    sees_hosts(&a, &["b", "c"]).await;
    sees_hosts(&b, &["a", "c"]).await;
    sees_hosts(&c, &["a", "b"]).await;
    // A keyed account: the keyless `anonymous` account's prompts are never reused.
    let key = cluster.issue_key("desks", &[]);
    let clients = [
        cluster.keyed_client(&a, Some(&key)).await,
        cluster.keyed_client(&b, Some(&key)).await,
        cluster.keyed_client(&c, Some(&key)).await,
    ];
    let mut executors = std::collections::BTreeSet::new();
    for desk in 0..4 {
        let system = format!("Desk {desk}. ")
            + &"You answer questions about the lighthouse and its keeper. ".repeat(16);
        let mut served_by = Vec::new();
        for (i, client) in clients.iter().chain(&clients).enumerate() {
            let mut request =
                GenerateRequest::new(SMOLLM2, format!("Question {i}: who keeps it?")).max_tokens(4);
            request.messages.insert(
                0,
                ChatMessage {
                    role: Role::System,
                    content: system.clone(),
                },
            );
            let answer = client.generate(request).await.unwrap();
            let usage = answer.response.usage;
            if i > 0 {
                assert!(
                    usage.cached_input_tokens > 150,
                    "desk {desk}, question {i}: the prompt was read again: {usage:?}"
                );
            }
            served_by.push(answer.response.route.executed_by);
        }
        assert!(
            served_by.iter().all(|n| *n == served_by[0]),
            "desk {desk}: {served_by:?}"
        );
        executors.insert(served_by[0].clone());
    }
    // Distinct prompts are not all sent to one node.
    assert!(executors.len() > 1, "{executors:?}");
}

/// Reads `stream` until at least `bytes` of text have arrived (before its end); that text.
async fn read_at_least(stream: &mut GenerationStream, bytes: usize) -> String {
    let mut streamed = String::new();
    while streamed.len() < bytes {
        match stream.next().await.unwrap().unwrap() {
            StreamEvent::Delta(text) => streamed.push_str(&text),
            StreamEvent::Final(_) => panic!("the story ended before the kill: {streamed:?}"),
        }
    }
    streamed
}

/// Reads the rest of a stream whose executor `lost` was killed once `before_kill` had reached
/// the client, and checks that it is one stream that moved once, to `executor`: what the
/// client read is the whole answer, the text sent before the kill first, nothing repeated.
async fn finish_moved(
    mut stream: GenerationStream,
    before_kill: String,
    executor: &str,
    lost: &str,
) -> FinalResponse {
    let mut streamed = before_kill.clone();
    let mut last = None;
    while let Some(event) = stream.next().await {
        match event.expect("one stream, no error") {
            StreamEvent::Delta(text) => streamed.push_str(&text),
            StreamEvent::Final(response) => last = Some(response),
        }
    }
    let response = last.expect("a final answer");
    let Output::Text { text, .. } = &response.output else {
        panic!("not text");
    };
    assert_eq!(&streamed, text);
    assert!(text.starts_with(&before_kill) && text.len() > before_kill.len());
    let route = &response.route;
    assert_eq!(route.executed_by, executor);
    assert_eq!(route.migrations.len(), 1, "{route:?}");
    assert_eq!(route.migrations[0].from, lost);
    assert!(route.migrations[0].at_token > 0);
    response
}

/// The ledger records of `response`'s request on `nodes`.
fn ledger_records(
    cluster: &Cluster,
    nodes: &[&str],
    response: &FinalResponse,
) -> Vec<serde_json::Value> {
    let id = format!("{:032x}", response.id);
    nodes
        .iter()
        .flat_map(|node| cluster.ledger(node))
        .filter(|r| r["request_id"] == id.as_str())
        .collect()
}

/// A generation whose executor is killed (kill -9) after its text has reached the client moves
/// to the other host, which continues it from that text: the client sees one stream with no
/// text lost or repeated, the route names the move, and the answer is charged once.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_moves_to_another_host_when_its_executor_is_killed() {
    ensure_models();
    let cluster = Cluster::new("migration");
    let host = |name: &str, seeds: &[std::net::SocketAddr]| {
        let mut args = vec!["--host", SMOLLM2];
        args.extend_from_slice(&LIVENESS);
        cluster.start(name, seeds, &args)
    };
    let h1 = host("h1", &[]);
    let h2 = host("h2", &[h1.quic]);
    let entry = edge(&cluster, "west-edge", &[h1.quic, h2.quic]);
    sees_hosts(&entry, &["h1", "h2"]).await;
    let mut hosts = vec![h1, h2];

    let client = cluster.client(&entry).await;
    let story = GenerateRequest::new(SMOLLM2, "Tell me a very long story about a lighthouse.")
        .max_tokens(160);
    let mut stream = client.generate_stream(story).await.unwrap();
    let before_kill = read_at_least(&mut stream, 60).await;
    let mut running = None;
    for (i, h) in hosts.iter().enumerate() {
        if h.model_status(SMOLLM2).await["stats"]["in_flight"] == 1 {
            running = Some(i);
        }
    }
    let mut executor = hosts.remove(running.expect("a host runs the story"));
    let lost = executor.name.clone();
    executor.kill();

    let response = finish_moved(stream, before_kill, &hosts[0].name, &lost).await;
    let route = &response.route;
    assert!(response.usage.output_tokens > route.migrations[0].at_token);
    eprintln!("{}", response.route_line());
    // Charged once, by the node that finished it, for everything the client received.
    let records = ledger_records(&cluster, &["h1", "h2", "west-edge"], &response);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["executor"], hosts[0].name.as_str());
    assert_eq!(
        records[0]["output_tokens"],
        u64::from(response.usage.output_tokens)
    );
}

/// A chat that the entry node sent to a peer before its own host (the peer owns its system
/// prompt, then holds it) and whose peer is killed mid-stream is continued by the entry node's
/// own host: one stream, the move in the route, one charge.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_sent_to_a_peer_for_its_prompt_comes_back_when_the_peer_dies() {
    use ganglion_client::protocol::{ChatMessage, Role};
    ensure_models();
    let cluster = Cluster::new("prefix-comeback");
    let host = |name: &str, seeds: &[std::net::SocketAddr]| {
        let mut args = vec!["--host", SMOLLM2];
        args.extend_from_slice(&LIVENESS);
        cluster.start(name, seeds, &args)
    };
    let entry = host("a", &[]);
    let mut peer = host("b", &[entry.quic]);
    sees_hosts(&entry, &["b"]).await;
    // A keyed account: the keyless `anonymous` account's prompts are never placed by prefix.
    let key = cluster.issue_key("desks", &[]);
    let client = cluster.keyed_client(&entry, Some(&key)).await;
    let ask = |system: &str, question: &str, max_tokens: u32| {
        let mut request = GenerateRequest::new(SMOLLM2, question).max_tokens(max_tokens);
        request.messages.insert(
            0,
            ChatMessage {
                role: Role::System,
                content: system.to_owned(),
            },
        );
        request
    };
    // Each cold prompt goes to a or b by rendezvous: one of the first few goes to b.
    let mut system = None;
    for desk in 0..16 {
        let candidate = format!("Desk {desk}. ")
            + &"You tell long stories about the lighthouse and its keeper. ".repeat(16);
        let answer = client
            .generate(ask(&candidate, "Who keeps it?", 2))
            .await
            .unwrap();
        if answer.response.route.executed_by == "b" {
            system = Some(candidate);
            break;
        }
    }
    let system = system.expect("a prompt that the entry node sends to b");

    let story = ask(&system, "Tell me a very long story about the keeper.", 160);
    let mut stream = client.generate_stream(story).await.unwrap();
    let before_kill = read_at_least(&mut stream, 60).await;
    assert_eq!(peer.model_status(SMOLLM2).await["stats"]["in_flight"], 1);
    peer.kill();

    let response = finish_moved(stream, before_kill, "a", "b").await;
    let records = ledger_records(&cluster, &["a", "b"], &response);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["executor"], "a");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_host_is_a_clear_error_and_forwarding_never_loops() {
    ensure_models();
    let cluster = Cluster::new("no-loop");

    // Nobody hosts the LLM.
    let a = cluster.start("a", &[], &["--host", MINILM]);
    let b = cluster.start("b", &[a.quic], &["--host", MINILM]);
    eventually(Duration::from_secs(10), "a and b meet", || async {
        b.peer("a").await.map(|_| ())
    })
    .await;
    let client = cluster.client(&a).await;
    let err = client
        .generate(GenerateRequest::new(SMOLLM2, PROMPT))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    assert!(
        err.to_string().contains(SMOLLM2) && err.to_string().contains("no reachable peer hosts it"),
        "{err}"
    );
    drop((a, b));

    // Three nodes that all host it but are all full can only hand the request among
    // themselves: each hands it on once, nobody takes it back, and the client gets one error
    // naming every attempt.
    let full = [
        "--host",
        SMOLLM2,
        "--model-concurrency",
        "1",
        "--model-queue",
        "0",
    ];
    let x = cluster.start("x", &[], &full);
    let y = cluster.start("y", &[x.quic], &full);
    let z = cluster.start("z", &[x.quic], &full);
    for node in [&x, &y, &z] {
        eventually(
            Duration::from_secs(20),
            "full mesh with adverts",
            || async {
                let peers = node.json("/admin/peers").await;
                let ready = peers
                    .as_array()?
                    .iter()
                    .filter(|p| {
                        p["state"] == "connected"
                            && p["models"].as_array().is_some_and(|m| !m.is_empty())
                    })
                    .count();
                (ready == 2).then_some(())
            },
        )
        .await;
    }
    let mut busy = Vec::new();
    for node in [&x, &y, &z] {
        let c = cluster.client(node).await;
        let s = running_generation(&c, 800).await;
        busy.push((c, s));
    }
    let client = cluster.client(&x).await;
    let started = Instant::now();
    let err = client
        .generate(GenerateRequest::new(SMOLLM2, PROMPT))
        .await
        .map(|_| ())
        .unwrap_err();
    let message = err.to_string();
    assert_eq!(err.code(), Some(ErrorCode::Overloaded), "{message}");
    for node in ["x", "y", "z"] {
        assert!(
            message.contains(&format!("{node}:")),
            "{node} missing from {message}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_cancelling_mid_stream_frees_the_slot_two_hops_away() {
    ensure_models();
    let cluster = Cluster::new("cancel-two-hops");
    // A partition decides the path, not timing: the edge and `far` can each reach only `mid`
    // (their relays drop everyone else's datagrams). `mid` hosts the LLM but is kept full
    // (one slot, no queue), so it hands the edge's request on to `far`: two hops.
    let far_relay = UdpRelay::bind(Duration::from_millis(1)).await.unwrap();
    let edge_relay = UdpRelay::bind(Duration::from_millis(1)).await.unwrap();
    let addr = |a: std::net::SocketAddr| a.to_string();
    let far = cluster.start(
        "far",
        &[],
        &[
            "--advertise",
            &addr(far_relay.addr),
            "--host",
            SMOLLM2,
            "--liveness-timeout",
            "2s",
        ],
    );
    let mid_args = [
        "--host",
        SMOLLM2,
        "--model-concurrency",
        "1",
        "--model-queue",
        "0",
    ];
    let mid = cluster.start("mid", &[far_relay.addr], &mid_args);
    far_relay.only_from(vec![mid.quic]);
    far_relay.route_to(far.quic);
    edge_relay.only_from(vec![mid.quic]);
    let edge_args = ["--advertise", &addr(edge_relay.addr), "--host", MINILM];
    let edge = cluster.start("west-edge", &[mid.quic], &edge_args);
    edge_relay.route_to(edge.quic);
    sees_hosts(&edge, &["mid"]).await;
    sees_hosts(&mid, &["far"]).await;

    let mid_client = cluster.client(&mid).await;
    let keep_mid_busy = running_generation(&mid_client, 1500).await;

    let client = cluster.client(&edge).await;
    let stream = running_generation(&client, 1500).await;
    assert_eq!(
        far.model_status(SMOLLM2).await["stats"]["in_flight"],
        1,
        "far runs it, two hops from the client"
    );
    let far_view = edge.peer("far").await;
    assert!(
        far_view.is_none(),
        "the edge cannot reach far: {far_view:?}"
    );
    assert_eq!(
        edge.json("/admin/routing").await["peers"]["mid"]["forwarded"],
        1
    );
    assert_eq!(
        mid.json("/admin/routing").await["peers"]["far"]["forwarded"],
        1
    );

    drop(stream);
    client.close().await;
    eventually(
        Duration::from_secs(10),
        "cancellation reaches far and frees its slot",
        || async {
            let stats = far.model_status(SMOLLM2).await["stats"].clone();
            (stats["in_flight"] == 0 && stats["failed"] == 1).then_some(())
        },
    )
    .await;
    drop(keep_mid_busy);
}
