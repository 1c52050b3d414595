//! Run with: cargo bench --workspace --profile dev --bench inference
//! (models must be pulled first: `ganglion-node models pull`)
//!
//! SmolLM2-135M generation and prompt throughput in-process through mistralrs, then the same
//! requests through the client crate and a node over QUIC (loopback): the ratio is the mesh's
//! overhead. Then all-MiniLM-L6-v2 embedding latency for one sentence and a batch of 32, both
//! ways.

use std::time::{Duration, Instant};

use futures::StreamExt;
use ganglion::inference::{self, Backend};
use ganglion::models::catalog::{MINILM, SMOLLM2};
use ganglion::models::{Catalog, ModelStore};
use ganglion_client::protocol::{ChatMessage, Parameters, ResponseFrame, Role};
use ganglion_client::{Client, GenerateRequest, StreamEvent};

const PROMPT: &str = "Write a short story about a lighthouse keeper who finds a message in a bottle. \
    Describe the sea, the weather, the message and what the keeper decides to do.";
const MAX_TOKENS: u32 = 128;
const RUNS: usize = 3;

/// Tokens per second of one generation: prompt (input tokens over time to first token) and
/// generation (further tokens over the time after the first).
#[derive(Debug, Clone, Copy)]
struct Speed {
    prompt: f64,
    generation: f64,
}

fn speed(input: u32, output: u32, start: Instant, first: Instant, end: Instant) -> Speed {
    Speed {
        prompt: f64::from(input) / (first - start).as_secs_f64(),
        generation: f64::from(output.saturating_sub(1)) / (end - first).as_secs_f64(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let catalog = Catalog::builtin();
    let store = ModelStore::new(ModelStore::default_root().expect("HOME"));
    let llm = catalog.get(SMOLLM2).expect("catalog");
    let embedder_spec = catalog.get(MINILM).expect("catalog");

    // In-process, straight through the engine a node on this machine uses.
    let hardware = ganglion::hardware::Hardware::detect(None);
    let engine = ganglion::config::engines::TextEngine::for_hardware(&hardware);
    let plan = inference::plan(
        llm,
        &store,
        Some(1),
        engine,
        &hardware,
        hardware.memory_budget(),
    )
    .expect("SmolLM2 in the store (run `ganglion-node models pull`)");
    let local = match inference::load(&plan)
        .await
        .expect("load SmolLM2 (run `ganglion-node models pull`)")
        .backend
    {
        Backend::Text(generator) => generator,
        _ => unreachable!("SmolLM2 is a text model"),
    };
    let messages = vec![ChatMessage {
        role: Role::User,
        content: PROMPT.into(),
    }];
    let parameters = Parameters {
        max_tokens: Some(MAX_TOKENS),
        ..Default::default()
    };
    let mut in_process = Vec::new();
    for _ in 0..RUNS {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ResponseFrame>(256);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let start = Instant::now();
        let done = local
            .generate(
                ganglion::inference::Chat {
                    messages: &messages,
                    parameters: &parameters,
                    max_tokens: MAX_TOKENS,
                    // Each run in a scope of its own: none reuses another's prompt.
                    scope: in_process.len() as u64,
                    resume: None,
                },
                Instant::now() + Duration::from_secs(600),
                &tx,
                &std::sync::atomic::AtomicU32::new(0),
            )
            .await
            .expect("generate");
        let end = Instant::now();
        drop(tx);
        let _ = drain.await;
        in_process.push(speed(
            done.usage.input_tokens,
            done.usage.output_tokens,
            start,
            done.first_token_at.expect("tokens"),
            end,
        ));
    }
    drop(local);

    // Through a node and the client.
    let secrets = ganglion::ClusterSecrets::generate().expect("ca");
    let data = std::env::temp_dir().join(format!("ganglion-bench-{}", std::process::id()));
    let node = ganglion::node::start(bench_config(&secrets, &data, &store))
        .await
        .expect("node");
    let client = Client::builder()
        .node(node.info.addresses.quic)
        .ca_pem(secrets.ca_cert_pem.as_bytes())
        .expect("ca")
        .connect()
        .await
        .expect("connect");
    let mut through_mesh = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut first = None;
        let mut stream = client
            .generate_stream(GenerateRequest::new(SMOLLM2, PROMPT).max_tokens(MAX_TOKENS))
            .await
            .expect("stream");
        let mut usage = None;
        while let Some(event) = stream.next().await {
            match event.expect("event") {
                StreamEvent::Delta(_) => {
                    first.get_or_insert_with(Instant::now);
                }
                StreamEvent::Final(response) => usage = Some(response.usage),
            }
        }
        let end = Instant::now();
        let usage = usage.expect("final");
        through_mesh.push(speed(
            usage.input_tokens,
            usage.output_tokens,
            start,
            first.expect("tokens"),
            end,
        ));
    }

    let report = |label: &str, runs: &[Speed]| {
        let (p, g) = (
            median(runs.iter().map(|s| s.prompt).collect()),
            median(runs.iter().map(|s| s.generation).collect()),
        );
        println!(
            "{label:<34} prompt {p:>6.1} tok/s   generation {g:>6.1} tok/s   (median of {RUNS})"
        );
        (p, g)
    };
    let (lp, lg) = report("SmolLM2 in-process (its engine)", &in_process);
    let (mp, mg) = report("SmolLM2 via client + node (QUIC)", &through_mesh);
    println!(
        "mesh / in-process: prompt {:.3}, generation {:.3}",
        mp / lp,
        mg / lg
    );

    // Embeddings.
    let plan = inference::plan(embedder_spec, &store, Some(1), engine, &hardware, 0)
        .expect("MiniLM in the store");
    let backend = inference::load(&plan).await.expect("load MiniLM").backend;
    let embedder_engine = backend.engine().to_owned();
    let embedder = match backend {
        Backend::Embed(e) => e,
        _ => unreachable!("MiniLM is an embedding model"),
    };
    // candle, which the node used before llama.cpp, as the reference.
    let candle = inference::embeddings::Embedder::load(
        &store.locate(embedder_spec).expect("MiniLM in the store"),
        embedder_spec.context_tokens as usize,
    )
    .expect("load MiniLM on candle");
    let one = vec!["The quick brown fox jumps over the lazy dog.".to_owned()];
    let batch: Vec<String> = (0..32)
        .map(|i| {
            format!(
                "Sentence number {i} talks about topic {} in a few words.",
                i % 7
            )
        })
        .collect();
    for (label, texts) in [("1 sentence", &one), ("batch of 32", &batch)] {
        let mut local = Vec::new();
        let mut remote = Vec::new();
        let mut reference = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            embedder.embed(texts).expect("embed");
            local.push(t.elapsed());
            let t = Instant::now();
            candle.embed(texts).expect("embed");
            reference.push(t.elapsed());
            let t = Instant::now();
            client.embed(MINILM, texts.clone()).await.expect("embed");
            remote.push(t.elapsed());
        }
        let ms =
            |v: Vec<Duration>| median(v.into_iter().map(|d| d.as_secs_f64() * 1000.0).collect());
        println!(
            "MiniLM {label:<12} in-process {:>7.2} ms ({})   via client + node {:>7.2} ms   candle in-process {:>7.2} ms   (median of 10)",
            ms(local),
            embedder_engine,
            ms(remote),
            ms(reference)
        );
    }
    client.close().await;
    let _ = std::fs::remove_dir_all(&data);
}

