//! `ganglion`: talk to a Ganglion mesh from a shell.
//!
//! ```text
//! ganglion generate --node ADDR --ca FILE --model ID [--max-tokens N] [--json] [CACHE] PROMPT
//! ganglion embed    --node ADDR --ca FILE --model ID [--json] [CACHE] TEXT...
//!   CACHE: [--cache-ttl SECS] [--skip-cache] [--cache-key KEY]
//! ganglion models   --node ADDR --ca FILE
//! ```
//!
//! An `overloaded` mesh is tried again, with backoff, until `--timeout`; if it is still
//! overloaded then, the command exits with 75 (EX_TEMPFAIL): try again later. Any other
//! failure exits with 1.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use ganglion_client::protocol::{CachePolicy, FinalResponse, Output};
use ganglion_client::{
    ClassifyRequest, Client, ClientError, EmbedRequest, GenerateRequest, GenerationStream,
    StreamEvent,
};

#[derive(Debug, Parser)]
#[command(
    name = "ganglion",
    version,
    about = "Client of the Ganglion edge inference mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Connection {
    /// Node address (repeat for fallbacks; the first reachable one is used).
    #[arg(long = "node", required = true)]
    nodes: Vec<SocketAddr>,
    /// The cluster CA certificate (ca.crt).
    #[arg(long)]
    ca: PathBuf,
    /// Seconds allowed for the whole request.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// API key (from `ganglion-node issue-key`).
    #[arg(long, env = "GANGLION_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// Cache controls of one request.
#[derive(Debug, Args)]
struct CacheArgs {
    /// How long the mesh may serve this answer from its cache, in seconds (60 to 2592000;
    /// unset: the entry node's default).
    #[arg(long, value_name = "SECS")]
    cache_ttl: Option<u32>,
    /// Neither look up nor store this answer: always run the model.
    #[arg(long)]
    skip_cache: bool,
    /// Cache under this key instead of the input and parameters (per account and model).
    #[arg(long, value_name = "KEY")]
    cache_key: Option<String>,
}

