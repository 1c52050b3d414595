//! Routes of the admin introspection endpoint (served by the [`crate::actors::admin`] actor).
//!
//! `GET /healthz` is open; every other route needs `Authorization: Bearer <token>`.
//! - `GET /admin/node`: name, version, uptime, addresses
//! - `GET /admin/peers`: the peer directory
//! - `GET /admin/actors`: the actor tree, and the members of every process group
//! - `GET /admin/models`: configured models, hosted or why not, queue and traffic counters
//! - `GET /admin/routing`: per model, requests run here vs handed to peers; per peer, handoffs,
//!   failures, handoffs under way and its current score

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ractor::{ActorCell, ActorId};
use serde::Serialize;

use crate::actors::model_host::LocalModels;
use crate::actors::peer_directory::PeerDirectoryHandle;
use crate::actors::router::RouterHandle;
use crate::actors::{admin, cluster_host, node_supervisor, peer_directory};

/// Addresses a node is reachable at.
#[derive(Debug, Clone, Serialize)]
pub struct Addresses {
    /// Bound QUIC endpoint.
    pub quic: SocketAddr,
    /// Address advertised to peers.
    pub advertise: SocketAddr,
    /// Admin endpoint.
    pub admin: SocketAddr,
    /// ractor_cluster's loopback TCP listener (TLS, client certificate required).
    pub cluster_tcp: SocketAddr,
}

/// Static facts about a node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Build version.
    pub version: &'static str,
    /// Where it listens.
    pub addresses: Addresses,
    /// Its hardware.
    pub hardware: crate::hardware::Hardware,
}

/// What the routes read.
#[derive(Debug, Clone)]
pub struct AdminContext(Arc<Inner>);

/// Whether a configured model is hosted here, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// Catalog id.
    pub id: String,
    /// Task name.
    pub task: &'static str,
    /// Memory the model needs.
    pub memory_bytes: u64,
    /// Whether a model host serves it.
    pub hosted: bool,
    /// Why it is not hosted.
    pub reason: Option<String>,
}

#[derive(Debug)]
struct Inner {
    hosting: Vec<ModelStatus>,
    hosts: LocalModels,
    router: RouterHandle,
    info: NodeInfo,
    token: Option<String>,
    directory: PeerDirectoryHandle,
    root: ActorCell,
    started: Instant,
    started_at: SystemTime,
}

impl AdminContext {
    /// Bundles what the routes need. With no token, every route but `/healthz` answers 401.
    pub fn new(
        info: NodeInfo,
        token: Option<String>,
        directory: PeerDirectoryHandle,
        root: ActorCell,
        hosting: Vec<ModelStatus>,
        router: RouterHandle,
        hosts: LocalModels,
    ) -> Self {
        Self(Arc::new(Inner {
            hosting,
            hosts,
            router,
            info,
            token,
            directory,
            root,
            started: Instant::now(),
            started_at: SystemTime::now(),
        }))
    }
}

