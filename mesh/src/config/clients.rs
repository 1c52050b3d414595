//! Who may connect to the data plane, and how many at once: the caps that
//! `transport::limits::ConnectionLimits` counts connections against.

/// Default cap on incoming connections (clients and peers together).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default cap on incoming connections from one address.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 16;

/// Caps on incoming connections, and whether clients may come from beyond loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Most incoming connections at once (clients and peers).
    pub max_total: usize,
    /// Most incoming connections from one address (IPv6: one /64); loopback counts only toward
    /// the total.
    pub max_per_address: usize,
    /// Whether clients may connect from beyond loopback.
    pub remote_clients: bool,
}
