//! The HTTP front door against a real node and real models: the OpenAI-compatible `/v1` API
//! (whole and streamed), the Workers-AI-style `/ai/run`, cache and route headers, every error
//! status, a client that disconnects mid-stream, and the door's own rules (the loopback
//! promise, JSON only as JSON, loopback `Host`s, keyless connections closed and capped).

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use ganglion_client::protocol::{
    ClientRequest, ErrorCode, MAX_REQUEST_FRAME_LEN, MAX_RESPONSE_FRAME_LEN, ResponseFrame,
};
use ganglion_testkit::{
    self as harness, Cluster, KEYS_REQUIRED, MINILM, SMOLLM2, WITH_CACHE, ensure_models,
    eventually, raw_quic,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Http {
    base: String,
    key: Option<String>,
    client: reqwest::Client,
}

impl Http {
    fn new(node: &harness::Node, key: Option<&str>) -> Self {
        Self {
            base: format!("http://{}", node.http.expect("--http")),
            key: key.map(str::to_owned),
            client: reqwest::Client::new(),
        }
    }

    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .timeout(Duration::from_secs(120));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        request
    }

    async fn call(&self, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self.post(path, body).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

/// The `data:` payloads of a server-sent-events body, in order (comments skipped).
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .flat_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(str::trim_start))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_api_answers_whole_and_streamed_with_cache_headers() {
    ensure_models();
    let cluster = Cluster::new("http-openai");
    let a = cluster.start(
        "a",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--host",
            MINILM,
            "--http",
            "127.0.0.1:0",
            KEYS_REQUIRED,
            WITH_CACHE,
        ],
    );
    let key = cluster.issue_key("acme", &["--plan", "paid"]);
    let http = Http::new(&a, Some(&key));
    let chat = json!({
        "model": SMOLLM2,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 8,
        "some_future_field": {"ignored": true},
    });

    // Whole: a miss, then the same body is a hit with the same text, free.
    let (status, headers, miss) = http.call("/v1/chat/completions", &chat).await;
    assert_eq!(status, 200, "{miss}");
    assert_eq!(miss["object"], "chat.completion");
    assert_eq!(miss["model"], SMOLLM2);
    let content = miss["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.is_empty());
    assert_eq!(miss["choices"][0]["message"]["role"], "assistant");
    assert!(miss["choices"][0]["logprobs"].is_null());
    let usage = &miss["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(header(&headers, "ganglion-cache-status"), "MISS");
    assert_eq!(header(&headers, "cf-aig-cache-status"), "MISS");
    assert_eq!(header(&headers, "ganglion-executed-by"), "a");
    assert_eq!(header(&headers, "ganglion-neurons"), "3");
    assert_eq!(header(&headers, "x-request-id").len(), 32);
    let (_, headers, hit) = http.call("/v1/chat/completions", &chat).await;
    assert_eq!(header(&headers, "ganglion-cache-status"), "HIT");
    assert_eq!(header(&headers, "ganglion-neurons"), "0");
    assert_eq!(hit["choices"][0]["message"]["content"], content);

    // Streamed, with usage, skipping the cache through AI Gateway's header.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = http
        .post("/v1/chat/completions", &streamed)
        .header("cf-aig-skip-cache", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "cf-aig-cache-status"), "BYPASS");
    assert!(header(response.headers(), "content-type").starts_with("text/event-stream"));
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
        && c["id"] == chunks[0]["id"]
        && c["created"] == chunks[0]["created"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, content, "greedy: the same text streamed");
    let (usage_chunk, choice_chunks) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let finishes: Vec<&Value> = choice_chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes.len(), 1, "only the last choice chunk finishes");
    assert!(!choice_chunks.last().unwrap()["choices"][0]["finish_reason"].is_null());

    // Text completions.
    let (status, _, completion) = http
        .call(
            "/v1/completions",
            &json!({"model": SMOLLM2, "prompt": "Say hi.", "max_tokens": 4}),
        )
        .await;
    assert_eq!(status, 200, "{completion}");
    assert_eq!(completion["object"], "text_completion");
    assert!(completion["choices"][0]["text"].is_string());

    // Embeddings, as floats and as base64 of little-endian f32.
    let input = json!({"model": MINILM, "input": ["edge inference", "inference at the edge"]});
    let (status, _, floats) = http.call("/v1/embeddings", &input).await;
    assert_eq!(status, 200, "{floats}");
    assert_eq!(floats["data"].as_array().unwrap().len(), 2);
    let first: Vec<f32> = floats["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(first.len(), 384);
    let mut b64 = input.clone();
    b64["encoding_format"] = json!("base64");
    let (_, _, encoded) = http.call("/v1/embeddings", &b64).await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, first);

    // Models, including ids with `@` and `/`.
    let (status, models) = http.get("/v1/models").await;
    assert_eq!(status, 200);
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == SMOLLM2)
    );
    let (status, model) = http.get(&format!("/v1/models/{SMOLLM2}")).await;
    assert_eq!((status, model["id"].as_str()), (200, Some(SMOLLM2)));
    let (status, missing) = http.get("/v1/models/@nobody/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "model_not_found");
    let (status, _) = Http::new(&a, None).get("/v1/models").await;
    assert_eq!(status, 401, "listings need a key");

    // /metrics parses as Prometheus text, and its counters move with requests.
    assert_eq!(
        a.get("/metrics", None).await.status(),
        401,
        "behind the admin token"
    );
    let scrape = || async {
        let text = a
            .get("/metrics", Some(harness::TOKEN))
            .await
            .text()
            .await
            .unwrap();
        metric_values(&text)
    };
    let before = scrape().await;
    let served = |m: &std::collections::HashMap<String, f64>| {
        m.get(&format!(
            "ganglion_requests_total{{model=\"{SMOLLM2}\",outcome=\"ok\",route=\"local\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    assert!(served(&before) >= 2.0, "{before:?}");
    assert!(before["ganglion_cache_requests_total{status=\"HIT\"}"] >= 1.0);
    assert!(before["ganglion_cache_bytes"] > 0.0);
    assert!(before.contains_key(&format!("ganglion_model_in_flight{{model=\"{SMOLLM2}\"}}")));
    let (status, _, _) = http
        .call(
            "/v1/completions",
            &json!({"model": SMOLLM2, "prompt": "Count to three.", "max_tokens": 6}),
        )
        .await;
    assert_eq!(status, 200);
    let after = scrape().await;
    assert_eq!(served(&after), served(&before) + 1.0);
    let out = |m: &std::collections::HashMap<String, f64>| {
        m[&format!("ganglion_tokens_total{{model=\"{SMOLLM2}\",direction=\"out\"}}")]
    };
    assert!(out(&after) > out(&before));
}

/// Every sample of an OpenMetrics text by its name and labels; panics on a line that is not a
/// comment or a `name{labels} value` sample, or without the closing `# EOF`.
fn metric_values(text: &str) -> std::collections::HashMap<String, f64> {
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            (
                series.to_owned(),
                value.parse::<f64>().unwrap_or_else(|_| panic!("{line}")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_get_the_statuses_the_sdks_map_and_workers_ai_gets_its_envelope() {
    ensure_models();
    let cluster = Cluster::new("http-errors");
    let a = cluster.start(
        "a",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--host",
            MINILM,
            "--http",
            "127.0.0.1:0",
            KEYS_REQUIRED,
        ],
    );
    let key = cluster.issue_key("acme", &["--plan", "paid"]);
    let http = Http::new(&a, Some(&key));
    let keyless = Http::new(&a, None);
    let tight = Http::new(
        &a,
        Some(&cluster.issue_key("tight", &["--daily-limit", "3"])),
    );
    let chat = |extra: Value| {
        let mut body = json!({"model": SMOLLM2, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let expect =
        |(status, _, body): (u16, reqwest::header::HeaderMap, Value), want: u16, code: &str| {
            assert_eq!(status, want, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
            assert!(body["error"]["message"].is_string());
        };
    expect(
        keyless.call("/v1/chat/completions", &chat(json!({}))).await,
        401,
        "invalid_api_key",
    );
    // A key past its expiry, and a revoked one, are refused as no key at all.
    let expired = Http::new(&a, Some(&cluster.issue_key("acme", &["--expires", "1s"])));
    let revoked_key = cluster.issue_key("acme", &[]);
    harness::succeed(std::process::Command::new(harness::binary()).args([
        "revoke-key",
        "--admin",
        &a.admin.to_string(),
        "--admin-token",
        harness::TOKEN,
        &revoked_key,
    ]));
    eventually(Duration::from_secs(5), "the key expires", || async {
        let (status, _, _) = expired.call("/v1/chat/completions", &chat(json!({}))).await;
        (status == 401).then_some(())
    })
    .await;
    for refused in [expired, Http::new(&a, Some(&revoked_key))] {
        expect(
            refused.call("/v1/chat/completions", &chat(json!({}))).await,
            401,
            "invalid_api_key",
        );
    }
    expect(
        http.call("/v1/chat/completions", &chat(json!({"n": 2})))
            .await,
        400,
        "invalid_input",
    );
    expect(
        http.call("/v1/chat/completions", &chat(json!({"model": "@nobody/x"})))
            .await,
        404,
        "model_not_found",
    );
    // About one token per two bytes: beyond SmolLM2's context with max_tokens added.
    let long = "7 3 9 1 5 ".repeat(3000);
    expect(
        http.call(
            "/v1/chat/completions",
            &chat(json!({"messages": [{"role": "user", "content": long}], "max_tokens": 2048})),
        )
        .await,
        400,
        "context_length_exceeded",
    );
    let huge = json!({"model": SMOLLM2, "messages": [{"role": "user", "content": "x".repeat((1 << 20) + 1024)}]});
    // On a connection of its own: the node answers before reading the rest of the body, then
    // closes that connection, which a pooled client would otherwise reuse.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", http.base))
        .bearer_auth(&key)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = http
        .client
        .post(format!("{}/v1/chat/completions", http.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Workers AI: text, streamed text, embeddings, its error codes, the account in the path.
    let (status, _, run) = http
        .call(
            &format!("/ai/run/{SMOLLM2}"),
            &json!({"prompt": "Say hi.", "max_tokens": 4}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["success"], true);
    assert!(run["result"]["response"].is_string());
    let (_, _, embedded) = http
        .call(
            &format!("/accounts/acme/ai/run/{MINILM}"),
            &json!({"text": ["a", "b"]}),
        )
        .await;
    assert_eq!(embedded["result"]["shape"], json!([2, 384]));
    let (status, _, whole) = http
        .call(
            &format!("/ai/run/{MINILM}"),
            &json!({"text": "a", "stream": true}),
        )
        .await;
    assert_eq!(
        (status, whole["result"]["shape"].clone()),
        (200, json!([1, 384])),
        "vectors come whole"
    );
    let (status, _, other) = http
        .call(
            &format!("/accounts/globex/ai/run/{MINILM}"),
            &json!({"text": "a"}),
        )
        .await;
    assert_eq!((status, other["success"].as_bool()), (403, Some(false)));
    let (status, _, missing) = http
        .call("/ai/run/@nobody/x", &json!({"prompt": "hi"}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(missing["errors"][0]["code"], 5007);
    let response = http
        .post(
            &format!("/ai/run/{SMOLLM2}"),
            &json!({"prompt": "Say hi.", "max_tokens": 4, "stream": true}),
        )
        .send()
        .await
        .unwrap();
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert!(first["response"].is_string());

    // A daily limit of 3 Neurons, one SmolLM2 request's price: the next is a 429 the SDKs
    // must not retry.
    let (status, _, first) = tight.call("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(status, 200, "{first}");
    let spent = tight
        .call("/v1/chat/completions", &chat(json!({"max_tokens": 5})))
        .await;
    assert_eq!(header(&spent.1, "x-should-retry"), "false");
    expect(spent, 429, "insufficient_quota");
    let (status, _, spent) = tight
        .call(
            &format!("/ai/run/{SMOLLM2}"),
            &json!({"prompt": "again", "max_tokens": 6}),
        )
        .await;
    assert_eq!(
        (status, spent["errors"][0]["code"].as_u64()),
        (429, Some(4006))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_mid_stream_frees_the_slot_and_a_full_model_says_retry() {
    ensure_models();
    let cluster = Cluster::new("http-disconnect");
    let a = cluster.start(
        "a",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--http",
            "127.0.0.1:0",
            "--model-concurrency",
            "1",
            "--model-queue",
            "0",
        ],
    );
    let http = Http::new(&a, None);
    let long = json!({
        "model": SMOLLM2,
        "messages": [{"role": "user", "content": "Tell me a very long story about the sea."}],
        "max_tokens": 1500,
        "stream": true,
    });
    let mut response = http
        .post("/v1/chat/completions", &long)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.chunk().await.unwrap().is_some(),
        "the stream began"
    );
    let in_flight = || async {
        let status = a.model_status(SMOLLM2).await;
        status["stats"]["in_flight"].as_u64()
    };
    assert_eq!(in_flight().await, Some(1));

    // The one slot is taken and nothing may queue: a clear 429 with Retry-After.
    let (status, headers, busy) = http
        .call("/v1/chat/completions", &json!({"model": SMOLLM2, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}))
        .await;
    assert_eq!(status, 429, "{busy}");
    assert_eq!(busy["error"]["code"], "overloaded");
    assert_eq!(header(&headers, "retry-after"), "1");

    drop(response);
    eventually(Duration::from_secs(10), "the slot is freed", || async {
        (in_flight().await? == 0).then_some(())
    })
    .await;
    let scraped = a
        .get("/metrics", Some(harness::TOKEN))
        .await
        .text()
        .await
        .unwrap();
    let cancelled = format!(
        "ganglion_requests_total{{model=\"{SMOLLM2}\",outcome=\"cancelled\",route=\"none\"}}"
    );
    assert_eq!(
        metric_values(&scraped).get(&cancelled),
        Some(&1.0),
        "{scraped}"
    );
    let (status, _, served) = http
        .call("/v1/chat/completions", &json!({"model": SMOLLM2, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}))
        .await;
    assert_eq!(status, 200, "{served}");
}

/// The official OpenAI Python SDK, pinned, in a virtual environment cached outside the repo
/// (installed from PyPI on first use).
fn openai_python() -> std::path::PathBuf {
    const VERSION: &str = "3.57.0";
    let home = std::env::var("HOME").unwrap();
    let venv = std::path::Path::new(&home)
        .join(".cache/ganglion/python")
        .join(format!("openai-{VERSION}"));
    let python = venv.join("bin/python");
    if !python.exists() {
        harness::succeed(
            std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv),
        );
        harness::succeed(std::process::Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            &format!("openai=={VERSION}"),
        ]));
    }
    python
}

const SDK_SCRIPT: &str = r#"
import os, openai
base, model, embedder = os.environ["BASE"], os.environ["MODEL"], os.environ["EMBEDDER"]
client = openai.OpenAI(base_url=base, api_key=os.environ["KEY"])
ask = [{"role": "user", "content": "Name a colour."}]

whole = client.chat.completions.create(model=model, messages=ask, max_tokens=8)
text = whole.choices[0].message.content
assert text and whole.choices[0].finish_reason in ("stop", "length"), whole
assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

chunks = list(client.chat.completions.create(
    model=model, messages=ask, max_tokens=8, stream=True, stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed == text, (streamed, text)
assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []

completion = client.completions.create(model=model, prompt="Say hi.", max_tokens=4)
assert isinstance(completion.choices[0].text, str)

# Recent SDKs ask for base64 when the caller says nothing, and decode it themselves.
vectors = client.embeddings.create(model=embedder, input=["edge", "inference"])
assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
floats = client.embeddings.create(model=embedder, input="edge", encoding_format="float")
assert abs(floats.data[0].embedding[0] - vectors.data[0].embedding[0]) < 1e-6

assert model in [m.id for m in client.models.list()]
assert client.models.retrieve(model).id == model

def raises(kind, call):
    try:
        call()
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}")

raises(openai.NotFoundError, lambda: client.chat.completions.create(model="@nobody/x", messages=ask))
raises(openai.BadRequestError, lambda: client.chat.completions.create(model=model, messages=ask, n=2))
stranger = openai.OpenAI(base_url=base, api_key="not-a-key")
raises(openai.AuthenticationError, lambda: stranger.chat.completions.create(model=model, messages=ask))
tight = openai.OpenAI(base_url=base, api_key=os.environ["TIGHT_KEY"])
tight.chat.completions.create(model=model, messages=ask, max_tokens=4)
raises(openai.RateLimitError, lambda: tight.chat.completions.create(model=model, messages=ask, max_tokens=5))
print("sdk ok")
"#;

/// The official OpenAI JavaScript SDK, pinned; returns its `node_modules`.
fn openai_node() -> std::path::PathBuf {
    harness::npm_package("openai", "6.49.0")
}

const JS_SDK_SCRIPT: &str = r#"
const OpenAI = require('openai');
(async () => {
  const { BASE: base, MODEL: model, EMBEDDER: embedder } = process.env;
  const client = new OpenAI({ baseURL: base, apiKey: process.env.KEY });
  const ask = [{ role: 'user', content: 'Name a colour.' }];
  const whole = await client.chat.completions.create({ model, messages: ask, max_tokens: 8 });
  const text = whole.choices[0].message.content;
  if (!text) throw new Error('no text');
  const stream = await client.chat.completions.create({
    model, messages: ask, max_tokens: 8, stream: true, stream_options: { include_usage: true } });
  let streamed = '', last;
  for await (const chunk of stream) {
    if (chunk.choices.length) streamed += chunk.choices[0].delta.content || '';
    last = chunk;
  }
  if (streamed !== text) throw new Error(`streamed ${streamed} but whole ${text}`);
  if (!(last.usage && last.usage.completion_tokens > 0)) throw new Error('no usage chunk');
  const vectors = await client.embeddings.create({ model: embedder, input: ['edge', 'inference'] });
  if (vectors.data.length !== 2 || vectors.data[0].embedding.length !== 384) throw new Error('embeddings');
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  if (!ids.includes(model)) throw new Error('models');
  const raises = async (kind, call) => {
    try { await call(); } catch (e) { if (e instanceof kind) return; throw e; }
    throw new Error('expected ' + kind.name);
  };
  await raises(OpenAI.NotFoundError, () => client.chat.completions.create({ model: '@nobody/x', messages: ask }));
  await raises(OpenAI.BadRequestError, () => client.chat.completions.create({ model, messages: ask, n: 2 }));
  const stranger = new OpenAI({ baseURL: base, apiKey: 'not-a-key' });
  await raises(OpenAI.AuthenticationError, () => stranger.chat.completions.create({ model, messages: ask }));
  console.log('sdk ok');
})().catch((e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_sdks_work_unchanged() {
    ensure_models();
    let python = openai_python();
    let node_modules = openai_node();
    let cluster = Cluster::new("http-sdk");
    let a = cluster.start(
        "a",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--host",
            MINILM,
            "--http",
            "127.0.0.1:0",
            KEYS_REQUIRED,
            WITH_CACHE,
        ],
    );
    let key = cluster.issue_key("acme", &["--plan", "paid"]);
    let tight = cluster.issue_key("tight", &["--daily-limit", "3"]);
    let base = format!("http://{}/v1", a.http.unwrap());
    let run = |mut command: tokio::process::Command| {
        command
            .env("BASE", &base)
            .env("KEY", &key)
            .env("TIGHT_KEY", &tight)
            .env("MODEL", SMOLLM2)
            .env("EMBEDDER", MINILM);
        async move {
            let out = command.output().await.unwrap();
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sdk ok");
        }
    };
    let mut python_sdk = tokio::process::Command::new(python);
    python_sdk.args(["-c", SDK_SCRIPT]);
    run(python_sdk).await;
    let mut js_sdk = tokio::process::Command::new("node");
    js_sdk
        .args(["-e", JS_SDK_SCRIPT])
        .env("NODE_PATH", node_modules);
    run(js_sdk).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_never_finishes_its_request_head_or_body_is_given_up_on() {
    let cluster = Cluster::new("http-slowloris");
    let a = cluster.start("a", &[], &["--http", "127.0.0.1:0"]);
    let mut tcp = tokio::net::TcpStream::connect(a.http.unwrap())
        .await
        .unwrap();
    tcp.write_all(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    // Meanwhile, on another connection, a whole head and a body that stops after 10 of the 100
    // bytes it announced.
    let mut slow_body = tokio::net::TcpStream::connect(a.http.unwrap())
        .await
        .unwrap();
    slow_body
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
    // The node gives up on the head (10 s) and closes; it never waits for ever.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the node closed the connection");
    // And on the body (10 s): a typed error, not a connection held open.
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while !String::from_utf8_lossy(&answer).contains("invalid_input") {
        let n = tokio::time::timeout(Duration::from_secs(60), slow_body.read(&mut buf))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(n > 0, "closed without an answer: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("invalid_input") && answer.contains("10 s"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_with_the_given_certificate() {
    let cluster = Cluster::new("http-tls");
    let identity = cluster.identity("a");
    let (cert, key) = (identity.join("node.crt"), identity.join("node.key"));
    let a = cluster.start(
        "a",
        &[],
        &[
            "--http",
            "127.0.0.1:0",
            "--http-tls-cert",
            cert.to_str().unwrap(),
            "--http-tls-key",
            key.to_str().unwrap(),
        ],
    );
    let addr = a.http.unwrap();
    let ca = std::fs::read(cluster.ca_dir().join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve(ganglion_client::client::NODE_SERVER_NAME, addr)
        .build()
        .unwrap();
    let url = format!(
        "https://{}:{}/v1/models",
        ganglion_client::client::NODE_SERVER_NAME,
        addr.port()
    );
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // Plain HTTP on the same port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/v1/models"))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

/// An HTTP answer as read off the wire.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    /// The head, lowercased.
    head: String,
    /// The body as JSON (`null` when it is not).
    body: Value,
}

impl RawAnswer {
    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no whole head: {text:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status: {head}"));
        Self {
            status,
            head: head.to_ascii_lowercase(),
            body: serde_json::from_str(body).unwrap_or(Value::Null),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim() == name).then(|| v.trim())
        })
    }
}

/// Reads what the node sends on `tcp` until it closes the connection. Panics if it is still
/// open after 5 s: half the node's head timeout, so only a connection the node chose to close
/// ends in time.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    // A reset after the answer (the node closed before reading all we sent) keeps what came.
    assert!(
        read.is_ok(),
        "the node kept the connection open after: {}",
        String::from_utf8_lossy(&answer)
    );
    answer
}

/// Sends `request` (a whole request, without a body) on a new connection to `addr` and reads
/// the answer until the node closes the connection.
async fn raw_request(addr: SocketAddr, request: &str) -> RawAnswer {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    RawAnswer::parse(&read_until_closed(&mut tcp).await)
}

/// This machine's address beyond loopback (the one a route outwards leaves from), if it has one.
fn non_loopback_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // TEST-NET-1: connecting a UDP socket only picks a route, nothing is sent.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_anonymous_door_keeps_the_loopback_promise_on_http() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("skipped: this machine has no address beyond loopback");
        return;
    };
    let cluster = Cluster::new("http-loopback-only");
    // Keyless requests allowed (the harness's default), so clients are served on loopback
    // only; both doors listen on every address.
    let a = cluster.start("a", &[], &["--http", "0.0.0.0:0", "--listen", "0.0.0.0:0"]);
    let port = a.http.unwrap().port();
    let far = format!("http://{}", SocketAddr::new(ip, port));
    let near = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let chat = json!({"model": SMOLLM2, "messages": [{"role": "user", "content": "Hi."}]});

    // From this machine's other address: a typed 403 before anything runs, on every route.
    let listing = client.get(format!("{far}/v1/models")).send().await.unwrap();
    assert_eq!(listing.status(), 403);
    let body: Value = listing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "clients_loopback_only", "{body}");
    let asked = client
        .post(format!("{far}/v1/chat/completions"))
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 403);
    let body: Value = asked.json().await.unwrap();
    assert_eq!(body["error"]["code"], "clients_loopback_only", "{body}");
    let raw = raw_request(
        SocketAddr::new(ip, port),
        "GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 403);
    assert_eq!(raw.header("connection"), Some("close"), "{raw:?}");

    // From loopback, the same door serves.
    let listing = client
        .get(format!("{near}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);

    // The QUIC door keeps the same promise: a client beyond loopback is closed, never answered.
    let beyond = ganglion_client::Client::builder()
        .node(SocketAddr::new(ip, a.quic.port()))
        .ca_file(cluster.ca_dir().join("ca.crt"))
        .unwrap()
        .request_timeout(Duration::from_secs(10));
    let listed = match beyond.connect().await {
        Ok(client) => client.list_models().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        listed.is_err(),
        "the QUIC door served a client beyond loopback"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_only_as_application_json_and_only_loopback_hosts() {
    ensure_models();
    let cluster = Cluster::new("http-browser");
    let a = cluster.start("a", &[], &["--host", MINILM, "--http", "127.0.0.1:0"]);
    let addr = a.http.unwrap();
    let http = Http::new(&a, None);
    let body = json!({"model": MINILM, "input": "edge inference"}).to_string();
    let embed = |content_type: Option<&str>| {
        let mut request = http
            .client
            .post(format!("{}/v1/embeddings", http.base))
            .timeout(Duration::from_secs(60))
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    // Types a web page can send to another origin without a preflight, and none at all: refused
    // before the body is parsed.
    for refused in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let (status, answer) = embed(refused).await;
        assert_eq!(status, 400, "{refused:?}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_input", "{refused:?}");
    }
    for accepted in ["application/json", "application/json; charset=utf-8"] {
        let (status, answer) = embed(Some(accepted)).await;
        assert_eq!(status, 200, "{accepted}: {answer}");
        assert_eq!(answer["data"][0]["object"], "embedding");
    }

    // A loopback door answers only to loopback names: a page whose name was made to resolve to
    // 127.0.0.1 (DNS rebinding) sends its own.
    let port = addr.port();
    for foreign in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        let request = format!("GET /v1/models HTTP/1.1\r\nHost: {foreign}\r\n\r\n");
        let answer = raw_request(addr, &request).await;
        assert_eq!(answer.status, 403, "{foreign}: {answer:?}");
        assert_eq!(answer.body["error"]["code"], "foreign_host", "{answer:?}");
        assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    }
    for own in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
    ] {
        let request =
            format!("GET /v1/models HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n");
        let answer = raw_request(addr, &request).await;
        assert_eq!(answer.status, 200, "{own}: {answer:?}");
    }
}

/// One keyless request on a new connection, kept alive as a client holding places would keep
/// it: the node's answer, read until the node closes the connection.
/// A keyless request's answer, or `None` when its connection was closed without one (a newer
/// connection took its place before it was read).
async fn keyless_request(addr: SocketAddr) -> Option<RawAnswer> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return None;
    }
    let answer = read_until_closed(&mut tcp).await;
    (!answer.is_empty()).then(|| RawAnswer::parse(&answer))
}

#[tokio::test(flavor = "multi_thread")]
async fn keyless_connections_are_closed_after_their_401_and_cannot_starve_keyed_ones() {
    let cluster = Cluster::new("http-keyless-flood");
    let config = cluster.dir.join("small-door.toml");
    std::fs::write(&config, "[http]\nmax_connections = 64\n").unwrap();
    let a = cluster.start(
        "a",
        &[],
        &[
            "--http",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
            KEYS_REQUIRED,
        ],
    );
    let addr = a.http.unwrap();
    let key = cluster.issue_key("acme", &[]);
    // A keyed client on a kept-alive connection, opened before the flood.
    let keyed = Http::new(&a, Some(&key));
    let served = || async {
        let asked = tokio::time::timeout(Duration::from_secs(5), keyed.get("/v1/models")).await;
        matches!(asked, Ok((200, _)))
    };
    assert!(served().await);

    // 64 keyless clients, as many as the door has places, asking again and again: each 401
    // closes its connection, and when the places for connections yet to authenticate are all
    // taken, a new one takes the oldest one's place, which is closed without an answer.
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..64)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut refused, mut closed) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let Some(answer) = keyless_request(addr).await else {
                        closed += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    match answer.status {
                        401 => refused += 1,
                        503 => {
                            assert_eq!(answer.header("retry-after"), Some("1"), "{answer:?}");
                            assert_eq!(answer.body["error"]["code"], "overloaded");
                        }
                        _ => panic!("a keyless request got {answer:?}"),
                    }
                    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
                    // The attackers' pace, not a wait for anything.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (refused, closed)
            })
        })
        .collect();
    harness::stays(
        Duration::from_secs(5),
        "the keyed client is served through the flood",
        served,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (mut refused, mut closed) = (0, 0);
    for attacker in flood {
        let (r, c) = attacker.await.unwrap();
        refused += r;
        closed += c;
    }
    eprintln!("keyless requests: {refused} refused with 401, {closed} closed unanswered");
    assert!(refused > 0);

    // 40 connections that never send a head: half the door's 64 places at most wait for one;
    // each newer one takes the place of the oldest, which is closed. A keyed connection opened
    // after them all is served.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    assert!(served().await, "a keyed connection is served after them");
    let closed = futures::future::join_all(idle.iter_mut().map(|tcp| async move {
        let mut answer = Vec::new();
        // The ones still waiting stay open until the head timeout (10 s); the oldest were
        // closed as newer ones came.
        tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut answer))
            .await
            .is_ok()
    }))
    .await;
    let closed = closed.iter().filter(|closed| **closed).count();
    assert!(
        closed >= 8,
        "{closed} of 40 idle connections were closed; at most 32 may wait"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn model_listings_follow_the_key_rule_on_both_doors() {
    let cluster = Cluster::new("http-listings");
    let a = cluster.start("a", &[], &["--http", "127.0.0.1:0", KEYS_REQUIRED]);
    let key = cluster.issue_key("acme", &[]);

    let (status, _) = Http::new(&a, None).get("/v1/models").await;
    assert_eq!(status, 401);
    let (status, listing) = Http::new(&a, Some(&key)).get("/v1/models").await;
    assert_eq!(status, 200);

    // QUIC: the client's `Models`, without a key and with one.
    let keyless = cluster.keyed_client(&a, None).await;
    let refused = keyless.list_models().await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::Unauthenticated),
        "{refused}"
    );
    let keyed = cluster.keyed_client(&a, Some(&key)).await;
    let models = keyed.list_models().await.unwrap();
    assert_eq!(models.len(), listing["data"].as_array().unwrap().len());

    // The keyless `ListModels` older clients send gets the same answer.
    let ca = ganglion::Identity::load(&cluster.identity("a")).unwrap();
    let endpoint = raw_quic::endpoint(
        &ca,
        None,
        ganglion_client::ALPN_CLIENT,
        quinn::TransportConfig::default(),
    );
    let connection = endpoint
        .connect(a.quic, ganglion::credentials::NODE_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    ganglion_client::write_frame(&mut send, &ClientRequest::ListModels, MAX_REQUEST_FRAME_LEN)
        .await
        .unwrap();
    let _ = send.finish();
    let frame = tokio::time::timeout(
        Duration::from_secs(10),
        ganglion_client::read_frame::<_, ResponseFrame>(&mut recv, MAX_RESPONSE_FRAME_LEN),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert!(
        matches!(&frame, ResponseFrame::Error(e) if e.code == ErrorCode::Unauthenticated),
        "{frame:?}"
    );
}
