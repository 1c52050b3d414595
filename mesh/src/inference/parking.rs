//! Parked sequences: what a finished generation leaves in the KV cache, kept so that a later
//! prompt sharing its beginning reads only what is new (llama-server's prompt cache, SGLang's
//! radix cache in its simplest form). This is the bookkeeping alone, pure: which sequence ids
//! are free, which are parked with which tokens, and which parked sequence a new prompt starts
//! from. The engine does to the KV cache what it says.
//!
//! A parked sequence is reused only by a prompt of the same scope (the engine's caller makes
//! it a hash of the account): one account's prompts never speed up, and so never reveal,
//! another's. Parked sequences together hold at most `budget` tokens, and the least recently
//! used leaves first.

/// The shortest shared beginning worth reusing: below it, reading the tokens again costs less
/// than a step's worth of bookkeeping and skews nothing.
pub const MIN_REUSE: usize = 16;

/// Whether requests of `account` may reuse each other's parked prompts: not the keyless
/// account, which is anybody who can reach the node.
pub fn shares_prompts(account: &str) -> bool {
    !account.is_empty() && account != crate::credentials::ANONYMOUS
}

/// The scope of `account`'s prompts.
pub fn scope_of(account: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same on every run, and collisions need 2^32 accounts.
    let mut hasher = std::hash::DefaultHasher::new();
    account.hash(&mut hasher);
    hasher.finish()
}

/// A sequence id of the engine (llama.cpp's `llama_seq_id`).
pub type SeqId = i32;

/// The engine's sequence ids and what parked ones hold; `T` is a token.
#[derive(Debug)]
pub struct Parking<T> {
    free: Vec<SeqId>,
    parked: Vec<Parked<T>>,
    /// Tokens held by parked sequences, counted as if none shared a cell (so never fewer than
    /// the cells they hold).
    parked_tokens: usize,
    budget: usize,
    /// Increases at every use: the least recently used parked sequence has the smallest stamp.
    clock: u64,
}

#[derive(Debug)]
struct Parked<T> {
    id: SeqId,
    scope: u64,
    tokens: Vec<T>,
    used: u64,
}

/// How a new sequence starts, for the engine to apply in this order: clear `clear` (parked
/// sequences given up), then, if `from` is `Some((source, n))`, give `id` the first `n`
/// tokens of `source` (when `source == id` the sequence is taken over: cut it after `n`).
#[derive(Debug, PartialEq, Eq)]
pub struct Start {
    /// The sequence id to run it under.
    pub id: SeqId,
    /// The parked sequence it starts from, and how many of its tokens it reuses.
    pub from: Option<(SeqId, usize)>,
    /// Parked sequences to clear first.
    pub clear: Vec<SeqId>,
}

impl<T: PartialEq + Clone> Parking<T> {
    /// Ids `0..ids`, all free; parked sequences may hold `budget` tokens in all.
    pub fn new(ids: usize, budget: usize) -> Self {
        let ids = SeqId::try_from(ids).unwrap_or(SeqId::MAX);
        Self {
            free: (0..ids).rev().collect(),
            parked: Vec::new(),
            parked_tokens: 0,
            budget,
            clock: 0,
        }
    }

    /// Forgets every parked sequence and frees every id (the engine cleared its cache).
    pub fn reset(&mut self, ids: usize) {
        *self = Self::new(ids, self.budget);
    }

    /// Parked sequences now.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Where a prompt of `scope` starts: from the parked sequence of the same scope sharing
    /// the longest beginning with it (at least [`MIN_REUSE`] tokens, and never the whole
    /// prompt: its last token must be read for its logits), under a free id, or else under
    /// the least recently used parked sequence's. `None` when every id runs.
    pub fn start(&mut self, scope: u64, prompt: &[T]) -> Option<Start> {
        let most = prompt.len().saturating_sub(1);
        let best = self
            .parked
            .iter()
            .enumerate()
            .filter(|(_, p)| p.scope == scope)
            .map(|(i, p)| (i, shared_prefix(&p.tokens, prompt).min(most)))
            .filter(|(_, n)| *n >= MIN_REUSE)
            .max_by_key(|(i, n)| (*n, self.parked[*i].used));
        self.clock += 1;
        let from = best.map(|(i, n)| {
            self.parked[i].used = self.clock;
            (self.parked[i].id, n)
        });
        if let Some(id) = self.free.pop() {
            return Some(Start {
                id,
                from,
                clear: Vec::new(),
            });
        }
        // No free id: the least recently used parked sequence gives up its own. When that is
        // the source itself, the new sequence takes it over.
        let source = from.map(|(id, _)| id);
        let oldest = (0..self.parked.len())
            .filter(|&i| Some(self.parked[i].id) != source)
            .min_by_key(|&i| self.parked[i].used)
            .or_else(|| (!self.parked.is_empty()).then_some(0))?;
        let given_up = self.unpark(oldest);
        Some(if Some(given_up) == source {
            Start {
                id: given_up,
                from,
                clear: Vec::new(),
            }
        } else {
            Start {
                id: given_up,
                from,
                clear: vec![given_up],
            }
        })
    }

