//! `ganglion`: everything a mesh node is.
//!
//! A node is a tree of ractor actors (`actors`): a `NodeSupervisor` over the `PeerDirectory`
//! (live view of peers), the `ClusterHost` (QUIC endpoint, peer connections, the ractor_cluster
//! `NodeServer` whose sessions run over QUIC streams) and the `Admin` endpoint. Nodes connect
//! with mutual TLS (`transport`, [`credentials`]), exchange peer lists in adverts and form a
//! full mesh (`membership`, pure logic), and notice a dead peer through QUIC's idle timeout.
//!
//! # The API
//!
//! - **Run a node**: a [`ConfigFile`] (TOML, and with the `clap` feature the node's flags),
//!   checked into a [`Config`] by [`ConfigFile::validate`], then [`start`], which gives a
//!   [`RunningNode`].
//! - **Credentials**: [`init_cluster`] (the cluster CA), [`issue_cert`] (a node's identity),
//!   [`credentials::issue_key`] (an API key).
//! - **Models**: the catalog and pulling verified weights ([`models`]).
//! - **Engines**: an engine's worker process ([`inference::worker::serve::run`]).
//! - **Operating a node**: the admin endpoint's client ([`admin::client`]), the ledger
//!   ([`metering::ledger`]), the machine ([`hardware`]).
//!
//! Every other module is internal: hidden from these docs and public only so that the
//! workspace's tests, benches and fuzzers can reach a peer's wire or a pure core, with no
//! promise kept between versions. `docs/architecture.md` maps them all.

// The API: what the node binary and the command line use.
pub mod admin;
pub mod config;
pub mod credentials;
pub mod hardware;
pub mod inference;
pub mod metering;
pub mod models;
pub mod node;

// Internals, public only so that the workspace's cross-process tests, benches and fuzzers can
// reach them (a peer's wire, a pure core under load): hidden from the docs, no promise kept.
#[doc(hidden)]
pub mod actors;
#[doc(hidden)]
pub mod api;
#[doc(hidden)]
pub mod cache;
#[doc(hidden)]
pub mod facts;
#[doc(hidden)]
pub mod membership;
#[doc(hidden)]
pub mod peer;
#[doc(hidden)]
pub mod request;
#[doc(hidden)]
pub mod routing;
#[doc(hidden)]
pub mod transport;

// Internals nothing outside the crate uses.
pub(crate) mod dashboard;
pub(crate) mod faults;
pub(crate) mod metrics;

#[cfg(test)]
mod import_graph;

pub use config::{Config, ConfigError, ConfigFile};
pub use credentials::{ClusterSecrets, Identity, init_cluster, issue_cert};
pub use node::{RunningNode, StartError, start};
