//! One node's report: what it is, what it hosts, its links, its cache, and the latest requests
//! that entered it. Built on demand from the actors' handles, for the node's own dashboard and
//! for peers gathering the mesh's view.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::recent::Summary;
use crate::actors::cache_shard::Shards;
use crate::actors::model_host::LocalModels;
use crate::actors::peer_directory::PeerDirectoryHandle;
use crate::facts::{ModelState, ModelStatus, NodeInfo};
use crate::hardware::Hardware;
use crate::metrics::Metrics;

/// What one node reports of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Its name.
    pub name: String,
    /// Its build.
    pub version: String,
    /// Seconds since it started.
    pub uptime_s: f64,
    /// Its hardware.
    pub hardware: Hardware,
    /// Every model it was configured for: hosted, or why not.
    pub models: Vec<ModelReport>,
    /// Its connections to peers.
    pub links: Vec<LinkReport>,
    /// Its cache shards, together.
    pub cache: CacheTotals,
    /// Requests that entered it.
    pub activity: Summary,
}

/// A model at a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// Catalog id.
    pub id: String,
    /// Its task.
    pub task: String,
    /// `hosted`, `loading`, `restarting`, `failed`, or `not hosted`.
    pub state: String,
    /// Why it is not hosted.
    pub reason: Option<String>,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Requests running.
    pub in_flight: usize,
    /// Slots.
    pub concurrency: usize,
    /// Requests it completed.
    pub completed: u64,
}

/// A node's connection to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    /// The peer.
    pub peer: String,
    /// `connected` or `connecting`.
    pub state: String,
    /// Smoothed round-trip time measured by QUIC.
    pub rtt_ms: f64,
}

/// A node's cache shards, summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheTotals {
    /// Shards answering.
    pub shards: usize,
    /// Entries held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Byte budget.
    pub capacity_bytes: u64,
    /// Lookups answered.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Entries evicted for room.
    pub evictions: u64,
    /// Requests that entered here and bypassed the cache.
    pub bypasses: u64,
}

/// What a node reads to report on itself (cheap to clone).
#[derive(Debug, Clone)]
pub struct Reporter(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    parts: Parts,
    started: Instant,
    /// Reports being built for peers.
    for_peers: tokio::sync::Semaphore,
}

/// The parts of a [`Reporter`].
#[derive(Debug)]
pub struct Parts {
    /// Static node facts.
    pub info: NodeInfo,
    /// Hosting decisions made at start-up.
    pub hosting: Vec<ModelStatus>,
    /// The model hosts.
    pub hosts: LocalModels,
    /// Peers.
    pub directory: PeerDirectoryHandle,
    /// The cache shards.
    pub cache: Shards,
    /// Metrics, and the window of recent requests.
    pub metrics: Arc<Metrics>,
}

impl Reporter {
    /// A reporter over `parts`, counting uptime from now.
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(Inner {
            parts,
            started: Instant::now(),
            for_peers: tokio::sync::Semaphore::new(super::REPORTS_AT_ONCE),
        }))
    }

    /// The peer directory.
    pub fn directory(&self) -> &PeerDirectoryHandle {
        &self.0.parts.directory
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.0.parts.info.name
    }

    /// A place among the reports built for peers at once, if one is free.
    pub fn peer_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.0.for_peers.try_acquire().ok()
    }

    /// This node's report now. A part whose actor does not answer is left empty.
    pub async fn report(&self) -> NodeReport {
        let (parts, started) = (&self.0.parts, self.0.started);
        let states = parts.hosts.states().all();
        let mut models = Vec::with_capacity(parts.hosting.len());
        for status in &parts.hosting {
            let stats = match parts.hosts.get(&status.id) {
                Some(host) => host.stats().await.ok(),
                None => None,
            };
            let state = match states.get(&status.id) {
                Some(ModelState::Loading) => "loading",
                Some(ModelState::Hosted) => "hosted",
                Some(ModelState::Restarting) => "restarting",
                Some(ModelState::Failed) => "failed",
                None => "not hosted",
            };
            models.push(ModelReport {
                id: status.id.clone(),
                task: status.task.to_owned(),
                state: state.to_owned(),
                reason: status.reason.clone(),
                queued: stats.as_ref().map_or(0, |s| s.queued),
                in_flight: stats.as_ref().map_or(0, |s| s.in_flight),
                concurrency: stats.as_ref().map_or(0, |s| s.concurrency),
                completed: stats.as_ref().map_or(0, |s| s.completed),
            });
        }
        let links = match parts.directory.list().await {
            Ok(peers) => peers
                .into_iter()
                .map(|p| LinkReport {
                    peer: p.name,
                    state: match p.state {
                        crate::actors::peer_directory::PeerState::Connected => "connected",
                        crate::actors::peer_directory::PeerState::Connecting => "connecting",
                    }
                    .to_owned(),
                    rtt_ms: p.rtt_ms,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut cache = CacheTotals {
            bypasses: parts.cache.bypasses(),
            ..CacheTotals::default()
        };
        for shard in parts.cache.all_local() {
            if let Ok(stats) = shard.stats().await {
                cache.shards += 1;
                cache.entries += stats.entries as u64;
                cache.bytes += stats.bytes;
                cache.capacity_bytes += stats.capacity_bytes;
                cache.hits += stats.hits;
                cache.misses += stats.misses;
                cache.evictions += stats.evictions;
            }
        }
        NodeReport {
            name: parts.info.name.clone(),
            version: parts.info.version.to_owned(),
            uptime_s: started.elapsed().as_secs_f64(),
            hardware: parts.info.hardware.clone(),
            models,
            links,
            cache,
            activity: parts.metrics.recent.summary(crate::metering::unix_now_ms()),
        }
    }
}
