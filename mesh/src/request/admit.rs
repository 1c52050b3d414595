//! Stage 1: admit a request. Bounds every field ([`validate`]), looks the model up in the
//! catalog, resets what a client may not decide (path, a hop budget above the default), checks
//! that a peer's handoff names the peer as its last hop, and fixes the request's deadline.
//! It also derives the cache secret from a client's API key before authentication drops the key.

use std::time::{Duration, Instant};

use ganglion_client::protocol::{DEFAULT_HOP_BUDGET, ErrorCode, Request, WireError, validate};

use super::{Limits, Origin};
use crate::cache::key::CacheSecret;
use crate::models::Catalog;

/// A request that may run, with its deadline.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The request, with this node appended to its path.
    pub request: Request,
    /// When this node received it.
    pub received: Instant,
    /// When it must be done.
    pub deadline: Instant,
    /// Derived from the client's API key, for its cache keys (see [`crate::cache::key`]);
    /// `None` for a peer's handoff, which never touches the cache.
    pub cache_secret: Option<crate::cache::key::CacheSecret>,
}

/// Checks `request`, arriving at `node`, and fixes what it may not decide for itself.
pub fn admit(
    node: &str,
    catalog: &Catalog,
    limits: Limits,
    origin: &Origin,
    mut request: Request,
    received: Instant,
) -> Result<Admitted, WireError> {
    validate(&request)?;
    if catalog.get(&request.model).is_none() {
        return Err(WireError::new(
            ErrorCode::UnknownModel,
            format!("model `{}` is not in the catalog", request.model),
        ));
    }
    match origin {
        // A client starts a request's journey: it has no path, and one request may not fan
        // out into more handoffs than the default allows.
        Origin::Client => {
            request.path.clear();
            request.hop_budget = request.hop_budget.min(DEFAULT_HOP_BUDGET);
            // Set by the nodes, never by a client.
            request.account = None;
            request.charge_id = None;
        }
        Origin::Peer(peer) => {
            if request.path.last() != Some(peer) {
                return Err(WireError::new(
                    ErrorCode::InvalidInput,
                    format!(
                        "a request handed over by `{peer}` must name it as its last hop (path {})",
                        request.path.join(" → ")
                    ),
                ));
            }
        }
    }
    if request.path.iter().any(|n| n == node) {
        return Err(WireError::new(
            ErrorCode::InvalidInput,
            format!(
                "request already passed through node `{node}` (path {})",
                request.path.join(" → ")
            ),
        ));
    }
    request.path.push(node.to_owned());
    let deadline = received + granted_deadline(request.deadline_ms, limits);
    // Taken before authentication drops the key (which never travels further).
    let cache_secret = match origin {
        Origin::Client => request
            .api_key
            .as_ref()
            .map(|k| CacheSecret::of_api_key(&k.0)),
        Origin::Peer(_) => None,
    };
    Ok(Admitted {
        request,
        received,
        deadline,
        cache_secret,
    })
}

/// The time a request gets: what it asks for, or the node's default, never beyond the maximum.
pub fn granted_deadline(asked_ms: Option<u64>, limits: Limits) -> Duration {
    asked_ms
        .map(Duration::from_millis)
        .unwrap_or(limits.default_deadline)
        .min(limits.max_deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        default_deadline: Duration::from_secs(120),
        max_deadline: Duration::from_secs(600),
    };

    fn request(path: &[&str], hop_budget: u8) -> Request {
        let input = ganglion_client::protocol::Input::Embed(vec!["hi".into()]);
        Request {
            hop_budget,
            path: path.iter().map(|s| s.to_string()).collect(),
            ..Request::new("@ganglion/all-minilm-l6-v2", input)
        }
    }

    fn run(origin: Origin, r: Request) -> Result<Admitted, WireError> {
        admit("n", &Catalog::builtin(), LIMITS, &origin, r, Instant::now())
    }

    #[test]
    fn a_client_cannot_choose_its_path_or_a_large_hop_budget() {
        let admitted = run(Origin::Client, request(&["x", "n"], 8)).expect("admitted");
        assert_eq!(admitted.request.path, ["n"]);
        assert_eq!(admitted.request.hop_budget, DEFAULT_HOP_BUDGET);
        let admitted = run(Origin::Client, request(&[], 1)).expect("admitted");
        assert_eq!(admitted.request.hop_budget, 1);
    }

    #[test]
    fn a_peer_must_be_the_last_hop_and_loops_are_refused() {
        let admitted = run(Origin::Peer("p".into()), request(&["e", "p"], 2)).expect("admitted");
        assert_eq!(admitted.request.path, ["e", "p", "n"]);
        let spoofed = run(Origin::Peer("p".into()), request(&["e", "q"], 2));
        assert_eq!(spoofed.unwrap_err().code, ErrorCode::InvalidInput);
        let looped = run(Origin::Peer("p".into()), request(&["n", "p"], 2));
        assert_eq!(looped.unwrap_err().code, ErrorCode::InvalidInput);
        let mut unknown = request(&["p"], 2);
        unknown.model = "@nobody/nothing".into();
        assert_eq!(
            run(Origin::Peer("p".into()), unknown).unwrap_err().code,
            ErrorCode::UnknownModel
        );
    }

    #[test]
    fn every_request_gets_a_bounded_deadline() {
        assert_eq!(granted_deadline(None, LIMITS), Duration::from_secs(120));
        assert_eq!(
            granted_deadline(Some(1500), LIMITS),
            Duration::from_millis(1500)
        );
        assert_eq!(
            granted_deadline(Some(u64::MAX), LIMITS),
            Duration::from_secs(600)
        );
        assert_eq!(granted_deadline(Some(0), LIMITS), Duration::ZERO);
    }
}
