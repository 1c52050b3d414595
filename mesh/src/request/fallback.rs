//! Before the stages, at the entry node: fallbacks across models. A client's request may name
//! models to try in order when its own cannot answer, as AI Gateway's fallbacks do. Each
//! model runs the whole pipeline (its own cache key, quota hold, placement and charge); an
//! attempt that ends before any output with an error another model could avoid (the model is
//! unknown, unavailable, overloaded, or failed inside) is held back and the next model runs.
//! The answer's route names the model that answered and, in `models_tried`, why each earlier
//! one did not; when none answers, the last error says what the earlier ones gave.
//!
//! Errors that another model would meet as well end the request at once: bad input, a key
//! refused, a quota spent, the deadline passed, the requester gone; so does a lost peer, which
//! may have charged the work already (an embedding batch is never run twice).

use ganglion_client::protocol::{ErrorCode, ModelAttempt, Request, ResponseFrame, WireError};

use super::{Context, Gone, Origin, Responder};

/// Whether an attempt that ended with `error` before any output falls back to the next model.
pub fn falls_back(error: &WireError) -> bool {
    !error.partial
        && matches!(
            error.code,
            ErrorCode::UnknownModel
                | ErrorCode::Unavailable
                | ErrorCode::Overloaded
                | ErrorCode::Internal
        )
}

/// The models a request names, its own first, each once.
pub fn models(request: &Request) -> Vec<String> {
    let mut models = vec![request.model.clone()];
    for model in &request.fallbacks {
        if !models.contains(model) {
            models.push(model.clone());
        }
    }
    models
}

/// Runs `request` with its own model, then each fallback in turn until one answers.
pub async fn run(
    ctx: &Context,
    request: Request,
    received: std::time::Instant,
    out: &mut impl Responder,
) {
    let models = models(&request);
    let mut tried: Vec<ModelAttempt> = Vec::new();
    for (i, model) in models.iter().enumerate() {
        // A requester that left while an attempt's error was held back is not noticed by a
        // write: look before starting the next.
        if i > 0 && futures::FutureExt::now_or_never(out.gone()).is_some() {
            return;
        }
        let last = i + 1 == models.len();
        let mut attempt = request.clone();
        attempt.model = model.clone();
        attempt.fallbacks.clear();
        let mut holding = Holding {
            inner: &mut *out,
            tried: &tried,
            hold: !last,
            output_sent: false,
            held: None,
        };
        super::run_model(ctx, Origin::Client, attempt, received, &mut holding).await;
        let Some(error) = holding.held.take() else {
            return;
        };
        // Cut as a handoff's attempts are.
        tried.push(ModelAttempt {
            model: model.clone(),
            code: error.code,
            reason: crate::metrics::recent::short(&error.message),
        });
    }
}

/// The responder of one model's attempt: it passes every frame on, but holds back an error
/// that ends the attempt before any output when another model is left to try, and puts the
/// models tried so far on the final frame (and into the last error's message).
struct Holding<'a, R> {
    inner: &'a mut R,
    tried: &'a [ModelAttempt],
    /// Whether another model is left to try.
    hold: bool,
    output_sent: bool,
    held: Option<WireError>,
}

impl<R: Responder> Responder for Holding<'_, R> {
    async fn send(&mut self, frame: ResponseFrame) -> Result<(), Gone> {
        let frame = match frame {
            ResponseFrame::Error(error) if self.hold && !self.output_sent && falls_back(&error) => {
                self.held = Some(error);
                return Ok(());
            }
            ResponseFrame::Error(mut error) if !self.tried.is_empty() => {
                let earlier: Vec<String> = self
                    .tried
                    .iter()
                    .map(|t| format!("`{}`: {}", t.model, t.reason))
                    .collect();
                error.message = format!("{} (after {})", error.message, earlier.join("; "));
                ResponseFrame::Error(error)
            }
            ResponseFrame::Final(mut response) => {
                response.route.models_tried = self.tried.to_vec();
                ResponseFrame::Final(response)
            }
            other => {
                self.output_sent = true;
                other
            }
        };
        self.inner.send(frame).await
    }

    fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inner.gone()
    }

    fn cache_decided(&mut self, report: &ganglion_client::protocol::CacheReport) {
        self.inner.cache_decided(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_its_own_model_first_and_each_model_once() {
        let mut request = Request::new("a", ganglion_client::protocol::Input::Embed(vec![]));
        request.fallbacks = vec!["b".into(), "a".into(), "c".into(), "b".into()];
        assert_eq!(models(&request), ["a", "b", "c"]);
    }

    #[test]
    fn only_errors_another_model_could_avoid_fall_back_and_only_before_output() {
        let error = |code| WireError::new(code, "x");
        for code in [
            ErrorCode::UnknownModel,
            ErrorCode::Unavailable,
            ErrorCode::Overloaded,
            ErrorCode::Internal,
        ] {
            assert!(falls_back(&error(code)), "{code:?}");
        }
        for code in [
            // A peer lost after it may have charged (an embedding batch): not run again.
            ErrorCode::PeerLost,
            ErrorCode::InvalidInput,
            ErrorCode::TooLarge,
            ErrorCode::DeadlineExceeded,
            ErrorCode::Cancelled,
            ErrorCode::ContextLengthExceeded,
            ErrorCode::Unauthenticated,
            ErrorCode::QuotaExceeded,
        ] {
            assert!(!falls_back(&error(code)), "{code:?}");
        }
        let mut partial = error(ErrorCode::Unavailable);
        partial.partial = true;
        assert!(!falls_back(&partial));
    }
}
