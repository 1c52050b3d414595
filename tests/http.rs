//! The HTTP front door against a real node and real models: the OpenAI-compatible `/v1` API
//! (whole and streamed), the Workers-AI-style `/ai/run`, cache and route headers, every error
//! status, and a client that disconnects mid-stream.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

mod harness;

use std::time::Duration;

use base64::Engine;
use harness::{Cluster, KEYS_REQUIRED, MINILM, SMOLLM2, WITH_CACHE, ensure_models, eventually};
use serde_json::{Value, json};

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
    tokio::time::sleep(Duration::from_millis(1100)).await;
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::new("http-slowloris");
    let a = cluster.start("a", &[], &["--http", "127.0.0.1:0"]);
    let mut tcp = tokio::net::TcpStream::connect(a.http.unwrap())
        .await
        .unwrap();
    tcp.write_all(b"GET /v1/models HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    // Meanwhile, on another connection, a whole head and a body that stops after 10 of the 100
    // bytes it announced.
    let mut slow_body = tokio::net::TcpStream::connect(a.http.unwrap())
        .await
        .unwrap();
    slow_body
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n\
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