impl CacheArgs {
    fn policy(self) -> CachePolicy {
        CachePolicy {
            ttl_secs: self.cache_ttl,
            skip: self.skip_cache,
            key: self.cache_key,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the calling account's usage today: used, allocation, limit, reset time.
    Usage {
        #[command(flatten)]
        connection: Connection,
        /// Print the usage as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate text; streams it to stdout, or prints the final response as JSON.
    Generate {
        #[command(flatten)]
        connection: Connection,
        /// Catalog id of a text-generation model.
        #[arg(long)]
        model: String,
        /// Most tokens to generate.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Sampling temperature (0 or unset: greedy, reproducible).
        #[arg(long)]
        temperature: Option<f32>,
        /// Sampler seed.
        #[arg(long)]
        seed: Option<u64>,
        #[command(flatten)]
        cache: CacheArgs,
        /// A model to try when the ones before cannot answer (repeat, in order).
        #[arg(long = "fallback", value_name = "MODEL")]
        fallbacks: Vec<String>,
        /// Print the final response (text, usage, timings, route) as JSON.
        #[arg(long)]
        json: bool,
        /// The prompt.
        prompt: String,
    },
    /// Embed texts.
    Embed {
        #[command(flatten)]
        connection: Connection,
        /// Catalog id of an embedding model.
        #[arg(long)]
        model: String,
        /// Print the final response as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
        /// Texts to embed.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Run an image model on an image file: OCR prints the lines it read with their boxes, a
    /// classifier its labels.
    Image {
        #[command(flatten)]
        connection: Connection,
        /// Catalog id of an image model, e.g. @ganglion/pp-ocrv6-tiny.
        #[arg(long)]
        model: String,
        /// Print the final response as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
        /// The image: a PNG or JPEG file.
        file: std::path::PathBuf,
    },
    /// Transcribe a recording (a WAV file) with a speech model.
    Transcribe {
        #[command(flatten)]
        connection: Connection,
        /// Catalog id of a speech model.
        #[arg(long, default_value = "@ganglion/moonshine-base-en")]
        model: String,
        /// Print the final response as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
        /// The recording: a WAV file.
        file: std::path::PathBuf,
    },
    /// Classify texts: sentiment, moderation or language, as the model does.
    Classify {
        #[command(flatten)]
        connection: Connection,
        /// Catalog id of a text classifier, e.g. @ganglion/vader-sentiment.
        #[arg(long)]
        model: String,
        /// A model to try when the ones before cannot answer (repeat, in order).
        #[arg(long = "fallback", value_name = "MODEL")]
        fallbacks: Vec<String>,
        /// Print the final response as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
        /// Texts to classify.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// List the catalog and which nodes host each model.
    Models {
        #[command(flatten)]
        connection: Connection,
    },
}

/// Exit code when the mesh stayed `overloaded` for the whole `--timeout` (EX_TEMPFAIL).
const EXIT_OVERLOADED: u8 = 75;
/// First wait before trying an overloaded mesh again; it doubles per try, up to the longest.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between two tries.
const LONGEST_RETRY: Duration = Duration::from_secs(2);
/// Least time left for a try to be worth starting. A try is also given at least a quarter of
/// `--timeout`, so that a request that gets into a queue on its last try has time to be
/// answered there.
const SHORTEST_TRY: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let retry_after = e
                .downcast_ref::<ClientError>()
                .and_then(ClientError::retry_after);
            if retry_after.is_some() {
                eprintln!("ganglion: {e:#}; still so when --timeout ran out: try again later");
                return ExitCode::from(EXIT_OVERLOADED);
            }
            eprintln!("ganglion: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Connects to the first reachable node, for requests that may take `timeout`.
async fn connect(c: &Connection, timeout: Duration) -> Result<Client, ClientError> {
    let mut builder = Client::builder().ca_file(&c.ca)?.request_timeout(timeout);
    for node in &c.nodes {
        builder = builder.node(*node);
    }
    if let Some(key) = &c.api_key {
        builder = builder.api_key(key.clone());
    }
    builder.connect().await
}

/// Connects and runs `request`, and does both again after `overloaded` (with full-jitter
/// backoff) while `--timeout` allows; returns the open client with the answer. A client whose
/// request failed is closed first, so that it does not hold a place at the node.
/// Reads `file` and sends its bytes with `send`, retried as [`with_retries`] does; closes the
/// client and returns the node's answer.
async fn send_file(
    connection: &Connection,
    file: &std::path::Path,
    mut send: impl AsyncFnMut(&Client, Vec<u8>) -> Result<FinalResponse, ClientError>,
) -> anyhow::Result<FinalResponse> {
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let (client, response) = with_retries(connection, async |client: &Client| {
        send(client, bytes.clone()).await
    })
    .await?;
    client.close().await;
    Ok(response)
}

async fn with_retries<T>(
    c: &Connection,
    mut request: impl AsyncFnMut(&Client) -> Result<T, ClientError>,
) -> Result<(Client, T), ClientError> {
    let timeout = Duration::from_secs(c.timeout);
    let deadline = Instant::now() + timeout;
    let shortest_try = SHORTEST_TRY.max(timeout / 4);
    let mut backoff = FIRST_RETRY;
    loop {
        let error = match connect(c, deadline.saturating_duration_since(Instant::now())).await {
            Ok(client) => {
                let answer = request(&client).await;
                match answer {
                    Ok(answer) => return Ok((client, answer)),
                    Err(e) => {
                        client.close().await;
                        e
                    }
                }
            }
            Err(e) => e,
        };
        // Full jitter: clients turned away together do not all come back together.
        let wait = backoff.mul_f64(rand::random::<f64>());
        if error.retry_after().is_none() || Instant::now() + wait + shortest_try > deadline {
            return Err(error);
        }
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(LONGEST_RETRY);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate {
            connection,
            model,
            max_tokens,
            temperature,
            seed,
            cache,
            fallbacks,
            json,
            prompt,
        } => {
            let mut request = GenerateRequest::new(model, prompt)
                .cache(cache.policy())
                .fallbacks(fallbacks);
            request.parameters.max_tokens = max_tokens;
            request.parameters.temperature = temperature;
            request.parameters.seed = seed;
            let (client, (mut rest, first)) = with_retries(&connection, async |client: &Client| {
                first_event(client, request.clone()).await
            })
            .await?;
            let printed = print_generation(first, &mut rest, json).await;
            drop(rest);
            client.close().await;
            printed?;
        }
        Command::Embed {
            connection,
            model,
            json,
            cache,
            texts,
        } => {
            let request = EmbedRequest::new(model, texts.clone()).cache(cache.policy());
            let (client, response) = with_retries(&connection, async |client: &Client| {
                client.embed_request(request.clone()).await
            })
            .await?;
            client.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&final_json(&response))?);
            } else if let Output::Embeddings(vectors) = &response.output {
                for (text, vector) in texts.iter().zip(vectors) {
                    let head: Vec<String> =
                        vector.iter().take(4).map(|v| format!("{v:.4}")).collect();
                    println!(
                        "{text:?}: [{}, ...] ({} dims)",
                        head.join(", "),
                        vector.len()
                    );
                }
            }
        }
        Command::Classify {
            connection,
            model,
            fallbacks,
            json,
            cache,
            texts,
        } => {
            let request = ClassifyRequest::new(model, texts.clone())
                .cache(cache.policy())
                .fallbacks(fallbacks);
            let (client, response) = with_retries(&connection, async |client: &Client| {
                client.classify_request(request.clone()).await
            })
            .await?;
            client.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&final_json(&response))?);
            } else {
                let lists = match &response.output {
                    Output::Labels(lists) if lists.len() == texts.len() => lists,
                    _ => anyhow::bail!(
                        "the node answered with something other than one list of labels per text"
                    ),
                };
                for (text, labels) in texts.iter().zip(lists) {
                    let labels: Vec<String> = labels
                        .iter()
                        .map(|l| format!("{} {:.3}", l.label, l.score))
                        .collect();
                    let labels = if labels.is_empty() {
                        "(no label)".to_owned()
                    } else {
                        labels.join(", ")
                    };
                    println!("{text:?}: {labels}");
                }
                eprintln!("route: {}", response.route_line());
            }
        }
        Command::Image {
            connection,
            model,
            json,
            cache,
            file,
        } => {
            let policy = cache.policy();
            let response = send_file(&connection, &file, async |client, bytes| {
                client.image(model.clone(), bytes, policy.clone()).await
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&final_json(&response))?);
            } else {
                match &response.output {
                    Output::Regions(regions) => {
                        for r in regions {
                            println!(
                                "{:>5},{:<5} {:>4}x{:<4} {:.3}  {}",
                                r.x, r.y, r.width, r.height, r.score, r.text
                            );
                        }
                    }
                    Output::Labels(lists) => {
                        for l in lists.iter().flatten() {
                            println!("{} {:.3}", l.label, l.score);
                        }
                    }
                    _ => anyhow::bail!(
                        "the node answered with something other than an image model's output"
                    ),
                }
                eprintln!("route: {}", response.route_line());
            }
        }
        Command::Transcribe {
            connection,
            model,
            json,
            cache,
            file,
        } => {
            let policy = cache.policy();
            let response = send_file(&connection, &file, async |client, bytes| {
                client
                    .transcribe(model.clone(), bytes, policy.clone())
                    .await
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&final_json(&response))?);
            } else {
                let Output::Text { text, .. } = &response.output else {
                    anyhow::bail!("the node answered with something other than a transcript");
                };
                println!("{text}");
                eprintln!("route: {}", response.route_line());
            }
        }
        Command::Usage { connection, json } => {
            let (client, usage) =
                with_retries(&connection, async |client: &Client| client.usage().await).await?;
            client.close().await;
            let neurons = |micro: u64| micro as f64 / 1e6;
            let resets = humantime_rfc3339(usage.resets_at);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "account": usage.account,
                        "plan": usage.plan,
                        "day": usage.day,
                        "used_neurons": neurons(usage.used_micro),
                        "requests": usage.requests,
                        "cached_requests": usage.cached_requests,
                        "free_allocation_neurons": neurons(usage.allocation_micro),
                        "limit_neurons": usage.limit_micro.map(neurons),
                        "resets_at": resets,
                    }))?
                );
            } else {
                let limit = usage
                    .limit_micro
                    .map_or("none".to_owned(), |l| format!("{}", neurons(l)));
                println!(
                    "account {} ({:?}) on {}: {} Neurons in {} requests ({} more from the cache); free allocation {}, limit {limit}; resets at {resets}",
                    usage.account,
                    usage.plan,
                    usage.day,
                    neurons(usage.used_micro),
                    usage.requests,
                    usage.cached_requests,
                    neurons(usage.allocation_micro),
                );
            }
        }
        Command::Models { connection } => {
            let (client, models) = with_retries(&connection, async |client: &Client| {
                client.list_models().await
            })
            .await?;
            client.close().await;
            println!("{:<36} {:<16} HOSTED BY", "MODEL", "TASK");
            for model in models {
                let hosts = if model.hosted_by.is_empty() {
                    "-".to_owned()
                } else {
                    model.hosted_by.join(", ")
                };
                println!("{:<36} {:<16} {hosts}", model.id, model.task);
            }
        }
    }
    Ok(())
}

