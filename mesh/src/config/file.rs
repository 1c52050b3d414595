//! The configuration file as written, a section per subsystem, and the command-line flags that
//! set the same fields.
//!
//! Every field is optional here. With the `clap` feature each section is also a set of
//! `ganglion-node run` flags (`#[arg(long = ...)]` names the flag; a field without a flag is
//! `#[arg(skip)]`): `ganglion-node` flattens [`ConfigFile`] into its `run` command and lays the flags it
//! was given over the file with clap's `update_from_arg_matches`, so a flag overrides the file's
//! value and a flag left out leaves it. A field's doc comment is its flag's help, unless the
//! flag says more (`help = ...`, for the flags that repeat).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::engines::{Placement, TextEngine};

/// The configuration file as written: every field optional, unknown fields refused.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The `[node]` section.
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub node: NodeSection,
    /// The `[transport]` section.
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub transport: TransportSection,
    /// The `[cluster]` section (no flags).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub cluster: ClusterSection,
    /// The `[admin]` section.
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub admin: AdminSection,
    /// The `[models]` section.
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub models: ModelsSection,
    /// The `[requests]` section.
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub requests: RequestsSection,
    /// The `[clients]` section.
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub clients: ClientsSection,
    /// The `[cache]` section.
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub cache: CacheSection,
    /// The `[http]` section.
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub http: HttpSection,
}

/// `[node]`: who this node is and where it keeps state.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Identity folder written by `issue-cert`.
    #[cfg_attr(feature = "clap", arg(long = "identity"))]
    pub identity: Option<PathBuf>,
    /// Folder for durable state.
    #[cfg_attr(feature = "clap", arg(long = "data-dir"))]
    pub data_dir: Option<PathBuf>,
    /// The region this node belongs to (default: `default`): a full mesh inside, gateways
    /// between regions.
    #[cfg_attr(feature = "clap", arg(long = "region"))]
    pub region: Option<String>,
    /// Threads that run the node's I/O: its connections, actors and request stages (default
    /// 1; engines and blocking work have threads of their own).
    #[cfg_attr(feature = "clap", arg(long = "io-threads"))]
    pub io_threads: Option<usize>,
}

/// `[transport]`: the QUIC endpoint and liveness.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// UDP address of the QUIC endpoint.
    #[cfg_attr(feature = "clap", arg(long = "listen"))]
    pub listen: Option<String>,
    /// Address peers should dial to reach this node (defaults to the bound address).
    #[cfg_attr(feature = "clap", arg(long = "advertise"))]
    pub advertise: Option<String>,
    /// Peers to dial at start-up, retried with backoff for as long as the node runs.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "seed",
            help = "Peer to dial at start-up; repeat for several. Retried with backoff"
        )
    )]
    pub seeds: Option<Vec<String>>,
    /// A peer silent this long is dead, e.g. "5s".
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(
        feature = "clap",
        arg(long = "liveness-timeout", value_parser = humantime::parse_duration)
    )]
    pub liveness_timeout: Option<Duration>,
}

/// `[cluster]`: the ractor_cluster runtime.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Loopback address of ractor_cluster's own TCP listener (unused by the mesh, which runs
    /// sessions over QUIC, but always opened by ractor_cluster; TLS with client certificates).
    pub tcp_listen: Option<String>,
}

/// `[admin]`: the introspection endpoint.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// TCP address of the admin HTTP endpoint (loopback unless a token is set).
    #[cfg_attr(
        feature = "clap",
        arg(id = "admin", long = "admin", value_name = "ADMIN")
    )]
    pub listen: Option<String>,
    /// Admin bearer token, required on every admin route but `/healthz` (also from
    /// GANGLION_ADMIN_TOKEN).
    #[cfg_attr(
        feature = "clap",
        arg(long = "admin-token", value_name = "ADMIN_TOKEN")
    )]
    pub token: Option<String>,
    /// Serve /metrics on the admin listener without the admin token (for a scraper on a
    /// trusted network).
    #[cfg_attr(
        feature = "clap",
        arg(long = "metrics-open", action = clap::ArgAction::SetTrue)
    )]
    pub metrics_open: Option<bool>,
}

/// `[models]`: what this node hosts and where model files live.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct ModelsSection {
    /// Model store folder (default `~/.cache/ganglion/models`, or `GANGLION_MODELS_DIR`).
    #[cfg_attr(feature = "clap", arg(long = "models-dir", value_name = "MODELS_DIR"))]
    pub dir: Option<PathBuf>,
    /// Catalog ids of the models to host (those that fit in memory are loaded).
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "host",
            help = "Model to host (repeat); those that fit in memory are loaded"
        )
    )]
    pub host: Option<Vec<String>>,
    /// Cap on model memory, e.g. 512MiB, to emulate a small edge box.
    #[cfg_attr(feature = "clap", arg(long = "memory-limit"))]
    pub memory_limit: Option<String>,
    /// Requests each model runs at once (default: from the hardware and the model).
    #[cfg_attr(
        feature = "clap",
        arg(long = "model-concurrency", value_name = "MODEL_CONCURRENCY")
    )]
    pub concurrency: Option<usize>,
    /// Requests each model lets wait beyond those running (default: 4 per slot, at least 16).
    #[cfg_attr(
        feature = "clap",
        arg(long = "model-queue", value_name = "MODEL_QUEUE")
    )]
    pub queue_depth: Option<usize>,
    /// Engine of GGUF chat models: llama.cpp or mistralrs (default: llama.cpp on CPU,
    /// mistralrs where there are accelerators).
    #[cfg_attr(feature = "clap", arg(long = "text-engine"))]
    pub text_engine: Option<TextEngine>,
    /// Where engines run: workers (one process per model, the default, so that a crash in
    /// native code takes only that model's worker down) or in-process.
    #[cfg_attr(feature = "clap", arg(long = "engines"))]
    pub engines: Option<Placement>,
    /// Keep finished chats' work in llama.cpp's KV cache (within the memory left), so that a
    /// later prompt of the same account that begins the same way reads only what is new
    /// (default true).
    #[cfg_attr(feature = "clap", arg(long = "park-prompts"))]
    pub park_prompts: Option<bool>,
    /// Operator-added models (no flags).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub local: Vec<LocalModel>,
}

