//! The mesh's result cache against real node processes and real models: hits after misses,
//! bypasses, per-account keys, custom keys, purges, single flight across nodes, and a shard's
//! node killed.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::time::Duration;

use futures::StreamExt;
use ganglion_client::protocol::{CachePolicy, CacheStatus, FinalResponse, Output};
use ganglion_client::{EmbedRequest, GenerateRequest, StreamEvent};
use ganglion_testkit::{
    self as harness, Cluster, KEYS_REQUIRED, MINILM, SMOLLM2, WITH_CACHE, ensure_models,
    eventually, raw_quic,
};

/// Generates, collecting the streamed deltas beside the final response.
async fn generate(
    client: &ganglion_client::Client,
    request: GenerateRequest,
) -> (String, FinalResponse) {
    let mut stream = client.generate_stream(request).await.unwrap();
    let mut streamed = String::new();
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta(text) => streamed.push_str(&text),
            StreamEvent::Final(response) => return (streamed, response),
        }
    }
    panic!("no final response");
}

fn text(response: &FinalResponse) -> &str {
    match &response.output {
        Output::Text { text, .. } => text,
        other => panic!("not text: {other:?}"),
    }
}

fn keyed(key: &str) -> CachePolicy {
    CachePolicy {
        key: Some(key.into()),
        ..Default::default()
    }
}