fn bench_config(
    secrets: &ganglion::ClusterSecrets,
    data: &std::path::Path,
    store: &ModelStore,
) -> ganglion::Config {
    ganglion::Config {
        identity: secrets.identity("bench").expect("identity"),
        data_dir: data.to_owned(),
        io_threads: ganglion::config::DEFAULT_IO_THREADS,
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertise: None,
        region: "default".into(),
        seeds: Vec::new(),
        liveness_timeout: Duration::from_secs(5),
        cluster_tcp_listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        admin_token: Some("bench-token-0123456789".into()),
        catalog: Catalog::builtin(),
        models_dir: store.root().to_owned(),
        host: vec![SMOLLM2.into(), MINILM.into()],
        memory_limit: None,
        model_concurrency: Some(1),
        model_queue_depth: Some(16),
        text_engine: None,
        // This bench starts its node inside its own process, which has no worker mode.
        engines: ganglion::config::engines::Placement::InProcess,
        park_prompts: true,
        request_limits: ganglion::config::requests::Limits {
            default_deadline: Duration::from_secs(600),
            max_deadline: Duration::from_secs(600),
            prefix_affinity: true,
        },
        connection_limits: ganglion::config::clients::ConnectionSettings {
            max_total: 64,
            max_per_address: 64,
            remote_clients: false,
        },
        fault_injection: false,
        allow_anonymous: true,
        // Every run must reach the model.
        cache: ganglion::config::CacheSettings {
            shards: 0,
            bytes: 0,
            near_bytes: 0,
            default_ttl: Duration::from_secs(300),
        },
        http: None,
        metrics_open: false,
    }
}
