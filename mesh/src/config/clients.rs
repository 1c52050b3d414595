//! Who may connect to the data plane, and how many at once: the caps that
//! `transport::limits::ConnectionLimits` counts connections against.

/// Default cap on incoming connections (clients and peers together), from the design rather
/// than a guess: a region's full mesh of up to 250 members (249 peers), the gateways of up to
/// 250 other regions (2 each, 500), and 256 clients; see docs/architecture.md, "Regions".
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
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
