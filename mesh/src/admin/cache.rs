//! The admin routes of the result cache:
//! - `GET /admin/cache`: this node's shards (entries, bytes, hits, misses, evictions, keys in
//!   flight and lookups waiting), its near copies of other nodes' answers, the requests that
//!   went without the cache here, and every live shard of the mesh;
//! - `DELETE /admin/cache[?model=ID&account=NAME]`: drops this node's entries and near copies
//!   (all, or those of a model and/or an account). Each node purges its own: to purge the
//!   mesh, ask each.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::context::{Context, unavailable};
use crate::cache::store::Purge;

/// Query of `DELETE /admin/cache`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct PurgeQuery {
    model: Option<String>,
    account: Option<String>,
}

pub(super) async fn show(State(ctx): State<Context>) -> Response {
    let shards = &ctx.parts().cache;
    let mut local = Vec::new();
    for shard in shards.all_local() {
        match shard.stats().await {
            Ok(stats) => local.push(stats),
            Err(e) => return unavailable(&format!("a cache shard did not answer: {e}")),
        }
    }
    let members = shards.members();
    Json(serde_json::json!({
        "node": shards.node(),
        "shards": local,
        "near": shards.near().stats(),
        "bypasses": shards.bypasses(),
        "mesh_shards": members.iter().map(|m| m.label()).collect::<Vec<_>>(),
    }))
    .into_response()
}

pub(super) async fn purge(State(ctx): State<Context>, Query(query): Query<PurgeQuery>) -> Response {
    let purge = Purge {
        model: query.model,
        account: query.account,
    };
    let cache = &ctx.parts().cache;
    let copies = cache.near().purge(&purge);
    let mut purged = 0;
    for shard in cache.all_local() {
        match shard.purge(purge.clone()).await {
            Ok(n) => purged += n,
            Err(e) => return unavailable(&format!("a cache shard did not answer: {e}")),
        }
    }
    Json(serde_json::json!({ "purged": purged, "copies_purged": copies })).into_response()
}
