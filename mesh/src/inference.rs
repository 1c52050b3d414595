//! Inference backends: the code that turns a validated request into model output.
//!
//! - [`text_generation`]: GGUF chat models through mistralrs (streaming deltas, greedy by
//!   default, seeded sampling).
//! - [`embeddings`]: BERT sentence embeddings through candle, mean-pooled and normalised as
//!   sentence-transformers does.
//!
//! Backends know nothing of actors or the network: `ModelHost` owns one and drives it.

pub mod embeddings;
pub mod sampling;
pub mod text_generation;

/// A loaded model.
pub enum Backend {
    /// A chat model.
    Text(text_generation::TextGenerator),
    /// An embedding model (boxed: its weights and tokenizer are large, the chat model is a
    /// handle).
    Embed(Box<embeddings::Embedder>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text(_) => "Backend::Text",
            Self::Embed(_) => "Backend::Embed",
        })
    }
}

/// Why a backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The model could not be loaded.
    #[error("cannot load model from {path}: {message}")]
    Load {
        /// Where it was loaded from.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// Running the model failed.
    #[error("inference failed: {0}")]
    Run(String),
    /// The requester went away; the work was stopped.
    #[error("cancelled: the requester went away")]
    Cancelled,
    /// The request's deadline passed; the work was stopped.
    #[error("the deadline passed")]
    DeadlineExceeded,
    /// The requester read too slowly: its buffer filled up, so the work was stopped.
    #[error("cancelled: the requester did not keep up with the output")]
    SlowConsumer,
}

/// Loads the backend of `spec` from the model store, with room for `concurrency` requests.
pub async fn load(
    spec: &crate::models::ModelSpec,
    store: &crate::models::ModelStore,
    concurrency: usize,
) -> Result<Backend, BackendError> {
    use crate::models::{Task, requantize};
    let location = store.locate(spec).map_err(|e| BackendError::Load {
        path: store.model_dir(&spec.id),
        message: e.to_string(),
    })?;
    match spec.task {
        Task::TextGeneration => {
            let file = if location.is_file() {
                location.clone()
            } else {
                requantize::best_gguf(spec, &location).ok_or_else(|| BackendError::Load {
                    path: location.clone(),
                    message: "no GGUF file in the model folder".into(),
                })?
            };
            let (dir, name) = match (file.parent(), file.file_name()) {
                (Some(dir), Some(name)) => (dir.to_owned(), name.to_string_lossy().into_owned()),
                _ => {
                    return Err(BackendError::Load {
                        path: file.clone(),
                        message: "not a file path".into(),
                    });
                }
            };
            Ok(Backend::Text(
                text_generation::TextGenerator::load(&dir, &name, concurrency).await?,
            ))
        }
        Task::TextEmbeddings => {
            let max_tokens = spec.context_tokens as usize;
            let embedder = tokio::task::spawn_blocking(move || {
                embeddings::Embedder::load(&location, max_tokens)
            })
            .await
            .map_err(|e| BackendError::Run(e.to_string()))??;
            Ok(Backend::Embed(Box::new(embedder)))
        }
    }
}
