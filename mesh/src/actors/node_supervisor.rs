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

    /// The name the child's actor registers under.
    fn actor_name(&self) -> String {
        match self {
            Self::Directory => "ganglion.peer_directory".into(),
            Self::Meter => "ganglion.meter".into(),
            Self::Router => "ganglion.router".into(),
            Self::Gateway => "ganglion.gateway".into(),
            Self::ClusterHost => "ganglion.cluster_host".into(),
            Self::Admin => "ganglion.admin".into(),
            Self::Model(id) => model_host::actor_name(id),
            Self::CacheShard(index) => crate::cache::shard_name(*index),
        }
    }
}

/// What a child is started from: its actor's arguments, which say which child they start. With
/// [`Child::actor_name`], the table of child kinds that every start and restart goes through
/// (the admin actor, whose arguments hold a listener, is started by [`spawn_admin`]).
trait ChildSpec: Clone + Send + 'static {
    /// The actor these arguments start.
    type Starts: Actor<Arguments = Self> + Default;

    /// The child they start.
    fn child(&self) -> Child;
}

impl ChildSpec for meter::Arguments {
    type Starts = meter::Meter;

    fn child(&self) -> Child {
        Child::Meter
    }
}

impl ChildSpec for peer_directory::Arguments {
    type Starts = peer_directory::PeerDirectory;

    fn child(&self) -> Child {
        Child::Directory
    }
}

impl ChildSpec for router::Arguments {
    type Starts = router::Router;

    fn child(&self) -> Child {
        Child::Router
    }
}

impl ChildSpec for gateway::Arguments {
    type Starts = gateway::Gateway;

    fn child(&self) -> Child {
        Child::Gateway
    }
}

impl ChildSpec for cluster_host::Arguments {
    type Starts = cluster_host::ClusterHost;

    fn child(&self) -> Child {
        Child::ClusterHost
    }
}

impl ChildSpec for model_host::Arguments {
    type Starts = model_host::ModelHost;

    fn child(&self) -> Child {
        Child::Model(self.spec.id.clone())
    }
}

impl ChildSpec for cache_shard::Arguments {
    type Starts = cache_shard::CacheShard;

