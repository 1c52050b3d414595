//! Fair shares of a model's slots and queue between accounts. Work-conserving: one account
//! alone may use every slot and every queue place; but when the queue is full, a newcomer whose
//! account holds less than half of it takes the place of the newest request of the account that
//! holds the most beyond half, and a freed slot goes to the queued request whose account runs
//! the fewest (the earliest among equals). So a key that floods a model, or abandons its
//! requests, cannot keep another account from its turn. Pure: accounts are names, the queue a
//! list of them.

use std::collections::HashMap;

/// Requests one account may keep waiting in a full queue of `capacity` when others want in.
pub fn queue_share(capacity: usize) -> usize {
    (capacity / 2).max(1)
}

/// Which queued request (its index; the queue's accounts, oldest first) gives its place to a
/// newcomer of `account` when the queue is full: the newest of the account waiting the most, if
/// that is more than `share` while `account` waits less. `None`: the newcomer is refused.
pub fn make_way(queued: &[&str], account: &str, share: usize) -> Option<usize> {
    let mut waiting: HashMap<&str, usize> = HashMap::new();
    for a in queued {
        *waiting.entry(a).or_default() += 1;
    }
    if waiting.get(account).copied().unwrap_or(0) >= share {
        return None;
    }
    let (hog, most) = waiting
        .into_iter()
        .max_by_key(|(a, n)| (*n, std::cmp::Reverse(*a)))?;
    if most <= share {
        return None;
    }
    queued.iter().rposition(|a| *a == hog)
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
    fn a_full_queue_makes_way_for_an_account_under_its_share() {
        assert_eq!(queue_share(64), 32);
        assert_eq!(queue_share(1), 1);
        assert_eq!(queue_share(0), 1);
        // One account alone fills the queue; a newcomer takes its newest place.
        let full = ["hog", "hog", "hog", "hog"];
        assert_eq!(make_way(&full, "fair", 2), Some(3));
        assert_eq!(
            make_way(&full, "hog", 2),
            None,
            "the hog itself waits its turn"
        );
        // Once every account is within its share, the queue is simply full.
        assert_eq!(make_way(&["hog", "fair", "hog", "fair"], "third", 2), None);
        assert_eq!(make_way(&["fair", "hog", "hog", "hog"], "fair", 2), Some(3));
        assert_eq!(make_way(&["one"], "two", 1), None, "a queue of one place");
        assert_eq!(make_way(&[], "x", 1), None);
    }
}
