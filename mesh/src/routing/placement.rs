//! Candidate scoring and choice for handing a request to a peer.
//!
//! A candidate's score is the time a request would expect to spend before it starts running
//! there: the round trip to the peer, plus the wait in its queue (requests ahead of it, over its
//! concurrency, times its recent service time), plus a penalty while it has been failing. The
//! queue estimate counts both what the peer last advertised (at most about a second old) and
//! what this node has itself sent there since, so that many routers do not pile onto one peer.

use std::time::Duration;

use super::prefix::{self, Prefix};
use super::rendezvous;

/// Added to a candidate's score per recent failure, so a failing peer is tried last.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(5);

/// What a router knows about one peer hosting the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The peer's name.
    pub name: String,
    /// Smoothed round-trip time to it.
    pub rtt: Duration,
    /// Requests waiting in its queue for the model (advertised).
    pub queued: u32,
    /// Requests running there (advertised).
    pub in_flight: u32,
    /// Requests it runs at once.
    pub concurrency: u32,
    /// Its recent time to serve one request of this model.
    pub service_time: Duration,
    /// Requests this node has sent there and not yet seen finish.
    pub sent_by_us: u32,
    /// Recent failures of requests sent there.
    pub recent_failures: u32,
    /// It ran the request's prefix lately (`prefix::Warm`): its engine need not read it again.
    pub warm: bool,
}

/// Longest service time a peer's advert is believed for; anything above (or not a number) is
/// taken as this, so that no advertised figure can overflow the arithmetic below.
pub const MAX_SERVICE_TIME: Duration = Duration::from_secs(3600);

/// The service time an advert's milliseconds stand for: negative or not-a-number is zero,
/// anything huge (infinity included) is [`MAX_SERVICE_TIME`].
pub fn service_time(advertised_ms: f64) -> Duration {
    if advertised_ms.is_nan() || advertised_ms <= 0.0 {
        return Duration::ZERO;
    }
    let max_ms = MAX_SERVICE_TIME.as_secs_f64() * 1000.0;
    Duration::from_secs_f64(advertised_ms.min(max_ms) / 1000.0)
}

/// Expected time before a new request would start running at `c`. Saturates: no advertised
/// count or time can overflow it.
pub fn expected_wait(c: &Candidate) -> Duration {
    let concurrency = c.concurrency.max(1);
    let ahead = c
        .queued
        .saturating_add(c.in_flight)
        .saturating_add(c.sent_by_us);
    if ahead < concurrency {
        return Duration::ZERO;
    }
    // Requests ahead beyond the free slots must finish first; `concurrency` of them finish
    // per service time.
    let waves = (ahead - concurrency + 1).div_ceil(concurrency);
    c.service_time.saturating_mul(waves)
}

/// The candidate's score: lower is better.
pub fn score(c: &Candidate) -> Duration {
    c.rtt
        .saturating_add(expected_wait(c))
        .saturating_add(FAILURE_PENALTY.saturating_mul(c.recent_failures))
}

/// Candidates ranked best first, leaving out every node on the request's path (so a request
/// never returns to a node it has visited) and keeping at most `limit`.
pub fn rank<'a>(candidates: &'a [Candidate], path: &[String], limit: usize) -> Vec<&'a Candidate> {
    let mut eligible: Vec<(Duration, &Candidate)> = candidates
        .iter()
        .filter(|c| !path.contains(&c.name))
        .map(|c| (score(c), c))
        .collect();
    // Ties broken by name so that every router decides the same way from the same facts.
    let order = |a: &(Duration, &Candidate), b: &(Duration, &Candidate)| {
        a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name))
    };
    if limit == 0 {
        return Vec::new();
    }
    // Only the best `limit` are wanted: partition around the limit (linear), then sort those.
    if eligible.len() > limit {
        eligible.select_nth_unstable_by(limit - 1, order);
        eligible.truncate(limit);
    }
    eligible.sort_by(order);
    eligible.into_iter().map(|(_, c)| c).collect()
}

