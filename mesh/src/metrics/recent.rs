//! The latest requests that entered a node, and what they say about each model's traffic: a
//! bounded window kept as requests end, and pure functions over it (the time is passed in).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Requests kept for the traffic figures.
pub const KEPT: usize = 256;
/// Requests a report lists, newest first.
pub const SHOWN: usize = 30;
/// Failed requests kept (apart from the others, so that a burst of successes does not hide
/// them).
pub const ERRORS_KEPT: usize = 10;
/// Accounts whose daily limit is remembered.
pub const ACCOUNTS_KEPT: usize = 1024;
/// The traffic figures cover this much time.
pub const WINDOW_MS: u64 = 60_000;
/// Longest error message kept, in bytes.
const MESSAGE_BYTES: usize = 200;

/// One request that ended at the node it entered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// When it ended (Unix milliseconds).
    pub at_ms: u64,
    /// Its id (hex).
    pub id: String,
    /// The model asked for.
    pub model: String,
    /// The account, once authenticated.
    pub account: Option<String>,
    /// The node it entered.
    pub entry: String,
    /// Every node it passed through, entry first, executor last (empty if it did not run).
    pub path: Vec<String>,
    /// `HIT`, `MISS` or `BYPASS`, once the cache decided.
    pub cache: Option<String>,
    /// What it cost.
    pub micro_neurons: u64,
    /// From arrival to the first token.
    pub first_token_ms: Option<f64>,
    /// From arrival to the end.
    pub total_ms: f64,
    /// Tokens generated.
    pub output_tokens: u32,
    /// `ok`, `cancelled`, or the error code.
    pub outcome: String,
    /// The error's message, cut to 200 bytes.
    pub message: Option<String>,
}

impl Finished {
    /// Whether it failed (cancelled by its client is not a failure).
    pub fn failed(&self) -> bool {
        self.outcome != "ok" && self.outcome != "cancelled"
    }
}

