//! How the directory keeps the revoked-key set in step with its peers (see
//! [`crate::credentials::revoked`]): each peer may add ids at a bounded rate ([`Budget`]); a
//! peer whose digest differs from ours after its advert's recent ids were taken is pulled from
//! ([`PullState`]), on a `Revoked` stream that carries its whole set in chunks.

use std::time::{Duration, Instant};

use crate::credentials::revoked::{RevokedKeys, Summary};

/// Ids one peer may add at once: a mass revocation of this many keys crosses in one pull.
pub const BURST: f64 = 10_000.0;
/// Ids one peer may add per second, once its burst is spent: a member making up ids would
/// take six days to fill a node's set ([`crate::credentials::revoked::MAX_REVOKED`]).
pub const REFILL_PER_SEC: f64 = 2.0;
/// Least time between two pulls from one peer that brought nothing new (a peer whose digest
/// keeps changing cannot make this node download its set more often).
pub const IDLE_PULL_GAP: Duration = Duration::from_secs(5);

/// A token bucket: how many ids a peer may still add. Pure: the clock is a parameter.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    tokens: f64,
    at: Instant,
}

impl Budget {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: BURST,
            at: now,
        }
    }

    /// Takes up to `wanted` ids at `now`; returns how many may be added.
    pub fn take(&mut self, wanted: usize, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * REFILL_PER_SEC).min(BURST);
        self.at = now;
        let granted = (wanted as f64).min(self.tokens.floor()) as usize;
        self.tokens -= granted as f64;
        granted
    }
}

/// When to pull a peer's set. Pure: the clock is a parameter.
#[derive(Debug, Clone, Default)]
pub struct PullState {
    /// The peer's digest when its set was last pulled in full (nothing new can be had from it
    /// until it changes).
    pulled: Option<[u8; 16]>,
    /// No pull before this.
    not_before: Option<Instant>,
    /// A pull is under way.
    running: bool,
}

impl PullState {
    /// Whether to pull now from a peer whose advert carried `theirs`, when ours is `ours`.
    pub fn due(&self, theirs: &Summary, ours: &Summary, now: Instant) -> bool {
        !self.running
            && theirs.count > 0
            && theirs.digest != ours.digest
            && self.pulled != Some(theirs.digest)
            && self.not_before.is_none_or(|t| now >= t)
    }

    /// A pull started.
    pub fn start(&mut self) {
        self.running = true;
    }

    /// A pull of the set whose digest was `digest` ended: it brought `added` new ids, and all
    /// it held were taken (`complete`) or some were held back by the peer's budget or the set's
    /// bound (then it is tried again later, when the budget has refilled).
    pub fn done(&mut self, digest: Option<[u8; 16]>, added: usize, complete: bool, now: Instant) {
        self.running = false;
        self.pulled = if complete { digest } else { None };
        self.not_before = (added == 0 || !complete).then(|| now + IDLE_PULL_GAP);
    }
}

/// Pulls served at once by this node: each holds a copy of the set (2 MiB when full) until its
/// reader has taken it, so members opening many streams cannot multiply that.
static SERVING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Serves one `Revoked` stream: this node's whole set, in chunks, then an empty chunk. Past
/// `SERVING` pulls at once, the stream is reset (the puller tries again later).
pub async fn serve(revoked: RevokedKeys, mut send: quinn::SendStream) {
    let Ok(_serving) = SERVING.try_acquire() else {
        let _ = send.reset(quinn::VarInt::from_u32(1));
        return;
    };
    crate::peer::revoked::send(&mut send, &revoked.ids()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(count: u64, digest: u8) -> Summary {
        Summary {
            count,
            digest: [digest; 16],
            recent: Vec::new(),
        }
    }

    #[test]
    fn a_budget_allows_a_burst_then_a_trickle() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        assert_eq!(budget.take(12_000, t0), 10_000);
        assert_eq!(budget.take(100, t0), 0);
        assert_eq!(budget.take(100, t0 + Duration::from_secs(10)), 20);
        assert_eq!(
            budget.take(1_000_000, t0 + Duration::from_secs(7200)),
            10_000
        );
    }

    #[test]
    fn a_pull_is_due_only_for_a_different_set_not_pulled_before() {
        let t0 = Instant::now();
        let mut state = PullState::default();
        let (ours, theirs) = (summary(5, 1), summary(7, 2));
        assert!(!state.due(&ours, &ours, t0), "same set");
        assert!(!state.due(&summary(0, 0), &ours, t0), "empty set");
        assert!(state.due(&theirs, &ours, t0));
        state.start();
        assert!(!state.due(&theirs, &ours, t0), "one pull at a time");
        state.done(Some(theirs.digest), 2, true, t0);
        assert!(!state.due(&theirs, &ours, t0), "that set was taken whole");
        assert!(state.due(&summary(8, 3), &ours, t0), "it grew since");
        // A pull that taught nothing waits before the next.
        state.start();
        state.done(Some([3; 16]), 0, true, t0);
        assert!(!state.due(&summary(9, 4), &ours, t0));
        assert!(state.due(&summary(9, 4), &ours, t0 + IDLE_PULL_GAP));
        // A pull held back by the budget is tried again later, for the same set.
        state.start();
        state.done(Some([4; 16]), 10, false, t0);
        assert!(!state.due(&summary(9, 4), &ours, t0));
        assert!(state.due(&summary(9, 4), &ours, t0 + IDLE_PULL_GAP));
    }
}
