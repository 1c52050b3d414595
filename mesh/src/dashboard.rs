//! The mesh as the dashboard shows it. Every node can answer for the whole mesh: it builds its
//! own [`NodeReport`], asks each connected peer for theirs on a `Report` stream of the
//! peer connection, and adds the mesh-wide Neuron counters its meter already merges.
//!
//! - [`report`]: one node's report, built from its actors' handles;
//! - here: asking peers for theirs, answering theirs, and the mesh view.
//!
//! A peer that does not answer within [`ASK_TIMEOUT`] is shown as unreachable. A node answers
//! each peer one stream at a time, and serves the same report to everyone who asks within
//! half a second, so that gathering cannot be used to load it.

pub mod report;

use std::collections::HashMap;

use serde::Serialize;

use crate::actors::meter::MeterHandle;
use crate::metering::usage::{FREE_DAILY_NEURONS, day_of, day_text, reset_at, time_text};
use crate::metering::{MICRO, unix_now};
use crate::peer::report::{ASK_TIMEOUT, NodeReport};
use report::Reporter;

/// Accounts the mesh view lists (those that used the most today).
pub const ACCOUNTS_SHOWN: usize = 50;

/// The whole mesh, as one node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MeshView {
    /// The node that answered.
    pub node: String,
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// Every node that reported: this one first, then its peers by name.
    pub nodes: Vec<NodeReport>,
    /// Peers known but not reporting, with why.
    pub unreachable: Vec<Unreachable>,
    /// Neurons today per account, most used first.
    pub accounts: Vec<AccountDay>,
    /// The UTC day counted.
    pub day: String,
    /// When it resets (RFC 3339).
    pub resets_at: String,
    /// Seconds until then.
    pub resets_in_s: u64,
}

/// A peer that did not report.
#[derive(Debug, Clone, Serialize)]
pub struct Unreachable {
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// An account's Neurons today, across the mesh.
#[derive(Debug, Clone, Serialize)]
pub struct AccountDay {
    /// The account.
    pub account: String,
    /// Neurons used, in micro-Neurons.
    pub micro_neurons: u64,
    /// Requests charged.
    pub requests: u64,
    /// Requests answered from the cache.
    pub cached_requests: u64,
    /// Its daily allocation in micro-Neurons; `None` when unlimited.
    pub limit_micro: Option<u64>,
    /// Whether a node saw the account's key since it started (otherwise the limit shown is
    /// the free allocation).
    pub limit_known: bool,
}

/// Gathers the mesh view: this node's report, each connected peer's, and today's Neurons.
pub async fn mesh_view(reporter: &Reporter, meter: &MeterHandle) -> MeshView {
    let directory = reporter.directory();
    let (own, known, members) =
        tokio::join!(reporter.report(), directory.list(), directory.members());
    let members = members.unwrap_or_default();
    let asks = members.iter().map(|(name, connection)| async move {
        let answer = match crate::peer::report::ask(connection).await {
            Ok(report) if report.name == *name => Ok(report.bounded()),
            Ok(report) => Err(format!("answered as `{}`", report.name)),
            Err(e) => Err(e.to_string()),
        };
        (name.clone(), answer)
    });
    let answers = futures::future::join_all(asks).await;
    let mut nodes = vec![own];
    let mut unreachable = Vec::new();
    for (name, answer) in answers {
        match answer {
            Ok(report) => nodes.push(report),
            Err(reason) => unreachable.push(Unreachable { name, reason }),
        }
    }
    for peer in known.unwrap_or_default() {
        if !members.iter().any(|(name, _)| *name == peer.name) {
            unreachable.push(Unreachable {
                name: peer.name,
                reason: "no session yet".to_owned(),
            });
        }
    }
    nodes[1..].sort_by(|a, b| a.name.cmp(&b.name));
    unreachable.sort_by(|a, b| a.name.cmp(&b.name));
    let now = unix_now();
    let today = day_of(now);
    let usage = tokio::time::timeout(ASK_TIMEOUT, meter.usage(today)).await;
    let usage = usage.ok().and_then(Result::ok).unwrap_or_default();
    // The limits keys said, this node's first (it checked those keys itself).
    let mut limits = HashMap::new();
    for node in &mut nodes {
        for (account, limit) in std::mem::take(&mut node.activity.limits) {
            limits.entry(account).or_insert(limit);
        }
    }
    let mut accounts: Vec<AccountDay> = usage
        .into_iter()
        .map(|(account, totals)| {
            let seen = limits.get(&account).copied();
            AccountDay {
                limit_micro: seen.unwrap_or(Some(FREE_DAILY_NEURONS * MICRO)),
                limit_known: seen.is_some(),
                account,
                micro_neurons: totals.micro,
                requests: totals.requests,
                cached_requests: totals.cached,
            }
        })
        .collect();
    accounts.sort_by(|a, b| {
        b.micro_neurons
            .cmp(&a.micro_neurons)
            .then_with(|| a.account.cmp(&b.account))
    });
    accounts.truncate(ACCOUNTS_SHOWN);
    MeshView {
        node: reporter.name().to_owned(),
        at_ms: crate::metering::unix_now_ms(),
        nodes,
        unreachable,
        accounts,
        day: day_text(today),
        resets_at: time_text(reset_at(today)),
        resets_in_s: reset_at(today).saturating_sub(now),
    }
}

/// Answers one `Report` stream `peer` opened (after its opening frame): this node's report,
/// written within [`ASK_TIMEOUT`]; refused while another of the peer's is being answered.
pub async fn serve(
    reporter: Reporter,
    peer: String,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let refused = quinn::VarInt::from_u32(crate::transport::STREAM_REFUSED);
    let _ = recv.stop(refused);
    let Some(_asking) = reporter.asking(&peer) else {
        let _ = send.reset(refused);
        return;
    };
    // One bound for building the report and writing it.
    let deadline = tokio::time::Instant::now() + ASK_TIMEOUT;
    let Ok(report) = tokio::time::timeout_at(deadline, reporter.report()).await else {
        return;
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    crate::peer::report::answer(&mut send, &report, left).await;
}
