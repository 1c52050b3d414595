//! NodeSupervisor: the root of a node's actor tree.
//!
//! It starts every child linked to itself and restarts any child that fails or stops on its
//! own, with the arguments it was first started with; handles held elsewhere follow the new
//! actor through their [`ActorSlot`]. Restarts are bounded ([`MAX_RESTARTS`] per
//! [`RESTART_WINDOW`] per child): a model host over budget is given up on (its model shows
//! `failed`, the node serves the rest); a core actor over budget stops the node, since a node
//! that keeps failing is better restarted by its service manager.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::{
    ActorSlot, admin, cache_shard, cluster_host, gateway, meter, model_host, peer_directory, router,
};
use crate::facts::{ModelState, ModelStates, ModelStatus, NodeInfo, SessionNodes};
use crate::faults::Faults;
use crate::inference::Backend;
use crate::models::{Catalog, ModelSpec};
use crate::request;

/// Most restarts of one child within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: usize = 5;
/// The window over which restarts are counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Attempts at restarting the cluster host while its old listener lets go of its port.
const CLUSTER_RESTART_ATTEMPTS: u32 = 25;

/// The supervisor actor.
#[derive(Debug, Default)]
pub struct NodeSupervisor;

/// A child of the supervisor, by role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Child {
    /// The peer directory.
    Directory,
    /// The meter.
    Meter,
    /// The router.
    Router,
    /// The gateway.
    Gateway,
    /// The cluster host (and its NodeServer).
    ClusterHost,
    /// The admin endpoint.
    Admin,
    /// The host of a model.
    Model(String),
    /// A cache shard, by its index.
    CacheShard(u16),
}

impl Child {
    /// Parses the names the fault-injection route takes: `directory`, `meter`, `router`,
    /// `gateway`, `cluster_host`, `admin`, `model:<id>` or `cache:<index>`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "directory" => Self::Directory,
            "meter" => Self::Meter,
            "router" => Self::Router,
            "gateway" => Self::Gateway,
            "cluster_host" => Self::ClusterHost,
            "admin" => Self::Admin,
            other => match other.strip_prefix("cache:") {
                Some(index) => Self::CacheShard(index.parse().ok()?),
                None => Self::Model(other.strip_prefix("model:")?.to_owned()),
            },
        })
    }
}

/// Messages of the supervisor.
pub enum Msg {
    /// Fault injection (only with `run --fault-injection`): kill a child as a crash would.
    Kill(Child),
}

impl ractor::Message for Msg {}

/// Everything the children need, bound and validated before the tree starts.
#[derive(Debug)]
pub struct Arguments {
    /// The address this node advertises to peers.
    pub advertise: std::net::SocketAddr,
    /// Cluster host arguments (its `directory` handle is filled in here).
    pub cluster: ClusterArguments,
    /// The bound admin listener (kept, so that a restarted admin actor serves it again).
    pub admin_listener: std::net::TcpListener,
    /// Static node facts for the admin routes.
    pub node_info: NodeInfo,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// The model catalog.
    pub catalog: Arc<Catalog>,
    /// Models loaded for hosting, each with its backend.
    /// Each with the requests it runs at once (its slots).
    pub models: Vec<(ModelSpec, Arc<Backend>, usize)>,
    /// Requests each model lets wait, when the operator said (otherwise from its slots).
    pub model_queue_depth: Option<usize>,
    /// Hosting decisions, for `/admin/models`.
    pub hosting: Vec<ModelStatus>,
    /// Deadlines the node grants.
    pub request_limits: request::Limits,
    /// Whether the fault-injection admin route is on.
    pub fault_injection: bool,
    /// API keys: verifier, revoked set, anonymous access.
    pub auth: request::authenticate::Auth,
    /// Where the revoked set is stored.
    pub revoked_file: std::path::PathBuf,
    /// The ledger (opened by the node, held by the meter and the writer).
    pub ledger: Arc<crate::metering::ledger::Ledger>,
    /// The result cache.
    pub cache: crate::config::CacheSettings,
    /// The HTTP APIs, when on (served by the gateway).
    pub http: Option<gateway::HttpArguments>,
    /// `/metrics` without the admin token.
    pub metrics_open: bool,
}

