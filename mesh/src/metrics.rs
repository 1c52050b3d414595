//! Prometheus metrics of a node (`GET /metrics` on the admin listener, OpenMetrics text).
//!
//! Requests are counted where they enter (`request::observed` watches the frames a client is
//! sent; a request whose answer did not reach its client counts as `cancelled`):
//! by model, outcome (`ok` or the error code) and route (`local`, `handoff`, `cache_hit`),
//! with their duration, time to first token, tokens and Neurons. Gauges (cache, queues, peers)
//! are read from the actors when scraped. No per-account labels: accounts live in
//! `/admin/usage`. The latest requests themselves are kept for the dashboard in [`Metrics::recent`]
//! ([`recent`]: the window of requests that entered the node and their traffic figures, pure).

pub mod recent;

use ganglion_client::protocol::{CacheStatus, Usage};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use recent::{Finished, Recent};

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

fn model_label(model: &str) -> ModelLabel {
    ModelLabel {
        model: model.to_owned(),
    }
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
            "Bytes of answers held by this node's cache shards and near copies",
            Unit::Bytes,
            cache_bytes.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Answers held by this node's cache shards and near copies",
            cache_entries.clone(),
        );
        let cache_evictions = Gauge::default();
        registry.register(
            "cache_evictions",
            "Answers evicted from this node's cache shards and near copies for room",
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

    /// A request for `model` sent its first token `secs` after it entered.
    pub fn first_token(&self, model: &str, secs: f64) {
        self.first_token
            .get_or_create(&model_label(model))
            .observe(secs);
    }

    /// What a final answer for `model` carried: tokens, Neurons, and the cache's part.
    pub fn answered(&self, model: &str, usage: &Usage, cache: CacheStatus) {
        for (direction, count) in [("in", usage.input_tokens), ("out", usage.output_tokens)] {
            self.tokens
                .get_or_create(&TokenLabels {
                    model: model.to_owned(),
                    direction: direction.to_owned(),
                })
                .inc_by(u64::from(count));
        }
        self.neurons
            .get_or_create(&model_label(model))
            .inc_by(usage.micro_neurons as f64 / 1e6);
        self.cache_lookups
            .get_or_create(&StatusLabel {
                status: cache.as_str().to_owned(),
            })
            .inc();
    }

    /// A request for `model` ended `secs` after it entered, with `outcome` by `route`; its
    /// record is kept for the dashboard.
    pub fn ended(&self, finished: Finished, route: &str, secs: f64) {
        let model = model_label(&finished.model);
        self.duration.get_or_create(&model).observe(secs);
        self.requests
            .get_or_create(&RequestLabels {
                model: model.model,
                outcome: finished.outcome.clone(),
                route: route.to_owned(),
            })
            .inc();
        self.recent.push(finished);
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
