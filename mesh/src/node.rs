//! Starting and stopping a node: binds every socket, then starts the actor tree.

use std::net::SocketAddr;
use std::sync::Arc;

use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

use crate::actors::node_supervisor::{self, ClusterArguments, NodeSupervisor};
use crate::config::Config;
use crate::config::engines::{Placement, TextEngine};
use crate::facts::{Addresses, ModelStatus, NodeInfo};
use crate::hardware::{Hardware, Hosting, mib, plan_hosting};
use crate::inference::{self, Backend};
use crate::models::{Catalog, ModelSpec, ModelStore};
use crate::transport::endpoint::{self, Liveness};
use crate::transport::limits::ConnectionLimits;
use crate::transport::{TransportError, tls::TlsError};

/// File in the data folder holding the admin token generated when none is configured.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// File in the data folder holding the ids of revoked API keys.
pub const REVOKED_KEYS_FILE: &str = "revoked-keys";
/// File in the data folder holding the ledger.
pub const LEDGER_FILE: &str = "ledger.redb";
/// File in the data folder holding the admin endpoint's address while the node runs (so that
/// `ganglion-node ledger` can read the ledger through it).
pub const ADMIN_ADDRESS_FILE: &str = "admin-address";

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The QUIC endpoint could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The generated admin token could not be read or written safely.
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),
    /// A socket could not be bound or a file written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The actor tree did not start.
    #[error("actor tree failed to start: {0}")]
    Actors(String),
    /// The ledger could not be opened (another node may be using this data folder).
    #[error("cannot open the ledger {0}: {1}")]
    Ledger(String, String),
    /// The HTTP API's certificate or key could not be loaded.
    #[error("HTTP TLS: {0}")]
    HttpTls(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// A running node.
#[derive(Debug)]
pub struct RunningNode {
    supervisor: ActorRef<node_supervisor::Msg>,
    handle: JoinHandle<()>,
    /// Where the node listens.
    pub info: NodeInfo,
    /// Where the admin token lives when the node generated it.
    pub admin_token_file: Option<std::path::PathBuf>,
}

/// How a node's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `shutdown` completed and the node stopped in order.
    OnRequest,
    /// An actor failed and took the node down.
    Failed,
}

impl RunningNode {
    /// Runs until `shutdown` completes (then stops the node in order) or the node stops by
    /// itself after an actor failure.
    pub async fn run_until(mut self, shutdown: impl std::future::Future<Output = ()>) -> Stopped {
        tokio::select! {
            () = shutdown => {
                tracing::info!(node = %self.info.name, "shutting down");
                self.supervisor.stop(Some("shutdown".into()));
                let _ = (&mut self.handle).await;
                Stopped::OnRequest
            }
            _ = &mut self.handle => Stopped::Failed,
        }
    }
}