    fn child(&self) -> Child {
        Child::CacheShard(self.index)
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
    /// The region this node belongs to.
    pub region: String,
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
    pub request_limits: crate::config::requests::Limits,
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

/// The running children: which child each actor is, and each child's actor.
#[derive(Default)]
struct Children {
    live: HashMap<ActorId, Child>,
    cells: HashMap<Child, ActorCell>,
}

impl Children {
    /// Records `cell` as the running `child`.
    fn remember(&mut self, child: Child, cell: ActorCell) {
        self.live.insert(cell.get_id(), child.clone());
        self.cells.insert(child, cell);
    }

    /// The child the actor `id` was, if it is one; it is no longer running.
    fn forget(&mut self, id: &ActorId) -> Option<Child> {
        let child = self.live.remove(id)?;
        self.cells.remove(&child);
        Some(child)
    }

    /// Starts the child `spec` describes for the first time, and records it.
    async fn start<S: ChildSpec>(
        &mut self,
        spec: S,
        supervisor: &ActorCell,
    ) -> Result<ActorRef<<S::Starts as Actor>::Msg>, ActorProcessingErr> {
        let child = spec.child();
        let actor = start(spec, supervisor).await?;
        self.remember(child, actor.get_cell());
        Ok(actor)
    }

    /// Starts a model host for each loaded model, marking it in `states` as it comes up:
    /// their arguments (kept to restart them) and their slots, by model id.
    #[allow(clippy::type_complexity)]
    async fn start_models(
        &mut self,
        models: Vec<(ModelSpec, Arc<Backend>, usize)>,
        queue_depth: Option<usize>,
        (node, faults): (&str, &Arc<Faults>),
        states: &ModelStates,
        supervisor: &ActorCell,
    ) -> Result<
        (
            BTreeMap<String, model_host::Arguments>,
            BTreeMap<String, ActorSlot<model_host::Msg>>,
        ),
        ActorProcessingErr,
    > {
        let (mut specs, mut hosts) = (BTreeMap::new(), BTreeMap::new());
        for (spec, backend, slots) in models {
            let id = spec.id.clone();
            let host_args = model_host::Arguments {
                spec,
                backend,
                concurrency: slots,
                queue_capacity: queue_depth
                    .unwrap_or_else(|| crate::config::default_queue_depth(slots)),
                node: node.to_owned(),
                faults: faults.clone(),
            };
            states.set(&id, ModelState::Loading);
            let host = self.start(host_args.clone(), supervisor).await?;
            states.set(&id, ModelState::Hosted);
            hosts.insert(id.clone(), ActorSlot::new(host));
            specs.insert(id, host_args);
        }
        Ok((specs, hosts))
    }

    /// Starts the cache's shards, sharing its bytes: their arguments and their slots.
    async fn start_shards(
        &mut self,
        cache: &crate::config::CacheSettings,
        supervisor: &ActorCell,
    ) -> Result<
        (
            Vec<cache_shard::Arguments>,
            Vec<ActorSlot<cache_shard::Msg>>,
        ),
        ActorProcessingErr,
    > {
        let specs: Vec<cache_shard::Arguments> = (0..cache.shards)
            .map(|index| {
                let bytes = cache.bytes / u64::from(cache.shards);
                cache_shard::Arguments {
                    index,
                    bytes,
                    entries: cache_shard::Entries::new(bytes),
                }
            })
            .collect();
        let mut slots = Vec::new();
        for spec in &specs {
            slots.push(ActorSlot::new(self.start(spec.clone(), supervisor).await?));
        }
        Ok((specs, slots))
    }
}

/// The supervisor's state.
pub struct State {
    specs: Specs,
    children: Children,
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
        let me = myself.get_cell();
        let name = args.node_info.name.clone();
        let faults = Arc::new(Faults::new(args.fault_injection));
        let supervisor = myself.clone();
        faults.install_kill_switch(Box::new(move |name| {
            Child::parse(name).is_some_and(|child| supervisor.cast(Msg::Kill(child)).is_ok())
        }));
        let mut children = Children::default();

        let usage_changed = Arc::new(tokio::sync::Notify::new());
        let meter_args = meter::Arguments {
            node: name.clone(),
            ledger: args.ledger.clone(),
            changed: usage_changed.clone(),
        };
        let meter = ActorSlot::new(children.start(meter_args.clone(), &me).await?);
        let meter_handle = meter::MeterHandle(meter.clone());
        let ledger_writer = crate::metering::ledger::LedgerWriter::start(args.ledger.clone());

        let states = ModelStates::default();
        let (model_specs, hosts) = children
            .start_models(
                args.models,
                args.model_queue_depth,
                (&name, &faults),
                &states,
                &me,
            )
            .await?;
        let handles = hosts
            .iter()
            .map(|(id, slot)| (id.clone(), model_host::ModelHostHandle(slot.clone())))
            .collect();
        let local_models = model_host::LocalModels::new(handles, states.clone());

        let (shard_specs, shard_slots) = children.start_shards(&args.cache, &me).await?;
        let sessions = SessionNodes::default();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let shards = cache_shard::Shards::new(
            name.clone(),
            shard_specs
                .iter()
                .zip(&shard_slots)
                .map(|(spec, slot)| cache_shard::CacheShardHandle {
                    actor: slot.clone(),
                    entries: spec.entries.clone(),
                })
                .collect(),
            crate::cache::near::NearCopies::new(args.cache.near_bytes),
            sessions.clone(),
        );

        let mesh_size = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let regions = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let directory_args = peer_directory::Arguments {
            name: name.clone(),
            advertise: args.advertise,
            region: args.region.clone(),
            sessions: sessions.clone(),
            hosts: local_models.clone(),
            hardware: args.node_info.hardware.clone(),
            revoked: args.auth.revoked.clone(),
            revoked_file: args.revoked_file.clone(),
            meter: meter_handle.clone(),
            usage_changed,
            faults: faults.clone(),
            mesh_size: mesh_size.clone(),
            regions: regions.clone(),
        };
        let directory = ActorSlot::new(children.start(directory_args.clone(), &me).await?);
        let directory_handle = peer_directory::PeerDirectoryHandle(directory.clone());

        let router_args = router::Arguments {
            directory: directory_handle.clone(),
        };
        let router = ActorSlot::new(children.start(router_args.clone(), &me).await?);
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
                ledger: ledger_writer.clone(),
                directory: directory_handle.clone(),
                cache: request::cache::Settings {
                    shards: shards.clone(),
                    default_ttl: args.cache.default_ttl,
                },
                metrics: metrics.clone(),
                mesh_size: mesh_size.clone(),
                regions: regions.clone(),
            },
            http: args.http,
        };
        let gateway = ActorSlot::new(children.start(gateway_args.clone(), &me).await?);

