//! Validation: [`ConfigFile::validate`] checks every field, turns each section into its
//! subsystem's settings and loads the identity, before any port is bound or file written. An
//! error names the offending field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cache::{
    CacheSettings, DEFAULT_CACHE_SHARDS, DEFAULT_CACHE_SIZE, DEFAULT_CACHE_TTL, NEAR_SHARE,
};
use super::clients::{
    ConnectionSettings, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
};
use super::engines::{Placement, TextEngine};
use super::file::{CacheSection, ConfigFile, ModelsSection};
use super::http::HttpConfig;
use super::requests::{DEFAULT_MAX_REQUEST_DEADLINE, DEFAULT_REQUEST_DEADLINE, Limits};
use super::{
    Config, ConfigError, DEFAULT_ADMIN, DEFAULT_IO_THREADS, DEFAULT_LISTEN,
    DEFAULT_LIVENESS_TIMEOUT, MAX_IO_THREADS, env,
};
use crate::credentials::{CredentialsError, Identity};
use crate::hardware::parse_size;
use crate::metering::pricing::{PriceClass, PricingRule};
use crate::models::catalog::Source;
use crate::models::{Catalog, ModelSpec, ModelStore, Task};

impl ConfigFile {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            ConfigError::new(
                "--config",
                format!("{}: {}", path.display(), e.to_string().trim()),
            )
        })
    }

    /// Checks every field and loads the identity. Nothing is bound or written.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let identity_dir = self.node.identity.ok_or_else(|| {
            ConfigError::new(
                "node.identity",
                "required (an identity folder from `issue-cert`)",
            )
        })?;
        let identity = Identity::load(&identity_dir).map_err(|e| match e {
            CredentialsError::Io { path, source } => {
                ConfigError::new("node.identity", format!("{}: {source}", path.display()))
            }
            other => ConfigError::new("node.identity", other.to_string()),
        })?;
        let data_dir = match self.node.data_dir {
            Some(dir) => dir,
            None => default_data_dir(&identity.name)?,
        };
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(ConfigError::new(
                "node.data_dir",
                format!("{} is not a folder", data_dir.display()),
            ));
        }

        let listen = parse_addr(
            "transport.listen",
            self.transport.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        )?;
        let advertise = self
            .transport
            .advertise
            .as_deref()
            .map(|a| parse_addr("transport.advertise", a))
            .transpose()?;
        let seeds = self
            .transport
            .seeds
            .unwrap_or_default()
            .iter()
            .map(|s| parse_addr("transport.seeds", s))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(addr) = advertise
            && (addr.ip().is_unspecified() || addr.port() == 0)
        {
            return Err(ConfigError::new(
                "transport.advertise",
                format!("`{addr}` is not dialable: give a concrete address and port"),
            ));
        }
        let region = self
            .node
            .region
            .clone()
            .unwrap_or_else(|| crate::membership::regions::DEFAULT_REGION.to_owned());
        if !crate::membership::regions::region_ok(&region) {
            return Err(ConfigError::new(
                "node.region",
                "must be 1 to 64 of a-z, 0-9, `-`, `_` and `.`",
            ));
        }
        let io_threads = self.node.io_threads.unwrap_or(DEFAULT_IO_THREADS);
        if !(1..=MAX_IO_THREADS).contains(&io_threads) {
            return Err(ConfigError::new(
                "node.io_threads",
                format!("must be 1 to {MAX_IO_THREADS}"),
            ));
        }
        let liveness_timeout = self
            .transport
            .liveness_timeout
            .unwrap_or(DEFAULT_LIVENESS_TIMEOUT);
        if !(Duration::from_millis(500)..=Duration::from_secs(600)).contains(&liveness_timeout) {
            return Err(ConfigError::new(
                "transport.liveness_timeout",
                "must be between 500ms and 10m",
            ));
        }

        let cluster_tcp_listen = parse_addr(
            "cluster.tcp_listen",
            self.cluster.tcp_listen.as_deref().unwrap_or("127.0.0.1:0"),
        )?;
        if !cluster_tcp_listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "cluster.tcp_listen",
                "must be a loopback address: the mesh runs sessions over QUIC",
            ));
        }

        let admin_listen = parse_addr(
            "admin.listen",
            self.admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN),
        )?;
        let admin_token = self.admin.token.filter(|t| !t.is_empty());
        if let Some(token) = &admin_token
            && token.len() < 16
        {
            return Err(ConfigError::new(
                "admin.token",
                "must be at least 16 characters",
            ));
        }
        if !admin_listen.ip().is_loopback() && admin_token.is_none() {
            return Err(ConfigError::new(
                "admin.token",
                format!(
                    "required when the admin endpoint listens on non-loopback {admin_listen} (or set {})",
                    env::ADMIN_TOKEN
                ),
            ));
        }

        let default_deadline = self
            .requests
            .default_deadline
            .unwrap_or(DEFAULT_REQUEST_DEADLINE);
        let max_deadline = self
            .requests
            .max_deadline
            .unwrap_or(DEFAULT_MAX_REQUEST_DEADLINE);
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&max_deadline) {
            return Err(ConfigError::new(
                "requests.max_deadline",
                "must be between 1s and 1h",
            ));
        }
        if default_deadline.is_zero() || default_deadline > max_deadline {
            return Err(ConfigError::new(
                "requests.default_deadline",
                format!("must be above 0 and at most requests.max_deadline ({max_deadline:?})"),
            ));
        }
        let max_connections = self
            .clients
            .max_connections
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=100_000).contains(&max_connections) {
            return Err(ConfigError::new(
                "clients.max_connections",
                "must be between 1 and 100000",
            ));
        }
        let per_address = self
            .clients
            .max_connections_per_address
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS.min(max_connections));
        if !(1..=max_connections).contains(&per_address) {
            return Err(ConfigError::new(
                "clients.max_connections_per_address",
                "must be between 1 and clients.max_connections",
            ));
        }

        let allow_anonymous = self.clients.allow_anonymous.unwrap_or(false);
        let cache = self.cache.validate()?;
        let http = match self.http.listen.as_deref() {
            None => {
                if self.http.tls_cert.is_some() || self.http.tls_key.is_some() {
                    return Err(ConfigError::new("http.listen", "required for HTTPS"));
                }
                None
            }
            Some(addr) => Some(HttpConfig {
                listen: parse_addr("http.listen", addr)?,
                tls: match (self.http.tls_cert, self.http.tls_key) {
                    (Some(cert), Some(key)) => Some((cert, key)),
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError::new(
                            "http.tls_cert",
                            "give both a certificate and a key, or neither",
                        ));
                    }
                },
                max_connections: match self.http.max_connections {
                    None => super::http::DEFAULT_MAX_CONNECTIONS,
                    Some(n) if (1..=100_000).contains(&n) => n,
                    Some(_) => {
                        return Err(ConfigError::new(
                            "http.max_connections",
                            "must be between 1 and 100000",
                        ));
                    }
                },
            }),
        };
        let models = self.models.validate()?;
        Ok(Config {
            request_limits: Limits {
                default_deadline,
                max_deadline,
                prefix_affinity: self.requests.prefix_affinity.unwrap_or(true),
            },
            connection_limits: ConnectionSettings {
                max_total: max_connections,
                max_per_address: per_address,
                remote_clients: self.clients.allow_remote.unwrap_or(!allow_anonymous),
            },
            fault_injection: false,
            allow_anonymous,
            cache,
            http,
            catalog: models.catalog,
            models_dir: models.dir,
            host: models.host,
            memory_limit: models.memory_limit,
            model_concurrency: models.concurrency,
            model_queue_depth: models.queue_depth,
            text_engine: models.text_engine,
            engines: models.engines,
            park_prompts: models.park_prompts,
            identity,
            data_dir,
            io_threads,
            listen,
            advertise,
            region,
            seeds,
            liveness_timeout,
            cluster_tcp_listen,
            admin_listen,
            admin_token,
            metrics_open: self.admin.metrics_open.unwrap_or(false),
        })
    }
}

