//! `ganglion-node`: the Ganglion mesh node binary.
//!
//! Parses the command line and config, installs tracing, and calls into the `ganglion` crate.
//! Usage and config errors exit with code 64 (EX_USAGE) and a message naming the field.

mod openmp;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ganglion::config::{ConfigFile, env};

/// EX_USAGE from sysexits.h: the command was used incorrectly.
const EX_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "ganglion-node",
    version,
    about = "A node of the Ganglion edge inference mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a cluster: a CA (ca.crt, ca.key) and a random cluster cookie.
    #[command(alias = "init")]
    InitCluster {
        /// Folder to create the cluster credentials in.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a node identity (certificate, key, CA certificate, cookie) from a cluster folder.
    #[command(alias = "issue")]
    IssueCert {
        /// Cluster folder written by `init-cluster`.
        #[arg(long)]
        cluster_dir: PathBuf,
        /// The node's name (a DNS label: lower-case letters, digits, '-').
        #[arg(long)]
        name: String,
        /// Folder to write the identity to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue an API key: prints the key on stdout and its id on stderr. Creates the cluster's
    /// key-signing key on first use.
    IssueKey {
        /// Cluster folder written by `init-cluster`.
        #[arg(long)]
        cluster_dir: PathBuf,
        /// The account the key bills.
        #[arg(long)]
        account: String,
        /// `free` (stopped at the daily allocation) or `paid` (billed past it).
        #[arg(long, default_value = "free")]
        plan: String,
        /// Most Neurons the account may use a day.
        #[arg(long)]
        daily_limit: Option<u64>,
        /// How long the key is valid, e.g. "30d" (no expiry when absent).
        #[arg(long, value_parser = humantime_duration)]
        expires: Option<Duration>,
    },
    /// Revoke an API key on every node: tell one node, which stores it and tells its peers.
    RevokeKey {
        /// Admin address of a running node.
        #[arg(long)]
        admin: std::net::SocketAddr,
        /// Its admin token (also from GANGLION_ADMIN_TOKEN).
        #[arg(long, env = "GANGLION_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        /// The key itself, or its id.
        key: String,
    },
    /// Print a node's ledger as JSON lines (one record per charged request). Reads the file
    /// directly when the node is stopped, through its admin endpoint while it runs.
    Ledger {
        /// The node's data folder.
        #[arg(long)]
        data_dir: PathBuf,
        /// Only this UTC day (YYYY-MM-DD).
        #[arg(long)]
        day: Option<String>,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// Admin token of the running node (default: GANGLION_ADMIN_TOKEN, or the token the
        /// node generated in its data folder).
        #[arg(long, env = "GANGLION_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// Run a node. Flags override the config file.
    Run(Box<RunArgs>),
    /// Fetch and inspect models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Internal: a model's engine worker, started by a running node (see `--engines`).
    #[command(hide = true)]
    Worker {
        /// The node's socket to connect to.
        #[arg(long)]
        socket: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Fetch models (all built-in ones when none is named), verify their checksums and prepare
    /// them for this CPU. Idempotent.
    Pull {
        /// Catalog ids, e.g. @ganglion/smollm2-135m-instruct.
        ids: Vec<String>,
        /// Model store folder (default ~/.cache/ganglion/models, or GANGLION_MODELS_DIR).
        #[arg(long)]
        models_dir: Option<PathBuf>,
    },
    /// Show the catalog and which models are in the store.
    List {
        /// Model store folder.
        #[arg(long)]
        models_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TOML config file (see config/example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Identity folder written by `issue-cert`.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// UDP address of the QUIC endpoint.
    #[arg(long)]
    listen: Option<String>,
    /// Peer to dial at start-up; repeat for several. Retried with backoff.
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// Address peers should dial to reach this node.
    #[arg(long)]
    advertise: Option<String>,
    /// Address of the admin HTTP endpoint (loopback unless a token is set).
    #[arg(long)]
    admin: Option<String>,
    /// Admin bearer token (also from GANGLION_ADMIN_TOKEN).
    #[arg(long)]
    admin_token: Option<String>,
    /// Folder for durable state.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A peer silent this long is dead, e.g. "5s".
    #[arg(long, value_parser = humantime_duration)]
    liveness_timeout: Option<Duration>,
    /// Model to host (repeat); those that fit in memory are loaded.
    #[arg(long = "host")]
    host: Vec<String>,
    /// Cap on model memory, e.g. 512MiB, to emulate a small edge box.
    #[arg(long)]
    memory_limit: Option<String>,
    /// Model store folder.
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Requests each model runs at once (default: from the hardware and the model).
    #[arg(long)]
    model_concurrency: Option<usize>,
    /// Engine of GGUF chat models: llama.cpp or mistralrs (default: llama.cpp on CPU).
    #[arg(long, value_parser = text_engine)]
    text_engine: Option<ganglion::inference::TextEngine>,
    /// Requests each model lets wait beyond those running.
    #[arg(long)]
    model_queue: Option<usize>,
    /// Where engines run: workers (one process per model, the default) or in-process.
    #[arg(long, value_parser = engines)]
    engines: Option<ganglion::inference::Placement>,
    /// Deadline of a request that names none, e.g. "120s".
    #[arg(long, value_parser = humantime_duration)]
    default_deadline: Option<Duration>,
    /// Longest deadline a request may ask for, e.g. "10m".
    #[arg(long, value_parser = humantime_duration)]
    max_deadline: Option<Duration>,
    /// Accept client connections from beyond loopback even with --allow-anonymous.
    #[arg(long)]
    allow_remote_clients: bool,
    /// Most incoming connections at once (clients and peers).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most incoming connections from one address.
    #[arg(long)]
    max_connections_per_address: Option<usize>,
    /// Test only: admin routes that crash actors and jobs on demand.
    #[arg(long, hide = true)]
    fault_injection: bool,
    /// Serve requests without an API key as the free account `anonymous` (demos; implies
    /// loopback-only clients unless --allow-remote-clients).
    #[arg(long)]
    allow_anonymous: bool,
    /// Result cache shards on this node.
    #[arg(long)]
    cache_shards: Option<u16>,
    /// Bytes of result cache on this node, e.g. 256MiB; 0 keeps no entries here (requests
    /// entering here still use the mesh's other shards).
    #[arg(long)]
    cache_size: Option<String>,
    /// How long an answer stays cached when its request does not say, e.g. "5m".
    #[arg(long, value_parser = humantime_duration)]
    cache_ttl: Option<Duration>,
    /// Serve /metrics on the admin listener without the admin token.
    #[arg(long)]
    metrics_open: bool,
    /// Serve the HTTP APIs (OpenAI-compatible /v1, Workers-AI-style /ai/run) on this address.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// PEM certificate chain for HTTPS on --http.
    #[arg(long, requires = "http_tls_key")]
    http_tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS on --http.
    #[arg(long, requires = "http_tls_cert")]
    http_tls_key: Option<PathBuf>,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    text.parse::<humantime::Duration>()
        .map(Into::into)
        .map_err(|e| e.to_string())
}

impl RunArgs {
    /// The config file (if any) with every given flag applied over it.
    /// Precedence: flag, then (for the admin token) the environment, then the config file.
    fn into_config_file(self) -> Result<ConfigFile, ganglion::ConfigError> {
        let mut file = match &self.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        set(&mut file.node.identity, self.identity);
        set(&mut file.node.data_dir, self.data_dir);
        set(&mut file.transport.listen, self.listen);
        set(&mut file.transport.advertise, self.advertise);
        set(&mut file.transport.liveness_timeout, self.liveness_timeout);
        if !self.seeds.is_empty() {
            file.transport.seeds = Some(self.seeds);
        }
        set(&mut file.admin.listen, self.admin);
        if !self.host.is_empty() {
            file.models.host = Some(self.host);
        }
        set(&mut file.models.memory_limit, self.memory_limit);
        set(&mut file.models.dir, self.models_dir);
        set(&mut file.models.concurrency, self.model_concurrency);
        set(&mut file.models.queue_depth, self.model_queue);
        set(&mut file.models.text_engine, self.text_engine);
        set(&mut file.models.engines, self.engines);
        set(&mut file.requests.default_deadline, self.default_deadline);
        set(&mut file.requests.max_deadline, self.max_deadline);
        if self.allow_remote_clients {
            file.clients.allow_remote = Some(true);
        }
        if self.allow_anonymous {
            file.clients.allow_anonymous = Some(true);
        }
        set(&mut file.clients.max_connections, self.max_connections);
        set(
            &mut file.clients.max_connections_per_address,
            self.max_connections_per_address,
        );
        if self.metrics_open {
            file.admin.metrics_open = Some(true);
        }
        set(&mut file.http.listen, self.http);
        set(&mut file.http.tls_cert, self.http_tls_cert);
        set(&mut file.http.tls_key, self.http_tls_key);
        set(&mut file.cache.shards, self.cache_shards);
        set(&mut file.cache.size, self.cache_size);
        set(&mut file.cache.default_ttl, self.cache_ttl);
        set(&mut file.admin.token, env::admin_token());
        set(&mut file.admin.token, self.admin_token);
        Ok(file)
    }
}

/// Replaces `slot` with `value` when a flag gave one.
fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing();
    match cli.command {
        Command::InitCluster { dir } => report(ganglion::init_cluster(&dir).map(|()| {
            println!("cluster credentials written to {}", dir.display());
        })),
        Command::IssueCert {
            cluster_dir,
            name,
            out,
        } => report(ganglion::issue_cert(&cluster_dir, &name, &out).map(|()| {
            println!("identity of `{name}` written to {}", out.display());
        })),
        Command::Models(command) => models(command),
        Command::IssueKey {
            cluster_dir,
            account,
            plan,
            daily_limit,
            expires,
        } => issue_key(&cluster_dir, account, &plan, daily_limit, expires),
        Command::RevokeKey {
            admin,
            admin_token,
            key,
        } => revoke_key(admin, &admin_token, &key),
        Command::Ledger {
            data_dir,
            day,
            account,
            admin_token,
        } => ledger(&data_dir, day, account, admin_token),
        Command::Worker { socket } => worker(&socket),
        Command::Run(args) => {
            openmp::spin_briefly_at_barriers();
            let fault_injection = args.fault_injection;
            let config = match args.into_config_file().and_then(ConfigFile::validate) {
                Ok(mut config) => {
                    config.fault_injection = fault_injection;
                    config
                }
                Err(e) => {
                    eprintln!("ganglion-node: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            run(config)
        }
    }
}

fn models(command: ModelsCommand) -> ExitCode {
    let dir = match &command {
        ModelsCommand::Pull { models_dir, .. } | ModelsCommand::List { models_dir } => {
            models_dir.clone()
        }
    };
    let section = ganglion::config::ModelsSection {
        dir,
        ..Default::default()
    };
    let (catalog, store) = match section.catalog_and_store() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("ganglion-node: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match command {
        ModelsCommand::List { .. } => {
            println!("{:<36} {:<16} {:>9}  IN STORE", "MODEL", "TASK", "MEMORY");
            for spec in catalog.models() {
                let cached = if store.is_complete(spec) { "yes" } else { "no" };
                println!(
                    "{:<36} {:<16} {:>9}  {cached}",
                    spec.id,
                    spec.task.as_str(),
                    ganglion::hardware::mib(spec.memory_bytes)
                );
            }
            println!("store: {}", store.root().display());
            ExitCode::SUCCESS
        }
        ModelsCommand::Pull { ids, .. } => {
            let ids = if ids.is_empty() {
                catalog.default_ids()
            } else {
                ids
            };
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let index = env::pypi_index();
            for id in ids {
                let Some(spec) = catalog.get(&id) else {
                    eprintln!("ganglion-node: unknown model `{id}`");
                    return ExitCode::from(EX_USAGE);
                };
                match runtime.block_on(ganglion::models::pull::pull(&store, spec, &index, true)) {
                    Ok(ganglion::models::pull::Pulled::AlreadyPresent) => {
                        println!("{id}: already in the store")
                    }
                    Ok(ganglion::models::pull::Pulled::Fetched) => {
                        println!("{id}: fetched and verified")
                    }
                    Err(e) => {
                        eprintln!("ganglion-node: {id}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn issue_key(
    cluster_dir: &std::path::Path,
    account: String,
    plan: &str,
    daily_limit: Option<u64>,
    expires: Option<Duration>,
) -> ExitCode {
    use ganglion::credentials::api_keys::{KeyClaims, Plan, new_key_id};
    let plan = match plan {
        "free" => Plan::Free,
        "paid" => Plan::Paid,
        other => {
            eprintln!("ganglion-node: --plan must be free or paid, not `{other}`");
            return ExitCode::from(EX_USAGE);
        }
    };
    let expires = expires.map(|valid| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(valid)
            .as_secs()
    });
    let claims = KeyClaims {
        kid: new_key_id(),
        account,
        plan,
        daily_limit,
        expires,
    };
    match ganglion::credentials::issue_key(cluster_dir, &claims) {
        Ok(key) => {
            println!("{key}");
            eprintln!("key id {} for account `{}`", claims.kid, claims.account);
            ExitCode::SUCCESS
        }
        Err(e @ ganglion::credentials::CredentialsError::Keys(_)) => {
            eprintln!("ganglion-node: {e}");
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            eprintln!("ganglion-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ledger(
    data_dir: &std::path::Path,
    day: Option<String>,
    account: Option<String>,
    admin_token: Option<String>,
) -> ExitCode {
    use ganglion::metering::usage::parse_day;
    let wanted_day = match day.as_deref().map(parse_day) {
        Some(None) => {
            eprintln!("ganglion-node: --day must be YYYY-MM-DD");
            return ExitCode::from(EX_USAGE);
        }
        Some(day) => day,
        None => None,
    };
    let path = data_dir.join(ganglion::node::LEDGER_FILE);
    let records = match ganglion::metering::ledger::read_stopped(&path) {
        Ok(records) => records
            .into_iter()
            .filter(|r| wanted_day.is_none_or(|d| r.day == d))
            .filter(|r| account.as_ref().is_none_or(|a| *a == r.account))
            .collect(),
        Err(Some(e)) => {
            eprintln!("ganglion-node: {e}");
            return ExitCode::FAILURE;
        }
        // A running node holds the file: ask it.
        Err(None) => {
            let address =
                std::fs::read_to_string(data_dir.join(ganglion::node::ADMIN_ADDRESS_FILE))
                    .ok()
                    .and_then(|a| a.trim().parse().ok());
            let token = admin_token.or_else(|| {
                std::fs::read_to_string(data_dir.join(ganglion::node::ADMIN_TOKEN_FILE))
                    .ok()
                    .map(|t| t.trim().to_owned())
            });
            let (Some(address), Some(token)) = (address, token) else {
                eprintln!(
                    "ganglion-node: the node is running and its admin address or token is unknown; pass --admin-token"
                );
                return ExitCode::FAILURE;
            };
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(ganglion::admin::client::ledger(
                address,
                &token,
                day.as_deref(),
                account.as_deref(),
            )) {
                Ok(records) => records,
                Err(e) => {
                    eprintln!("ganglion-node: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    for record in records {
        match serde_json::to_string(&record) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("ganglion-node: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn revoke_key(admin: std::net::SocketAddr, token: &str, key: &str) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(ganglion::admin::client::revoke_key(admin, token, key)) {
        Ok(kid) => {
            println!("revoked key {kid}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ganglion-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime of a command, or `None` (after saying why on stderr).
fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new()
        .map_err(|e| eprintln!("ganglion-node: cannot start the async runtime: {e}"))
        .ok()
}

fn report(result: Result<(), ganglion::credentials::CredentialsError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ ganglion::credentials::CredentialsError::InvalidName(_)) => {
            eprintln!("ganglion-node: {e}");
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            eprintln!("ganglion-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: ganglion::Config) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let node = match ganglion::start(config).await {
            Ok(node) => node,
            Err(e) => {
                eprintln!("ganglion-node: {e}");
                return ExitCode::FAILURE;
            }
        };
        announce(
            &node.info.name,
            &node.info.addresses,
            node.admin_token_file.as_deref(),
        );
        match node.run_until(shutdown_signal()).await {
            ganglion::node::Stopped::OnRequest => ExitCode::SUCCESS,
            ganglion::node::Stopped::Failed => {
                eprintln!("ganglion-node: the node stopped after an actor failure (see the log)");
                ExitCode::FAILURE
            }
        }
    })
}

/// One machine-readable line on stdout once every socket is bound: scripts and tests read the
/// actual addresses from it (ports may have been chosen by the OS).
fn announce(
    name: &str,
    addresses: &ganglion::facts::Addresses,
    token_file: Option<&std::path::Path>,
) {
    let line = format!(
        "{{\"event\":\"ready\",\"name\":\"{name}\",\"quic\":\"{}\",\"advertise\":\"{}\",\"admin\":\"{}\",\"cluster_tcp\":\"{}\",\"http\":{},\"admin_token_file\":{}}}",
        addresses.quic,
        addresses.advertise,
        addresses.admin,
        addresses.cluster_tcp,
        addresses
            .http
            .map_or("null".to_owned(), |a| format!("\"{a}\"")),
        token_file.map_or("null".to_owned(), |p| format!(
            "{:?}",
            p.display().to_string()
        )),
    );
    println!("{line}");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::LOG_FILTER)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ractor_cluster=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn engines(text: &str) -> Result<ganglion::inference::Placement, String> {
    match text {
        "workers" => Ok(ganglion::inference::Placement::Workers),
        "in-process" => Ok(ganglion::inference::Placement::InProcess),
        other => Err(format!("`{other}`: use workers or in-process")),
    }
}

/// Runs an engine worker until the node that started it goes away.
fn worker(socket: &std::path::Path) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ganglion-node worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(ganglion::inference::worker::serve::run(socket)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ganglion-node worker: {e:#}");
            1
        }
    };
    // At once: engine threads may still be inside a sequence, and nobody is left to answer.
    std::process::exit(code)
}

fn text_engine(text: &str) -> Result<ganglion::inference::TextEngine, String> {
    match text {
        "llama.cpp" => Ok(ganglion::inference::TextEngine::LlamaCpp),
        "mistralrs" => Ok(ganglion::inference::TextEngine::Mistralrs),
        other => Err(format!("`{other}`: use llama.cpp or mistralrs")),
    }
}
