//! `Report` streams: a node's report of itself (what it is, hosts, its links, its cache, the
//! latest requests that entered it), asked for by a peer gathering the dashboard's mesh view.
//! The asker opens the stream and finishes its side; the peer answers with one report
//! ([`crate::dashboard::serve`]), which the asker cuts to the bounds an honest node keeps.

use std::time::Duration;

use ganglion_client::{PeerStreamKind, read_frame};
use serde::{Deserialize, Serialize};

use super::PeerError;
use crate::cache::store::ShardTotals;
use crate::hardware::Hardware;
use crate::metrics::recent::Summary;

/// Bound on a report frame.
pub const MAX_REPORT_FRAME: usize = 512 * 1024;
/// A peer's report must arrive within this time.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// Its CPU's features and the llama.cpp kernels its engines start on.
    pub cpu: crate::inference::kernels::CpuKernels,
    /// Every model it was configured for: hosted, or why not.
    pub models: Vec<ModelReport>,
    /// Its connections to peers.
    pub links: Vec<LinkReport>,
    /// Its cache shards, together.
    pub cache: ShardTotals,
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
    /// Its engine's worker process, in words, when it runs in one.
    pub worker: Option<String>,
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

/// Bounds on what a peer's report may list (what an honest node sends, with room).
const MAX_MODELS: usize = 64;
const MAX_LINKS: usize = 256;
/// CPU features a report lists (ggml scores 12).
const MAX_FEATURES: usize = 16;

impl NodeReport {
    /// Cuts a peer's report to the bounds an honest node keeps, and replaces numbers that are
    /// not finite (JSON has no place for them).
    pub fn bounded(mut self) -> Self {
        use crate::metrics::recent::{ACCOUNTS_KEPT, ERRORS_KEPT, SHOWN};
        let finite = |x: &mut f64| {
            if !x.is_finite() {
                *x = 0.0;
            }
        };
        let finite_opt = |x: &mut Option<f64>| {
            if x.is_some_and(|v| !v.is_finite()) {
                *x = None;
            }
        };
        self.models.truncate(MAX_MODELS);
        self.links.truncate(MAX_LINKS);
        self.cpu.features.truncate(MAX_FEATURES);
        finite(&mut self.uptime_s);
        self.links.iter_mut().for_each(|l| finite(&mut l.rtt_ms));
        let activity = &mut self.activity;
        activity.requests.truncate(SHOWN);
        activity.errors.truncate(ERRORS_KEPT);
        activity.traffic.truncate(MAX_MODELS);
        activity.limits.truncate(ACCOUNTS_KEPT);
        for r in activity
            .requests
            .iter_mut()
            .chain(activity.errors.iter_mut())
        {
            finite(&mut r.total_ms);
            finite_opt(&mut r.first_token_ms);
        }
        for t in &mut activity.traffic {
            finite(&mut t.requests_per_s);
            finite(&mut t.tokens_per_s);
            finite_opt(&mut t.first_token_p50_ms);
            finite_opt(&mut t.first_token_p95_ms);
        }
        self
    }
}

/// Asks the peer behind `connection` for its report, within [`ASK_TIMEOUT`].
pub async fn ask(connection: &quinn::Connection) -> Result<NodeReport, PeerError> {
    super::within(ASK_TIMEOUT, async {
        let (mut send, mut recv) = super::open(connection, PeerStreamKind::Report).await?;
        let _ = send.finish();
        read_frame::<_, NodeReport>(&mut recv, MAX_REPORT_FRAME)
            .await?
            .ok_or(PeerError::Ended)
    })
    .await
}

/// Sends this node's report on a `Report` stream, within `limit` (what is left of the
/// asker's [`ASK_TIMEOUT`]).
pub async fn answer(send: &mut quinn::SendStream, report: &NodeReport, limit: Duration) {
    super::answer(send, report, MAX_REPORT_FRAME, limit).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::recent::{Finished, ModelTraffic, SHOWN};

    #[test]
    fn a_peers_report_is_cut_to_bounds_and_its_numbers_made_finite() {
        let finished = Finished {
            at_ms: 1,
            id: "0".into(),
            model: "m".into(),
            account: None,
            entry: "p".into(),
            path: Vec::new(),
            cache: None,
            micro_neurons: 0,
            first_token_ms: Some(f64::NAN),
            total_ms: f64::INFINITY,
            output_tokens: 0,
            outcome: "ok".into(),
            message: None,
        };
        let report = NodeReport {
            name: "p".into(),
            version: "0".into(),
            uptime_s: f64::NAN,
            hardware: crate::hardware::Hardware::detect(None),
            cpu: crate::inference::kernels::CpuKernels {
                features: vec!["avx".into(); 1000],
                variant: "x64".into(),
            },
            models: Vec::new(),
            links: vec![
                LinkReport {
                    peer: "q".into(),
                    state: "connected".into(),
                    rtt_ms: f64::NEG_INFINITY,
                };
                MAX_LINKS + 10
            ],
            cache: ShardTotals::default(),
            activity: Summary {
                requests: vec![finished; 1000],
                errors: Vec::new(),
                traffic: vec![ModelTraffic {
                    model: "m".into(),
                    requests: 1,
                    failed: 0,
                    requests_per_s: f64::NAN,
                    first_token_p50_ms: Some(f64::INFINITY),
                    first_token_p95_ms: None,
                    tokens_per_s: 1.0,
                }],
                limits: Vec::new(),
            },
        }
        .bounded();
        assert_eq!(report.links.len(), MAX_LINKS);
        assert_eq!(report.cpu.features.len(), MAX_FEATURES);
        assert_eq!(report.activity.requests.len(), SHOWN);
        assert_eq!(report.uptime_s, 0.0);
        assert_eq!(report.links[0].rtt_ms, 0.0);
        assert_eq!(report.activity.requests[0].total_ms, 0.0);
        assert_eq!(report.activity.requests[0].first_token_ms, None);
        assert_eq!(report.activity.traffic[0].requests_per_s, 0.0);
        assert_eq!(report.activity.traffic[0].first_token_p50_ms, None);
        assert!(serde_json::to_string(&report).is_ok());
    }
}
