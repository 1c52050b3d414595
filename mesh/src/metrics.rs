//! Prometheus metrics of a node (`GET /metrics` on the admin listener, OpenMetrics text).
//!
//! Requests are counted where they enter ([`Observed`] watches the frames a client is sent; a
//! request whose answer did not reach its client counts as `cancelled`):
//! by model, outcome (`ok` or the error code) and route (`local`, `handoff`, `cache_hit`),
//! with their duration, time to first token, tokens and Neurons. Gauges (cache, queues, peers)
//! are read from the actors when scraped. No per-account labels: accounts live in
//! `/admin/usage`. The latest requests themselves are kept for the dashboard in [`Metrics::recent`].

use std::sync::Arc;
use std::time::Instant;

use ganglion_client::protocol::{CacheStatus, ResponseFrame};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::dashboard::recent::{Finished, Recent, short};
use crate::request::{Gone, Responder};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    outcome: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

/// A node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<ModelLabel, Histogram, fn() -> Histogram>,
    first_token: Family<ModelLabel, Histogram, fn() -> Histogram>,
    tokens: Family<TokenLabels, Counter>,
    neurons: Family<ModelLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    cache_lookups: Family<StatusLabel, Counter>,
    /// Cache bytes held on this node (set when scraped).
    pub cache_bytes: Gauge,
    /// Cache entries held on this node (set when scraped).
    pub cache_entries: Gauge,
    /// Cache evictions on this node (set when scraped).
    pub cache_evictions: Gauge,
    queued: Family<ModelLabel, Gauge>,
    in_flight: Family<ModelLabel, Gauge>,
    /// Connected peers (set when scraped).
    pub peers: Gauge,
    rtt: Family<PeerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The latest requests that entered here (the dashboard's window).
    pub recent: Recent,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ganglion");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests that entered here, by model, outcome and route",
            requests.clone(),
        );
        let duration = Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "request_duration",
            "From arrival to the last frame",
            Unit::Seconds,
            duration.clone(),
        );
        let first_token = Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "time_to_first_token",
            "From arrival to the first generated text",
            Unit::Seconds,
            first_token.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens in (prompt) and out (generated)",
            tokens.clone(),
        );
        let neurons = Family::<ModelLabel, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "neurons",
            "Neurons charged for requests that entered here",
            neurons.clone(),
        );
        let cache_lookups = Family::<StatusLabel, Counter>::default();
        registry.register(
            "cache_requests",
            "Requests by what the cache did (HIT, MISS, BYPASS)",
            cache_lookups.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register_with_unit(
            "cache",
            "Bytes of answers held by this node's cache shards",
            Unit::Bytes,
            cache_bytes.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Answers held by this node's cache shards",
            cache_entries.clone(),
        );
        let cache_evictions = Gauge::default();
        registry.register(
            "cache_evictions",
            "Answers evicted from this node's cache shards for room",
            cache_evictions.clone(),
        );
        let queued = Family::<ModelLabel, Gauge>::default();
        registry.register(
            "model_queue_depth",
            "Requests waiting for a slot, per hosted model",
            queued.clone(),
        );
        let in_flight = Family::<ModelLabel, Gauge>::default();
        registry.register(
            "model_in_flight",
            "Requests running, per hosted model",
            in_flight.clone(),
        );
        let peers = Gauge::default();
        registry.register("peers", "Peers connected", peers.clone());
        let rtt = Family::<PeerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register_with_unit(
            "peer_rtt",
            "Round-trip time to each connected peer",
            Unit::Seconds,
            rtt.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            first_token,
            tokens,
            neurons,
            cache_lookups,
            cache_bytes,
            cache_entries,
            cache_evictions,
            queued,
            in_flight,
            peers,
            rtt,
            recent: Recent::default(),
        }
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    /// Forgets the per-model and per-peer gauges (before they are read again: a model or peer
    /// that went away leaves no stale value).
    pub fn clear_gauges(&self) {
        self.queued.clear();
        self.in_flight.clear();
        self.rtt.clear();
    }

    /// Sets a hosted model's queue depth and running requests.
    pub fn model_load(&self, model: &str, queued: usize, in_flight: usize) {
        let label = ModelLabel {
            model: model.to_owned(),
        };
        self.queued.get_or_create(&label).set(queued as i64);
        self.in_flight.get_or_create(&label).set(in_flight as i64);
    }

    /// Sets the RTT to `peer`, in seconds.
    pub fn peer_rtt(&self, peer: &str, seconds: f64) {
        self.rtt
            .get_or_create(&PeerLabel {
                peer: peer.to_owned(),
            })
            .set(seconds);
    }
}

/// A responder that records, as frames pass, what became of a request that entered here.
pub struct Observed<'a, R> {
    /// Where frames go.
    pub inner: &'a mut R,
    metrics: Option<Arc<Metrics>>,
    model: String,
    node: String,
    id: u128,
    account: Option<String>,
    cache: Option<String>,
    started: Instant,
    first_token_ms: Option<f64>,
    counted: bool,
}

