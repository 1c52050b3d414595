//! Fair shares of a model's slots and queue between accounts. Work-conserving: one account
//! alone may use every slot, but it may fill at most half of the queue, and a freed slot goes
//! to the queued request whose account runs the fewest (the earliest among equals). So a key
//! that floods a model, or abandons its requests, cannot keep another account from its turn.
//! Pure: accounts are names, the queue a list of them.

use std::collections::HashMap;

/// Most requests one account may have waiting in a queue of `capacity`.
pub fn queue_share(capacity: usize) -> usize {
    (capacity / 2).max(1)
}

/// Requests running per account (cancelled ones included until the engine let go of them).
#[derive(Debug, Default)]
pub struct Running(HashMap<String, usize>);

impl Running {
    /// One more request of `account` runs.
    pub fn start(&mut self, account: &str) {
        *self.0.entry(account.to_owned()).or_default() += 1;
    }

    /// A request of `account` stopped.
    pub fn finish(&mut self, account: &str) {
        if let Some(n) = self.0.get_mut(account) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(account);
            }
        }
    }

    /// Requests of `account` running.
    pub fn of(&self, account: &str) -> usize {
        self.0.get(account).copied().unwrap_or(0)
    }

    /// Which of the queued requests (their accounts, oldest first) takes the next free slot.
    pub fn next<'a>(&self, queued: impl IntoIterator<Item = &'a str>) -> Option<usize> {
        queued
            .into_iter()
            .enumerate()
            .min_by_key(|(i, account)| (self.of(account), *i))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_slot_goes_to_the_account_running_the_fewest() {
        let mut running = Running::default();
        assert_eq!(
            running.next(["hog", "hog", "fair"]),
            Some(0),
            "no one runs: oldest"
        );
        running.start("hog");
        running.start("hog");
        assert_eq!(running.next(["hog", "hog", "fair", "fair"]), Some(2));
        running.start("fair");
        running.start("fair");
        running.start("fair");
        assert_eq!(running.next(["fair", "hog"]), Some(1));
        running.finish("hog");
        running.finish("hog");
        running.finish("hog"); // more finishes than starts are ignored
        assert_eq!(running.of("hog"), 0);
        assert_eq!(running.next(Vec::<&str>::new()), None);
    }

    #[test]
    fn an_account_may_fill_half_the_queue() {
        assert_eq!(queue_share(64), 32);
        assert_eq!(queue_share(1), 1);
        assert_eq!(queue_share(0), 1);
    }
}
