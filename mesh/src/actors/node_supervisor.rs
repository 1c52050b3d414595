//! NodeSupervisor: the root of a node's actor tree.
//!
//! It starts the directory, the cluster host and the admin endpoint as linked children. A child
//! that fails stops the node (and so the process, which reports it and exits non-zero): a half
//! node that still answers health checks would be worse than a restart by the service manager.

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::{admin, cluster_host, gateway, model_host, peer_directory, router};
use crate::admin::AdminContext;
use crate::inference::Backend;
use crate::models::{Catalog, ModelSpec};

/// The supervisor actor.
#[derive(Debug, Default)]
pub struct NodeSupervisor;

/// The supervisor takes no messages; it reacts to its children's supervision events.
#[derive(Debug)]
pub enum Msg {}

impl ractor::Message for Msg {}

/// Everything the children need, bound and validated before the tree starts.
#[derive(Debug)]
pub struct Arguments {
    /// The address this node advertises to peers.
    pub advertise: std::net::SocketAddr,
    /// Cluster host arguments (its `directory` handle is filled in here).
    pub cluster: ClusterArguments,
    /// The bound admin listener.
    pub admin_listener: tokio::net::TcpListener,
    /// Static node facts for the admin routes.
    pub node_info: crate::admin::NodeInfo,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// The model catalog.
    pub catalog: std::sync::Arc<Catalog>,
    /// Models loaded for hosting, each with its backend.
    pub models: Vec<(ModelSpec, std::sync::Arc<Backend>)>,
    /// Requests each model runs at once.
    pub model_concurrency: usize,
    /// Requests each model lets wait.
    pub model_queue_depth: usize,
    /// Hosting decisions, for `/admin/models`.
    pub hosting: Vec<crate::admin::ModelStatus>,
}

/// Cluster host arguments before the directory exists.
#[derive(Debug)]
pub struct ClusterArguments {
    /// This node's identity.
    pub identity: std::sync::Arc<crate::credentials::Identity>,
    /// The bound QUIC endpoint.
    pub endpoint: quinn::Endpoint,
    /// Seeds.
    pub seeds: Vec<std::net::SocketAddr>,
    /// Liveness settings.
    pub liveness: crate::transport::endpoint::Liveness,
    /// ractor_cluster's loopback TCP address.
    pub cluster_tcp: std::net::SocketAddr,
}

/// The supervisor's state: its children.
#[derive(Debug)]
pub struct State {
    children: Vec<ActorCell>,
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
        let mut hosts = std::collections::BTreeMap::new();
        for (spec, backend) in args.models {
            let id = spec.id.clone();
            let host = model_host::Arguments {
                spec,
                backend,
                concurrency: args.model_concurrency,
                queue_capacity: args.model_queue_depth,
                node: name.clone(),
            };
            let (host, _) = Actor::spawn_linked(
                Some(model_host::actor_name(&id)),
                model_host::ModelHost,
                host,
                cell.clone(),
            )
            .await?;
            hosts.insert(id, model_host::ModelHostHandle(host));
        }
        let hosts = model_host::LocalModels::new(hosts);
        let directory_args = peer_directory::Arguments {
            name: name.clone(),
            advertise: args.advertise,
            hosts: hosts.clone(),
            hardware: args.node_info.hardware.clone(),
        };
        let (directory, _) = Actor::spawn_linked(
            Some("ganglion.peer_directory".into()),
            peer_directory::PeerDirectory,
            directory_args,
            cell.clone(),
        )
        .await?;
        let directory = peer_directory::PeerDirectoryHandle(directory);
        let (router, _) = Actor::spawn_linked(
            Some("ganglion.router".into()),
            router::Router,
            router::Arguments {
                directory: directory.clone(),
            },
            cell.clone(),
        )
        .await?;
        let router = router::RouterHandle(router);
        let (gateway, _) = Actor::spawn_linked(
            Some("ganglion.gateway".into()),
            gateway::Gateway,
            gateway::Arguments {
                node: name,
                catalog: args.catalog.clone(),
                hosts: hosts.clone(),
                directory: directory.clone(),
                router: router.clone(),
            },
            cell.clone(),
        )
        .await?;
        let c = args.cluster;
        let (cluster, _) = Actor::spawn_linked(
            Some("ganglion.cluster_host".into()),
            cluster_host::ClusterHost,
            cluster_host::Arguments {
                identity: c.identity,
                endpoint: c.endpoint,
                seeds: c.seeds,
                liveness: c.liveness,
                cluster_tcp: c.cluster_tcp,
                directory: directory.clone(),
                gateway: gateway::GatewayHandle(gateway.clone()),
            },
            cell.clone(),
        )
        .await?;
        let context = AdminContext::new(
            args.node_info,
            args.admin_token,
            directory.clone(),
            cell.clone(),
            args.hosting,
            router.clone(),
            hosts,
        );
        let (admin, _) = Actor::spawn_linked(
            Some("ganglion.admin".into()),
            admin::Admin,
            admin::Arguments {
                listener: args.admin_listener,
                context,
            },
            cell,
        )
        .await?;
        Ok(State {
            children: vec![
                directory.0.get_cell(),
                router.0.get_cell(),
                gateway.get_cell(),
                cluster.get_cell(),
                admin.get_cell(),
            ],
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        _state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {}
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Msg>,
        event: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(child, error) if state.is_child(&child) => {
                tracing::error!(actor = ?child.get_name(), %error, "node actor failed; stopping the node");
                myself.stop(Some(format!("{:?} failed: {error}", child.get_name())));
            }
            SupervisionEvent::ActorTerminated(child, _, reason) if state.is_child(&child) => {
                tracing::error!(actor = ?child.get_name(), ?reason, "node actor stopped; stopping the node");
                myself.stop(Some(format!("{:?} stopped", child.get_name())));
            }
            // A model host is not worth the node: its model becomes unavailable (requests get a
            // clear error), everything else keeps serving.
            SupervisionEvent::ActorFailed(child, error) => {
                tracing::error!(actor = ?child.get_name(), %error, "model host failed; its model is no longer served");
            }
            _ => {}
        }
        Ok(())
    }
}

impl State {
    fn is_child(&self, cell: &ActorCell) -> bool {
        self.children.iter().any(|c| c.get_id() == cell.get_id())
    }
}
