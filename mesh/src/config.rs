//! The node's configuration: one typed tree with a section per subsystem.
//!
//! [`ConfigFile`] is what TOML and command-line flags (which override it) can say; every field
//! is optional there (`config/file.rs`: the sections and, with the `clap` feature, the flags
//! that set them). [`ConfigFile::validate`] (`config/validate.rs`) turns it into a [`Config`] or
//! a [`ConfigError`] naming the offending field, before any port is bound or file written.
//!
//! Each subsystem's settings type lives here, on the floor below the subsystems, which take it:
//! - [`cache`]: [`CacheSettings`], the result cache;
//! - [`clients`]: [`clients::ConnectionSettings`], caps on incoming connections;
//! - [`engines`]: [`engines::TextEngine`] and [`engines::Placement`], the inference engines;
//! - [`http`]: [`HttpConfig`], the HTTP APIs;
//! - [`requests`]: [`requests::Limits`], the deadlines granted to requests;
//! - [`env`]: every environment variable the node reads.

pub mod cache;
pub mod clients;
pub mod engines;
pub mod env;
mod file;
pub mod http;
pub mod requests;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::credentials::Identity;
use crate::models::Catalog;

pub use cache::CacheSettings;
pub use file::{
    AdminSection, CacheSection, ClientsSection, ClusterSection, ConfigFile, HttpSection,
    LocalModel, ModelsSection, NodeSection, RequestsSection, TransportSection,
};
pub use http::HttpConfig;

/// Default QUIC listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7400";
/// Default admin listen address (loopback only).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7480";
/// Default idle time after which a silent peer is declared dead.
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);
/// Default threads of the node's async runtime. One: every packet, stream and actor message
/// is then handed on within one thread, where each wake of another thread costs tens of
/// microseconds on a virtual machine (`docs/performance.md`, "Mesh paths"); the node's heavy
/// work runs on threads of its own (engines, blocking tasks).
pub const DEFAULT_IO_THREADS: usize = 1;
/// Most threads of the node's async runtime.
pub const MAX_IO_THREADS: usize = 64;

/// Default requests waiting per model: 4 per slot, at least this many.
pub const DEFAULT_MODEL_QUEUE_DEPTH: usize = 16;

/// Requests a model with `slots` lets wait when the operator did not say.
pub fn default_queue_depth(slots: usize) -> usize {
    (4 * slots).clamp(DEFAULT_MODEL_QUEUE_DEPTH, 1024)
}

/// A configuration problem, naming the field concerned.
#[derive(Debug, thiserror::Error)]
#[error("config field `{field}`: {message}")]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `transport.listen`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's identity, loaded from its folder.
    pub identity: Identity,
    /// Folder for durable state (created at start-up).
    pub data_dir: PathBuf,
    /// Threads of the async runtime: connections, actors and request stages (the binary
    /// builds the runtime with them).
    pub io_threads: usize,
    /// QUIC bind address.
    pub listen: SocketAddr,
    /// Address advertised to peers; `None` means "the bound address".
    pub advertise: Option<SocketAddr>,
    /// The region this node belongs to.
    pub region: String,
    /// Seed addresses.
    pub seeds: Vec<SocketAddr>,
    /// Idle timeout after which a peer is dead.
    pub liveness_timeout: Duration,
    /// ractor_cluster's loopback TCP listener.
    pub cluster_tcp_listen: SocketAddr,
    /// Admin endpoint address.
    pub admin_listen: SocketAddr,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// `/metrics` without the admin token.
    pub metrics_open: bool,
    /// The model catalog (built-in plus operator-added models).
    pub catalog: Catalog,
    /// Model store folder.
    pub models_dir: PathBuf,
    /// Models to host, in order of preference.
    pub host: Vec<String>,
    /// Memory cap for models.
    pub memory_limit: Option<u64>,
    /// Requests each model runs at once, when set (otherwise chosen per model).
    pub model_concurrency: Option<usize>,
    /// Requests each model lets wait, when set (otherwise 4 per slot, at least 16).
    pub model_queue_depth: Option<usize>,
    /// The engine of GGUF chat models, when set (otherwise chosen from the hardware).
    pub text_engine: Option<engines::TextEngine>,
    /// Where engines run.
    pub engines: engines::Placement,
    /// Whether llama.cpp keeps finished chats' work for later prompts.
    pub park_prompts: bool,
    /// Deadlines granted to requests.
    pub request_limits: requests::Limits,
    /// Caps on incoming connections, and whether clients may come from beyond loopback.
    pub connection_limits: clients::ConnectionSettings,
    /// Whether the fault-injection admin routes are on (tests only).
    pub fault_injection: bool,
    /// Serve keyless requests as the free account `anonymous`.
    pub allow_anonymous: bool,
    /// The result cache.
    pub cache: CacheSettings,
    /// The HTTP APIs, when on.
    pub http: Option<HttpConfig>,
}