/// Binds the node's sockets and starts its actors.
pub async fn start(config: Config) -> Result<RunningNode, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(io(format!(
        "cannot create data folder {}",
        config.data_dir.display()
    )))?;
    let (admin_token, admin_token_file) = match config.admin_token {
        Some(token) => (token, None),
        None => {
            let path = config.data_dir.join(ADMIN_TOKEN_FILE);
            (crate::credentials::generated_token(&path)?, Some(path))
        }
    };

    let revoked_file = config.data_dir.join(REVOKED_KEYS_FILE);
    let revoked = crate::credentials::api_keys::RevokedKeys::load(&revoked_file).map_err(io(
        format!("cannot read revoked keys from {}", revoked_file.display()),
    ))?;
    let ledger_file = config.data_dir.join(LEDGER_FILE);
    let ledger = Arc::new(
        crate::metering::ledger::Ledger::open(&ledger_file)
            .map_err(|e| StartError::Ledger(ledger_file.display().to_string(), e.to_string()))?,
    );
    let key_verifier = config.identity.key_verifier.clone();
    if key_verifier.is_none() {
        tracing::warn!(
            "this identity has no api-keys.pub (issued before API keys): the node accepts no API key; issue it again"
        );
    }
    let identity = Arc::new(config.identity);
    // QUIC restarts its idle timer once more when it sends a keep-alive into silence, so a dead
    // peer is noticed within idle timeout + keep-alive interval: split the budget accordingly.
    let liveness = Liveness {
        idle_timeout: config.liveness_timeout * 4 / 5,
        keep_alive: config.liveness_timeout / 5,
    };
    let endpoint = endpoint::bind(&identity, config.listen, liveness)?;
    let quic = endpoint
        .local_addr()
        .map_err(io("cannot read QUIC address"))?;
    let advertise = config.advertise.unwrap_or(quic);
    let cluster_tcp = pick_loopback_port(config.cluster_tcp_listen)?;
    let admin_listener = std::net::TcpListener::bind(config.admin_listen).map_err(io(format!(
        "cannot bind admin endpoint on {}",
        config.admin_listen
    )))?;
    admin_listener
        .set_nonblocking(true)
        .map_err(io("cannot configure the admin listener"))?;
    let admin = admin_listener
        .local_addr()
        .map_err(io("cannot read admin address"))?;
    if !admin.ip().is_loopback() {
        tracing::warn!(%admin, "the admin endpoint (and the dashboard) speaks plain HTTP on a non-loopback address: its token, and API keys typed into the dashboard, cross the network in clear; prefer loopback with an SSH tunnel or a TLS proxy");
    }
    std::fs::write(config.data_dir.join(ADMIN_ADDRESS_FILE), admin.to_string())
        .map_err(io("cannot write the admin address file"))?;
    let http = match &config.http {
        None => None,
        Some(http) => {
            let listener = std::net::TcpListener::bind(http.listen)
                .map_err(io(format!("cannot bind the HTTP API on {}", http.listen)))?;
            listener
                .set_nonblocking(true)
                .map_err(io("cannot configure the HTTP listener"))?;
            let tls = match &http.tls {
                None => None,
                Some((cert, key)) => {
                    Some(crate::api::listener::tls_config(cert, key).map_err(StartError::HttpTls)?)
                }
            };
            let remote_clients = config.connection_limits.remote_clients;
            if !remote_clients && !http.listen.ip().to_canonical().is_loopback() {
                tracing::warn!(listen = %http.listen, "the HTTP API listens beyond loopback, but clients are served on loopback only (--allow-anonymous without clients.allow_remote): others get 403");
            }
            Some(crate::actors::gateway::HttpArguments {
                listener: Arc::new(listener),
                tls,
                max_connections: http.max_connections,
                remote_clients,
            })
        }
    };
    let http_addr = match &http {
        Some(h) => Some(
            h.listener
                .local_addr()
                .map_err(io("cannot read HTTP address"))?,
        ),
        None => None,
    };

    let hardware = Hardware::detect(config.memory_limit);
    let catalog = Arc::new(config.catalog);
    let store = ModelStore::new(&config.models_dir);
    let choices = EngineChoices {
        concurrency: config.model_concurrency,
        text_engine: config.text_engine,
        placement: config.engines,
        park_prompts: config.park_prompts,
    };
    let (models, hosting) = load_models(&catalog, &store, &config.host, &hardware, choices).await;

    let cpu = inference::kernels::CpuKernels::detect();
    tracing::info!(features = ?cpu.features, kernels = %cpu.variant, "CPU");
    let info = NodeInfo {
        cpu,
        name: identity.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        addresses: Addresses {
            quic,
            advertise,
            admin,
            cluster_tcp,
            http: http_addr,
        },
        hardware: hardware.clone(),
    };
    let args = node_supervisor::Arguments {
        catalog,
        models,
        model_queue_depth: config.model_queue_depth,
        hosting,
        advertise,
        region: config.region.clone(),
        cluster: ClusterArguments {
            identity,
            endpoint,
            seeds: config.seeds,
            liveness,
            cluster_tcp,
            limits: ConnectionLimits::from_settings(config.connection_limits),
        },
        request_limits: config.request_limits,
        fault_injection: config.fault_injection,
        metrics_open: config.metrics_open,
        auth: crate::request::authenticate::Auth {
            verifier: key_verifier,
            revoked,
            allow_anonymous: config.allow_anonymous,
        },
        revoked_file,
        ledger,
        cache: config.cache,
        http,
        admin_listener,
        node_info: info.clone(),
        admin_token: Some(admin_token),
    };
    let (supervisor, handle) = Actor::spawn(Some("ganglion.node".into()), NodeSupervisor, args)
        .await
        .map_err(|e| StartError::Actors(e.to_string()))?;
    Ok(RunningNode {
        supervisor,
        handle,
        info,
        admin_token_file,
    })
}

/// How the operator wants models run.
#[derive(Debug, Clone, Copy)]
struct EngineChoices {
    /// Requests each model runs at once, when set.
    concurrency: Option<usize>,
    /// The engine of GGUF chat models, when set.
    text_engine: Option<TextEngine>,
    /// Where engines run.
    placement: Placement,
    /// Whether llama.cpp keeps finished chats' work for later prompts.
    park_prompts: bool,
}