    /// Parks sequence `id` of `scope`, which holds `tokens`, making room within the budget by
    /// giving up the least recently used. Returns the ids to clear (then free): those given
    /// up, or `id` itself when it cannot be parked.
    pub fn park(&mut self, id: SeqId, scope: u64, tokens: Vec<T>) -> Vec<SeqId> {
        if tokens.len() < MIN_REUSE || tokens.len() > self.budget {
            self.free.push(id);
            return vec![id];
        }
        let mut clear = Vec::new();
        // A parked sequence this one extends holds nothing more.
        while let Some(i) = self
            .parked
            .iter()
            .position(|p| p.scope == scope && tokens.starts_with(&p.tokens))
        {
            let old = self.unpark(i);
            self.free.push(old);
            clear.push(old);
        }
        while self.parked_tokens + tokens.len() > self.budget {
            let Some(oldest) = (0..self.parked.len()).min_by_key(|&i| self.parked[i].used) else {
                break;
            };
            let old = self.unpark(oldest);
            self.free.push(old);
            clear.push(old);
        }
        self.clock += 1;
        self.parked_tokens += tokens.len();
        self.parked.push(Parked {
            id,
            scope,
            tokens,
            used: self.clock,
        });
        clear
    }

    /// Frees sequence `id`, which the engine cleared (it failed, or cannot be kept).
    pub fn free(&mut self, id: SeqId) {
        self.free.push(id);
    }

    fn unpark(&mut self, i: usize) -> SeqId {
        let p = self.parked.swap_remove(i);
        self.parked_tokens -= p.tokens.len();
        p.id
    }
}

/// How many tokens `a` and `b` share from their beginning.
fn shared_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(prefix: u64, len: usize) -> Vec<u64> {
        (0..len as u64).map(|i| prefix * 1000 + i).collect()
    }

    #[test]
    fn a_prompt_starts_from_the_longest_parked_beginning_of_its_scope() {
        let mut p = Parking::new(4, 1000);
        let a = p.start(1, &tokens(1, 40)).unwrap();
        assert_eq!(a.from, None);
        assert!(p.park(a.id, 1, tokens(1, 50)).is_empty());
        // Shares the first 40 tokens.
        let mut prompt = tokens(1, 40);
        prompt.extend([7, 7, 7]);
        let b = p.start(1, &prompt).unwrap();
        assert_eq!(b.from, Some((a.id, 40)));
        assert_ne!(b.id, a.id);
        // Another scope shares nothing with it.
        let c = p.start(2, &prompt).unwrap();
        assert_eq!(c.from, None);
        // The whole prompt parked: all but its last token are reused.
        let d = p.start(1, &tokens(1, 30)).unwrap();
        assert_eq!(d.from, Some((a.id, 29)));
    }

    #[test]
    fn the_keyless_account_shares_nothing() {
        assert!(shares_prompts("acme"));
        assert!(!shares_prompts(crate::credentials::ANONYMOUS));
        assert!(!shares_prompts(""));
    }

    #[test]
    fn short_beginnings_are_not_reused() {
        let mut p = Parking::new(2, 1000);
        let a = p.start(1, &tokens(1, 40)).unwrap();
        p.park(a.id, 1, tokens(1, 40));
        let mut prompt = tokens(1, MIN_REUSE - 1);
        prompt.push(99);
        assert_eq!(p.start(1, &prompt).unwrap().from, None);
    }

    #[test]
    fn parked_tokens_stay_within_the_budget_least_recently_used_first() {
        let mut p = Parking::new(8, 120);
        let mut ids = Vec::new();
        for k in 1..=3 {
            let s = p.start(k, &tokens(k, 20)).unwrap();
            ids.push(s.id);
            assert!(p.park(s.id, k, tokens(k, 40)).is_empty());
        }
        // Scope 1 is used again: scope 2's is now the oldest and leaves for 40 more tokens.
        let again = p.start(1, &tokens(1, 30)).unwrap();
        assert_eq!(again.from, Some((ids[0], 29)));
        p.free(again.id);
        let s = p.start(4, &tokens(4, 20)).unwrap();
        assert_eq!(p.park(s.id, 4, tokens(4, 40)), vec![ids[1]]);
        assert_eq!(p.parked(), 3);
        // Longer than the whole budget: not parked.
        let s = p.start(5, &tokens(5, 20)).unwrap();
        assert_eq!(p.park(s.id, 5, tokens(5, 121)), vec![s.id]);
    }

    #[test]
    fn a_sequence_that_extends_a_parked_one_replaces_it() {
        let mut p = Parking::new(4, 1000);
        let a = p.start(1, &tokens(1, 30)).unwrap();
        p.park(a.id, 1, tokens(1, 30));
        let b = p.start(1, &tokens(1, 60)).unwrap();
        assert_eq!(b.from, Some((a.id, 30)));
        assert_eq!(p.park(b.id, 1, tokens(1, 60)), vec![a.id]);
        assert_eq!(p.parked(), 1);
    }

    #[test]
    fn without_free_ids_the_oldest_parked_gives_up_its_own() {
        let mut p = Parking::new(2, 1000);
        let a = p.start(1, &tokens(1, 20)).unwrap();
        let b = p.start(2, &tokens(2, 20)).unwrap();
        p.park(a.id, 1, tokens(1, 20));
        p.park(b.id, 2, tokens(2, 20));
        // A new prompt of scope 2 reuses b; a, the oldest other, gives up its id.
        let c = p.start(2, &tokens(2, 25)).unwrap();
        assert_eq!(
            c,
            Start {
                id: a.id,
                from: Some((b.id, 20)),
                clear: vec![a.id]
            }
        );
        // Only b is parked and it is the source: the new sequence takes it over.
        let d = p.start(2, &tokens(2, 25)).unwrap();
        assert_eq!(
            d,
            Start {
                id: b.id,
                from: Some((b.id, 20)),
                clear: vec![]
            }
        );
        // Every id runs.
        assert_eq!(p.start(3, &tokens(3, 20)), None);
    }
}
