//! What the node grants each request: its deadlines, and whether chats are placed by their
//! prefix (the request pipeline takes them).

use std::time::Duration;

/// Default deadline of a request that names none.
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(120);
/// Default longest deadline a request may ask for.
pub const DEFAULT_MAX_REQUEST_DEADLINE: Duration = Duration::from_secs(600);

/// Deadlines the node grants.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deadline of a request that names none.
    pub default_deadline: Duration,
    /// Longest deadline a request may ask for; longer ones are cut to it.
    pub max_deadline: Duration,
    /// Whether the entry node places chats by their prefix (`request::affinity`).
    pub prefix_affinity: bool,
}