impl CacheSection {
    fn validate(self) -> Result<CacheSettings, ConfigError> {
        let bytes = match self.size.as_deref() {
            None => DEFAULT_CACHE_SIZE,
            Some("0") => 0,
            Some(text) => parse_size(text).map_err(|e| ConfigError::new("cache.size", e))?,
        };
        let shards = self.shards.unwrap_or(DEFAULT_CACHE_SHARDS);
        if shards > crate::cache::MAX_SHARDS {
            return Err(ConfigError::new(
                "cache.shards",
                format!(
                    "must be between 0 (copies of other nodes' answers only) and {}",
                    crate::cache::MAX_SHARDS
                ),
            ));
        }
        // Without shards, the whole budget keeps copies of other nodes' answers.
        let near_bytes = if shards == 0 {
            bytes
        } else {
            bytes / NEAR_SHARE
        };
        if bytes != 0 && bytes - near_bytes < 64 * 1024 * u64::from(shards) {
            return Err(ConfigError::new(
                "cache.size",
                "must be 0 (no entries here) or, less the eighth kept for near copies, at least 64KiB per shard",
            ));
        }
        let default_ttl = self.default_ttl.unwrap_or(DEFAULT_CACHE_TTL);
        let (min, max) = (
            ganglion_client::protocol::MIN_CACHE_TTL_SECS,
            ganglion_client::protocol::MAX_CACHE_TTL_SECS,
        );
        if !(u64::from(min)..=u64::from(max)).contains(&default_ttl.as_secs()) {
            return Err(ConfigError::new(
                "cache.default_ttl",
                format!("must be between {min} s and {max} s"),
            ));
        }
        Ok(CacheSettings {
            shards: if bytes == 0 { 0 } else { shards },
            bytes: bytes - near_bytes,
            near_bytes,
            default_ttl,
        })
    }
}