/// Starts a generation and waits for its first event. Nothing is printed before it, so an
/// `overloaded` until then can still be retried.
async fn first_event(
    client: &Client,
    request: GenerateRequest,
) -> Result<(GenerationStream, StreamEvent), ClientError> {
    let mut stream = client.generate_stream(request).await?;
    match stream.next().await {
        Some(event) => Ok((stream, event?)),
        None => Err(ClientError::Protocol(
            "the stream ended before its first event".into(),
        )),
    }
}

/// Prints a generation from its `first` event on, as it arrives: the text (route and cache on
/// stderr), or with `json` the final response.
async fn print_generation(
    first: StreamEvent,
    rest: &mut GenerationStream,
    json: bool,
) -> anyhow::Result<()> {
    print_event(first, json)?;
    while let Some(event) = rest.next().await {
        print_event(event?, json)?;
    }
    Ok(())
}

fn print_event(event: StreamEvent, json: bool) -> anyhow::Result<()> {
    match event {
        StreamEvent::Delta(text) if !json => {
            let mut stdout = std::io::stdout();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
        StreamEvent::Delta(_) => {}
        StreamEvent::Final(response) if json => {
            println!("{}", serde_json::to_string_pretty(&final_json(&response))?)
        }
        StreamEvent::Final(response) => {
            println!();
            eprintln!("route: {}", response.route_line());
            eprintln!("cache: {}", cache_summary(&response.cache));
        }
    }
    Ok(())
}

fn final_json(response: &FinalResponse) -> serde_json::Value {
    let mut value = serde_json::json!({
        // 32 hex digits, as the node's ledger, `x-request-id` and the dashboard show it.
        "id": format!("{:032x}", response.id),
        "usage": {
            "input_tokens": response.usage.input_tokens,
            "output_tokens": response.usage.output_tokens,
            "neurons": response.usage.micro_neurons as f64 / 1e6,
            "micro_neurons": response.usage.micro_neurons,
        },
        "timings": {
            "queue_ms": response.timings.queue_ms,
            "first_token_ms": response.timings.first_token_ms,
            "total_ms": response.timings.total_ms,
        },
        "route": {
            "entry": response.route.entry,
            "executed_by": response.route.executed_by,
            "path": response.route.path,
            "hops": response.route.hops(),
            "attempts": response.route.attempts.iter().map(|a| serde_json::json!({ "node": a.node, "code": a.code.as_str(), "reason": a.reason })).collect::<Vec<_>>(),
            "per_hop": response.route.per_hop.iter().map(|h| serde_json::json!({ "node": h.node, "first_token_ms": h.first_token_ms, "total_ms": h.total_ms })).collect::<Vec<_>>(),
            "model": response.route.model,
            "models_tried": response.route.models_tried.iter().map(|m| serde_json::json!({ "model": m.model, "code": m.code.as_str(), "reason": m.reason })).collect::<Vec<_>>(),
        },
        "cache": {
            "status": response.cache.status.as_str(),
            "shard": response.cache.shard,
            "age_ms": response.cache.age_ms,
        },
    });
    match &response.output {
        Output::Text {
            text,
            finish_reason,
        } => {
            value["text"] = text.clone().into();
            value["finish_reason"] = format!("{finish_reason:?}").to_lowercase().into();
        }
        Output::Embeddings(vectors) => value["embeddings"] = serde_json::json!(vectors),
        Output::Labels(lists) => value["labels"] = serde_json::json!(lists),
        Output::Regions(regions) => value["regions"] = serde_json::json!(regions),
        _ => {}
    }
    value
}

/// One line for people: what the cache did.
fn cache_summary(cache: &ganglion_client::protocol::CacheReport) -> String {
    let mut line = cache.status.as_str().to_owned();
    if let Some(shard) = &cache.shard {
        line.push_str(&format!(" (shard {shard}"));
        if let Some(age) = cache.age_ms {
            line.push_str(&format!(", stored {:.1} s ago", age as f64 / 1000.0));
        }
        line.push(')');
    }
    line
}

/// RFC 3339 text of Unix seconds.
fn humantime_rfc3339(secs: u64) -> String {
    // humantime formats years up to 9999 only.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.min(253_402_214_399));
    humantime::format_rfc3339_seconds(at).to_string()
}