/// The admin router.
pub fn router(context: AdminContext) -> Router {
    let protected = Router::new()
        .route("/admin/node", get(node))
        .route("/admin/peers", get(peers))
        .route("/admin/actors", get(actors))
        .route("/admin/models", get(models))
        .route("/admin/routing", get(routing))
        .route_layer(middleware::from_fn_with_state(
            context.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(protected)
        .with_state(context)
}

async fn require_token(State(ctx): State<AdminContext>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&ctx.0.token, presented) {
        (Some(expected), Some(given))
            if constant_time_eq(expected.as_bytes(), given.as_bytes()) =>
        {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
        )
            .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn node(State(ctx): State<AdminContext>) -> Json<serde_json::Value> {
    let inner = &ctx.0;
    Json(serde_json::json!({
        "name": inner.info.name,
        "version": inner.info.version,
        "started_at": humantime::format_rfc3339_seconds(inner.started_at).to_string(),
        "uptime_s": inner.started.elapsed().as_secs_f64(),
        "addresses": inner.info.addresses,
    }))
}

async fn peers(State(ctx): State<AdminContext>) -> Response {
    match ctx.0.directory.list().await {
        Ok(peers) => Json(peers).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn models(State(ctx): State<AdminContext>) -> Json<serde_json::Value> {
    let peers = ctx.0.directory.list().await.unwrap_or_default();
    let mut entries = Vec::new();
    for status in &ctx.0.hosting {
        let stats = match ctx.0.hosts.get(&status.id) {
            Some(host) => host.stats().await,
            None => None,
        };
        let hosted_by_peers: Vec<&str> = peers
            .iter()
            .filter(|p| p.models.contains(&status.id))
            .map(|p| p.name.as_str())
            .collect();
        entries.push(serde_json::json!({
            "id": status.id,
            "task": status.task,
            "memory_bytes": status.memory_bytes,
            "hosted": status.hosted && stats.is_some(),
            "reason": if status.hosted && stats.is_none() { Some("model host stopped after a failure".to_owned()) } else { status.reason.clone() },
            "stats": stats,
            "hosted_by_peers": hosted_by_peers,
        }));
    }
    Json(
        serde_json::json!({ "node": ctx.0.info.name, "hardware": ctx.0.info.hardware, "models": entries }),
    )
}

async fn routing(State(ctx): State<AdminContext>) -> Response {
    match ctx.0.router.stats().await {
        Some(stats) => Json(stats).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "router did not answer" })),
        )
            .into_response(),
    }
}

/// One actor in the tree.
#[derive(Debug, Serialize)]
struct ActorNode {
    id: String,
    name: Option<String>,
    kind: &'static str,
    status: String,
    groups: Vec<String>,
    children: Vec<ActorNode>,
}

/// A process-group member.
#[derive(Debug, Serialize)]
struct GroupMember {
    /// `<node>/<pid>`: ids are only unique per node.
    id: String,
    name: Option<String>,
    node: String,
    local: bool,
}

/// Names of the nodes behind ractor_cluster's session ids, so remote actors can be shown as
/// `<node>/<pid>` rather than by an id that only means something inside this process.
async fn session_nodes() -> HashMap<u64, String> {
    let Some(server) = ractor::registry::where_is(cluster_host::NODE_SERVER_NAME) else {
        return HashMap::new();
    };
    let server: ractor::ActorRef<ractor_cluster::NodeServerMessage> = server.into();
    let Ok(sessions) =
        crate::actors::call_local(&server, ractor_cluster::NodeServerMessage::GetSessions).await
    else {
        return HashMap::new();
    };
    let suffix = format!("@{}", cluster_host::CLUSTER_HOST);
    sessions
        .into_iter()
        .filter_map(|(id, s)| {
            let name = s.peer_name?.name;
            Some((id, name.strip_suffix(&suffix).unwrap_or(&name).to_owned()))
        })
        .collect()
}

async fn actors(State(ctx): State<AdminContext>) -> Json<serde_json::Value> {
    let nodes = session_nodes().await;
    let node_of = |id: ActorId| match id {
        ActorId::Local(_) => ctx.0.info.name.clone(),
        ActorId::Remote { node_id, .. } => nodes
            .get(&node_id)
            .cloned()
            .unwrap_or_else(|| format!("session-{node_id}")),
    };
    let mut membership: HashMap<ActorId, Vec<String>> = HashMap::new();
    let mut groups: BTreeMap<String, Vec<GroupMember>> = BTreeMap::new();
    for group in ractor::pg::which_groups() {
        let members = ractor::pg::get_members(&group);
        for member in &members {
            membership
                .entry(member.get_id())
                .or_default()
                .push(group.clone());
        }
        groups.insert(
            group,
            members
                .iter()
                .map(|m| {
                    let node = node_of(m.get_id());
                    GroupMember {
                        id: format!("{node}/{}", m.get_id().pid()),
                        name: m.get_name(),
                        node,
                        local: m.get_id().is_local(),
                    }
                })
                .collect(),
        );
    }
    Json(serde_json::json!({
        "tree": describe(&ctx.0.root, &membership, &node_of),
        "process_groups": groups,
    }))
}

fn describe(
    cell: &ActorCell,
    membership: &HashMap<ActorId, Vec<String>>,
    node_of: &dyn Fn(ActorId) -> String,
) -> ActorNode {
    let mut children: Vec<ActorNode> = cell
        .get_children()
        .iter()
        .map(|c| describe(c, membership, node_of))
        .collect();
    children.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    ActorNode {
        id: format!("{}/{}", node_of(cell.get_id()), cell.get_id().pid()),
        name: cell.get_name(),
        kind: kind_of(cell),
        status: format!("{:?}", cell.get_status()),
        groups: membership.get(&cell.get_id()).cloned().unwrap_or_default(),
        children,
    }
}

fn kind_of(cell: &ActorCell) -> &'static str {
    let is = |yes: Option<bool>| yes == Some(true);
    if !cell.get_id().is_local() {
        "RemoteActor"
    } else if is(cell.is_message_type_of::<node_supervisor::Msg>()) {
        "NodeSupervisor"
    } else if is(cell.is_message_type_of::<cluster_host::Msg>()) {
        "ClusterHost"
    } else if is(cell.is_message_type_of::<peer_directory::Msg>()) {
        "PeerDirectory"
    } else if is(cell.is_message_type_of::<crate::actors::model_host::Msg>()) {
        "ModelHost"
    } else if is(cell.is_message_type_of::<crate::actors::router::Msg>()) {
        "Router"
    } else if is(cell.is_message_type_of::<crate::actors::gateway::Msg>()) {
        "Gateway"
    } else if is(cell.is_message_type_of::<admin::Msg>()) {
        "Admin"
    } else if is(cell.is_message_type_of::<ractor_cluster::NodeServerMessage>()) {
        "NodeServer"
    } else if is(cell.is_message_type_of::<ractor_cluster::NodeSessionMessage>()) {
        "NodeSession"
    } else {
        "ractor_cluster internal"
    }
}
