//! Text generation on GGUF chat models through mistralrs.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ganglion_client::protocol::{
    ChatMessage, FinishReason, Parameters, ResponseFrame, Role, Usage,
};
use mistralrs::{GgufModelBuilder, RequestBuilder, Response, TextMessageRole};
use tokio::sync::mpsc;

use super::BackendError;
use super::sampling::SeededSampler;

/// A loaded chat model.
pub struct TextGenerator {
    model: Arc<mistralrs::Model>,
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
            .with_force_cpu()
            .build()
            .await
            .map_err(load_err)?;
        Ok(Self {
            model: Arc::new(model),
        })
    }

    /// Generates an answer, sending each new piece of text to `deltas` as it is produced.
    /// A closed `deltas` channel (the requester went away) stops the generation.
    pub async fn generate(
        &self,
        messages: &[ChatMessage],
        parameters: &Parameters,
        default_max_tokens: u32,
        deltas: &mpsc::Sender<ResponseFrame>,
    ) -> Result<Completion, BackendError> {
        let request = build_request(messages, parameters, default_max_tokens);
        let mut stream = self
            .model
            .stream_chat_request(request)
            .await
            .map_err(|e| BackendError::Run(e.to_string()))?;
        let mut text = String::new();
        let mut first_token_at = None;
        let mut finish_reason = FinishReason::Stop;
        let mut usage = Usage::default();
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = deltas.closed() => return Err(BackendError::Cancelled),
            };
            let Some(response) = next else { break };
            match response {
                Response::Chunk(chunk) => {
                    if let Some(u) = &chunk.usage {
                        usage = Usage {
                            input_tokens: u.prompt_tokens as u32,
                            output_tokens: u.completion_tokens as u32,
                        };
                    }
                    for choice in chunk.choices {
                        if let Some(piece) = choice.delta.content.filter(|p| !p.is_empty()) {
                            first_token_at.get_or_insert_with(Instant::now);
                            text.push_str(&piece);
                            if deltas.send(ResponseFrame::Delta(piece)).await.is_err() {
                                return Err(BackendError::Cancelled);
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
                    usage = Usage {
                        input_tokens: done.usage.prompt_tokens as u32,
                        output_tokens: done.usage.completion_tokens as u32,
                    };
                    break;
                }
                Response::InternalError(e) | Response::ValidationError(e) => {
                    return Err(BackendError::Run(e.to_string()));
                }
                Response::ModelError(e, _) => return Err(BackendError::Run(e)),
                _ => {
                    return Err(BackendError::Run(
                        "unexpected response kind from mistralrs".into(),
                    ));
                }
            }
        }
        Ok(Completion {
            text,
            finish_reason,
            usage,
            first_token_at,
        })
    }
}

fn build_request(
    messages: &[ChatMessage],
    p: &Parameters,
    default_max_tokens: u32,
) -> RequestBuilder {
    let mut request = RequestBuilder::new();
    for m in messages {
        let role = match m.role {
            Role::System => TextMessageRole::System,
            Role::User => TextMessageRole::User,
            Role::Assistant => TextMessageRole::Assistant,
        };
        request = request.add_message(role, &m.content);
    }
    // mistralrs always decodes greedily; sampling, when asked for, is done by a seeded logits
    // processor so that a seed reproduces its output.
    request = request
        .set_deterministic_sampler()
        .set_sampler_max_len(p.max_tokens.unwrap_or(default_max_tokens) as usize);
    if let Some(t) = p.temperature.filter(|t| *t > 0.0) {
        let seed = p.seed.unwrap_or_else(rand::random);
        request = request.add_logits_processor(Arc::new(SeededSampler::new(t, p.top_p, seed)));
    }
    if !p.stop.is_empty() {
        request = request.set_sampler_stop_toks(mistralrs::StopTokens::Seqs(p.stop.clone()));
    }
    request
}