/// Cluster host arguments before the directory exists.
#[derive(Debug)]
pub struct ClusterArguments {
    /// This node's identity.
    pub identity: Arc<crate::credentials::Identity>,
    /// The bound QUIC endpoint.
    pub endpoint: quinn::Endpoint,
    /// Seeds.
    pub seeds: Vec<std::net::SocketAddr>,
    /// Liveness settings.
    pub liveness: crate::transport::endpoint::Liveness,
    /// ractor_cluster's loopback TCP address.
    pub cluster_tcp: std::net::SocketAddr,
    /// Caps on incoming connections.
    pub limits: crate::transport::limits::ConnectionLimits,
}

/// How to start each child again.
struct Specs {
    directory: peer_directory::Arguments,
    router: router::Arguments,
    gateway: gateway::Arguments,
    cluster: cluster_host::Arguments,
    admin_listener: std::net::TcpListener,
    admin: crate::admin::Context,
    models: BTreeMap<String, model_host::Arguments>,
    meter: meter::Arguments,
    shards: Vec<cache_shard::Arguments>,
}

/// The supervisor's state.
pub struct State {
    specs: Specs,
    live: HashMap<ActorId, Child>,
    cells: HashMap<Child, ActorCell>,
    restarts: HashMap<Child, VecDeque<Instant>>,
    directory: ActorSlot<peer_directory::Msg>,
    meter: ActorSlot<meter::Msg>,
    router: ActorSlot<router::Msg>,
    gateway: ActorSlot<gateway::Msg>,
    cluster: Option<ActorRef<cluster_host::Msg>>,
    hosts: BTreeMap<String, ActorSlot<model_host::Msg>>,
    shards: Vec<ActorSlot<cache_shard::Msg>>,
    states: ModelStates,
}