/// Waits until `node` sees `count` cache shards in the mesh.
async fn sees_shards(node: &harness::Node, count: usize) {
    eventually(Duration::from_secs(20), "every shard seen", || async {
        let cache = node.json("/admin/cache").await;
        (cache["mesh_shards"].as_array()?.len() == count).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hit_replays_the_answer_free_per_account_and_purges_empty_it() {
    ensure_models();
    let cluster = Cluster::new("cache");
    let a = cluster.start(
        "a",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--host",
            MINILM,
            KEYS_REQUIRED,
            WITH_CACHE,
        ],
    );
    let b = cluster.start("b", &[a.quic], &[KEYS_REQUIRED, WITH_CACHE]);
    b.sees_serving("a", SMOLLM2).await;
    sees_shards(&b, 4).await;
    let acme_key = cluster.issue_key("acme", &[]);
    let acme = cluster.keyed_client(&b, Some(&acme_key)).await;
    let globex_key = cluster.issue_key("globex", &[]);
    let globex = cluster.keyed_client(&b, Some(&globex_key)).await;
    let ask = || GenerateRequest::new(SMOLLM2, "Name a colour.").max_tokens(8);

    // A miss runs the model on a and is charged; the identical request is a hit, streamed
    // as a live answer is, free.
    let (_, miss) = generate(&acme, ask()).await;
    assert_eq!(miss.cache.status, CacheStatus::Miss);
    assert_eq!(miss.route.executed_by, "a");
    assert_eq!(miss.usage.micro_neurons, 3_000_000);
    let (streamed, hit) = generate(&acme, ask()).await;
    assert_eq!(hit.cache.status, CacheStatus::Hit, "{hit:?}");
    assert_eq!(text(&hit), text(&miss));
    assert_eq!(streamed, text(&miss), "the hit streams the same text");
    assert_eq!(hit.usage.micro_neurons, 0);
    assert_eq!(hit.usage.output_tokens, miss.usage.output_tokens);
    assert_eq!(hit.cache.shard, miss.cache.shard);
    assert!(hit.cache.age_ms.is_some());
    assert_eq!(hit.route.path, vec!["b".to_owned()]);

    // Another account does not see acme's answer.
    let (_, other) = generate(&globex, ask()).await;
    assert_eq!(other.cache.status, CacheStatus::Miss);

    // Sampled without a seed, or skipped: the cache is not used.
    let (_, sampled) = generate(&acme, ask().temperature(0.7)).await;
    assert_eq!(sampled.cache.status, CacheStatus::Bypass);
    let skip = CachePolicy {
        skip: true,
        ..Default::default()
    };
    let (_, skipped) = generate(&acme, ask().cache(skip)).await;
    assert_eq!(skipped.cache.status, CacheStatus::Bypass);
    assert_eq!(skipped.usage.micro_neurons, 3_000_000);
    // Sampled with a seed is deterministic, so cached.
    let (_, seeded) = generate(&acme, ask().temperature(0.7).seed(5)).await;
    assert_eq!(seeded.cache.status, CacheStatus::Miss);

    // A custom key hits across different inputs of one account.
    let embed = |text: &str| EmbedRequest::new(MINILM, vec![text.into()]).cache(keyed("greeting"));
    let first = acme.embed_request(embed("hello")).await.unwrap();
    assert_eq!(first.cache.status, CacheStatus::Miss);
    let second = acme.embed_request(embed("good morning")).await.unwrap();
    assert_eq!(second.cache.status, CacheStatus::Hit);
    assert_eq!(
        second.output, first.output,
        "the stored answer, not a new one"
    );

    // The hits count as cached requests, free, with ledger records on the entry node.
    let usage = acme.usage().await.unwrap();
    assert_eq!(usage.cached_requests, 2, "{usage:?}");
    let stats = b.json("/admin/usage?account=acme").await;
    assert_eq!(
        stats["accounts"][0]["charged_by_this_node"]["cached_requests"],
        2
    );

    // The shards' counters add up, and purging every node's shards makes the next ask a miss.
    let mut hits = 0;
    for node in [&a, &b] {
        let cache = node.json("/admin/cache").await;
        hits += cache["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["hits"].as_u64().unwrap())
            .sum::<u64>();
    }
    assert_eq!(hits, 2);
    let purged: u64 = [
        a.delete("/admin/cache?account=acme").await,
        b.delete("/admin/cache?account=acme").await,
    ]
    .iter()
    .map(|p| p["purged"].as_u64().unwrap())
    .sum();
    assert_eq!(purged, 3, "acme's three entries");
    let (_, again) = generate(&acme, ask()).await;
    assert_eq!(again.cache.status, CacheStatus::Miss);
    let (_, globex_again) = generate(&globex, ask()).await;
    assert_eq!(
        globex_again.cache.status,
        CacheStatus::Hit,
        "globex's entry stayed"
    );

    // The `ganglion` CLI speaks the same controls.
    let cli = |args: &[&str]| {
        let mut args = [&["embed", "--model", MINILM], args].concat();
        args.push("--json");
        let shown = cluster.ganglion_json(&b, &acme_key, &args);
        shown["cache"]["status"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        cli(&["--cache-key", "cli", "--cache-ttl", "60", "one"]),
        "MISS"
    );
    assert_eq!(cli(&["--cache-key", "cli", "two"]), "HIT");
    assert_eq!(
        cli(&["--cache-key", "cli", "--skip-cache", "two"]),
        "BYPASS"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_requests_at_three_nodes_run_the_model_once() {
    ensure_models();
    let cluster = Cluster::new("cache-flight");
    let a = cluster.start("a", &[], &["--host", SMOLLM2, KEYS_REQUIRED, WITH_CACHE]);
    let b = cluster.start("b", &[a.quic], &[KEYS_REQUIRED, WITH_CACHE]);
    let c = cluster.start("c", &[a.quic, b.quic], &[KEYS_REQUIRED, WITH_CACHE]);
    let key = cluster.issue_key("acme", &["--plan", "paid"]);
    for node in [&b, &c] {
        node.sees_serving("a", SMOLLM2).await;
    }
    for node in [&a, &b, &c] {
        sees_shards(node, 6).await;
    }
    let nodes = [&a, &b, &c];
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push(cluster.keyed_client(nodes[i % 3], Some(&key)).await);
    }
    let ask = GenerateRequest::new(SMOLLM2, "Write one sentence about rivers.").max_tokens(24);
    let answers =
        futures::future::join_all(clients.iter().map(|client| client.generate(ask.clone()))).await;
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    let statuses: Vec<CacheStatus> = answers.iter().map(|g| g.response.cache.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == CacheStatus::Miss).count(),
        1,
        "{statuses:?}"
    );
    assert!(answers.iter().all(|g| g.text == answers[0].text));
    let completed = a.model_status(SMOLLM2).await["stats"]["completed"].clone();
    assert_eq!(completed, 1, "the model ran once");

    // The leader of a key goes away mid-run: the request waiting for it takes over and is
    // answered (a miss it fills itself), instead of hanging.
    let long = GenerateRequest::new(SMOLLM2, "Tell me a long story about a fox.").max_tokens(300);
    let mut leader = clients[0].generate_stream(long.clone()).await.unwrap();
    assert!(matches!(
        leader.next().await,
        Some(Ok(StreamEvent::Delta(_)))
    ));
    let waiter = cluster.keyed_client(&c, Some(&key)).await;
    let waiting = tokio::spawn(async move { waiter.generate(long).await.unwrap() });
    eventually(
        Duration::from_secs(10),
        "one request waits at the shard",
        || async {
            let mut waiting = 0;
            for node in [&a, &b, &c] {
                let cache = node.json("/admin/cache").await;
                for shard in cache["shards"].as_array()? {
                    waiting += shard["waiting"].as_u64()?;
                }
            }
            (waiting == 1).then_some(())
        },
    )
    .await;
    drop(leader);
    let taken_over = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the waiter is answered")
        .unwrap();
    assert_eq!(taken_over.response.cache.status, CacheStatus::Miss);
    assert!(!taken_over.text.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_shard_node_costs_a_miss_not_an_error_once_its_near_copies_are_gone() {
    ensure_models();
    let cluster = Cluster::new("cache-kill");
    let a = cluster.start("a", &[], &["--host", MINILM, KEYS_REQUIRED, WITH_CACHE]);
    let mut b = cluster.start("b", &[a.quic], &[KEYS_REQUIRED, WITH_CACHE]);
    b.sees_serving("a", MINILM).await;
    sees_shards(&a, 4).await;
    let key = cluster.issue_key("acme", &["--plan", "paid"]);
    let client = cluster.keyed_client(&a, Some(&key)).await;
    // A key whose shard is on b (a's own requests find it by rendezvous, like any node).
    let mut on_b = None;
    for i in 0..32 {
        let request =
            EmbedRequest::new(MINILM, vec!["kept on b".into()]).cache(keyed(&format!("k{i}")));
        let response = client.embed_request(request.clone()).await.unwrap();
        assert_eq!(response.cache.status, CacheStatus::Miss);
        if response.cache.shard.as_deref().unwrap().starts_with("b/") {
            on_b = Some(request);
            break;
        }
    }
    let request = on_b.expect("some key lives on b");
    let hit = client.embed_request(request.clone()).await.unwrap();
    assert_eq!(hit.cache.status, CacheStatus::Hit);

    // The hit left a copy on a: it answers while b is gone, as the shard would have.
    b.kill();
    let near = client.embed_request(request.clone()).await.unwrap();
    assert_eq!(near.cache.status, CacheStatus::Hit, "{:?}", near.cache);
    assert_eq!(near.cache.shard, hit.cache.shard);
    assert_eq!(near.output, hit.output);
    assert_eq!(a.json("/admin/cache").await["near"]["hits"], 1);
    // Purging a drops the copy: the shard's node is dead, which costs a miss, not an error.
    assert_eq!(a.delete("/admin/cache").await["copies_purged"], 1);
    let after = client.embed_request(request.clone()).await.unwrap();
    assert_eq!(after.cache.status, CacheStatus::Miss, "{:?}", after.cache);
    assert_eq!(after.output, hit.output);
    // Once a has dropped b, the key lives on a's shards.
    sees_shards(&a, 2).await;
    let refilled = client.embed_request(request.clone()).await.unwrap();
    let again = client.embed_request(request).await.unwrap();
    assert!(refilled.cache.shard.as_deref().unwrap().starts_with("a/"));
    assert_eq!(again.cache.status, CacheStatus::Hit);
}

/// Asks shard `shard` of the node on `connection` for `material` as a member would, filling it
/// with a poisoned vector if it leads; returns the shard's answer.
async fn rogue_lookup(
    connection: &quinn::Connection,
    shard: u16,
    material: Vec<u8>,
) -> ganglion::peer::cache::CacheReply {
    use ganglion::cache::store::Answer;
    use ganglion::peer::cache::{CacheCall, CacheReply};
    use ganglion_client::protocol::{MAX_OPEN_FRAME_LEN, MAX_RESPONSE_FRAME_LEN};
    use ganglion_client::{PeerStreamKind, read_frame, write_frame};
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    write_frame(&mut send, &PeerStreamKind::Cache, MAX_OPEN_FRAME_LEN)
        .await
        .unwrap();
    let lookup = CacheCall::Lookup {
        shard,
        material,
        wait_ms: 0,
        lease_ms: 60_000,
    };
    write_frame(&mut send, &lookup, 2 << 20).await.unwrap();
    loop {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            read_frame::<_, CacheReply>(&mut recv, MAX_RESPONSE_FRAME_LEN),
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
        match reply {
            CacheReply::Looking => continue,
            CacheReply::Lead => {
                let fill = CacheCall::Fill {
                    answer: Answer {
                        output: Output::Embeddings(vec![vec![42.0]]),
                        input_tokens: 1,
                        output_tokens: 1,
                    },
                    ttl_ms: 30 * 86_400_000,
                };
                write_frame(&mut send, &fill, MAX_RESPONSE_FRAME_LEN)
                    .await
                    .unwrap();
                let _ = send.finish();
                return CacheReply::Lead;
            }
            other => return other,
        }
    }
}

/// Issue 19, point 5: a member could fill any account's key at an honest shard with its own
/// answer (served as a HIT anywhere), read its entries, and label them with any account.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_cannot_fill_or_read_another_accounts_cache_entries() {
    use ganglion::cache::key::{CacheSecret, key_of};
    use ganglion::peer::cache::CacheReply;
    ensure_models();
    let cluster = Cluster::new("cache-poison");
    let a = cluster.start("a", &[], &["--host", MINILM, KEYS_REQUIRED, WITH_CACHE]);
    let b = cluster.start("b", &[a.quic], &[KEYS_REQUIRED, WITH_CACHE]);
    b.sees_serving("a", MINILM).await;
    sees_shards(&b, 4).await;
    let acme_key = cluster.issue_key("acme", &[]);

    // The rogue knows acme's name and the request, not acme's API key.
    let mut request = ganglion_client::protocol::Request::new(
        MINILM,
        ganglion_client::protocol::Input::Embed(vec!["hello".into()]),
    );
    request.cache = keyed("greeting");
    let forged = key_of("acme", &CacheSecret::of_api_key("gnk1.guess"), &request, 0)
        .unwrap()
        .material;
    let endpoint = raw_quic::member(&ganglion::Identity::load(&cluster.identity("m")).unwrap());
    let mut forged_fills = 0;
    for node in [&a, &b] {
        let connection = endpoint
            .connect(node.quic, ganglion::credentials::NODE_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        for shard in 0..2 {
            match rogue_lookup(&connection, shard, forged.clone()).await {
                CacheReply::Lead => forged_fills += 1,
                CacheReply::Hit { .. } => panic!("nothing was stored yet"),
                _ => {}
            }
        }
        // Junk material names no owner: no flight is led for it.
        assert!(matches!(
            rogue_lookup(&connection, 0, b"junk".to_vec()).await,
            CacheReply::Busy
        ));
    }

    // acme's own request misses the forged entries and gets a real vector, then hits it.
    let acme = cluster.keyed_client(&b, Some(&acme_key)).await;
    let embed = || EmbedRequest::new(MINILM, vec!["hello".into()]).cache(keyed("greeting"));
    let first = acme.embed_request(embed()).await.unwrap();
    assert_eq!(first.cache.status, CacheStatus::Miss);
    let Output::Embeddings(vectors) = &first.output else {
        panic!("{:?}", first.output)
    };
    assert_eq!(vectors[0].len(), 384, "a real vector, not the member's");
    let second = acme.embed_request(embed()).await.unwrap();
    assert_eq!(second.cache.status, CacheStatus::Hit);
    assert_eq!(second.output, first.output);

    // Asked again, the forged material reads nothing of acme's.
    for node in [&a, &b] {
        let connection = endpoint
            .connect(node.quic, ganglion::credentials::NODE_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        for shard in 0..2 {
            if let CacheReply::Hit { answer, .. } =
                rogue_lookup(&connection, shard, forged.clone()).await
            {
                assert_ne!(answer.output, first.output, "the member read acme's entry");
            }
        }
    }

    // Every entry carries the account its material names: the member's own label does not
    // exist, and purging acme removes the forged entries with acme's.
    let purged = |account: &'static str| {
        let (a, b) = (&a, &b);
        async move {
            let path = format!("/admin/cache?account={account}");
            a.delete(&path).await["purged"].as_u64().unwrap()
                + b.delete(&path).await["purged"].as_u64().unwrap()
        }
    };
    assert_eq!(purged("m").await, 0);
    assert_eq!(purged("acme").await, forged_fills + 1);
}
