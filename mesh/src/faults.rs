//! Fault injection for tests: make an actor crash, make a job panic. Present in every build so
//! that the test suite exercises the real binary, and inert unless the node runs with
//! `--fault-injection` (the admin routes that use it exist only then, behind the admin token).
//! A leaf module: the supervisor installs the kill switch, the admin routes pull it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Kills a supervised child by name; `false` when no child has that name.
pub type KillSwitch = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Faults a test can inject into a running node.
#[derive(Default)]
pub struct Faults {
    enabled: bool,
    panic_next_job: AtomicBool,
    kill: OnceLock<KillSwitch>,
    /// Until when the peer directory answers its member list too late.
    directory_stalled_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// Fault injection on (`true`) or inert.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    /// Whether fault injection is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Makes the next job that starts on any model host of this node panic.
    pub fn arm_job_panic(&self) {
        if self.enabled {
            self.panic_next_job.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the job starting now must panic (and disarms).
    pub fn take_job_panic(&self) -> bool {
        self.enabled && self.panic_next_job.swap(false, Ordering::SeqCst)
    }

    /// Makes the peer directory answer its member list too late for `period` (its callers see
    /// it not answering; it goes on with everything else).
    pub fn stall_directory(&self, period: std::time::Duration) {
        if self.enabled {
            *self
                .directory_stalled_until
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now() + period);
        }
    }

    /// Whether the peer directory is to answer its member list too late now.
    pub fn directory_stalled(&self) -> bool {
        self.enabled
            && self
                .directory_stalled_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|until| std::time::Instant::now() < until)
    }

    /// Installs the supervisor's kill switch (once).
    pub fn install_kill_switch(&self, switch: KillSwitch) {
        if self.enabled {
            let _ = self.kill.set(switch);
        }
    }

    /// Kills the child called `name` as a crash would; `false` if there is none (or fault
    /// injection is off).
    pub fn kill(&self, name: &str) -> bool {
        self.kill.get().is_some_and(|switch| switch(name))
    }
}