        let reporter = crate::dashboard::report::Reporter::new(crate::dashboard::report::Parts {
            info: args.node_info.clone(),
            hosting: args.hosting.clone(),
            hosts: local_models.clone(),
            directory: directory_handle.clone(),
            cache: shards.clone(),
            metrics: metrics.clone(),
        });
        let c = args.cluster;
        let cluster_spec_limits = c.limits.clone();
        let cluster_args = cluster_host::Arguments {
            identity: c.identity,
            endpoint: c.endpoint,
            seeds: c.seeds,
            liveness: c.liveness,
            cluster_tcp: c.cluster_tcp,
            directory: directory_handle.clone(),
            clients: {
                let gateway = gateway::GatewayHandle(gateway.clone());
                cluster_host::ClientDoor::new(move |connection| gateway.connection(connection))
            },
            limits: c.limits.clone(),
            servers: peer_servers(
                gateway::GatewayHandle(gateway.clone()),
                meter_handle.clone(),
                shards.clone(),
                reporter.clone(),
                args.auth.revoked.clone(),
            ),
            sessions,
        };
        let cluster = children.start(cluster_args.clone(), &me).await?;

        let admin_context = crate::admin::Context::new(crate::admin::ContextParts {
            info: args.node_info,
            token: args.admin_token,
            directory: directory_handle,
            root: me.clone(),
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
            connection_limits: cluster_spec_limits,
            reporter,
            api: Arc::new(crate::api::Api {
                context: gateway_args.context.clone(),
            }),
        });
        let admin = spawn_admin(&args.admin_listener, admin_context.clone(), &me).await?;
        children.remember(Child::Admin, admin.get_cell());

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
            children,
            restarts: HashMap::new(),
            directory,
            meter,
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
                if let Some(cell) = state.children.cells.get(&child) {
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
        let Some(child) = state.children.forget(&cell.get_id()) else {
            return Ok(());
        };
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

    /// Starts `child` again from the arguments it was first started with, and puts the new
    /// actor where the handles others hold find it. A child whose arguments are gone is left.
    async fn restart(&mut self, child: &Child, me: &ActorCell) -> Result<(), ActorProcessingErr> {
        let cell = match child {
            Child::Meter => respawn(self.specs.meter.clone(), &self.meter, me).await?,
            Child::Directory => {
                let cell = respawn(self.specs.directory.clone(), &self.directory, me).await?;
                // The new directory knows no peer yet: the cluster host tells it again.
                if let Some(cluster) = &self.cluster {
                    let _ = cluster.cast(cluster_host::Msg::ReplayLinks);
                }
                cell
            }
            Child::Router => respawn(self.specs.router.clone(), &self.router, me).await?,
            Child::Gateway => respawn(self.specs.gateway.clone(), &self.gateway, me).await?,
            Child::ClusterHost => self.restart_cluster_host(me).await?,
            Child::Admin => spawn_admin(&self.specs.admin_listener, self.specs.admin.clone(), me)
                .await?
                .get_cell(),
            Child::Model(id) => {
                let Some(spec) = self.specs.models.get(id) else {
                    return Ok(());
                };
                self.states.set(id, ModelState::Restarting);
                let actor = start(spec.clone(), me).await?;
                if let Some(slot) = self.hosts.get(id) {
                    slot.replace(actor.clone());
                }
                self.states.set(id, ModelState::Hosted);
                actor.get_cell()
            }
            Child::CacheShard(index) => {
                let index = usize::from(*index);
                let (Some(spec), Some(slot)) =
                    (self.specs.shards.get(index), self.shards.get(index))
                else {
                    return Ok(());
                };
                respawn(spec.clone(), slot, me).await?
            }
        };
        tracing::info!(?child, "node actor restarted");
        self.children.remember(child.clone(), cell);
        Ok(())
    }

    /// Starts the cluster host again. The old host's NodeServer (and with it every session)
    /// goes first; peers reconnect to the new one.
    async fn restart_cluster_host(
        &mut self,
        me: &ActorCell,
    ) -> Result<ActorCell, ActorProcessingErr> {
        self.cluster = None;
        if let Some(server) = ractor::registry::where_is(cluster_host::NODE_SERVER_NAME) {
            let _ = server
                .stop_and_wait(
                    Some("cluster host restarting".into()),
                    Some(Duration::from_secs(5)),
                )
                .await;
        }
        // ractor_cluster's TCP listener of the old host releases its port only as its actor
        // winds down: retry for a little while.
        let mut attempt = 0;
        let actor = loop {
            match start(self.specs.cluster.clone(), me).await {
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
        Ok(actor.get_cell())
    }
}

/// Starts the child `spec` describes, linked to `supervisor`, under the child's name.
async fn start<S: ChildSpec>(
    spec: S,
    supervisor: &ActorCell,
) -> Result<ActorRef<<S::Starts as Actor>::Msg>, ActorProcessingErr> {
    spawn::<S::Starts>(spec.child().actor_name(), spec, supervisor).await
}

/// Starts the child `spec` describes again, and puts it in `slot`.
async fn respawn<S: ChildSpec>(
    spec: S,
    slot: &ActorSlot<<S::Starts as Actor>::Msg>,
    supervisor: &ActorCell,
) -> Result<ActorCell, ActorProcessingErr> {
    let actor = start(spec, supervisor).await?;
    slot.replace(actor.clone());
    Ok(actor.get_cell())
}

/// Spawns a child linked to `supervisor` under `name`; if the name is still held (a stopped
/// actor's registration not yet released), without it.
async fn spawn<A: Actor + Default>(
    name: String,
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
    let name = Child::Admin.actor_name();
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

/// Who serves each kind of stream a peer opens: the actors that own the state.
fn peer_servers(
    gateway: gateway::GatewayHandle,
    meter: meter::MeterHandle,
    shards: cache_shard::Shards,
    reporter: crate::dashboard::report::Reporter,
    revoked: crate::credentials::revoked::RevokedKeys,
) -> crate::peer::Servers {
    use ganglion_client::PeerStreamKind as Kind;
    crate::peer::Servers::default()
        .with(Kind::Data, move |peer, send, recv| {
            gateway.peer_stream(peer, send, recv);
            std::future::ready(())
        })
        .with(Kind::Quota, move |peer, send, recv| {
            meter::serve_quota_stream(meter.clone(), peer, send, recv)
        })
        .with(Kind::Cache, move |peer, send, recv| {
            cache_shard::remote::serve(shards.clone(), peer, send, recv)
        })
        .with(Kind::Report, move |peer, send, recv| {
            crate::dashboard::serve(reporter.clone(), peer, send, recv)
        })
        .with(Kind::Revoked, move |_, send, _| {
            peer_directory::serve_revoked(revoked.clone(), send)
        })
}