/// The validated `[models]` section.
struct ModelsConfig {
    catalog: Catalog,
    dir: PathBuf,
    host: Vec<String>,
    memory_limit: Option<u64>,
    concurrency: Option<usize>,
    queue_depth: Option<usize>,
    text_engine: Option<TextEngine>,
    engines: Placement,
    park_prompts: bool,
}

impl ModelsSection {
    /// The catalog and model store this section describes (for `models pull` and `models list`).
    pub fn catalog_and_store(self) -> Result<(Catalog, ModelStore), ConfigError> {
        let models = self.validate()?;
        Ok((models.catalog, ModelStore::new(models.dir)))
    }

    fn validate(self) -> Result<ModelsConfig, ConfigError> {
        let mut catalog = Catalog::builtin();
        for local in self.local {
            // Peers refuse an advert naming a model outside these bounds, and clients a
            // request for one: the node would host a model nobody can reach.
            if local.id.is_empty()
                || local.id.len() > ganglion_client::protocol::MAX_MODEL_ID_BYTES
                || local.id.chars().any(char::is_control)
            {
                return Err(ConfigError::new(
                    "models.local.id",
                    format!(
                        "must be 1 to {} bytes without control characters",
                        ganglion_client::protocol::MAX_MODEL_ID_BYTES
                    ),
                ));
            }
            let Some(task) = Task::from_name(&local.task) else {
                let tasks: Vec<&str> = Task::ALL.iter().map(|t| t.as_str()).collect();
                return Err(ConfigError::new(
                    "models.local.task",
                    format!("`{}` is not one of {}", local.task, tasks.join(", ")),
                ));
            };
            if task.on_onnx_runtime() {
                return Err(ConfigError::new(
                    "models.local.task",
                    format!(
                        "`{}` models are built in only (each needs its own preparation and labels)",
                        task.as_str()
                    ),
                ));
            }
            let memory_bytes = parse_size(&local.memory)
                .map_err(|e| ConfigError::new("models.local.memory", e))?;
            let pricing = match (
                local.neurons_per_request,
                local.neurons_per_million_input,
                local.neurons_per_million_output,
            ) {
                (Some(neurons), None, None) => PricingRule::per_request(neurons),
                (None, None, None) => PricingRule::per_request(match task {
                    Task::TextGeneration => 3,
                    Task::TextEmbeddings | Task::TextClassification => 1,
                    Task::ImageToText | Task::ImageClassification | Task::SpeechRecognition => 10,
                }),
                (None, input, output) => PricingRule::PerToken {
                    input_per_million: input.unwrap_or(0),
                    output_per_million: output.unwrap_or(0),
                },
                (Some(_), _, _) => {
                    return Err(ConfigError::new(
                        "models.local.neurons_per_request",
                        "give a price per request or per million tokens, not both",
                    ));
                }
            };
            catalog.add(ModelSpec {
                id: local.id,
                task,
                source: Source::Local(local.path),
                parameters: 0,
                memory_bytes,
                default_max_tokens: 256,
                context_tokens: if task == Task::TextEmbeddings {
                    256
                } else {
                    2048
                },
                dimensions: None,
                class: PriceClass::of(pricing),
                pricing,
            });
        }
        let host = self.host.unwrap_or_default();
        if let Some(unknown) = host.iter().find(|id| catalog.get(id).is_none()) {
            let known: Vec<&str> = catalog.models().iter().map(|m| m.id.as_str()).collect();
            return Err(ConfigError::new(
                "models.host",
                format!(
                    "unknown model `{unknown}`; the catalog has {}",
                    known.join(", ")
                ),
            ));
        }
        let memory_limit = self
            .memory_limit
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| ConfigError::new("models.memory_limit", e))?;
        let concurrency = self.concurrency;
        if concurrency.is_some_and(|c| !(1..=64).contains(&c)) {
            return Err(ConfigError::new(
                "models.concurrency",
                "must be between 1 and 64",
            ));
        }
        let queue_depth = self.queue_depth;
        if queue_depth.is_some_and(|q| q > 1024) {
            return Err(ConfigError::new(
                "models.queue_depth",
                "must be at most 1024",
            ));
        }
        let dir = match self.dir.or_else(env::models_dir) {
            Some(dir) => dir,
            None => ModelStore::default_root()
                .ok_or_else(|| ConfigError::new("models.dir", "required: HOME is not set"))?,
        };
        Ok(ModelsConfig {
            catalog,
            dir,
            host,
            memory_limit,
            concurrency,
            queue_depth,
            text_engine: self.text_engine,
            engines: self.engines.unwrap_or_default(),
            park_prompts: self.park_prompts.unwrap_or(true),
        })
    }
}

