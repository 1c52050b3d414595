//! Stage 1: admit a request. Bounds every field ([`validate`]), takes the model's catalog
//! entry (looked up once per request, by the caller; later stages read it here), resets what a
//! client may not decide (path, a hop budget above the default), checks that a peer's handoff
//! names the peer as its last hop, fixes the request's deadline, and gives a chat request
//! without `max_tokens` its model's default, once, so that the answer, the cache key and the
//! quota hold all go by the same number along the whole path.
//! It also derives the cache secret from a client's API key before authentication drops the key.
//! What it admits is the state every later stage shares ([`Admitted`]).

use std::time::{Duration, Instant};

use ganglion_client::protocol::{
    Attempt, CacheReport, DEFAULT_HOP_BUDGET, ErrorCode, Input, Request, WireError, validate,
};

use super::{Limits, Origin};
use crate::cache::key::CacheSecret;
use crate::models::ModelSpec;

/// A request that may run, and what the stages learn of it on its way: the state they share.
#[derive(Debug, Clone)]
pub struct Admitted<'a> {
    /// Who sent it to this node.
    pub origin: Origin,
    /// The request, with this node appended to its path.
    pub request: Request,
    /// Its model's catalog entry.
    pub spec: &'a ModelSpec,
    /// When this node received it.
    pub received: Instant,
    /// When it must be done.
    pub deadline: Instant,
    /// Unix seconds when it was admitted: the time its key and its quota day are judged by.
    pub now: u64,
    /// Derived from the client's API key, for its cache keys (see [`crate::cache::key`]);
    /// `None` for a peer's handoff, which never touches the cache.
    pub cache_secret: Option<CacheSecret>,
    /// What the cache did, for the final frame (set by the cache stage at the entry node;
    /// `None` for a peer's handoff, whose entry node reports it).
    pub cache_report: Option<CacheReport>,
    /// Nodes that did not serve it, with why (this one, when its host was full), for the
    /// error if no node does and for the final frame's route.
    pub attempts: Vec<Attempt>,
}

/// Checks `request`, arriving at `node` from `origin`, and fixes what it may not decide for
/// itself. `spec` is the catalog's entry for its model (`None`: not in the catalog); `now` is
/// Unix seconds.
pub fn admit<'a>(
    node: &str,
    spec: Option<&'a ModelSpec>,
    limits: Limits,
    origin: Origin,
    mut request: Request,
    received: Instant,
    now: u64,
) -> Result<Admitted<'a>, WireError> {
    validate(&request)?;
    let Some(spec) = spec else {
        return Err(WireError::new(
            ErrorCode::UnknownModel,
            format!("model `{}` is not in the catalog", request.model),
        ));
    };
    if !spec.task.takes(&request.input) {
        return Err(WireError::new(
            ErrorCode::InvalidInput,
            format!(
                "model `{}` is for {} and takes {}",
                spec.id,
                spec.task.as_str(),
                spec.task.input_name()
            ),
        ));
    }
    // An image's size is read from its header before it costs anything or goes anywhere.
    if let Input::Image(bytes) = &request.input {
        use crate::inference::vision::decode::{ImageError, dimensions};
        match dimensions(bytes) {
            Ok(_) => {}
            Err(e @ ImageError::TooLarge { .. }) => {
                return Err(WireError::new(ErrorCode::TooLarge, e.to_string()));
            }
            Err(e) => return Err(WireError::new(ErrorCode::InvalidInput, e.to_string())),
        }
    }
    // A recording's length, likewise, from its header.
    if let Input::Audio(bytes) = &request.input {
        use crate::inference::speech::audio::{AudioError, duration};
        match duration(bytes) {
            Ok(_) => {}
            Err(e @ AudioError::TooLong { .. }) => {
                return Err(WireError::new(ErrorCode::TooLarge, e.to_string()));
            }
            Err(e) => return Err(WireError::new(ErrorCode::InvalidInput, e.to_string())),
        }
    }
    match &origin {
        // A client starts a request's journey: it has no path, and one request may not fan
        // out into more handoffs than the default allows.
        Origin::Client => {
            request.path.clear();
            request.hop_budget = request.hop_budget.min(DEFAULT_HOP_BUDGET);
            // Set by the nodes, never by a client.
            request.account = None;
            request.charge_id = None;
            request.resume = None;
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
    // The one place the default applies. The entry node's holds along the whole path (a peer
    // finds it set), so the answer matches the cache key and the quota hold it was given.
    if matches!(request.input, Input::Chat(_)) && request.parameters.max_tokens.is_none() {
        request.parameters.max_tokens = Some(spec.default_max_tokens);
    }
    // Taken before authentication drops the key (which never travels further).
    let cache_secret = match origin {
        Origin::Client => request
            .api_key
            .as_ref()
            .map(|k| CacheSecret::of_api_key(&k.0)),
        Origin::Peer(_) => None,
    };
    Ok(Admitted {
        origin,
        request,
        spec,
        received,
        deadline,
        now,
        cache_secret,
        cache_report: None,
        attempts: Vec::new(),
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
        prefix_affinity: true,
    };

    fn request(path: &[&str], hop_budget: u8) -> Request {
        let input = Input::Embed(vec!["hi".into()]);
        Request {
            hop_budget,
            path: path.iter().map(|s| s.to_string()).collect(),
            ..Request::new("@ganglion/all-minilm-l6-v2", input)
        }
    }

    /// The request as admitted, or why not.
    fn run(origin: Origin, r: Request) -> Result<Request, WireError> {
        let catalog = crate::models::Catalog::builtin();
        let spec = catalog.get(&r.model);
        admit("n", spec, LIMITS, origin, r, Instant::now(), 0).map(|a| a.request)
    }

    #[test]
    fn a_client_cannot_choose_its_path_or_a_large_hop_budget() {
        let admitted = run(Origin::Client, request(&["x", "n"], 8)).expect("admitted");
        assert_eq!(admitted.path, ["n"]);
        assert_eq!(admitted.hop_budget, DEFAULT_HOP_BUDGET);
        let admitted = run(Origin::Client, request(&[], 1)).expect("admitted");
        assert_eq!(admitted.hop_budget, 1);
    }

    #[test]
    fn a_chat_request_gets_its_models_default_max_tokens_once() {
        let chat = |max_tokens: Option<u32>| {
            let message = ganglion_client::protocol::ChatMessage {
                role: ganglion_client::protocol::Role::User,
                content: "hi".into(),
            };
            let mut r = Request::new(crate::models::catalog::SMOLLM2, Input::Chat(vec![message]));
            r.parameters.max_tokens = max_tokens;
            r
        };
        let catalog = crate::models::Catalog::builtin();
        let default = catalog
            .get(crate::models::catalog::SMOLLM2)
            .expect("smollm")
            .default_max_tokens;
        let admitted = run(Origin::Client, chat(None)).expect("admitted");
        assert_eq!(admitted.parameters.max_tokens, Some(default));
        let admitted = run(Origin::Client, chat(Some(7))).expect("admitted");
        assert_eq!(admitted.parameters.max_tokens, Some(7));
        let embed = run(Origin::Client, request(&[], 1)).expect("admitted");
        assert_eq!(embed.parameters.max_tokens, None);
    }

    #[test]
    fn a_peer_must_be_the_last_hop_and_loops_are_refused() {
        let admitted = run(Origin::Peer("p".into()), request(&["e", "p"], 2)).expect("admitted");
        assert_eq!(admitted.path, ["e", "p", "n"]);
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
