//! Text generation on GGUF chat models through mistralrs.
//!
//! mistralrs runs every sequence of a model in one engine loop and waits, per token, on a
//! one-slot channel to each sequence's consumer: a consumer that stops reading stalls every
//! other sequence. So this module never stops reading the engine. Each new piece of text goes
//! into the request's own bounded buffer without waiting; a full buffer (the requester reads
//! too slowly) or a closed one (it went away) cancels that request only. A cancelled sequence
//! keeps its slot until mistralrs has really dropped it: the engine's channel is closed (its
//! next send fails, which ends the sequence) and then drained until the engine lets go of it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use either::Either;
use ganglion_client::protocol::{
    ChatMessage, FinishReason, Parameters, ResponseFrame, Role, Usage,
};
use mistralrs::{
    GgufModelBuilder, NormalRequest, Request, RequestBuilder, RequestLike, Response,
    TextMessageRole, TextMessages,
};
use tokio::sync::mpsc;

use super::BackendError;
use super::delivery::{CANCEL_SETTLE_LIMIT, Tokenizing, pass_on};
use super::sampling::SeededSampler;
use super::stop::StopScan;

/// Context length assumed when the GGUF file does not say (mistralrs's own fallback).
const DEFAULT_CONTEXT_TOKENS: usize = 4096;

/// A loaded chat model.
pub struct TextGenerator {
    model: Arc<mistralrs::Model>,
    context_tokens: usize,
    tokenizing: Tokenizing,
}

/// What a finished generation produced.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The whole text.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// When the first token was produced, if any was.
    pub first_token_at: Option<Instant>,
    /// Of the output tokens, those of a resumed answer's start (read, not generated here).
    pub resumed_tokens: u32,
}

impl TextGenerator {
    /// Loads `file` from `dir` (chat template and tokenizer come from the GGUF), with room for
    /// `max_sequences` concurrent sequences.
    pub async fn load(dir: &Path, file: &str, max_sequences: usize) -> Result<Self, BackendError> {
        let load_err = |e: anyhow::Error| BackendError::Load {
            path: dir.join(file),
            message: format!("{e:#}"),
        };
        let model = GgufModelBuilder::new(dir.to_string_lossy(), vec![file.to_owned()])
            .with_token_source(mistralrs::TokenSource::None)
            .with_max_num_seqs(max_sequences.max(1))
            // Its prefix cache is shared by every request: one account's prompt would make
            // another's faster (docs/security.md, "Prefix reuse never crosses accounts").
            .with_prefix_cache_n(None)
            .with_force_cpu()
            .build()
            .await
            .map_err(load_err)?;
        let context_tokens = model
            .max_sequence_length()
            .ok()
            .flatten()
            .unwrap_or(DEFAULT_CONTEXT_TOKENS);
        Ok(Self {
            model: Arc::new(model),
            context_tokens,
            tokenizing: Tokenizing::default(),
        })
    }

    /// The model's context window, in tokens (prompt and output together).
    pub fn context_tokens(&self) -> usize {
        self.context_tokens
    }