/// Candidates ranked best first for a request with `prefix`, as [`rank`] does without one. A
/// warm candidate's score is lowered by the prefill it saves (never below zero: a warm peer
/// with a long queue still loses); scores within [`prefix::TIE`] of each other are a tie, broken
/// by rendezvous on the prefix, so that every router sends a prefix to the same host among
/// equals.
pub fn rank_for_prefix<'a>(
    candidates: &'a [Candidate],
    path: &[String],
    limit: usize,
    prefix: &Prefix,
) -> Vec<&'a Candidate> {
    let mut eligible: Vec<(PrefixOrder, &Candidate)> = candidates
        .iter()
        .filter(|c| !path.contains(&c.name))
        .map(|c| (prefix_order(score(c), c.warm, &c.name, prefix), c))
        .collect();
    eligible.sort_by_key(|a| a.0);
    eligible.truncate(limit);
    eligible.into_iter().map(|(_, c)| c).collect()
}

/// Where a candidate stands for a request with a prefix: lower goes first.
pub type PrefixOrder = (u128, std::cmp::Reverse<[u8; 32]>);

/// The order of candidate `name` with `score`, warm or not, for `prefix`: its score less the
/// prefill it saves when warm, in tiers of [`prefix::TIE`], then the higher rendezvous weight.
pub fn prefix_order(score: Duration, warm: bool, name: &str, prefix: &Prefix) -> PrefixOrder {
    let score = if warm {
        score.saturating_sub(prefix::saving(prefix))
    } else {
        score
    };
    (
        score.as_nanos() / prefix::TIE.as_nanos(),
        std::cmp::Reverse(rendezvous::weight(&prefix.key_bytes(), name)),
    )
}