impl<'a, R> Observed<'a, R> {
    /// Watches `inner` for request `id` for `model` at `node`; with no metrics, it only
    /// passes frames on (requests handed over by a peer are counted at their entry node).
    pub fn new(
        inner: &'a mut R,
        metrics: Option<Arc<Metrics>>,
        id: u128,
        model: &str,
        node: &str,
    ) -> Self {
        Self {
            inner,
            metrics,
            model: model.to_owned(),
            node: node.to_owned(),
            id,
            account: None,
            cache: None,
            started: Instant::now(),
            first_token_ms: None,
            counted: false,
        }
    }

    /// The request's account, once authenticated (its daily limit is remembered for the
    /// dashboard).
    pub fn account(&mut self, account: Option<&ganglion_client::protocol::Account>) {
        let (Some(metrics), Some(account)) = (&self.metrics, account) else {
            return;
        };
        let limit = crate::metering::usage::daily_limit(account.plan, account.daily_limit);
        metrics.recent.limit(&account.name, limit);
        self.account = Some(account.name.clone());
    }

    /// The request as it ended, so far as this responder saw it.
    fn finished(&self, outcome: &str) -> Finished {
        Finished {
            at_ms: crate::metering::unix_now_ms(),
            id: format!("{:032x}", self.id),
            model: self.model.clone(),
            account: self.account.clone(),
            entry: self.node.clone(),
            path: Vec::new(),
            cache: self.cache.clone(),
            micro_neurons: 0,
            first_token_ms: self.first_token_ms,
            total_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            output_tokens: 0,
            outcome: outcome.to_owned(),
            message: None,
        }
    }

    /// Records what `frame` says (first token, tokens, Neurons, cache); for a last frame,
    /// returns its outcome and route, counted once it is known to have been sent.
    fn observe(&mut self, frame: &ResponseFrame) -> Option<(Finished, &'static str)> {
        let metrics = self.metrics.as_ref()?;
        let model = ModelLabel {
            model: self.model.clone(),
        };
        let (outcome, route) = match frame {
            ResponseFrame::Delta(_) => {
                if self.first_token_ms.is_none() {
                    let elapsed = self.started.elapsed().as_secs_f64();
                    self.first_token_ms = Some(elapsed * 1000.0);
                    metrics.first_token.get_or_create(&model).observe(elapsed);
                }
                return None;
            }
            ResponseFrame::Final(response) => {
                let route = if response.cache.status == CacheStatus::Hit {
                    "cache_hit"
                } else if response.route.executed_by == self.node {
                    "local"
                } else {
                    "handoff"
                };
                for (direction, count) in [
                    ("in", response.usage.input_tokens),
                    ("out", response.usage.output_tokens),
                ] {
                    metrics
                        .tokens
                        .get_or_create(&TokenLabels {
                            model: self.model.clone(),
                            direction: direction.to_owned(),
                        })
                        .inc_by(u64::from(count));
                }
                metrics
                    .neurons
                    .get_or_create(&model)
                    .inc_by(response.usage.micro_neurons as f64 / 1e6);
                metrics
                    .cache_lookups
                    .get_or_create(&StatusLabel {
                        status: response.cache.status.as_str().to_owned(),
                    })
                    .inc();
                let mut finished = self.finished("ok");
                // Bounded: a peer's route was checked before it was passed on.
                finished.path = (response.route.path.iter())
                    .take(ganglion_client::protocol::MAX_PATH_NODES + 1)
                    .cloned()
                    .collect();
                finished.cache = Some(response.cache.status.as_str().to_owned());
                finished.micro_neurons = response.usage.micro_neurons;
                finished.output_tokens = response.usage.output_tokens;
                (finished, route)
            }
            ResponseFrame::Error(error) => {
                let mut finished = self.finished(error.code.as_str());
                finished.message = Some(short(&error.message));
                (finished, "none")
            }
            _ => return None,
        };
        Some((outcome, route))
    }

    /// Counts the request's end, once.
    fn count(&mut self, finished: Finished, route: &str) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        if std::mem::replace(&mut self.counted, true) {
            return;
        }
        let outcome = finished.outcome.clone();
        metrics.recent.push(finished);
        let model = ModelLabel {
            model: self.model.clone(),
        };
        metrics
            .duration
            .get_or_create(&model)
            .observe(self.started.elapsed().as_secs_f64());
        metrics
            .requests
            .get_or_create(&RequestLabels {
                model: self.model.clone(),
                outcome,
                route: route.to_owned(),
            })
            .inc();
    }
}

impl<R> Drop for Observed<'_, R> {
    /// A request that ended without its last frame reaching the requester was cancelled.
    fn drop(&mut self) {
        if self.metrics.is_some() && !self.counted {
            self.count(self.finished("cancelled"), "none");
        }
    }
}

impl<R: Responder> Responder for Observed<'_, R> {
    async fn send(&mut self, frame: ResponseFrame) -> Result<(), Gone> {
        let ended = self.observe(&frame);
        let sent = self.inner.send(frame).await;
        if let Some((finished, route)) = ended {
            match sent {
                Ok(()) => self.count(finished, route),
                Err(Gone) => self.count(self.finished("cancelled"), "none"),
            }
        }
        sent
    }

    fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inner.gone()
    }

    fn cache_decided(&mut self, report: &ganglion_client::protocol::CacheReport) {
        self.cache = Some(report.status.as_str().to_owned());
        self.inner.cache_decided(report);
    }
}
