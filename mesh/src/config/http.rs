//! The HTTP APIs' settings (`api` takes them).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Connections served at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The validated `[http]` section.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Certificate chain and key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Connections served at once.
    pub max_connections: usize,
}
