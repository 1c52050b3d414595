//! The catalog as a client sees it: each model with the nodes serving it. Both doors answer
//! model listings with it (QUIC `Models`, HTTP `/v1/models`).

use ganglion_client::protocol::{ErrorCode, ModelListing, WireError};

use super::Context;

/// The catalog, each model with the nodes serving it: this node, and peers by their adverts
/// (one directory query for the whole listing).
pub async fn list_models(ctx: &Context) -> Result<Vec<ModelListing>, WireError> {
    let peers = ctx.directory.list().await.map_err(|e| {
        WireError::new(
            ErrorCode::Unavailable,
            format!("the peer directory did not answer: {e}"),
        )
    })?;
    Ok(ctx
        .catalog
        .models()
        .iter()
        .map(|spec| {
            let here = ctx.hosts.get(&spec.id).map(|_| ctx.node.clone());
            let there = peers
                .iter()
                .filter(|p| p.models.contains(&spec.id))
                .map(|p| p.name.clone());
            ModelListing {
                id: spec.id.clone(),
                task: spec.task.as_str().to_owned(),
                class: spec.class.as_str().to_owned(),
                pricing: spec.pricing.describe(spec.task.unit()),
                hosted_by: here.into_iter().chain(there).collect(),
            }
        })
        .collect())
}
