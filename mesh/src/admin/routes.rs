//! Routes of the admin introspection endpoint, served by the [`Admin`](crate::actors::admin::Admin) actor. They reach
//! actors only through typed handles.
//!
//! `GET /healthz` is open; every other route needs `Authorization: Bearer <token>`.
//! - `GET /admin/node`: name, version, uptime, addresses, CPU features and kernels, the
//!   revoked-key set's size and digest
//! - `GET /admin/peers`: the peer directory
//! - `GET /admin/membership`: region, gateways, other regions reached, bounds reached, and
//!   connections refused at the cap
//! - `GET /admin/actors`: the actor tree, and the members of every process group
//! - `GET /admin/models`: configured models, hosted or why not, queue and traffic counters
//! - `GET /admin/routing`: per model, requests run here vs handed to peers; per peer, handoffs,
//!   failures, handoffs under way and its current score
//! - `GET /admin/usage[?account=NAME]`: mesh-wide usage per account today: Neurons, requests,
//!   free allocation used, billable, and what this node charged (its ledger's sum)
//! - `GET /admin/ledger[?day=YYYY-MM-DD&account=NAME]`: this node's ledger records
//! - `GET /admin/cache`, `DELETE /admin/cache[?model=ID&account=NAME]`: the result cache's
//!   shards on this node; purging them (see [`super::cache`])
//! - `GET /metrics`: Prometheus metrics (OpenMetrics text; see [`crate::metrics`]); open with
//!   `--metrics-open`
//! - `POST /admin/keys/revoke` with `{"key": KEY}` (the key itself or its id): revokes it here,
//!   stores it, and adverts carry it to every other node
//! - `POST /admin/faults/kill/{*child}`, `POST /admin/faults/panic-next-job` and
//!   `POST /admin/faults/stall-directory` (its member list answered too late for 30 s): fault injection
//!   for tests, present only when the node runs with `--fault-injection`

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ractor::{ActorCell, ActorId};
use serde::Serialize;

use super::context::{Context, unavailable};
use crate::actors::cluster_host;
use crate::credentials::revoked::KeyId;

/// The admin router.
pub fn router(context: Context) -> Router {
    let mut protected = Router::new()
        .route("/admin/node", get(node))
        .route("/admin/peers", get(peers))
        .route("/admin/membership", get(membership))
        .route("/admin/actors", get(actors))
        .route("/admin/models", get(models))
        .route("/admin/routing", get(routing))
        .route("/admin/keys/revoke", post(revoke))
        .route("/admin/usage", get(usage))
        .route("/admin/ledger", get(ledger))
        .route("/admin/mesh", get(super::dashboard::mesh))
        .route("/admin/try", post(super::dashboard::try_it))
        .route(
            "/admin/cache",
            get(super::cache::show).delete(super::cache::purge),
        );
    if context.parts().faults.enabled() {
        protected = protected
            .route("/admin/faults/kill/{*child}", post(kill))
            .route("/admin/faults/panic-next-job", post(panic_next_job))
            .route("/admin/faults/stall-directory", post(stall_directory));
    }
    let mut open = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(super::dashboard::index))
        .route("/dashboard.js", get(super::dashboard::script))
        .route("/dashboard.css", get(super::dashboard::style));
    if context.parts().metrics_open {
        open = open.route("/metrics", get(metrics));
    } else {
        protected = protected.route("/metrics", get(metrics));
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(
        context.clone(),
        require_token,
    ));
    open.merge(protected).with_state(context)
}

async fn require_token(State(ctx): State<Context>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&ctx.parts().token, presented) {
        (Some(expected), Some(given)) if token_matches(expected, given) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
        )
            .into_response(),
    }
}

/// Compares the presented bearer token with the expected one in constant time. Both are hashed
/// first, so neither the comparison's duration nor an early length check reveals how long the
/// token is or how much of a guess was right.
fn token_matches(expected: &str, given: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let expected = Sha256::digest(expected.as_bytes());
    let given = Sha256::digest(given.as_bytes());
    expected.as_slice().ct_eq(given.as_slice()).into()
}

async fn node(State(ctx): State<Context>) -> Json<serde_json::Value> {
    let info = &ctx.parts().info;
    let revoked = &ctx.parts().revoked;
    let (count, refused) = revoked.counts();
    Json(serde_json::json!({
        "name": info.name,
        "version": info.version,
        "started_at": humantime::format_rfc3339_seconds(ctx.started_at()).to_string(),
        "uptime_s": ctx.uptime().as_secs_f64(),
        "addresses": info.addresses,
        "cpu": info.cpu,
        "revoked_keys": {
            "count": count,
            "digest": hex_digest(&revoked.summary().digest),
            "refused_set_full": refused,
        },
    }))
}

