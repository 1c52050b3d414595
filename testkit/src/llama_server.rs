//! llama.cpp's own server, the reference the serving benchmarks measure the node against, and
//! a client that streams one OpenAI chat completion from either and times it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{eventually, first_match, succeed};

/// The GGUF the benchmarks serve on both sides: SmolLM2's Q8_0 copy that `models pull`
/// prepares.
pub fn smollm2_q8_0() -> PathBuf {
    let home = std::env::var("HOME").unwrap();
    let dir = std::env::var("GANGLION_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&home).join(".cache/ganglion/models"));
    let file = dir
        .join("ganglion--smollm2-135m-instruct")
        .join("SmolLM2-135M-Instruct.Q8_0.gguf");
    assert!(
        file.exists(),
        "{} is missing: run `ganglion-node models pull`",
        file.display()
    );
    file
}

/// The folder of llama.cpp's `llama-server` and `llama-bench`, built once from the PyPI sdist
/// (`scripts/build-llama-server.sh`).
pub fn llama_cpp_tools() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-llama-server.sh");
    PathBuf::from(succeed(&mut Command::new(script)).trim())
}

/// A running `llama-server`, killed when dropped.
pub struct LlamaServer {
    child: Child,
    /// `http://address:port`.
    pub base: String,
}

impl LlamaServer {
    /// Starts `llama-server` from `tools` on `model` with `threads`, `parallel` slots of 2,048
    /// tokens each and continuous batching, on a port the OS chooses, plus `extra` flags; returns
    /// once it answers its health check.
    pub async fn start(
        tools: &Path,
        model: &Path,
        threads: usize,
        parallel: usize,
        extra: &[&str],
    ) -> Self {
        let threads = threads.to_string();
        let mut child = Command::new(tools.join("llama-server"))
            .args([
                "-m",
                model.to_str().unwrap(),
                "-t",
                &threads,
                "-tb",
                &threads,
            ])
            .args(["--parallel", &parallel.to_string(), "--cont-batching"])
            .args(["-c", &(2048 * parallel).to_string(), "--host", "127.0.0.1"])
            // Port 0: llama-server binds a port the OS chooses, and logs where it listens.
            .args(["--port", "0", "--no-webui"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Its log (stderr) says `... listening on http://127.0.0.1:PORT ...` once the model is
        // loaded; it is read to its end, so that llama-server never blocks on a full pipe.
        let listening = first_match(child.stderr.take().unwrap(), |line| {
            let (_, address) = line.split_once("listening on http://")?;
            address
                .split_whitespace()
                .next()?
                .parse::<SocketAddr>()
                .ok()
        });
        // Killed, should what follows panic.
        let mut server = Self {
            child,
            base: String::new(),
        };
        let address = listening
            .recv_timeout(Duration::from_secs(120))
            .expect("llama-server did not say where it listens within 120 s");
        server.base = format!("http://{address}");
        let health = format!("{}/health", server.base);
        eventually(Duration::from_secs(60), "llama-server up", || async {
            let answer = reqwest::get(&health).await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
        server
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `q` quantile of `times` (nearest rank: the smallest time that at least `q` of them do
/// not exceed).
pub fn percentile(times: &[Duration], q: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// One streamed chat completion, as its client saw it.
#[derive(Debug, Clone)]
pub struct Streamed {
    /// The answer.
    pub text: String,
    /// From sending the request to the first piece of text.
    pub first_token: Duration,
    /// From sending the request to the end of the stream.
    pub took: Duration,
    /// Prompt tokens, as the server counted them.
    pub prompt_tokens: u64,
    /// Of those, the ones the server did not read again (`prompt_tokens_details`), or, from
    /// llama-server, its `timings.cache_n`.
    pub cached_tokens: u64,
    /// Generated tokens.
    pub tokens: u64,
}

/// Streams one greedy chat completion of `messages` (OpenAI messages) from `base` with `key`,
/// and times it.
pub async fn stream_chat(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    model: &str,
    messages: serde_json::Value,
    max_tokens: u32,
) -> Streamed {
    let body = serde_json::json!({
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let start = Instant::now();
    let mut response = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let (mut first, mut text) = (None, String::new());
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if first.is_none() && text.contains("\"content\":\"") {
            first = Some(start.elapsed());
        }
    }
    let took = start.elapsed();
    let events: Vec<serde_json::Value> = text
        .split("data: ")
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    let usage = events
        .iter()
        .find_map(|v| v.get("usage").filter(|u| u.is_object()))
        .unwrap_or_else(|| panic!("no usage in {text}"));
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .or_else(|| {
            events
                .iter()
                .find_map(|v| v.get("timings")?.get("cache_n")?.as_u64())
        })
        .unwrap_or(0);
    let answer = events
        .iter()
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str())
        .collect();
    Streamed {
        text: answer,
        first_token: first.unwrap_or(took),
        took,
        prompt_tokens: usage["prompt_tokens"].as_u64().unwrap(),
        cached_tokens: cached,
        tokens: usage["completion_tokens"].as_u64().unwrap(),
    }
}
