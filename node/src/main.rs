//! `ganglion-node`: the Ganglion mesh node binary.
//!
//! Parses the command line and config, installs tracing, and calls into the `ganglion` crate.
//! Usage and config errors exit with code 64 (EX_USAGE) and a message naming the field.

mod openmp;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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

/// `run`: the config file's flags come with its sections (`ganglion::config::ConfigFile`, one
/// `#[arg(long = ...)]` per field that has a flag), so each is declared once, beside its field.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TOML config file (see config/example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Test only: admin routes that crash actors and jobs on demand.
    #[arg(long, hide = true)]
    fault_injection: bool,
    // Every setting that has a flag.
    #[command(flatten)]
    settings: ConfigFile,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    text.parse::<humantime::Duration>()
        .map(Into::into)
        .map_err(|e| e.to_string())
}

impl RunArgs {
    /// The config file (if any) with every flag `typed` applied over it (see [`typed_flags`]).
    /// Precedence: flag, then (for the admin token) the environment, then the config file.
    fn into_config_file(mut self, typed: &clap::ArgMatches) -> anyhow::Result<ConfigFile> {
        self.settings = match &self.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        set(&mut self.settings.admin.token, env::admin_token());
        self.update_from_arg_matches(typed)?;
        Ok(self.settings)
    }
}

/// The flags typed on the command line of subcommand `name`. clap also fills in defaults (a
/// switch left out is `false`); those are dropped, so that only what was typed overrides the
/// config file.
fn typed_flags(matches: &clap::ArgMatches, name: &str) -> clap::ArgMatches {
    let mut typed = matches
        .subcommand_matches(name)
        .cloned()
        .unwrap_or_default();
    let defaulted: Vec<String> = typed
        .ids()
        .map(|id| id.as_str().to_owned())
        .filter(|id| typed.value_source(id) == Some(ValueSource::DefaultValue))
        .collect();
    for id in defaulted {
        let _ = typed.try_clear_id(&id);
    }
    typed
}

/// Replaces `slot` with `value` when there is one.
fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

/// Prints a command-line error (or the help or version asked for); the exit code it means.
fn usage(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(EX_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    // As `Cli::parse` does, keeping the matches: they tell a flag typed from one left out.
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => return usage(&e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage(&e.format(&mut Cli::command())),
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
            let typed = typed_flags(&matches, "run");
            let config = args
                .into_config_file(&typed)
                .and_then(|file| file.validate().map_err(anyhow::Error::from));
            let config = match config {
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
            let width = catalog
                .models()
                .iter()
                .map(|m| m.id.len())
                .max()
                .unwrap_or(0);
            let tasks = catalog
                .models()
                .iter()
                .map(|m| m.task.as_str().len())
                .max()
                .unwrap_or(0);
            println!(
                "{:<width$} {:<tasks$} {:>9}  {:<8}  {:<11}  PRICE",
                "MODEL", "TASK", "MEMORY", "IN STORE", "CLASS"
            );
            for spec in catalog.models() {
                let cached = if store.is_complete(spec) { "yes" } else { "no" };
                println!(
                    "{:<width$} {:<tasks$} {:>9}  {cached:<8}  {:<11}  {}",
                    spec.id,
                    spec.task.as_str(),
                    ganglion::hardware::mib(spec.memory_bytes),
                    spec.class.as_str(),
                    spec.pricing.describe(spec.task.unit()),
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
                    Ok(ganglion::models::pull::Pulled::Compiled) => {
                        println!("{id}: compiled into this node, nothing to fetch")
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.io_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ganglion-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
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

/// Runs an engine worker until the node that started it goes away.
fn worker(socket: &std::path::Path) -> ExitCode {
    // One thread reads and writes the socket; the engine has threads of its own.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion::config::engines::TextEngine;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_flag_typed_overrides_the_file_and_a_flag_left_out_leaves_it() {
        let dir = std::env::temp_dir().join(format!("ganglion-node-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "[clients]\nallow_anonymous = true\nmax_connections = 10\n\
             [admin]\nmetrics_open = true\n\
             [transport]\nseeds = [\"10.0.0.1:7400\"]\n\
             [cache]\nshards = 3\n",
        )
        .unwrap();
        let argv = [
            "ganglion-node",
            "run",
            "--config",
            path.to_str().unwrap(),
            "--max-connections",
            "20",
            "--seed",
            "10.0.0.2:7400",
            "--seed",
            "10.0.0.3:7400",
            "--cache-ttl",
            "2m",
            "--text-engine",
            "mistralrs",
            "--allow-remote-clients",
        ];
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let Command::Run(args) = Cli::from_arg_matches(&matches).unwrap().command else {
            panic!("not `run`");
        };
        let file = args
            .into_config_file(&typed_flags(&matches, "run"))
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        // Switches left out leave the file's `true`; a typed one sets its field.
        assert_eq!(file.clients.allow_anonymous, Some(true));
        assert_eq!(file.admin.metrics_open, Some(true));
        assert_eq!(file.clients.allow_remote, Some(true));
        assert_eq!(file.clients.max_connections, Some(20));
        assert_eq!(
            file.transport.seeds,
            Some(vec!["10.0.0.2:7400".to_owned(), "10.0.0.3:7400".to_owned()])
        );
        assert_eq!(file.cache.shards, Some(3));
        assert_eq!(file.cache.default_ttl, Some(Duration::from_secs(120)));
        assert_eq!(file.models.text_engine, Some(TextEngine::Mistralrs));
        assert_eq!(file.http.listen, None);
    }

    #[test]
    fn a_bad_value_is_refused_by_name() {
        let err = Cli::try_parse_from(["ganglion-node", "run", "--engines", "nowhere"])
            .expect_err("unknown placement");
        assert!(
            err.to_string().contains("use workers or in-process"),
            "{err}"
        );
        let err = Cli::try_parse_from(["ganglion-node", "run", "--http-tls-cert", "c.pem"])
            .expect_err("a certificate without its key");
        assert!(err.to_string().contains("--http-tls-key"), "{err}");
    }
}