/// Cuts `message` to [`MESSAGE_BYTES`] at a character boundary.
pub fn short(message: &str) -> String {
    let mut end = message.len().min(MESSAGE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

/// A model's traffic over the window, at the node the requests entered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelTraffic {
    /// The model.
    pub model: String,
    /// Requests that ended in the window.
    pub requests: u32,
    /// Of which failed.
    pub failed: u32,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Time to first token, median, in milliseconds.
    pub first_token_p50_ms: Option<f64>,
    /// Time to first token, 95th percentile.
    pub first_token_p95_ms: Option<f64>,
    /// Tokens generated per second, all requests together.
    pub tokens_per_s: f64,
}

/// Each model's traffic among `requests` (oldest first) at `now_ms`, over the last
/// [`WINDOW_MS`], or only since `dropped_at_ms` when the window had to let a request of that
/// time go (what came after it is all kept).
pub fn traffic(
    requests: &VecDeque<Finished>,
    dropped_at_ms: Option<u64>,
    now_ms: u64,
) -> Vec<ModelTraffic> {
    let since = now_ms
        .saturating_sub(WINDOW_MS)
        .max(dropped_at_ms.map_or(0, |d| d.saturating_add(1)));
    let in_window: Vec<&Finished> = requests.iter().filter(|r| r.at_ms >= since).collect();
    let seconds = now_ms.saturating_sub(since).max(1_000) as f64 / 1000.0;
    let mut models: Vec<&str> = in_window.iter().map(|r| r.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    models
        .into_iter()
        .map(|model| {
            let of_model: Vec<&&Finished> = in_window.iter().filter(|r| r.model == model).collect();
            let mut first_tokens: Vec<f64> =
                of_model.iter().filter_map(|r| r.first_token_ms).collect();
            first_tokens.sort_by(f64::total_cmp);
            let tokens: u64 = of_model.iter().map(|r| u64::from(r.output_tokens)).sum();
            ModelTraffic {
                model: model.to_owned(),
                requests: of_model.len() as u32,
                failed: of_model.iter().filter(|r| r.failed()).count() as u32,
                requests_per_s: of_model.len() as f64 / seconds,
                first_token_p50_ms: percentile(&first_tokens, 0.50),
                first_token_p95_ms: percentile(&first_tokens, 0.95),
                tokens_per_s: tokens as f64 / seconds,
            }
        })
        .collect()
}

/// The `q` quantile of sorted `values` (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What a report shows of the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The latest requests, newest first.
    pub requests: Vec<Finished>,
    /// The latest failures, newest first.
    pub errors: Vec<Finished>,
    /// Each model's traffic.
    pub traffic: Vec<ModelTraffic>,
    /// Daily limits of accounts seen here, in micro-Neurons (`None`: unlimited).
    pub limits: Vec<(String, Option<u64>)>,
}

/// The window of a node's latest requests.
#[derive(Debug, Default)]
pub struct Recent(Mutex<Window>);

#[derive(Debug, Default)]
struct Window {
    requests: VecDeque<Finished>,
    /// When the newest request the window let go of ended.
    dropped_at_ms: Option<u64>,
    errors: VecDeque<Finished>,
    limits: HashMap<String, Option<u64>>,
}

impl Recent {
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps a request that ended.
    pub fn push(&self, finished: Finished) {
        let mut window = self.window();
        if finished.failed() {
            if window.errors.len() == ERRORS_KEPT {
                window.errors.pop_front();
            }
            window.errors.push_back(finished.clone());
        }
        if window.requests.len() == KEPT
            && let Some(dropped) = window.requests.pop_front()
        {
            window.dropped_at_ms = Some(dropped.at_ms);
        }
        window.requests.push_back(finished);
    }

    /// Remembers an account's daily limit (up to [`ACCOUNTS_KEPT`] accounts).
    pub fn limit(&self, account: &str, limit: Option<u64>) {
        let mut window = self.window();
        if window.limits.len() < ACCOUNTS_KEPT || window.limits.contains_key(account) {
            window.limits.insert(account.to_owned(), limit);
        }
    }

    /// The window as a report shows it, at `now_ms`.
    pub fn summary(&self, now_ms: u64) -> Summary {
        let window = self.window();
        let mut limits: Vec<(String, Option<u64>)> =
            window.limits.iter().map(|(a, l)| (a.clone(), *l)).collect();
        limits.sort();
        Summary {
            requests: window.requests.iter().rev().take(SHOWN).cloned().collect(),
            errors: window.errors.iter().rev().cloned().collect(),
            traffic: traffic(&window.requests, window.dropped_at_ms, now_ms),
            limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(at_ms: u64, model: &str, first_token_ms: Option<f64>, outcome: &str) -> Finished {
        Finished {
            at_ms,
            id: format!("{at_ms:032x}"),
            model: model.to_owned(),
            account: Some("acme".into()),
            entry: "a".into(),
            path: vec!["a".into(), "b".into()],
            cache: Some("MISS".into()),
            micro_neurons: 10,
            first_token_ms,
            total_ms: 100.0,
            output_tokens: 20,
            outcome: outcome.to_owned(),
            message: None,
        }
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(10.0));
        assert_eq!(percentile(&values, 0.95), Some(19.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn traffic_counts_each_model_within_the_window() {
        let now = 1_000_000;
        let requests: VecDeque<Finished> = [
            finished(now - WINDOW_MS - 1, "m", Some(1.0), "ok"),
            finished(now - 3_000, "m", Some(40.0), "ok"),
            finished(now - 2_000, "m", Some(20.0), "ok"),
            finished(now - 1_000, "m", None, "overloaded"),
            finished(now - 500, "e", None, "ok"),
        ]
        .into();
        let traffic = traffic(&requests, None, now);
        assert_eq!(traffic.len(), 2);
        let m = traffic.iter().find(|t| t.model == "m").unwrap();
        assert_eq!((m.requests, m.failed), (3, 1));
        assert_eq!(m.first_token_p50_ms, Some(20.0));
        assert_eq!(m.first_token_p95_ms, Some(40.0));
        assert!((m.requests_per_s - 3.0 / 60.0).abs() < 1e-9);
        assert!((m.tokens_per_s - 60.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn a_window_that_let_requests_go_rates_over_the_time_it_still_covers() {
        let now = 1_000_000;
        let requests: VecDeque<Finished> = (0..10)
            .map(|i| finished(now - 9_500 + i * 1_000, "m", Some(5.0), "ok"))
            .collect();
        // It let one go 10 s ago: the last 10 s are all there.
        let m = &traffic(&requests, Some(now - 10_001), now)[0];
        assert!((m.requests_per_s - 1.0).abs() < 1e-9);
        // One it let go long ago does not shorten the minute.
        let m = &traffic(&requests, Some(now - 2 * WINDOW_MS), now)[0];
        assert!((m.requests_per_s - 10.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn the_window_is_bounded_and_keeps_failures_apart() {
        let recent = Recent::default();
        recent.push(finished(1, "m", None, "internal"));
        recent.push(finished(2, "m", None, "cancelled"));
        for i in 0..KEPT as u64 {
            recent.push(finished(10 + i, "m", Some(1.0), "ok"));
        }
        let summary = recent.summary(10 + KEPT as u64);
        assert_eq!(summary.requests.len(), SHOWN);
        assert_eq!(summary.requests[0].at_ms, 10 + KEPT as u64 - 1);
        assert_eq!(summary.errors.len(), 1);
        assert_eq!(summary.errors[0].outcome, "internal");
        for i in 0..ACCOUNTS_KEPT + 5 {
            recent.limit(&format!("a{i}"), Some(1));
        }
        recent.limit("a0", None);
        let limits = recent.summary(0).limits;
        assert_eq!(limits.len(), ACCOUNTS_KEPT);
        assert!(limits.contains(&("a0".to_owned(), None)));
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(150);
        let cut = short(&long);
        assert!(cut.len() <= MESSAGE_BYTES);
        assert!(long.starts_with(&cut));
    }
}
