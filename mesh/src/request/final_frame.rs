//! The final frame of an answer, built in one place. The node that answers a request itself
//! makes it with [`answered_here`]: the node that ran the model, once it has charged the run
//! ([`super::charge`]), or the entry node replaying its cache ([`super::cache`]). A node that
//! relays a peer's answer adds itself to it with [`passed_on`] ([`super::handoff`]). No other
//! code writes a [`FinalResponse`].

use std::time::Instant;

use ganglion_client::protocol::{
    Attempt, CacheReport, FinalResponse, HopTime, MAX_ROUTE_ATTEMPTS, Output, Route, Timings, Usage,
};

use super::admit::Admitted;
use super::ms;

/// The final frame of an answer `node` made itself with `model` (it ran the model, or
/// replayed its cache): the route names `node` alone, and its one hop has the answer's times.
pub fn answered_here(
    node: &str,
    model: &str,
    id: u128,
    output: Output,
    usage: Usage,
    timings: Timings,
    cache: CacheReport,
) -> FinalResponse {
    FinalResponse {
        id,
        output,
        usage,
        timings,
        route: Route {
            entry: node.to_owned(),
            executed_by: node.to_owned(),
            path: vec![node.to_owned()],
            attempts: Vec::new(),
            per_hop: vec![HopTime {
                node: node.to_owned(),
                first_token_ms: timings.first_token_ms,
                total_ms: timings.total_ms,
            }],
            model: model.to_owned(),
            models_tried: Vec::new(),
            migrations: Vec::new(),
        },
        cache,
    }
}

/// A peer's final frame as `node` relays it for `admitted`: `node` becomes the route's entry,
/// ahead of the peer's path, with the candidates it gave up on first (`attempts`) and its own
/// times (output first passed here at `first_output`, if any did), which also replace the
/// downstream ones in the timings. The entry node puts its cache report on it; a node in the
/// middle leaves the one that came back.
pub fn passed_on(
    mut response: FinalResponse,
    node: &str,
    admitted: &Admitted<'_>,
    attempts: &[Attempt],
    first_output: Option<Instant>,
) -> FinalResponse {
    let first_token_ms = first_output.map(|first| ms(first - admitted.received));
    let total_ms = ms(admitted.received.elapsed());
    let route = &mut response.route;
    // The model is the one this node admitted, whatever the peer says; only the entry node
    // lists models tried (its fallbacks), never a peer.
    route.model = admitted.spec.id.clone();
    route.models_tried.clear();
    route.path.insert(0, node.to_owned());
    route.entry = node.to_owned();
    route.attempts.splice(0..0, attempts.iter().cloned());
    route.attempts.truncate(MAX_ROUTE_ATTEMPTS);
    route.per_hop.insert(
        0,
        HopTime {
            node: node.to_owned(),
            first_token_ms,
            total_ms,
        },
    );
    response.timings.total_ms = total_ms;
    if first_token_ms.is_some() {
        response.timings.first_token_ms = first_token_ms;
    }
    if let Some(report) = &admitted.cache_report {
        response.cache = report.clone();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_client::protocol::{CacheStatus, ErrorCode};

    fn here(node: &str, cache: CacheReport) -> FinalResponse {
        let timings = Timings {
            queue_ms: 1.0,
            first_token_ms: Some(2.0),
            total_ms: 3.0,
        };
        answered_here(
            node,
            "m",
            7,
            Output::Embeddings(Vec::new()),
            Usage::default(),
            timings,
            cache,
        )
    }

    #[test]
    fn an_answer_made_here_names_this_node_alone() {
        let response = here("b", CacheReport::bypass());
        assert_eq!(response.route.entry, "b");
        assert_eq!(response.route.executed_by, "b");
        assert_eq!(response.route.path, ["b"]);
        assert_eq!(response.route.per_hop.len(), 1);
        assert_eq!(response.route.per_hop[0].total_ms, 3.0);
        assert_eq!(response.route.per_hop[0].first_token_ms, Some(2.0));
    }

    #[test]
    fn a_relaying_node_goes_first_with_its_attempts_and_its_cache_report() {
        let catalog = crate::models::Catalog::builtin();
        let spec = catalog.get(crate::models::catalog::MINILM).expect("minilm");
        let now = Instant::now();
        let mut admitted = Admitted {
            origin: super::super::Origin::Client,
            request: ganglion_client::protocol::Request::new(
                spec.id.clone(),
                ganglion_client::protocol::Input::Embed(vec!["hi".into()]),
            ),
            spec,
            received: now,
            deadline: now,
            now: 0,
            cache_secret: None,
            cache_report: None,
            attempts: Vec::new(),
        };
        let tried = [Attempt {
            node: "c".into(),
            code: ErrorCode::Overloaded,
            reason: "busy".into(),
        }];
        let middle = passed_on(
            here("b", CacheReport::bypass()),
            "m",
            &admitted,
            &tried,
            None,
        );
        assert_eq!(middle.route.path, ["m", "b"]);
        assert_eq!(middle.route.entry, "m");
        assert_eq!(middle.route.executed_by, "b");
        assert_eq!(middle.route.attempts, tried);
        assert_eq!(middle.route.per_hop.len(), 2);
        assert_eq!(
            middle.timings.first_token_ms,
            Some(2.0),
            "kept without output here"
        );
        assert_eq!(middle.cache.status, CacheStatus::Bypass);
        admitted.cache_report = Some(CacheReport {
            status: CacheStatus::Miss,
            shard: Some("a/0".into()),
            age_ms: None,
        });
        // A peer's word on the model or on models tried is not kept: the model is the one
        // admitted here, and only the entry node lists models tried (its own fallbacks).
        let mut lying = middle;
        lying.route.model = "@someone/else".into();
        lying.route.models_tried = vec![ganglion_client::protocol::ModelAttempt {
            model: "@x/y".into(),
            code: ErrorCode::Unavailable,
            reason: "made up".into(),
        }];
        let entry = passed_on(lying, "a", &admitted, &[], Some(now));
        assert_eq!(entry.route.path, ["a", "m", "b"]);
        assert_eq!(entry.cache.status, CacheStatus::Miss);
        assert_eq!(entry.route.per_hop[0].node, "a");
        assert_eq!(entry.route.model, crate::models::catalog::MINILM);
        assert!(entry.route.models_tried.is_empty());
    }
}