/// The best candidate only, in one pass (what a decision costs when only the first choice is
/// used).
pub fn best<'a>(candidates: &'a [Candidate], path: &[String]) -> Option<&'a Candidate> {
    candidates
        .iter()
        .filter(|c| !path.contains(&c.name))
        .min_by(|a, b| score(a).cmp(&score(b)).then_with(|| a.name.cmp(&b.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, rtt_ms: u64) -> Candidate {
        Candidate {
            name: name.into(),
            rtt: Duration::from_millis(rtt_ms),
            queued: 0,
            in_flight: 0,
            concurrency: 2,
            service_time: Duration::from_millis(500),
            sent_by_us: 0,
            recent_failures: 0,
            warm: false,
        }
    }

    #[test]
    fn a_warm_peer_wins_unless_its_queue_outweighs_the_prefill_it_saves() {
        let prefix = Prefix {
            key: 7,
            tokens: 1000,
        };
        let mut warm = peer("warm", 20);
        warm.warm = true;
        let peers = [peer("near", 1), warm.clone()];
        assert_eq!(rank_for_prefix(&peers, &[], 3, &prefix)[0].name, "warm");
        // Two waves of 500 ms ahead of it: more than the second of prefill it saves.
        warm.in_flight = 2;
        warm.queued = 2;
        let peers = [peer("near", 1), warm];
        assert_eq!(rank_for_prefix(&peers, &[], 3, &prefix)[0].name, "near");
    }

    #[test]
    fn among_equals_a_cold_prefix_goes_to_its_rendezvous_owner_for_every_router() {
        let peers: Vec<Candidate> = (0..5).map(|i| peer(&format!("p{i}"), 1 + i)).collect();
        let mut owners = std::collections::HashSet::new();
        for key in 0..200 {
            let prefix = Prefix { key, tokens: 1000 };
            let first = rank_for_prefix(&peers, &[], 5, &prefix)[0].name.clone();
            // Another router, the same facts in another order: the same choice.
            let mut reversed = peers.clone();
            reversed.reverse();
            assert_eq!(rank_for_prefix(&reversed, &[], 5, &prefix)[0].name, first);
            owners.insert(first);
        }
        // Prefixes spread over every host, not all onto the nearest.
        assert_eq!(owners.len(), 5);
        // A host whose queue is a tier worse is not chosen among equals.
        let mut busy = peers.clone();
        for c in &mut busy[1..] {
            c.in_flight = 2;
        }
        assert_eq!(
            rank_for_prefix(
                &busy,
                &[],
                5,
                &Prefix {
                    key: 1,
                    tokens: 1000
                }
            )[0]
            .name,
            "p0"
        );
    }

    #[test]
    fn extreme_adverts_saturate_instead_of_panicking() {
        assert_eq!(service_time(f64::INFINITY), MAX_SERVICE_TIME);
        assert_eq!(service_time(f64::NAN), Duration::ZERO);
        assert_eq!(service_time(-5.0), Duration::ZERO);
        assert_eq!(service_time(f64::MAX), MAX_SERVICE_TIME);
        assert_eq!(service_time(250.0), Duration::from_millis(250));
        let mut wild = peer("wild", u64::MAX);
        wild.queued = u32::MAX;
        wild.in_flight = u32::MAX;
        wild.sent_by_us = u32::MAX;
        wild.concurrency = 0;
        wild.recent_failures = u32::MAX;
        wild.service_time = service_time(f64::INFINITY);
        assert!(score(&wild) >= Duration::from_millis(u64::MAX));
        assert_eq!(rank(&[wild, peer("sane", 5)], &[], 3)[0].name, "sane");
    }

    #[test]
    fn an_idle_peer_is_chosen_by_rtt() {
        let peers = [peer("far", 40), peer("near", 5)];
        assert_eq!(rank(&peers, &[], 3)[0].name, "near");
    }

    #[test]
    fn queue_wait_outweighs_a_shorter_round_trip() {
        let mut near = peer("near", 5);
        near.in_flight = 2;
        near.queued = 3;
        let far = peer("far", 40);
        assert_eq!(expected_wait(&near), Duration::from_millis(1000));
        assert_eq!(rank(&[near, far], &[], 3)[0].name, "far");
    }

    #[test]
    fn what_we_sent_counts_before_the_peer_advertises_it() {
        let mut near = peer("near", 5);
        near.sent_by_us = 2;
        assert!(expected_wait(&near) > Duration::ZERO);
        assert_eq!(rank(&[near, peer("far", 40)], &[], 3)[0].name, "far");
    }

    #[test]
    fn failing_peers_go_last_and_nodes_on_the_path_are_never_chosen() {
        let mut near = peer("near", 5);
        near.recent_failures = 1;
        let peers = [near, peer("far", 40), peer("visited", 1)];
        let ranked: Vec<&str> = rank(&peers, &["visited".to_owned()], 3)
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(ranked, ["far", "near"]);
        assert_eq!(
            best(&peers, &["visited".to_owned()]).map(|c| c.name.as_str()),
            Some("far")
        );
        assert!(rank(&peers, &["near".into(), "far".into(), "visited".into()], 3).is_empty());
    }

    #[test]
    fn a_thousand_virtual_peers_spread_load_without_piling_on() {
        // 1,000 idle peers, two slots each, at 1 to 50 ms. One router sends 3,000 requests in a
        // row, none finishing. Counting what it sent must fill every free slot (nearest first)
        // before anyone queues, then queue one wave deep on the nearest peers only.
        let mut peers: Vec<Candidate> = (0..1000)
            .map(|i| peer(&format!("p{i:04}"), 1 + (i % 50) as u64))
            .collect();
        for _ in 0..3000 {
            let chosen = best(&peers, &[]).expect("a candidate").name.clone();
            let c = peers
                .iter_mut()
                .find(|c| c.name == chosen)
                .expect("present");
            c.sent_by_us += 1;
        }
        assert!(
            peers.iter().all(|c| (2..=4).contains(&c.sent_by_us)),
            "uneven spread"
        );
        let queued_on = |c: &Candidate| c.sent_by_us > 2;
        let farthest_queued = peers
            .iter()
            .filter(|c| queued_on(c))
            .map(|c| c.rtt)
            .max()
            .expect("some queued");
        let nearest_unqueued = peers
            .iter()
            .filter(|c| !queued_on(c))
            .map(|c| c.rtt)
            .min()
            .expect("some not");
        assert!(
            farthest_queued <= nearest_unqueued,
            "a far peer was queued before a near one"
        );
    }
}
