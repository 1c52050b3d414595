//! Between stages 4 and 5, at the entry node only: whether a peer should run a chat before this
//! node does, because it holds the chat's prefix (its engine starts from that work instead of
//! reading it again), or, when no host holds it, because the prefix belongs to that peer by
//! rendezvous among hosts as good as this one (`routing::prefix`). A request so sent that no
//! peer takes comes back to this node's host.

use ganglion_client::protocol::Input;

use super::Context;
use super::admit::Admitted;
use crate::actors::peer_directory::Via;
use crate::actors::router::Target;
use crate::request::Origin;
use crate::routing::placement::{self, Candidate};
use crate::routing::prefix::{self, Prefix};

/// The prefix a client's chat is placed by, if it has one worth a hop.
pub fn prefix_of(admitted: &Admitted<'_>) -> Option<Prefix> {
    if admitted.origin != Origin::Client {
        return None;
    }
    let Input::Chat(messages) = &admitted.request.input else {
        return None;
    };
    let account = admitted
        .request
        .account
        .as_ref()
        .map_or("", |a| a.name.as_str());
    // The keyless account's prompts are never reused: nothing to place by.
    if !crate::inference::parking::shares_prompts(account) {
        return None;
    }
    prefix::of_chat(account, &admitted.request.model, messages)
}

/// The peers that come before this node's own host of the model for `prefix`, best first
/// (`None` when none does, or when this node hosts none: the request goes to peers anyway).
/// Any failure to tell leaves the request to this node first, as without a prefix.
pub async fn peers_first(
    ctx: &Context,
    admitted: &Admitted<'_>,
    prefix: &Prefix,
) -> Option<Vec<Target>> {
    let request = &admitted.request;
    let host = ctx.hosts.get(&request.model)?;
    let stats = host.stats().await.ok()?;
    let here = Candidate {
        name: ctx.node.clone(),
        rtt: std::time::Duration::ZERO,
        queued: u32::try_from(stats.queued).unwrap_or(u32::MAX),
        in_flight: u32::try_from(stats.in_flight).unwrap_or(u32::MAX),
        concurrency: u32::try_from(stats.concurrency).unwrap_or(u32::MAX),
        service_time: placement::service_time(stats.service_ms),
        sent_by_us: 0,
        recent_failures: 0,
        warm: stats.warm.contains(&prefix.key),
    };
    let here = placement::prefix_order(placement::score(&here), here.warm, &here.name, prefix);
    let mut targets = ctx
        .router
        .plan(
            &request.model,
            &request.path,
            request.hop_budget,
            Some(*prefix),
        )
        .await
        .ok()?;
    // Only a host of this region: a gateway towards another region never comes before a
    // host here.
    targets.retain(|t| {
        t.via == Via::Host && placement::prefix_order(t.score, t.warm, &t.name, prefix) < here
    });
    (!targets.is_empty()).then_some(targets)
}
