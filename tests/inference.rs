//! Real models on real nodes: SmolLM2 through llama.cpp (the default on CPU) and through
//! mistralrs, all-MiniLM-L6-v2 through candle, reached through the client crate over QUIC.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::time::Duration;

use futures::StreamExt;
use ganglion_client::protocol::{ErrorCode, MAX_EMBED_BATCH, MAX_PROMPT_BYTES, Output};
use ganglion_client::{GenerateRequest, StreamEvent};
use ganglion_testkit::{
    Cluster, MINILM, SMOLLM2, ensure_models, eventually, running_generation, system_prompt,
};

const CAPITAL: &str = "What is the capital of France? Answer in one sentence.";

#[tokio::test(flavor = "multi_thread")]
async fn generation_on_llama_cpp_is_real_reproducible_and_streams() {
    generation_is_real_reproducible_and_streams("llama.cpp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn generation_on_mistralrs_is_real_reproducible_and_streams() {
    generation_is_real_reproducible_and_streams("mistralrs").await;
}

async fn generation_is_real_reproducible_and_streams(engine: &str) {
    ensure_models();
    let cluster = Cluster::new(&format!("generate-{engine}"));
    let node = cluster.start("edge", &[], &["--host", SMOLLM2, "--text-engine", engine]);
    let client = cluster.client(&node).await;
    let operator_set = ["GOMP_SPINCOUNT", "OMP_WAIT_POLICY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !operator_set {
        // The node runs llama.cpp's OpenMP threads with a short spin (node/src/openmp.rs).
        let environ = std::fs::read(format!("/proc/{}/environ", node.child.id())).unwrap();
        assert!(
            environ
                .split(|b| *b == 0)
                .any(|v| v == b"GOMP_SPINCOUNT=1000")
        );
    }

    let first = client
        .generate(GenerateRequest::new(SMOLLM2, CAPITAL).max_tokens(24))
        .await
        .unwrap();
    assert!(
        first.text.contains("Paris"),
        "implausible answer: {:?}",
        first.text
    );
    assert!(first.response.usage.input_tokens > 5 && first.response.usage.output_tokens > 0);
    assert_eq!(first.response.route.executed_by, "edge");
    assert!(first.response.timings.first_token_ms.is_some());

    // Greedy by default: the same request gives the same text.
    let second = client
        .generate(GenerateRequest::new(SMOLLM2, CAPITAL).max_tokens(24))
        .await
        .unwrap();
    assert_eq!(first.text, second.text);

    // The deltas of a stream join to the final text.
    let mut stream = client
        .generate_stream(GenerateRequest::new(SMOLLM2, CAPITAL).max_tokens(24))
        .await
        .unwrap();
    let (mut joined, mut deltas, mut last) = (String::new(), 0, None);
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta(text) => {
                joined.push_str(&text);
                deltas += 1;
            }
            StreamEvent::Final(response) => last = Some(response),
        }
    }
    let last = last.expect("a final response");
    let Output::Text { text, .. } = &last.output else {
        panic!("not text")
    };
    assert!(deltas > 1, "the answer came in one piece");
    assert_eq!(&joined, text);
    assert_eq!(text, &first.text);

    // Sampling with a seed is reproducible too.
    let seeded = || {
        GenerateRequest::new(SMOLLM2, "Write a word.")
            .max_tokens(12)
            .temperature(0.9)
            .seed(42)
    };
    let a = client.generate(seeded()).await.unwrap();
    let b = client.generate(seeded()).await.unwrap();
    assert_eq!(a.text, b.text);

    // A stop string ends the answer before it.
    let stopped = client
        .generate(
            GenerateRequest::new(SMOLLM2, CAPITAL)
                .max_tokens(24)
                .stop(vec!["Paris".into()]),
        )
        .await
        .unwrap();
    assert!(
        !stopped.text.contains("Paris") && first.text.starts_with(&stopped.text),
        "{:?} against {:?}",
        stopped.text,
        first.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn llama_cpp_batches_concurrent_requests_of_different_lengths() {
    ensure_models();
    let cluster = Cluster::new("batching");
    let node = cluster.start("edge", &[], &["--host", SMOLLM2]);
    let slots = node.model_status(SMOLLM2).await["stats"]["concurrency"]
        .as_u64()
        .unwrap();
    assert!(slots >= 2, "slots follow the cores: {slots}");
    let client = &cluster.client(&node).await;
    let node = &node;
    // Long stories keep their sequences running while short questions come and go.
    let stories = (0..2).map(|i| async move {
        let prompt = format!("Tell story number {i} about a lighthouse.");
        let story = client
            .generate(GenerateRequest::new(SMOLLM2, prompt).max_tokens(160))
            .await
            .unwrap();
        (story, std::time::Instant::now())
    });
    let running = || async { node.model_status(SMOLLM2).await["stats"]["in_flight"].as_u64() };
    let questions = (0..4).map(|_| async move {
        // Asked once both stories run side by side.
        eventually(Duration::from_secs(30), "both stories run", || async {
            (running().await? >= 2).then_some(())
        })
        .await;
        let answer = client
            .generate(GenerateRequest::new(SMOLLM2, CAPITAL).max_tokens(24))
            .await
            .unwrap();
        (answer, std::time::Instant::now())
    });
    let (stories, answers) = tokio::join!(
        futures::future::join_all(stories),
        futures::future::join_all(questions)
    );
    // With slots to spare, questions asked while the stories ran were answered before either
    // story ended: they were batched beside them, not queued behind them.
    let first_story_end = stories.iter().map(|(_, at)| *at).min().unwrap();
    let first_answer = answers.iter().map(|(_, at)| *at).min().unwrap();
    if slots > 2 {
        assert!(
            first_answer < first_story_end,
            "a question waited for a story"
        );
    }
    let stories: Vec<_> = stories.into_iter().map(|(story, _)| story).collect();
    let answers: Vec<_> = answers.into_iter().map(|(answer, _)| answer).collect();
    for story in &stories {
        assert!(story.response.usage.output_tokens > 40, "{:?}", story.text);
    }
    // Each sequence reads only its own cache: the questions still get the fact right.
    for answer in &answers {
        assert!(answer.text.contains("Paris"), "{:?}", answer.text);
    }
    let stats = &node.model_status(SMOLLM2).await["stats"];
    assert_eq!(stats["completed"], 6);
    assert_eq!(stats["in_flight"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_prompt_is_read_once_per_account_and_answers_as_without_reuse() {
    use ganglion_client::protocol::{CachePolicy, ChatMessage, Role};
    ensure_models();
    let cluster = Cluster::new("prefix-reuse");
    let node = cluster.start("edge", &[], &["--host", SMOLLM2]);
    let alice = cluster
        .keyed_client(&node, Some(&cluster.issue_key("alice", &[])))
        .await;
    let bob = cluster
        .keyed_client(&node, Some(&cluster.issue_key("bob", &[])))
        .await;
    let system = system_prompt("Desk", 8);
    let ask = |question: &str| {
        let mut request = GenerateRequest::new(SMOLLM2, question).max_tokens(16);
        request.messages.insert(
            0,
            ChatMessage {
                role: Role::System,
                content: system.clone(),
            },
        );
        // The model runs every time: no stored answer stands in for it.
        request.cache(CachePolicy {
            skip: true,
            ..CachePolicy::default()
        })
    };
    let first = alice
        .generate(ask("Where do I collect a parcel?"))
        .await
        .unwrap();
    let usage = first.response.usage;
    assert!(usage.input_tokens > 300, "{usage:?}");
    assert_eq!(usage.cached_input_tokens, 0, "{usage:?}");

    // Alice again, another question: the system prompt is not read again.
    let question = "When does the office open?";
    let second = alice.generate(ask(question)).await.unwrap();
    let reused = second.response.usage;
    let read = reused.input_tokens - reused.cached_input_tokens;
    assert!(
        reused.cached_input_tokens > 300 && read < 30,
        "only the new tokens are read: {reused:?}"
    );

    // Bob, the same request: Alice's prompts do nothing for him (he reads it all), and the
    // answer is the one Alice got from reused cells.
    let bobs = bob.generate(ask(question)).await.unwrap();
    assert_eq!(bobs.response.usage.cached_input_tokens, 0);
    assert_eq!(bobs.response.usage.input_tokens, reused.input_tokens);
    assert_eq!(bobs.text, second.text);
    assert!(!second.text.is_empty());

    // Keyless requests are anybody's: one never reuses another's prompt.
    let anyone = cluster.client(&node).await;
    for _ in 0..2 {
        let keyless = anyone.generate(ask(question)).await.unwrap();
        assert_eq!(keyless.response.usage.cached_input_tokens, 0);
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// MiniLM runs on llama.cpp, converted to GGUF at load; candle, which reads the model as
/// shipped, is the reference: the same vectors within float error, for the same tokens.
#[test]
fn embeddings_on_llama_cpp_match_candle() {
    use ganglion::inference::{embeddings, llama_embeddings};
    ensure_models();
    let (catalog, store) = ganglion::config::ModelsSection::default()
        .catalog_and_store()
        .unwrap();
    let dir = store.locate(catalog.get(MINILM).unwrap()).unwrap();
    let llama = llama_embeddings::LlamaEmbedder::load(&dir, 256, 2).unwrap();
    let candle = embeddings::Embedder::load(&dir, 256).unwrap();
    // Accents, punctuation, a single letter, and a text long enough to be cut at 256 tokens;
    // 40 texts, so that the batch spans several encodes.
    let mut texts: Vec<String> = [
        "The cat sits on the mat.",
        "Edge inference, naïvely: ÉTÉ à Paris!",
        "a",
        &"word ".repeat(400),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.extend((0..36).map(|i| format!("Sentence number {i} about edge inference.")));
    let (ours, tokens) = llama.embed(&texts).unwrap();
    let (reference, reference_tokens) = candle.embed(&texts).unwrap();
    assert_eq!(tokens, reference_tokens);
    assert_eq!(ours.len(), texts.len());
    for ((a, b), text) in ours.iter().zip(&reference).zip(&texts) {
        let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        assert!(cosine > 0.9999, "{cosine} for {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_are_unit_vectors_and_similar_sentences_are_closer() {
    ensure_models();
    let cluster = Cluster::new("embed");
    let node = cluster.start("edge", &[], &["--host", MINILM]);
    let client = cluster.client(&node).await;
    let texts = vec![
        "A cat sits on the mat.".to_owned(),
        "A kitten is lying on a rug.".to_owned(),
        "Quarterly revenue grew by eight percent.".to_owned(),
    ];
    let vectors = client.embed(MINILM, texts).await.unwrap();
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
    let similar = cosine(&vectors[0], &vectors[1]);
    let unrelated = cosine(&vectors[0], &vectors[2]);
    assert!(
        similar > unrelated + 0.3,
        "similar {similar} vs unrelated {unrelated}"
    );

    // A batch gives the same vectors as one at a time (padding does not leak into the mean).
    let alone = client
        .embed(MINILM, vec!["A cat sits on the mat.".to_owned()])
        .await
        .unwrap();
    assert!(cosine(&alone[0], &vectors[0]) > 0.9999);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_typed_errors_and_the_node_keeps_serving() {
    ensure_models();
    let cluster = Cluster::new("errors");
    let node = cluster.start(
        "edge",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--host",
            MINILM,
            "--model-concurrency",
            "1",
            "--model-queue",
            "1",
        ],
    );
    let client = cluster.client(&node).await;
    fn code<T: std::fmt::Debug>(r: Result<T, ganglion_client::ClientError>) -> Option<ErrorCode> {
        r.unwrap_err().code()
    }

    assert_eq!(
        code(
            client
                .generate(GenerateRequest::new("@nope/none", "hi"))
                .await
        ),
        Some(ErrorCode::UnknownModel)
    );
    let huge = "x".repeat(MAX_PROMPT_BYTES + 1);
    assert_eq!(
        code(client.generate(GenerateRequest::new(SMOLLM2, huge)).await),
        Some(ErrorCode::TooLarge)
    );
    assert_eq!(
        code(
            client
                .generate(GenerateRequest::new(SMOLLM2, "hi").max_tokens(100_000))
                .await
        ),
        Some(ErrorCode::TooLarge)
    );
    let many = vec!["a".to_owned(); MAX_EMBED_BATCH + 1];
    assert_eq!(
        code(client.embed(MINILM, many).await),
        Some(ErrorCode::TooLarge)
    );
    assert_eq!(
        code(client.generate(GenerateRequest::new(MINILM, "hi")).await),
        Some(ErrorCode::InvalidInput)
    );
    assert_eq!(
        code(client.embed(SMOLLM2, vec!["hi".into()]).await),
        Some(ErrorCode::InvalidInput)
    );

    // One running, one queued: the third is refused as overloaded.
    let long = || {
        GenerateRequest::new(SMOLLM2, "Tell me a very long story about the sea.").max_tokens(400)
    };
    let running = running_generation(&client, 400).await;
    let queued = client.generate_stream(long()).await.unwrap();
    eventually(Duration::from_secs(10), "second request queued", || async {
        (node.model_status(SMOLLM2).await["stats"]["queued"] == 1).then_some(())
    })
    .await;
    let err = client.generate(long()).await.map(|_| ()).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Overloaded), "{err}");
    assert!(err.to_string().contains("capacity"), "{err}");
    drop(running);
    drop(queued);

    // Still serving, with both slots free again.
    eventually(Duration::from_secs(20), "slots freed", || async {
        let stats = &node.model_status(SMOLLM2).await["stats"];
        (stats["in_flight"] == 0 && stats["queued"] == 0).then_some(())
    })
    .await;
    let answer = client
        .generate(GenerateRequest::new(SMOLLM2, CAPITAL).max_tokens(16))
        .await
        .unwrap();
    assert!(!answer.text.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_mid_generation_frees_the_slot() {
    ensure_models();
    let cluster = Cluster::new("disconnect");
    let node = cluster.start(
        "edge",
        &[],
        &["--host", SMOLLM2, "--model-concurrency", "1"],
    );
    let client = cluster.client(&node).await;
    let stream = running_generation(&client, 1500).await;
    assert_eq!(node.model_status(SMOLLM2).await["stats"]["in_flight"], 1);
    client.close().await;
    drop(stream);

    eventually(Duration::from_secs(10), "the slot is freed", || async {
        let stats = &node.model_status(SMOLLM2).await["stats"];
        (stats["in_flight"] == 0 && stats["failed"] == 1).then_some(())
    })
    .await;
    let client = cluster.client(&node).await;
    let answer = client
        .generate(GenerateRequest::new(SMOLLM2, CAPITAL).max_tokens(16))
        .await
        .unwrap();
    assert!(!answer.text.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_too_little_memory_does_not_host_the_model_and_says_why() {
    ensure_models();
    let cluster = Cluster::new("memory");
    let small = cluster.start(
        "small",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--host",
            MINILM,
            "--memory-limit",
            "200MiB",
        ],
    );
    let status = small.model_status(SMOLLM2).await;
    assert_eq!(status["hosted"], false);
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("needs 400 MiB") && reason.contains("--memory-limit"),
        "{reason}"
    );
    assert_eq!(small.model_status(MINILM).await["hosted"], true);

    // Its peers see what it hosts, and a client asking it for the LLM is told why not.
    let big = cluster.start("big", &[small.quic], &["--host", SMOLLM2]);
    eventually(
        Duration::from_secs(10),
        "adverts carry hosted models",
        || async {
            let peers = big.json("/admin/peers").await;
            let small_view = peers
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "small")
                .cloned();
            small_view
                .filter(|p| {
                    p["models"] == serde_json::json!([MINILM])
                        && p["hardware"]["cores"].as_u64() > Some(0)
                })
                .map(|_| ())
        },
    )
    .await;
    let client = cluster.client(&small).await;
    eventually(Duration::from_secs(5), "catalog lists the host", || async {
        let models = client.list_models().await.unwrap();
        let llm = models.iter().find(|m| m.id == SMOLLM2).unwrap();
        (llm.hosted_by == vec!["big".to_owned()] && llm.task == "text-generation").then_some(())
    })
    .await;
    // Asked for the LLM, the small node hands the request to the node that can run it.
    let answer = client
        .generate(GenerateRequest::new(SMOLLM2, CAPITAL).max_tokens(16))
        .await
        .unwrap();
    assert_eq!(answer.response.route.executed_by, "big");
    assert_eq!(answer.response.route.entry, "small");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prepared_q8_0_model_answers_like_the_original_q4_1() {
    ensure_models();
    let cluster = Cluster::new("requantized");
    let store = std::env::var("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".cache/ganglion/models"))
        .unwrap();
    let original = store.join("ganglion--smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let prepared = store.join("ganglion--smollm2-135m-instruct/SmolLM2-135M-Instruct.Q8_0.gguf");
    assert!(prepared.exists(), "models pull prepares a Q8_0 copy");
    let config = cluster.dir.join("original.toml");
    std::fs::write(
        &config,
        format!(
            "[[models.local]]\nid = \"@test/smollm2-q4_1\"\ntask = \"text-generation\"\npath = {:?}\nmemory = \"400MiB\"\n",
            original.display().to_string()
        ),
    )
    .unwrap();
    let node = cluster.start(
        "edge",
        &[],
        &[
            "--config",
            config.to_str().unwrap(),
            "--host",
            SMOLLM2,
            "--host",
            "@test/smollm2-q4_1",
        ],
    );
    let client = cluster.client(&node).await;
    // Each answer must carry the fact the original gets right, in both quantizations.
    for (prompt, fact) in [
        (CAPITAL, "paris"),
        ("What is 2 + 2?", "4"),
        ("Name three colors.", "red"),
    ] {
        let q8 = client
            .generate(GenerateRequest::new(SMOLLM2, prompt).max_tokens(24))
            .await
            .unwrap()
            .text;
        let q4 = client
            .generate(GenerateRequest::new("@test/smollm2-q4_1", prompt).max_tokens(24))
            .await
            .unwrap()
            .text;
        assert!(
            q4.to_lowercase().contains(fact),
            "reference Q4_1 answer {q4:?} lacks {fact:?}"
        );
        assert!(
            q8.to_lowercase().contains(fact),
            "Q8_0 answer {q8:?} lacks {fact:?} (Q4_1 said {q4:?})"
        );
    }
    let q8 = client
        .generate(GenerateRequest::new(SMOLLM2, CAPITAL).max_tokens(24))
        .await
        .unwrap()
        .text;
    assert!(q8.contains("Paris"), "{q8}");
}
