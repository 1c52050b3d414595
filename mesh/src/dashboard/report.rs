//! One node's report: what it is, what it hosts, its links, its cache, and the latest requests
//! that entered it. Built on demand from the actors' handles, for the node's own dashboard and
//! for peers gathering the mesh's view.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actors::cache_shard::Shards;
use crate::actors::model_host::LocalModels;
use crate::actors::peer_directory::{PeerDirectoryHandle, PeerState};
use crate::facts::{ModelState, ModelStatus, NodeInfo};
use crate::metrics::Metrics;
use crate::peer::report::{LinkReport, ModelReport, NodeReport};

/// Each actor has this long to answer for its part of a report; a part it misses is left
/// empty.
const PART_TIMEOUT: Duration = Duration::from_millis(300);
/// A report this recent is served again rather than built anew (to every asker at once).
const REUSE_FOR: Duration = Duration::from_millis(500);

/// What a node reads to report on itself (cheap to clone).
#[derive(Debug, Clone)]
pub struct Reporter(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    parts: Parts,
    started: Instant,
    /// The latest report, and when it was built.
    latest: tokio::sync::Mutex<Option<(Instant, NodeReport)>>,
    /// Peers whose `Report` stream is being answered (one at a time each).
    asking: std::sync::Mutex<HashSet<String>>,
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

/// A peer's place among those being answered; given back when dropped.
pub struct Asking<'a>(&'a Reporter, String);

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        (self.0.0.asking.lock())
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.1);
    }
}

async fn within<T, E>(part: impl std::future::Future<Output = Result<T, E>>) -> Option<T> {
    tokio::time::timeout(PART_TIMEOUT, part).await.ok()?.ok()
}

impl Reporter {
    /// A reporter over `parts`, counting uptime from now.
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(Inner {
            parts,
            started: Instant::now(),
            latest: tokio::sync::Mutex::new(None),
            asking: std::sync::Mutex::default(),
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

    /// `peer`'s place among those being answered, unless it is being answered already.
    pub fn asking(&self, peer: &str) -> Option<Asking<'_>> {
        let fresh = (self.0.asking.lock())
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(peer.to_owned());
        fresh.then(|| Asking(self, peer.to_owned()))
    }

    /// This node's report, at most [`REUSE_FOR`] old: askers at the same moment share one.
    pub async fn report(&self) -> NodeReport {
        let mut latest = self.0.latest.lock().await;
        if let Some((at, report)) = latest.as_ref()
            && at.elapsed() < REUSE_FOR
        {
            return report.clone();
        }
        let report = self.build().await;
        *latest = Some((Instant::now(), report.clone()));
        report
    }

    /// Builds this node's report: the actors are asked at once, each within [`PART_TIMEOUT`].
    async fn build(&self) -> NodeReport {
        let parts = &self.0.parts;
        let states = parts.hosts.states().all();
        let stats = futures::future::join_all(parts.hosting.iter().map(|status| async {
            match parts.hosts.get(&status.id) {
                Some(host) => within(host.stats()).await,
                None => None,
            }
        }));
        let (stats, peers, cache) = tokio::join!(
            stats,
            within(parts.directory.list()),
            parts.cache.totals(PART_TIMEOUT)
        );
        let models = parts
            .hosting
            .iter()
            .zip(stats)
            .map(|(status, stats)| {
                let state = match states.get(&status.id) {
                    Some(ModelState::Loading) => "loading",
                    Some(ModelState::Hosted) => "hosted",
                    Some(ModelState::Restarting) => "restarting",
                    Some(ModelState::Failed) => "failed",
                    None => "not hosted",
                };
                ModelReport {
                    id: status.id.clone(),
                    task: status.task.to_owned(),
                    state: state.to_owned(),
                    reason: status.reason.clone(),
                    queued: stats.as_ref().map_or(0, |s| s.queued),
                    in_flight: stats.as_ref().map_or(0, |s| s.in_flight),
                    concurrency: stats.as_ref().map_or(0, |s| s.concurrency),
                    completed: stats.as_ref().map_or(0, |s| s.completed),
                    worker: stats
                        .as_ref()
                        .and_then(|s| s.worker.as_ref())
                        .map(describe_worker),
                }
            })
            .collect();
        let links = peers
            .unwrap_or_default()
            .into_iter()
            .map(|p| LinkReport {
                peer: p.name,
                state: match p.state {
                    PeerState::Connected => "connected",
                    PeerState::Connecting => "connecting",
                }
                .to_owned(),
                rtt_ms: p.rtt_ms,
            })
            .collect();
        NodeReport {
            name: parts.info.name.clone(),
            version: parts.info.version.to_owned(),
            uptime_s: self.0.started.elapsed().as_secs_f64(),
            hardware: parts.info.hardware.clone(),
            cpu: parts.info.cpu.clone(),
            models,
            links,
            cache,
            activity: parts.metrics.recent.summary(crate::metering::unix_now_ms()),
        }
    }
}

/// A worker's status in one line, e.g. `worker 4242 on haswell kernels · 2 crashes (last:
/// killed by signal 11 (SIGSEGV), back in 812 ms)`.
fn describe_worker(w: &crate::inference::worker::WorkerStatus) -> String {
    let mut line = match w.pid {
        Some(pid) => format!("worker {pid} on {} kernels", w.kernels),
        None => format!("worker {} on {} kernels", w.state, w.kernels),
    };
    if w.crashes > 0 {
        line.push_str(&format!(
            " · {} crash{}",
            w.crashes,
            if w.crashes == 1 { "" } else { "es" }
        ));
        if let Some(exit) = &w.last_exit {
            line.push_str(&format!(" (last: {exit}"));
            if let Some(ms) = w.last_return_ms {
                line.push_str(&format!(", back in {ms:.0} ms"));
            }
            line.push(')');
        }
    }
    if let Some(weights) = &w.weights {
        // The file's name; `/admin/models` has the figures.
        let file = weights.split(':').next().unwrap_or(weights);
        line.push_str(&format!(" · {file}"));
    }
    if let Some(why) = &w.fallback {
        line.push_str(&format!(" · {why}"));
    }
    line
}