impl Actor for NodeSupervisor {
    type Msg = Msg;
    type State = State;
    type Arguments = Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Arguments,
    ) -> Result<State, ActorProcessingErr> {
        let cell = myself.get_cell();
        let name = args.node_info.name.clone();
        let states = ModelStates::default();
        let faults = Arc::new(Faults::new(args.fault_injection));
        let supervisor = myself.clone();
        faults.install_kill_switch(Box::new(move |name| {
            Child::parse(name).is_some_and(|child| supervisor.cast(Msg::Kill(child)).is_ok())
        }));
        let mut live = HashMap::new();
        let mut cells = HashMap::new();
        let mut remember = |child: Child, actor: ActorCell| {
            live.insert(actor.get_id(), child.clone());
            cells.insert(child, actor);
        };

        let usage_changed = Arc::new(tokio::sync::Notify::new());
        let meter_args = meter::Arguments {
            node: name.clone(),
            ledger: args.ledger.clone(),
            changed: usage_changed.clone(),
        };
        let meter_actor = spawn(
            "ganglion.meter".into(),
            meter::Meter,
            meter_args.clone(),
            &cell,
        )
        .await?;
        remember(Child::Meter, meter_actor.get_cell());
        let meter_slot = ActorSlot::new(meter_actor);
        let meter_handle = meter::MeterHandle(meter_slot.clone());
        let ledger_writer = crate::metering::ledger::LedgerWriter::start(args.ledger.clone());

        let mut model_specs = BTreeMap::new();
        let mut hosts = BTreeMap::new();
        let mut handles = BTreeMap::new();
        for (spec, backend, slots) in args.models {
            let id = spec.id.clone();
            let host_args = model_host::Arguments {
                spec,
                backend,
                concurrency: slots,
                queue_capacity: args
                    .model_queue_depth
                    .unwrap_or_else(|| crate::config::default_queue_depth(slots)),
                node: name.clone(),
                faults: faults.clone(),
                ledger: ledger_writer.clone(),
                meter: meter_handle.clone(),
            };
            states.set(&id, ModelState::Loading);
            let host = spawn(
                model_host::actor_name(&id),
                model_host::ModelHost,
                host_args.clone(),
                &cell,
            )
            .await?;
            states.set(&id, ModelState::Hosted);
            remember(Child::Model(id.clone()), host.get_cell());
            let slot = ActorSlot::new(host);
            handles.insert(id.clone(), model_host::ModelHostHandle(slot.clone()));
            hosts.insert(id.clone(), slot);
            model_specs.insert(id, host_args);
        }
        let local_models = model_host::LocalModels::new(handles, states.clone());

        let shard_specs: Vec<cache_shard::Arguments> = (0..args.cache.shards)
            .map(|index| cache_shard::Arguments {
                index,
                bytes: args.cache.bytes / u64::from(args.cache.shards),
            })
            .collect();
        let mut shard_slots = Vec::new();
        for spec in &shard_specs {
            let shard = spawn(
                crate::cache::shard_name(spec.index),
                cache_shard::CacheShard,
                spec.clone(),
                &cell,
            )
            .await?;
            remember(Child::CacheShard(spec.index), shard.get_cell());
            shard_slots.push(ActorSlot::new(shard));
        }
        let sessions = SessionNodes::default();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let shards = cache_shard::Shards::new(
            name.clone(),
            shard_slots
                .iter()
                .map(|slot| cache_shard::CacheShardHandle(slot.clone()))
                .collect(),
            sessions.clone(),
        );

        let mesh_size = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let directory_args = peer_directory::Arguments {
            name: name.clone(),
            advertise: args.advertise,
            hosts: local_models.clone(),
            hardware: args.node_info.hardware.clone(),
            revoked: args.auth.revoked.clone(),
            revoked_file: args.revoked_file.clone(),
            meter: meter_handle.clone(),
            usage_changed,
            faults: faults.clone(),
            mesh_size: mesh_size.clone(),
        };
        let directory = spawn(
            "ganglion.peer_directory".into(),
            peer_directory::PeerDirectory,
            directory_args.clone(),
            &cell,
        )
        .await?;
        remember(Child::Directory, directory.get_cell());
        let directory = ActorSlot::new(directory);
        let directory_handle = peer_directory::PeerDirectoryHandle(directory.clone());

        let router_args = router::Arguments {
            directory: directory_handle.clone(),
        };
        let router = spawn(
            "ganglion.router".into(),
            router::Router,
            router_args.clone(),
            &cell,
        )
        .await?;
        remember(Child::Router, router.get_cell());
        let router = ActorSlot::new(router);
        let router_handle = router::RouterHandle(router.clone());

        let gateway_args = gateway::Arguments {
            context: request::Context {
                node: name.clone(),
                catalog: args.catalog.clone(),
                hosts: local_models.clone(),
                router: router_handle.clone(),
                limits: args.request_limits,
                auth: args.auth.clone(),
                meter: meter_handle.clone(),
                directory: directory_handle.clone(),
                cache: request::cache::Settings {
                    shards: shards.clone(),
                    default_ttl: args.cache.default_ttl,
                },
                metrics: metrics.clone(),
                mesh_size: mesh_size.clone(),
            },
            http: args.http,
        };
        let gateway = spawn(
            "ganglion.gateway".into(),
            gateway::Gateway,
            gateway_args.clone(),
            &cell,
        )
        .await?;
        remember(Child::Gateway, gateway.get_cell());
        let gateway = ActorSlot::new(gateway);

        let reporter = crate::dashboard::report::Reporter::new(crate::dashboard::report::Parts {
            info: args.node_info.clone(),
            hosting: args.hosting.clone(),
            hosts: local_models.clone(),
            directory: directory_handle.clone(),
            cache: shards.clone(),
            metrics: metrics.clone(),
        });
        let c = args.cluster;
        let cluster_args = cluster_host::Arguments {
            identity: c.identity,
            endpoint: c.endpoint,
            seeds: c.seeds,
            liveness: c.liveness,
            cluster_tcp: c.cluster_tcp,
            directory: directory_handle.clone(),
            gateway: gateway::GatewayHandle(gateway.clone()),
            limits: c.limits,
            meter: meter_handle.clone(),
            cache: shards.clone(),
            sessions,
            reporter: reporter.clone(),
            revoked: args.auth.revoked.clone(),
        };
        let cluster = spawn(
            "ganglion.cluster_host".into(),
            cluster_host::ClusterHost,
            cluster_args.clone(),
            &cell,
        )
        .await?;
        remember(Child::ClusterHost, cluster.get_cell());

        let admin_context = crate::admin::Context::new(crate::admin::ContextParts {
            info: args.node_info,
            token: args.admin_token,
            directory: directory_handle,
            root: cell.clone(),
            faults: faults.clone(),
            hosting: args.hosting,
            router: router_handle,
            hosts: local_models,
            revoked: args.auth.revoked.clone(),
            revoked_file: args.revoked_file,
            key_verifier: args.auth.verifier.clone(),
            meter: meter_handle,
            ledger: args.ledger.clone(),
            cache: shards,
            metrics,
            metrics_open: args.metrics_open,
            reporter,
            api: Arc::new(crate::api::Api {
                context: gateway_args.context.clone(),
            }),
        });
        let admin = spawn_admin(&args.admin_listener, admin_context.clone(), &cell).await?;
        remember(Child::Admin, admin.get_cell());

        Ok(State {
            specs: Specs {
                directory: directory_args,
                router: router_args,
                gateway: gateway_args,
                cluster: cluster_args,
                admin_listener: args.admin_listener,
                admin: admin_context,
                models: model_specs,
                meter: meter_args,
                shards: shard_specs,
            },
            live,
            cells,
            restarts: HashMap::new(),
            directory,
            meter: meter_slot,
            router,
            gateway,
            cluster: Some(cluster),
            hosts,
            shards: shard_slots,
            states,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Msg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        // A stopping node closes its endpoint once, here (a restarted cluster host reuses it).
        state.specs.cluster.endpoint.close(
            quinn::VarInt::from_u32(crate::transport::CloseCode::Shutdown as u32),
            b"node shutting down",
        );
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Kill(child) => {
                if let Some(cell) = state.cells.get(&child) {
                    tracing::warn!(?child, "fault injection: killing a child");
                    cell.kill();
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Msg>,
        event: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match &event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.clone().unwrap_or_else(|| "stopped".to_owned()))
            }
            _ => return Ok(()),
        };
        let Some(child) = state.live.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.cells.remove(&child);
        tracing::error!(?child, %why, "node actor ended; restarting it");
        if !state.may_restart(&child) {
            if let Child::CacheShard(index) = &child {
                tracing::error!(
                    index,
                    "cache shard failed too often; the mesh's other shards take its keys"
                );
                return Ok(());
            }
            if let Child::Model(id) = &child {
                tracing::error!(model = %id, "model host failed too often; its model is no longer served");
                state.states.set(id, ModelState::Failed);
                return Ok(());
            }
            tracing::error!(?child, "node actor failed too often; stopping the node");
            myself.stop(Some(format!("{child:?} failed too often: {why}")));
            return Ok(());
        }
        if let Err(e) = state.restart(&child, &myself.get_cell()).await {
            if let Child::Model(id) = &child {
                tracing::error!(model = %id, error = %e, "model host did not restart; its model is no longer served");
                state.states.set(id, ModelState::Failed);
                return Ok(());
            }
            tracing::error!(?child, error = %e, "node actor did not restart; stopping the node");
            myself.stop(Some(format!("{child:?} did not restart: {e}")));
        }
        Ok(())
    }
}

