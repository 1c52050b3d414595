//! `ganglion`: everything a mesh node is.
//!
//! A node is a tree of ractor actors ([`actors`]): a `NodeSupervisor` over the `PeerDirectory`
//! (live view of peers), the `ClusterHost` (QUIC endpoint, peer connections, the ractor_cluster
//! `NodeServer` whose sessions run over QUIC streams) and the `Admin` endpoint. Nodes connect
//! with mutual TLS ([`transport`], [`credentials`]), exchange peer lists in adverts and form a
//! full mesh ([`membership`], pure logic), and notice a dead peer through QUIC's idle timeout.
//!
//! Start one with [`config::ConfigFile::validate`] and [`node::start`].

pub mod actors;
pub mod admin;
pub mod api;
pub mod cache;
pub mod config;
pub mod credentials;
pub mod dashboard;
pub mod facts;
pub mod faults;
pub mod hardware;
pub mod inference;
pub mod membership;
pub mod metering;
pub mod metrics;
pub mod models;
pub mod node;
pub mod request;
pub mod routing;
pub mod transport;

#[cfg(test)]
mod import_graph;

pub use config::{Config, ConfigError, ConfigFile};
pub use credentials::{ClusterSecrets, Identity, init_cluster, issue_cert};
pub use node::{RunningNode, StartError, start};
