//! What the admin routes read ([`Context`]) and the answer they give when a part of the node
//! does not answer ([`unavailable`]): shared by the routes, the cache routes and the dashboard.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ractor::ActorCell;

use crate::actors::model_host::LocalModels;
use crate::actors::peer_directory::PeerDirectoryHandle;
use crate::actors::router::RouterHandle;
use crate::credentials::api_keys::{KeyVerifier, RevokedKeys};
use crate::facts::{ModelStatus, NodeInfo};
use crate::faults::Faults;

/// Mesh views the dashboard gathers at once (each asks every peer for its report).
pub const VIEWS_AT_ONCE: usize = 4;

/// What the routes read.
#[derive(Debug, Clone)]
pub struct Context(Arc<Inner>);

/// The parts of a [`Context`].
#[derive(Debug)]
pub struct ContextParts {
    /// Static node facts.
    pub info: NodeInfo,
    /// The bearer token; with none, every route but `/healthz` answers 401.
    pub token: Option<String>,
    /// The peer directory.
    pub directory: PeerDirectoryHandle,
    /// The root of the actor tree.
    pub root: ActorCell,
    /// Fault injection (its routes exist only when it is on).
    pub faults: Arc<Faults>,
    /// Hosting decisions made at start-up.
    pub hosting: Vec<ModelStatus>,
    /// The router.
    pub router: RouterHandle,
    /// The model hosts and their live state.
    pub hosts: LocalModels,
    /// Revoked API keys, and where they are kept.
    pub revoked: RevokedKeys,
    /// The file the revoked set is stored in.
    pub revoked_file: std::path::PathBuf,
    /// Verifies API keys (to find the id of a key being revoked).
    pub key_verifier: Option<KeyVerifier>,
    /// Usage counters.
    pub meter: crate::actors::meter::MeterHandle,
    /// This node's ledger (read by `/admin/ledger`).
    pub ledger: Arc<crate::metering::ledger::Ledger>,
    /// This node's cache shards.
    pub cache: crate::actors::cache_shard::Shards,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Serve `/metrics` without the token.
    pub metrics_open: bool,
    /// Caps on incoming connections, and how many were refused.
    pub connection_limits: crate::transport::limits::ConnectionLimits,
    /// This node's dashboard report (and the way to its peers').
    pub reporter: crate::dashboard::report::Reporter,
    /// The request pipeline, for the dashboard's "try it" box.
    pub api: Arc<crate::api::Api>,
}

#[derive(Debug)]
struct Inner {
    parts: ContextParts,
    started: Instant,
    started_at: SystemTime,
    views: tokio::sync::Semaphore,
}

impl Context {
    /// Bundles what the routes need.
    pub fn new(parts: ContextParts) -> Self {
        Self(Arc::new(Inner {
            parts,
            started: Instant::now(),
            started_at: SystemTime::now(),
            views: tokio::sync::Semaphore::new(VIEWS_AT_ONCE),
        }))
    }

    /// A place among the mesh views gathered at once, if one is free.
    pub(in crate::admin) fn view_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.0.views.try_acquire().ok()
    }

    pub(in crate::admin) fn parts(&self) -> &ContextParts {
        &self.0.parts
    }

    /// When the node started, by the wall clock.
    pub(in crate::admin) fn started_at(&self) -> SystemTime {
        self.0.started_at
    }

    /// How long the node has run.
    pub(in crate::admin) fn uptime(&self) -> std::time::Duration {
        self.0.started.elapsed()
    }
}

/// A 503 with the reason, when a part of the node does not answer.
pub(in crate::admin) fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}
