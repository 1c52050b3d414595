//! When a crashed engine worker is started again, and on which CPU kernels: a pure policy,
//! told how long each worker lived and how it died.
//!
//! A worker that dies soon after it started is likely to die again the same way: each such
//! crash in a row doubles the wait before the next start. A worker that lived [`SETTLED`] or
//! more restarts at once: its crash is news, not a pattern. After [`STEP_DOWN_AFTER`] quick
//! faults in a row (an illegal instruction, a segmentation fault, a bus error, an abort: what
//! kernels wrong for this CPU do), the worker restarts one rung lower on llama.cpp's ladder of
//! CPU variants (`inference::kernels::ladder`), as long as there is a lower one. Being killed
//! (the OOM killer, an operator) is not the kernels' fault and never steps down.

use std::time::Duration;

/// A worker that lived this long before it died is not crashing in a loop.
pub const SETTLED: Duration = Duration::from_secs(60);
/// Quick faults in a row after which the next lower variant is tried.
pub const STEP_DOWN_AFTER: u32 = 3;
/// The first wait after a quick crash.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait.
pub const LONGEST_WAIT: Duration = Duration::from_secs(10);

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    /// A fault of its own code: SIGILL, SIGSEGV, SIGBUS, SIGFPE, SIGABRT.
    Fault,
    /// Killed from outside, or it exited.
    Other,
}

impl Death {
    /// How a process that ended with `signal` (if a signal ended it) died.
    pub fn of_signal(signal: Option<i32>) -> Self {
        match signal {
            Some(4 | 6 | 7 | 8 | 11) => Self::Fault,
            _ => Self::Other,
        }
    }
}

/// The restart history of one model's worker.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    rung: usize,
    lowest: bool,
    quick_in_a_row: u32,
    faults_in_a_row: u32,
}

/// What to do after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    /// Wait this long before starting again.
    pub after: Duration,
    /// Start on this rung of the ladder (0: the best variant for the CPU).
    pub rung: usize,
    /// This crash moved the worker one rung down.
    pub stepped_down: bool,
}

impl Restarts {
    /// The rung to start on now.
    pub fn rung(&self) -> usize {
        self.rung
    }

    /// A worker started; `lowest` when it runs on the last rung (nothing lower to try).
    pub fn started(&mut self, lowest: bool) {
        self.lowest = lowest;
    }

    /// A worker that ran for `lived` (zero: it died while starting) died so.
    pub fn crashed(&mut self, lived: Duration, death: Death) -> Next {
        if lived >= SETTLED {
            self.quick_in_a_row = 0;
            self.faults_in_a_row = 0;
            return self.next(Duration::ZERO, false);
        }
        self.quick_in_a_row += 1;
        self.faults_in_a_row = match death {
            Death::Fault => self.faults_in_a_row + 1,
            Death::Other => 0,
        };
        let mut stepped_down = false;
        if self.faults_in_a_row >= STEP_DOWN_AFTER && !self.lowest {
            self.rung += 1;
            self.faults_in_a_row = 0;
            self.quick_in_a_row = 0;
            stepped_down = true;
        }
        let doublings = self.quick_in_a_row.saturating_sub(1).min(16);
        let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(LONGEST_WAIT);
        let wait = if stepped_down { FIRST_WAIT } else { wait };
        self.next(wait, stepped_down)
    }

    fn next(&self, after: Duration, stepped_down: bool) -> Next {
        Next {
            after,
            rung: self.rung,
            stepped_down,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_secs(1);

    #[test]
    fn quick_faults_back_off_then_step_down_a_rung() {
        let mut r = Restarts::default();
        r.started(false);
        assert_eq!(
            r.crashed(QUICK, Death::Fault).after,
            Duration::from_millis(100)
        );
        assert_eq!(
            r.crashed(QUICK, Death::Fault).after,
            Duration::from_millis(200)
        );
        let third = r.crashed(QUICK, Death::Fault);
        assert!(third.stepped_down);
        assert_eq!(third.rung, 1);
        r.started(false);
        // A new rung starts a new count.
        assert_eq!(
            r.crashed(QUICK, Death::Fault).after,
            Duration::from_millis(100)
        );
        assert_eq!(r.crashed(QUICK, Death::Fault).rung, 1);
        assert_eq!(r.crashed(QUICK, Death::Fault).rung, 2);
        r.started(true);
        // The lowest rung stays, backing off up to the longest wait.
        for _ in 0..20 {
            let next = r.crashed(QUICK, Death::Fault);
            assert_eq!(next.rung, 2);
            assert!(!next.stepped_down && next.after <= LONGEST_WAIT);
        }
        assert_eq!(r.crashed(QUICK, Death::Fault).after, LONGEST_WAIT);
    }

    #[test]
    fn kills_back_off_but_never_step_down() {
        let mut r = Restarts::default();
        r.started(false);
        for _ in 0..10 {
            assert_eq!(r.crashed(QUICK, Death::Other).rung, 0);
        }
        // A kill between faults breaks their run.
        r.crashed(QUICK, Death::Fault);
        r.crashed(QUICK, Death::Fault);
        r.crashed(QUICK, Death::Other);
        assert_eq!(r.crashed(QUICK, Death::Fault).rung, 0);
    }

    #[test]
    fn a_worker_that_settled_restarts_at_once_and_resets_the_count() {
        let mut r = Restarts::default();
        r.crashed(QUICK, Death::Fault);
        r.crashed(QUICK, Death::Fault);
        let next = r.crashed(SETTLED, Death::Fault);
        assert_eq!(next.after, Duration::ZERO);
        r.crashed(QUICK, Death::Fault);
        r.crashed(QUICK, Death::Fault);
        assert_eq!(r.rung(), 0, "two quick faults after a settled one");
    }

    #[test]
    fn signals_that_are_faults() {
        assert_eq!(Death::of_signal(Some(11)), Death::Fault);
        assert_eq!(Death::of_signal(Some(4)), Death::Fault);
        assert_eq!(Death::of_signal(Some(9)), Death::Other);
        assert_eq!(Death::of_signal(None), Death::Other);
    }
}