/// Loads every configured model that fits in the memory budget. A model that does not fit, is
/// not pulled, or fails to load is reported (log and `/admin/models`) and the node runs without it.
async fn load_models(
    catalog: &Catalog,
    store: &ModelStore,
    host: &[String],
    hardware: &Hardware,
    choices: EngineChoices,
) -> (Vec<(ModelSpec, Arc<Backend>, usize)>, Vec<ModelStatus>) {
    let EngineChoices {
        concurrency,
        text_engine,
        placement,
        park_prompts,
    } = choices;
    let engine = text_engine.unwrap_or_else(|| TextEngine::for_hardware(hardware));
    let specs: Vec<&ModelSpec> = host.iter().filter_map(|id| catalog.get(id)).collect();
    let plan = plan_hosting(hardware.memory_budget(), specs.iter().copied());
    // What the models to host leave of the budget is shared by the chat models' KV caches.
    let hosted = || {
        specs
            .iter()
            .zip(&plan)
            .filter(|(_, (_, decision))| matches!(decision, Hosting::Host))
            .map(|(spec, _)| *spec)
    };
    let left = hardware
        .memory_budget()
        .saturating_sub(hosted().map(|s| s.memory_bytes).sum());
    let chat_models = hosted()
        .filter(|s| s.task == crate::models::Task::TextGeneration)
        .count();
    let kv_budget = left / chat_models.max(1) as u64;
    let explicit_engine = text_engine.is_some();
    let mut loaded = Vec::new();
    let mut report = Vec::new();
    for (spec, (_, decision)) in specs.iter().copied().zip(plan) {
        let reason = match decision {
            Hosting::DoesNotFit { needs, left } => Some(format!(
                "needs {} but only {} of the memory budget ({}{}) is left",
                mib(needs),
                mib(left),
                mib(hardware.memory_budget()),
                if hardware.memory_limit.is_some() {
                    ", capped by --memory-limit"
                } else {
                    ""
                },
            )),
            Hosting::Host => {
                let started = std::time::Instant::now();
                let load = |engine| async move {
                    let mut plan =
                        inference::plan(spec, store, concurrency, engine, hardware, kv_budget)?;
                    plan.park_prompts = park_prompts;
                    match placement {
                        Placement::Workers => Backend::in_worker(plan).await,
                        Placement::InProcess => inference::load(&plan)
                            .await
                            .map(|loaded| (loaded.backend, loaded.slots)),
                    }
                };
                let mut outcome = load(engine).await;
                if let Err(e) = &outcome
                    && !explicit_engine
                    && engine == TextEngine::LlamaCpp
                    && spec.task == crate::models::Task::TextGeneration
                {
                    // llama.cpp knows chat templates by their text; mistralrs runs the template
                    // itself, so a model llama.cpp refuses may still be served.
                    tracing::warn!(model = %spec.id, error = %e, "llama.cpp cannot serve it; trying mistralrs");
                    let mistralrs = TextEngine::Mistralrs;
                    outcome = load(mistralrs).await;
                }
                match outcome {
                    Ok((backend, slots)) => {
                        tracing::info!(model = %spec.id, load_ms = started.elapsed().as_millis() as u64, engine = backend.engine(), slots, "model loaded");
                        loaded.push((spec.clone(), Arc::new(backend), slots));
                        None
                    }
                    Err(e) => Some(e.to_string()),
                }
            }
        };
        if let Some(reason) = &reason {
            tracing::warn!(model = %spec.id, %reason, "model not hosted");
        }
        report.push(ModelStatus {
            id: spec.id.clone(),
            task: spec.task.as_str(),
            memory_bytes: spec.memory_bytes,
            hosted: reason.is_none(),
            reason,
        });
    }
    (loaded, report)
}

/// ractor_cluster binds its TCP listener itself and does not report a chosen port, so a free
/// port is picked here (bind, release) and handed to it. It is picked below the kernel's
/// ephemeral range when there is room: a released ephemeral port was soon taken again by some
/// outgoing connection before ractor_cluster bound it (seen in CI: "Address already in use").
fn pick_loopback_port(addr: SocketAddr) -> Result<SocketAddr, StartError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| ports_below_ephemeral(&text));
    if let Some(range) = range {
        for _ in 0..64 {
            let candidate = SocketAddr::new(addr.ip(), rand::random_range(range.clone()));
            if std::net::TcpListener::bind(candidate).is_ok() {
                return Ok(candidate);
            }
        }
    }
    let probe = std::net::TcpListener::bind(addr).map_err(io(format!("cannot bind {addr}")))?;
    probe.local_addr().map_err(io("cannot read probe address"))
}

/// Ports to pick a listener's from, below the ephemeral range `ip_local_port_range` gives
/// (`"32768\t60999"`) and above the well-known and commonly configured ones; `None` when that
/// leaves fewer than 1,000.
fn ports_below_ephemeral(ip_local_port_range: &str) -> Option<std::ops::Range<u16>> {
    const FLOOR: u16 = 20_000;
    let low: u16 = ip_local_port_range
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    (low >= FLOOR + 1_000).then_some(FLOOR..low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_ports_are_picked_below_the_ephemeral_range() {
        assert_eq!(
            ports_below_ephemeral("32768\t60999\n"),
            Some(20_000..32_768)
        );
        // No room below it, or nothing readable: the kernel picks.
        assert_eq!(ports_below_ephemeral("1024\t65535"), None);
        assert_eq!(ports_below_ephemeral("20500 60999"), None);
        assert_eq!(ports_below_ephemeral(""), None);
        assert_eq!(ports_below_ephemeral("x y"), None);
    }
}