    /// Prompt tokens of `messages` with the chat template applied, as generation counts them;
    /// `DeadlineExceeded` if the engine has not answered by `deadline`.
    pub async fn count_prompt_tokens(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<usize, BackendError> {
        let mut template = TextMessages::new();
        for m in messages {
            template = template.add_message(role(m.role), &m.content);
        }
        // mistralrs's engine panics if a tokenize request's reply channel is dropped before it
        // answers, so the call runs in a task of its own that nothing cancels.
        // Waiting for that task may stop at the deadline; the task itself runs to its end.
        // A permit bounds how many of those tasks a model has at once.
        let permit = self.tokenizing.permit(deadline).await?;
        let model = self.model.clone();
        let counting = tokio::spawn(async move {
            let _permit = permit;
            model
                .tokenize(Either::Left(template), None, true, true, None)
                .await
                .map(|t| t.len())
        });
        let tokens = tokio::time::timeout_at(deadline.into(), counting)
            .await
            .map_err(|_| BackendError::DeadlineExceeded)?
            .map_err(|e| BackendError::Run(format!("tokenizer task failed: {e}")))?
            .map_err(|e| BackendError::Run(format!("cannot count prompt tokens: {e}")))?;
        Ok(tokens)
    }

    /// Generates an answer, putting each new piece of text into `deltas` without ever waiting
    /// on it. A full `deltas` (the requester reads too slowly) or a closed one (it went away)
    /// cancels this generation, as does passing `deadline`; it returns once mistralrs has let go
    /// of the sequence. `sent` counts the pieces of text handed on (so that output streamed
    /// before a failure is still charged).
    pub async fn generate(
        &self,
        chat: super::Chat<'_>,
        deadline: Instant,
        deltas: &mpsc::Sender<ResponseFrame>,
        sent: &AtomicU32,
    ) -> Result<Completion, BackendError> {
        let (tx, mut rx) = mpsc::channel(1);
        let super::Chat {
            messages,
            parameters,
            max_tokens,
            resume,
            ..
        } = chat;
        if resume.is_some() {
            return Err(BackendError::Run(
                "mistralrs cannot continue another executor's answer".into(),
            ));
        }
        let mut builder = build_request(messages, parameters, max_tokens);
        if let Ok(config) = self.model.config() {
            builder.resolve_pending_prefixes(&config.category);
        }
        let request = normal_request(builder, tx);
        let engine = self
            .model
            .inner()
            .get_sender(None)
            .map_err(|e| BackendError::Run(e.to_string()))?;
        // Dropping this send at the deadline is safe: the request then never reaches the engine.
        tokio::time::timeout_at(deadline.into(), engine.send(request))
            .await
            .map_err(|_| BackendError::DeadlineExceeded)?
            .map_err(|e| BackendError::Run(format!("engine gone: {e}")))?;
        let stops = StopScan::new(&parameters.stop);
        let (outcome, ended_early) = read_responses(&mut rx, deadline, deltas, sent, stops).await;
        if outcome.is_err() || ended_early {
            // Closing makes the engine's next send fail, which ends the sequence; the channel
            // then reports its end once the engine has dropped the sequence.
            rx.close();
            let drained = tokio::time::timeout(CANCEL_SETTLE_LIMIT, async {
                while rx.recv().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!("a cancelled sequence did not leave the engine in time");
            }
        }
        outcome
    }
}

/// Reads the engine's responses for one sequence until it finishes, passing text on; also
/// says whether the answer ended at a stop string before the engine's end (mistralrs does not
/// stop at every stop string itself, so they are watched here, as the llama.cpp engine does).
async fn read_responses(
    rx: &mut mpsc::Receiver<Response>,
    deadline: Instant,
    deltas: &mpsc::Sender<ResponseFrame>,
    sent: &AtomicU32,
    mut stops: StopScan,
) -> (Result<Completion, BackendError>, bool) {
    let mut first_token_at = None;
    let mut finish_reason = FinishReason::Stop;
    let mut usage = Usage::default();
    let mut pieces = 0u32;
    // Held-back text can leave nothing to send yet.
    let hand_on = |ready: String| {
        if ready.is_empty() {
            Ok(())
        } else {
            pass_on(deltas, sent, ready)
        }
    };
    loop {
        let next = tokio::select! {
            biased;
            next = rx.recv() => next,
            () = deltas.closed() => return (Err(BackendError::Cancelled), false),
            () = tokio::time::sleep_until(deadline.into()) => return (Err(BackendError::DeadlineExceeded), false),
        };
        // The engine ends every answer with a usage chunk or `Done`: a channel that closes
        // before either cut the answer short, and a short answer must not pass for a whole
        // one (it would be charged as complete, and cached).
        let Some(response) = next else {
            let error = "the engine stopped before the answer was complete";
            return (Err(BackendError::Run(error.into())), false);
        };
        match response {
            Response::Chunk(chunk) => {
                if let Some(u) = &chunk.usage {
                    usage = usage_of(u);
                }
                for choice in chunk.choices {
                    if let Some(piece) = choice.delta.content.filter(|p| !p.is_empty()) {
                        first_token_at.get_or_insert_with(Instant::now);
                        pieces += 1;
                        let (ready, stopped) = stops.push(&piece);
                        if let Err(e) = hand_on(ready) {
                            return (Err(e), false);
                        }
                        if stopped {
                            let completion = Completion {
                                text: stops.text().to_owned(),
                                finish_reason: FinishReason::Stop,
                                usage: Usage {
                                    output_tokens: pieces,
                                    ..usage
                                },
                                first_token_at,
                                resumed_tokens: 0,
                            };
                            return (Ok(completion), true);
                        }
                    }
                    if let Some(reason) = choice.finish_reason {
                        finish_reason = if reason == "length" {
                            FinishReason::Length
                        } else {
                            FinishReason::Stop
                        };
                    }
                }
                if usage.output_tokens > 0 && chunk.usage.is_some() {
                    break;
                }
            }
            Response::Done(done) => {
                usage = usage_of(&done.usage);
                break;
            }
            Response::InternalError(e) | Response::ValidationError(e) => {
                return (Err(BackendError::Run(e.to_string())), false);
            }
            Response::ModelError(e, _) => return (Err(BackendError::Run(e)), false),
            _ => {
                let error = "unexpected response kind from mistralrs";
                return (Err(BackendError::Run(error.into())), false);
            }
        }
    }
    if let Err(e) = hand_on(stops.finish()) {
        return (Err(e), false);
    }
    let completion = Completion {
        text: stops.text().to_owned(),
        finish_reason,
        usage,
        first_token_at,
        resumed_tokens: 0,
    };
    (Ok(completion), false)
}

fn usage_of(u: &mistralrs::Usage) -> Usage {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Usage {
        input_tokens: count(u.prompt_tokens),
        output_tokens: count(u.completion_tokens),
        ..Usage::default()
    }
}

fn role(role: Role) -> TextMessageRole {
    match role {
        Role::System => TextMessageRole::System,
        Role::User => TextMessageRole::User,
        Role::Assistant => TextMessageRole::Assistant,
    }
}

fn build_request(messages: &[ChatMessage], p: &Parameters, max_tokens: u32) -> RequestBuilder {
    let mut request = RequestBuilder::new();
    for m in messages {
        request = request.add_message(role(m.role), &m.content);
    }
    // mistralrs always decodes greedily; sampling, when asked for, is done by a seeded logits
    // processor so that a seed reproduces its output.
    request = request
        .set_deterministic_sampler()
        .set_sampler_max_len(max_tokens as usize);
    if let Some(t) = p.temperature.filter(|t| *t > 0.0) {
        let seed = p.seed.unwrap_or_else(rand::random);
        request = request.add_logits_processor(Arc::new(SeededSampler::new(t, p.top_p, seed)));
    }
    if !p.stop.is_empty() {
        request = request.set_sampler_stop_toks(mistralrs::StopTokens::Seqs(p.stop.clone()));
    }
    request
}

/// The engine request for `builder`, answering on `tx` (a channel this module owns, so that it
/// can close it on cancellation; `Model::stream_chat_request` keeps its own private).
fn normal_request(mut builder: RequestBuilder, tx: mpsc::Sender<Response>) -> Request {
    let (tools, tool_choice) = match builder.take_tools() {
        Some((tools, choice)) => (Some(tools), Some(choice)),
        None => (None, None),
    };
    Request::Normal(Box::new(NormalRequest {
        messages: builder.take_messages(),
        sampling_params: builder.take_sampling_params(),
        response: tx,
        return_logprobs: RequestLike::return_logprobs(&builder),
        is_streaming: true,
        id: 0,
        constraint: builder.take_constraint(),
        suffix: None,
        tools,
        tool_choice,
        logits_processors: builder.take_logits_processors(),
        return_raw_logits: false,
        web_search_options: builder.take_web_search_options(),
        model_id: None,
        truncate_sequence: builder.truncate_sequence(),
    }))
}
