//! Counts a request where it entered: a responder that records, as frames pass, what became
//! of it (first token, tokens, Neurons, cache, outcome and route) in the node's
//! [`Metrics`]; a request whose answer did not reach its client counts
//! as `cancelled`.

use std::sync::Arc;
use std::time::Instant;

use ganglion_client::protocol::{CacheStatus, ResponseFrame};

use super::{Gone, Responder};
use crate::metrics::Metrics;
use crate::metrics::recent::{Finished, short};

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
        let (outcome, route) = match frame {
            ResponseFrame::Delta(_) => {
                if self.first_token_ms.is_none() {
                    let elapsed = self.started.elapsed().as_secs_f64();
                    self.first_token_ms = Some(elapsed * 1000.0);
                    metrics.first_token(&self.model, elapsed);
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
                metrics.answered(&self.model, &response.usage, response.cache.status);
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
        metrics.ended(finished, route, self.started.elapsed().as_secs_f64());
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