impl State {
    /// Records a restart of `child` if its budget allows one.
    fn may_restart(&mut self, child: &Child) -> bool {
        let now = Instant::now();
        let times = self.restarts.entry(child.clone()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= MAX_RESTARTS {
            return false;
        }
        times.push_back(now);
        true
    }

    async fn restart(&mut self, child: &Child, me: &ActorCell) -> Result<(), ActorProcessingErr> {
        let cell = match child {
            Child::Meter => {
                let actor = spawn(
                    "ganglion.meter".into(),
                    meter::Meter,
                    self.specs.meter.clone(),
                    me,
                )
                .await?;
                self.meter.replace(actor.clone());
                actor.get_cell()
            }
            Child::Directory => {
                let actor = spawn(
                    "ganglion.peer_directory".into(),
                    peer_directory::PeerDirectory,
                    self.specs.directory.clone(),
                    me,
                )
                .await?;
                self.directory.replace(actor.clone());
                // The new directory knows no peer yet: the cluster host tells it again.
                if let Some(cluster) = &self.cluster {
                    let _ = cluster.cast(cluster_host::Msg::ReplayLinks);
                }
                actor.get_cell()
            }
            Child::Router => {
                let actor = spawn(
                    "ganglion.router".into(),
                    router::Router,
                    self.specs.router.clone(),
                    me,
                )
                .await?;
                self.router.replace(actor.clone());
                actor.get_cell()
            }
            Child::Gateway => {
                let actor = spawn(
                    "ganglion.gateway".into(),
                    gateway::Gateway,
                    self.specs.gateway.clone(),
                    me,
                )
                .await?;
                self.gateway.replace(actor.clone());
                actor.get_cell()
            }
            Child::ClusterHost => {
                self.cluster = None;
                // The old host's NodeServer (and with it every session) goes first; peers
                // reconnect to the new one.
                if let Some(server) = ractor::registry::where_is(cluster_host::NODE_SERVER_NAME) {
                    let _ = server
                        .stop_and_wait(
                            Some("cluster host restarting".into()),
                            Some(Duration::from_secs(5)),
                        )
                        .await;
                }
                // ractor_cluster's TCP listener of the old host releases its port only as its
                // actor winds down: retry for a little while.
                let mut attempt = 0;
                let actor = loop {
                    let spawned = spawn(
                        "ganglion.cluster_host".into(),
                        cluster_host::ClusterHost,
                        self.specs.cluster.clone(),
                        me,
                    )
                    .await;
                    match spawned {
                        Ok(actor) => break actor,
                        Err(e) if attempt < CLUSTER_RESTART_ATTEMPTS => {
                            attempt += 1;
                            tracing::debug!(error = %e, attempt, "cluster host not restarted yet; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                self.cluster = Some(actor.clone());
                actor.get_cell()
            }
            Child::Admin => spawn_admin(&self.specs.admin_listener, self.specs.admin.clone(), me)
                .await?
                .get_cell(),
            Child::Model(id) => {
                let Some(args) = self.specs.models.get(id) else {
                    return Ok(());
                };
                self.states.set(id, ModelState::Restarting);
                let actor = spawn(
                    model_host::actor_name(id),
                    model_host::ModelHost,
                    args.clone(),
                    me,
                )
                .await?;
                if let Some(slot) = self.hosts.get(id) {
                    slot.replace(actor.clone());
                }
                self.states.set(id, ModelState::Hosted);
                actor.get_cell()
            }
            Child::CacheShard(index) => {
                let (Some(args), Some(slot)) = (
                    self.specs.shards.get(usize::from(*index)),
                    self.shards.get(usize::from(*index)),
                ) else {
                    return Ok(());
                };
                let actor = spawn(
                    crate::cache::shard_name(*index),
                    cache_shard::CacheShard,
                    args.clone(),
                    me,
                )
                .await?;
                slot.replace(actor.clone());
                actor.get_cell()
            }
        };
        tracing::info!(?child, "node actor restarted");
        self.live.insert(cell.get_id(), child.clone());
        self.cells.insert(child.clone(), cell);
        Ok(())
    }
}

/// Spawns a child linked to `supervisor` under `name`; if the name is still held (a stopped
/// actor's registration not yet released), without it.
async fn spawn<A: Actor + Default>(
    name: String,
    _actor: A,
    args: A::Arguments,
    supervisor: &ActorCell,
) -> Result<ActorRef<A::Msg>, ActorProcessingErr>
where
    A::Arguments: Clone,
{
    let named = A::spawn_linked(
        Some(name.clone()),
        A::default(),
        args.clone(),
        supervisor.clone(),
    )
    .await;
    match named {
        Ok((actor, _)) => Ok(actor),
        Err(ractor::SpawnErr::ActorAlreadyRegistered(_)) => {
            tracing::warn!(%name, "name still registered; starting the actor unnamed");
            let (actor, _) = A::spawn_linked(None, A::default(), args, supervisor.clone()).await?;
            Ok(actor)
        }
        Err(e) => Err(e.into()),
    }
}

async fn spawn_admin(
    listener: &std::net::TcpListener,
    context: crate::admin::Context,
    supervisor: &ActorCell,
) -> Result<ActorRef<admin::Msg>, ActorProcessingErr> {
    let arguments = || -> std::io::Result<admin::Arguments> {
        Ok(admin::Arguments {
            listener: tokio::net::TcpListener::from_std(listener.try_clone()?)?,
            context: context.clone(),
        })
    };
    let name = "ganglion.admin".to_owned();
    match admin::Admin::spawn_linked(
        Some(name.clone()),
        admin::Admin,
        arguments()?,
        supervisor.clone(),
    )
    .await
    {
        Ok((actor, _)) => Ok(actor),
        Err(ractor::SpawnErr::ActorAlreadyRegistered(_)) => {
            tracing::warn!(%name, "name still registered; starting the actor unnamed");
            let (actor, _) =
                admin::Admin::spawn_linked(None, admin::Admin, arguments()?, supervisor.clone())
                    .await?;
            Ok(actor)
        }
        Err(e) => Err(e.into()),
    }
}
