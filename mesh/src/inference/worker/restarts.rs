//! When a crashed engine worker is started again, and on which CPU kernels: a pure policy,
//! told how long each worker lived.
//!
//! A worker that dies soon after it started is likely to die again the same way (a bad
//! kernel for this CPU, a model that does not fit): each such crash in a row doubles the wait
//! before the next start, and after [`STEP_DOWN_AFTER`] of them the worker restarts on the
//! next lower llama.cpp variant, as long as there is one. A worker that lived
//! [`SETTLED`] or more restarts at once: its crash is news, not a pattern.

use std::time::Duration;

/// A worker that lived this long before it died is not crashing in a loop.
pub const SETTLED: Duration = Duration::from_secs(60);
/// Crashes in a row, each before [`SETTLED`], after which the next lower variant is tried.
pub const STEP_DOWN_AFTER: u32 = 3;
/// The first wait after a quick crash.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait.
const LONGEST_WAIT: Duration = Duration::from_secs(10);

/// The restart history of one model's worker.
#[derive(Debug, Clone)]
pub struct Restarts {
    ladder: Vec<&'static str>,
    rung: usize,
    quick_in_a_row: u32,
    stepped_down: Option<String>,
}

/// What to do after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    /// Wait this long before starting again.
    pub after: Duration,
    /// Start on this variant.
    pub variant: &'static str,
    /// Set when this crash moved the worker to a lower variant: why.
    pub stepped_down: Option<String>,
}

impl Restarts {
    /// A worker that starts on `ladder[0]` and may step down along it (best first, never
    /// empty: `x64` runs everywhere).
    pub fn new(ladder: Vec<&'static str>) -> Self {
        let ladder = if ladder.is_empty() {
            vec!["x64"]
        } else {
            ladder
        };
        Self {
            ladder,
            rung: 0,
            quick_in_a_row: 0,
            stepped_down: None,
        }
    }

    /// The variant to start on now.
    pub fn variant(&self) -> &'static str {
        self.ladder[self.rung]
    }

    /// Why the worker runs below its best variant, if it does.
    pub fn stepped_down(&self) -> Option<&str> {
        self.stepped_down.as_deref()
    }

    /// A worker that ran for `lived` died (or failed to start: `lived` zero).
    pub fn crashed(&mut self, lived: Duration) -> Next {
        if lived >= SETTLED {
            self.quick_in_a_row = 0;
            return self.next(Duration::ZERO, None);
        }
        self.quick_in_a_row += 1;
        let mut stepped = None;
        if self.quick_in_a_row >= STEP_DOWN_AFTER && self.rung + 1 < self.ladder.len() {
            let from = self.variant();
            self.rung += 1;
            let why = format!(
                "{} crashes in a row on CPU kernels `{from}`, each within {} s of starting: running on `{}`",
                self.quick_in_a_row,
                SETTLED.as_secs(),
                self.variant()
            );
            self.quick_in_a_row = 0;
            self.stepped_down = Some(why.clone());
            stepped = Some(why);
        }
        let doublings = self.quick_in_a_row.saturating_sub(1).min(16);
        let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(LONGEST_WAIT);
        self.next(wait, stepped)
    }

    fn next(&self, after: Duration, stepped_down: Option<String>) -> Next {
        Next {
            after,
            variant: self.variant(),
            stepped_down,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_secs(1);

    #[test]
    fn quick_crashes_back_off_then_step_down_a_variant() {
        let mut r = Restarts::new(vec!["icelake", "skylakex", "haswell"]);
        assert_eq!(r.crashed(QUICK).after, Duration::from_millis(100));
        assert_eq!(r.crashed(QUICK).after, Duration::from_millis(200));
        let third = r.crashed(QUICK);
        assert_eq!(third.variant, "skylakex");
        assert!(
            third
                .stepped_down
                .as_deref()
                .is_some_and(|w| w.contains("icelake"))
        );
        assert_eq!(r.variant(), "skylakex");
        // A new variant starts a new count.
        assert_eq!(r.crashed(QUICK).after, Duration::from_millis(100));
        assert_eq!(r.crashed(QUICK).variant, "skylakex");
        assert_eq!(r.crashed(QUICK).variant, "haswell");
        // The bottom rung stays, backing off up to the longest wait.
        for _ in 0..20 {
            let next = r.crashed(QUICK);
            assert_eq!(next.variant, "haswell");
            assert!(next.after <= LONGEST_WAIT);
        }
        assert_eq!(r.crashed(QUICK).after, LONGEST_WAIT);
    }

    #[test]
    fn a_worker_that_settled_restarts_at_once_and_resets_the_count() {
        let mut r = Restarts::new(vec!["haswell", "x64"]);
        r.crashed(QUICK);
        r.crashed(QUICK);
        let next = r.crashed(SETTLED);
        assert_eq!(next.after, Duration::ZERO);
        assert_eq!(next.variant, "haswell");
        r.crashed(QUICK);
        r.crashed(QUICK);
        assert_eq!(
            r.variant(),
            "haswell",
            "two quick crashes after a settled one"
        );
        assert!(r.stepped_down().is_none());
    }

    #[test]
    fn an_empty_ladder_runs_the_baseline() {
        assert_eq!(Restarts::new(Vec::new()).variant(), "x64");
    }
}
