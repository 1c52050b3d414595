//! The admin endpoint as an HTTP application: its routes, the context they read, the cache and
//! dashboard routes with the dashboard's assets, and the HTTP client the command line uses. The
//! [`Admin`](crate::actors::admin::Admin) actor serves it.

mod cache;
pub mod client;
mod context;
mod dashboard;
pub mod routes;

pub use context::{Context, ContextParts};

/// Connections the admin listener serves at once: 64, at most 8 from one address (so that
/// one client cannot lock operators out).
pub const CAPS: crate::api::listener::Caps = crate::api::listener::Caps {
    connections: 64,
    per_address: 8,
};