fn parse_addr(field: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::new(
            field,
            format!("`{text}` is not a socket address like 127.0.0.1:7400"),
        )
    })
}

fn default_data_dir(name: &str) -> Result<PathBuf, ConfigError> {
    let home = env::home_dir()
        .ok_or_else(|| ConfigError::new("node.data_dir", "required: HOME is not set"))?;
    Ok(home.join(".local/share/ganglion").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::NodeSection;
    use crate::credentials::{init_cluster, issue_cert};

    /// One identity for all tests of this module, created by whichever test runs first.
    fn identity_dir() -> PathBuf {
        static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        DIR.get_or_init(|| {
            let root = std::env::temp_dir().join(format!("ganglion-config-{}", std::process::id()));
            // A folder left by an earlier run whose process had the same id.
            let _ = std::fs::remove_dir_all(&root);
            init_cluster(&root.join("cluster")).expect("init");
            issue_cert(&root.join("cluster"), "cfg-node", &root.join("id")).expect("issue");
            root.join("id")
        })
        .clone()
    }

    fn parse(toml_text: &str) -> Result<Config, ConfigError> {
        let mut file: ConfigFile = toml::from_str(toml_text).expect("toml");
        file.node.identity.get_or_insert_with(identity_dir);
        file.node
            .data_dir
            .get_or_insert_with(|| std::env::temp_dir().join("ganglion-config-data"));
        file.validate()
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse("").expect("valid");
        assert_eq!(config.identity.name, "cfg-node");
        assert_eq!(config.liveness_timeout, DEFAULT_LIVENESS_TIMEOUT);
        assert!(config.admin_listen.ip().is_loopback());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[transport]\nlisten = \"nope\"", "transport.listen"),
            (
                "[transport]\nseeds = [\"1.2.3.4\"]\nlisten = \"127.0.0.1:1\"",
                "transport.seeds",
            ),
            (
                "[transport]\nadvertise = \"0.0.0.0:5\"",
                "transport.advertise",
            ),
            (
                "[transport]\nliveness_timeout = \"1h\"",
                "transport.liveness_timeout",
            ),
            (
                "[cluster]\ntcp_listen = \"0.0.0.0:0\"",
                "cluster.tcp_listen",
            ),
            ("[admin]\nlisten = \"0.0.0.0:9000\"", "admin.token"),
            ("[models]\nhost = [\"@nope/none\"]", "models.host"),
            ("[models]\nmemory_limit = \"lots\"", "models.memory_limit"),
            ("[cache]\nsize = \"lots\"", "cache.size"),
            ("[cache]\nshards = 65", "cache.shards"),
            ("[cache]\ndefault_ttl = \"5s\"", "cache.default_ttl"),
            ("[models]\nconcurrency = 0", "models.concurrency"),
            ("[admin]\ntoken = \"short\"", "admin.token"),
            (
                "[requests]\ndefault_deadline = \"20m\"",
                "requests.default_deadline",
            ),
            ("[requests]\nmax_deadline = \"2h\"", "requests.max_deadline"),
            ("[clients]\nmax_connections = 0", "clients.max_connections"),
            ("[node]\nregion = \"EU West\"", "node.region"),
            ("[node]\nio_threads = 0", "node.io_threads"),
            (
                "[http]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"",
                "http.listen",
            ),
            ("[http]\nlisten = \"nope\"", "http.listen"),
            (
                "[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"/c.pem\"",
                "http.tls_cert",
            ),
            (
                "[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 0",
                "http.max_connections",
            ),
            ("[models]\nqueue_depth = 5000", "models.queue_depth"),
            (
                "[[models.local]]\nid = \"\"\ntask = \"text-generation\"\npath = \"/m.gguf\"\nmemory = \"1GiB\"",
                "models.local.id",
            ),
            (
                "[[models.local]]\nid = \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\ntask = \"text-generation\"\npath = \"/m.gguf\"\nmemory = \"1GiB\"",
                "models.local.id",
            ),
            (
                "[[models.local]]\nid = \"my/model\"\ntask = \"translation\"\npath = \"/m.gguf\"\nmemory = \"1GiB\"",
                "models.local.task",
            ),
            (
                "[[models.local]]\nid = \"my/model\"\ntask = \"text-generation\"\npath = \"/m.gguf\"\nmemory = \"huge\"",
                "models.local.memory",
            ),
            (
                "[[models.local]]\nid = \"my/model\"\ntask = \"text-generation\"\npath = \"/m.gguf\"\nmemory = \"1GiB\"\nneurons_per_request = 1\nneurons_per_million_input = 5",
                "models.local.neurons_per_request",
            ),
            (
                "[clients]\nmax_connections_per_address = 2000",
                "clients.max_connections_per_address",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.field, field, "{text}: {err}");
        }
        let err = toml::from_str::<ConfigFile>("[transport]\nlisen = \"x\"").expect_err("unknown");
        assert!(err.to_string().contains("lisen"));
    }

    #[test]
    fn a_missing_identity_is_named() {
        let file = ConfigFile {
            node: NodeSection {
                identity: Some("/nonexistent/id".into()),
                data_dir: None,
                region: None,
                io_threads: None,
            },
            ..Default::default()
        };
        assert_eq!(file.validate().expect_err("missing").field, "node.identity");
    }
}