/// An operator's model: a local GGUF file (text generation) or a safetensors folder
/// (embeddings, BERT layout: model.safetensors, tokenizer.json, config.json).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModel {
    /// Catalog id to publish it under, e.g. "@acme/tiny-chat".
    pub id: String,
    /// "text-generation" or "text-embeddings".
    pub task: String,
    /// The GGUF file or the model folder.
    pub path: PathBuf,
    /// Memory it needs, e.g. "300MiB".
    pub memory: String,
    /// Flat price in Neurons per request (per text embedded, for embedding models).
    pub neurons_per_request: Option<u64>,
    /// Neurons per million input tokens (with `neurons_per_million_output`: priced per token).
    pub neurons_per_million_input: Option<u64>,
    /// Neurons per million output tokens.
    pub neurons_per_million_output: Option<u64>,
}

/// `[requests]`: what the node grants each request.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct RequestsSection {
    /// Deadline of a request that names none, e.g. "120s".
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(
        feature = "clap",
        arg(long = "default-deadline", value_parser = humantime::parse_duration)
    )]
    pub default_deadline: Option<Duration>,
    /// Longest deadline a request may ask for, e.g. "10m"; longer ones are cut to it.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(
        feature = "clap",
        arg(long = "max-deadline", value_parser = humantime::parse_duration)
    )]
    pub max_deadline: Option<Duration>,
    /// Send a chat to the peer holding its prefix (its system prompt) before running it here
    /// (default true; `false` runs every request here first when this node hosts its model).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long = "prefix-affinity"))]
    pub prefix_affinity: Option<bool>,
}

/// `[clients]`: who may connect to the data plane, and how many at once.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct ClientsSection {
    /// Serve requests without an API key as the free account `anonymous` (demos; off by
    /// default; implies loopback-only clients unless remote clients are allowed).
    #[cfg_attr(
        feature = "clap",
        arg(long = "allow-anonymous", action = clap::ArgAction::SetTrue)
    )]
    pub allow_anonymous: Option<bool>,
    /// Accept client connections from beyond loopback, even with anonymous requests allowed
    /// (by default: yes when every request needs an API key, no when anonymous requests are
    /// allowed).
    #[cfg_attr(
        feature = "clap",
        arg(long = "allow-remote-clients", action = clap::ArgAction::SetTrue)
    )]
    pub allow_remote: Option<bool>,
    /// Most incoming connections at once (clients and peers).
    #[cfg_attr(feature = "clap", arg(long = "max-connections"))]
    pub max_connections: Option<usize>,
    /// Most incoming connections from one address.
    #[cfg_attr(feature = "clap", arg(long = "max-connections-per-address"))]
    pub max_connections_per_address: Option<usize>,
}

/// `[cache]`: this node's part of the mesh's result cache.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Result cache shards on this node (default 2); 0: none, the whole cache keeps near copies
    /// of answers found at other nodes' shards.
    #[cfg_attr(
        feature = "clap",
        arg(long = "cache-shards", value_name = "CACHE_SHARDS")
    )]
    pub shards: Option<u16>,
    /// Bytes of result cache on this node, e.g. 256MiB (the default), an eighth of it for near
    /// copies; 0 keeps nothing here (requests entering here still use the mesh's other shards).
    #[cfg_attr(feature = "clap", arg(long = "cache-size", value_name = "CACHE_SIZE"))]
    pub size: Option<String>,
    /// How long an answer stays cached when its request does not say, e.g. "5m" (the
    /// default; 60 s to 30 days).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "cache-ttl",
            value_name = "CACHE_TTL",
            value_parser = humantime::parse_duration
        )
    )]
    pub default_ttl: Option<Duration>,
}

/// `[http]`: the HTTP APIs (off unless `listen` is set).
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Serve the HTTP APIs (OpenAI-compatible /v1, Workers-AI-style /ai/run) on this address.
    #[cfg_attr(feature = "clap", arg(id = "http", long = "http", value_name = "ADDR"))]
    pub listen: Option<String>,
    /// PEM certificate chain, for HTTPS on the HTTP APIs' address.
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "http_tls_cert",
            long = "http-tls-cert",
            value_name = "HTTP_TLS_CERT",
            requires = "http_tls_key"
        )
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key, for HTTPS on the HTTP APIs' address.
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "http_tls_key",
            long = "http-tls-key",
            value_name = "HTTP_TLS_KEY",
            requires = "http_tls_cert"
        )
    )]
    pub tls_key: Option<PathBuf>,
    /// Connections served at once (default 1024; no flag).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub max_connections: Option<usize>,
}