fn hex_digest(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

async fn membership(State(ctx): State<Context>) -> Response {
    let parts = ctx.parts();
    match parts.directory.membership().await {
        Ok(view) => {
            let limits = &parts.connection_limits;
            Json(serde_json::json!({
                "membership": view,
                "connections": {
                    "open": limits.open(),
                    "max": limits.max_total(),
                    "refused": limits.refused(),
                },
            }))
            .into_response()
        }
        Err(e) => unavailable(&e.to_string()),
    }
}

async fn peers(State(ctx): State<Context>) -> Response {
    match ctx.parts().directory.list().await {
        Ok(peers) => Json(peers).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn models(State(ctx): State<Context>) -> Response {
    let parts = ctx.parts();
    let peers = match parts.directory.list().await {
        Ok(peers) => peers,
        Err(e) => return unavailable(&format!("peer directory did not answer: {e}")),
    };
    let states = parts.hosts.states().all();
    let mut entries = Vec::new();
    for status in &parts.hosting {
        let stats = match parts.hosts.get(&status.id) {
            Some(host) => host.stats().await.ok(),
            None => None,
        };
        let state = states.get(&status.id).copied();
        let hosted_by_peers: Vec<&str> = peers
            .iter()
            .filter(|p| p.models.contains(&status.id))
            .map(|p| p.name.as_str())
            .collect();
        entries.push(serde_json::json!({
            "id": status.id,
            "task": status.task,
            "memory_bytes": status.memory_bytes,
            "hosted": state == Some(crate::facts::ModelState::Hosted),
            "state": state,
            "reason": status.reason,
            "stats": stats,
            "hosted_by_peers": hosted_by_peers,
        }));
    }
    Json(serde_json::json!({
        "node": parts.info.name,
        "hardware": parts.info.hardware,
        "models": entries,
    }))
    .into_response()
}

/// Query of `/admin/usage` and `/admin/ledger`.
#[derive(Debug, Default, serde::Deserialize)]
struct UsageQuery {
    account: Option<String>,
    day: Option<String>,
}

async fn usage(
    State(ctx): State<Context>,
    axum::extract::Query(query): axum::extract::Query<UsageQuery>,
) -> Response {
    use crate::metering::usage::{FREE_DAILY_NEURONS, day_of, day_text, reset_at, time_text};
    use crate::metering::{MICRO, neurons_text};
    let today = day_of(crate::metering::unix_now());
    let meter = &ctx.parts().meter;
    let (accounts, own) = match (meter.usage(today).await, meter.own(today).await) {
        (Ok(accounts), Ok(own)) => (accounts, own),
        (Err(e), _) | (_, Err(e)) => return unavailable(&format!("meter did not answer: {e}")),
    };
    let free = FREE_DAILY_NEURONS * MICRO;
    let rows: Vec<serde_json::Value> = accounts
        .iter()
        .filter(|(name, _)| query.account.as_ref().is_none_or(|a| a == *name))
        .map(|(name, totals)| {
            let free_used = totals.micro.min(free);
            let here = own
                .iter()
                .find(|u| u.account == *name)
                .map(|u| u.totals)
                .unwrap_or_default();
            serde_json::json!({
                "account": name,
                "neurons": neurons_text(totals.micro),
                "micro_neurons": totals.micro,
                "requests": totals.requests,
                "cached_requests": totals.cached,
                "free_allocation_used": neurons_text(free_used),
                "billable": neurons_text(totals.micro - free_used),
                "charged_by_this_node": {
                    "neurons": neurons_text(here.micro),
                    "micro_neurons": here.micro,
                    "requests": here.requests,
                    "cached_requests": here.cached,
                },
            })
        })
        .collect();
    Json(serde_json::json!({
        "node": ctx.parts().info.name,
        "day": day_text(today),
        "resets_at": time_text(reset_at(today)),
        "free_allocation": FREE_DAILY_NEURONS,
        "accounts": rows,
    }))
    .into_response()
}

async fn ledger(
    State(ctx): State<Context>,
    axum::extract::Query(query): axum::extract::Query<UsageQuery>,
) -> Response {
    let day = match query.day.as_deref().map(crate::metering::usage::parse_day) {
        Some(None) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": "day must be YYYY-MM-DD" })),
            )
                .into_response();
        }
        Some(day) => day,
        None => None,
    };
    let ledger = ctx.parts().ledger.clone();
    match tokio::task::spawn_blocking(move || ledger.records()).await {
        Ok(Ok(records)) => Json(
            records
                .into_iter()
                .filter(|r| day.is_none_or(|d| r.day == d))
                .filter(|r| query.account.as_ref().is_none_or(|a| *a == r.account))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        _ => unavailable("the ledger could not be read"),
    }
}

/// Body of a revocation.
#[derive(Debug, serde::Deserialize)]
struct Revoke {
    /// The key, or its id.
    key: String,
}

async fn revoke(State(ctx): State<Context>, Json(body): Json<Revoke>) -> Response {
    let parts = ctx.parts();
    // An id in upper case names the same key: stored and reported in lowercase.
    let kid = if let Some(id) = KeyId::parse(&body.key) {
        id.to_string()
    } else {
        match parts
            .key_verifier
            .as_ref()
            .map(|v| v.verify_signature(&body.key))
        {
            Some(Ok(claims)) => claims.kid,
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({ "error": "not a key of this cluster, nor a key id" })),
                )
                    .into_response();
            }
        }
    };
    let new = !parts.revoked.add([kid.clone()]).is_empty();
    if new {
        let (revoked, file) = (parts.revoked.clone(), parts.revoked_file.clone());
        let stored = tokio::task::spawn_blocking(move || revoked.save(&file)).await;
        if !matches!(stored, Ok(Ok(()))) {
            return unavailable("the revocation took effect but could not be stored");
        }
        tracing::info!(%kid, "API key revoked");
    }
    Json(serde_json::json!({ "kid": kid, "revoked": true, "new": new })).into_response()
}

async fn kill(State(ctx): State<Context>, Path(child): Path<String>) -> Response {
    if ctx.parts().faults.kill(&child) {
        Json(serde_json::json!({ "killed": child })).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no such child; use directory, meter, router, gateway, cluster_host, admin, model:<id> or cache:<index>" })),
        )
            .into_response()
    }
}

async fn panic_next_job(State(ctx): State<Context>) -> Json<serde_json::Value> {
    ctx.parts().faults.arm_job_panic();
    Json(serde_json::json!({ "armed": true }))
}

async fn stall_directory(State(ctx): State<Context>) -> Json<serde_json::Value> {
    ctx.parts()
        .faults
        .stall_directory(std::time::Duration::from_secs(30));
    Json(serde_json::json!({ "stalled_s": 30 }))
}

async fn routing(State(ctx): State<Context>) -> Response {
    match ctx.parts().router.stats().await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => unavailable(&format!("router did not answer: {e}")),
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

async fn actors(State(ctx): State<Context>) -> Json<serde_json::Value> {
    let nodes = session_nodes().await;
    let node_of = |id: ActorId| match id {
        ActorId::Local(_) => ctx.parts().info.name.clone(),
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
        "tree": describe(&ctx.parts().root, &membership, &node_of),
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

/// An actor's kind, from the name it registers (each actor of this node registers one that
/// says what it is).
fn kind_of(cell: &ActorCell) -> &'static str {
    if !cell.get_id().is_local() {
        return "RemoteActor";
    }
    let name = cell.get_name().unwrap_or_default();
    match name.as_str() {
        "ganglion.node" => "NodeSupervisor",
        "ganglion.cluster_host" => "ClusterHost",
        "ganglion.peer_directory" => "PeerDirectory",
        "ganglion.router" => "Router",
        "ganglion.gateway" => "Gateway",
        "ganglion.meter" => "Meter",
        "ganglion.admin" => "Admin",
        cluster_host::NODE_SERVER_NAME => "NodeServer",
        n if n.starts_with("ganglion.model_host.") => "ModelHost",
        n if crate::cache::index_of(n).is_some() => "CacheShard",
        _ => "ractor_cluster internal",
    }
}

/// `GET /metrics`: the node's counters, with its gauges read from the actors now.
async fn metrics(State(ctx): State<Context>) -> Response {
    let parts = ctx.parts();
    let metrics = &parts.metrics;
    let cache = parts.cache.totals(crate::actors::LOCAL_CALL_TIMEOUT).await;
    let near = parts.cache.near().stats();
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    metrics.cache_bytes.set(gauge(cache.bytes + near.bytes));
    metrics
        .cache_entries
        .set(gauge(cache.entries + near.entries as u64));
    metrics
        .cache_evictions
        .set(gauge(cache.evictions + near.evictions));
    metrics.clear_gauges();
    for id in parts.hosts.ids() {
        if let Some(host) = parts.hosts.get(&id)
            && let Ok(stats) = host.stats().await
        {
            metrics.model_load(&id, stats.queued, stats.in_flight);
        }
    }
    if let Ok(peers) = parts.directory.list().await {
        let connected: Vec<_> = peers
            .iter()
            .filter(|p| p.state == crate::actors::peer_directory::PeerState::Connected)
            .collect();
        metrics.peers.set(connected.len() as i64);
        for peer in connected {
            metrics.peer_rtt(&peer.name, peer.rtt_ms / 1000.0);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}
