//! Sentence embeddings on llama.cpp: the BERT model converted to GGUF once at load
//! (`bert_gguf`), the text tokenized by the model's own `tokenizer.json`, mean-pooled by
//! llama.cpp and L2-normalised here, as sentence-transformers does for all-MiniLM-L6-v2.
//!
//! One engine thread owns the context. A batch is encoded in groups of at most
//! [`TOKENS_PER_ENCODE`] tokens: BERT attends over a whole encode at once, so its attention
//! buffers grow with the square of that number.

use std::num::NonZeroU32;
use std::path::Path;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use tokenizers::Tokenizer;

use super::BackendError;

/// Tokens one encode reads at most (several texts share it, each its own sequence), and so
/// the most one text may have. llama.cpp keeps an output buffer of this many rows of the
/// vocabulary (31 MB for MiniLM at 256).
const TOKENS_PER_ENCODE: usize = 256;
/// Texts one encode holds at most.
const SEQUENCES_PER_ENCODE: usize = 32;

/// One request to the engine: token ids per text, and where the vectors go.
type Job = (
    Vec<Vec<u32>>,
    std::sync::mpsc::SyncSender<Result<Vec<Vec<f32>>, String>>,
);

/// A loaded embedding model and its engine thread.
pub struct LlamaEmbedder {
    tokenizer: Tokenizer,
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

impl LlamaEmbedder {
    /// Converts and loads the BERT model in `dir` (`model.safetensors`, `config.json`,
    /// `tokenizer.json`); inputs are truncated to `max_tokens`; `threads` compute each encode.
    /// Blocking (call from a blocking thread).
    pub fn load(dir: &Path, max_tokens: usize, threads: usize) -> Result<Self, BackendError> {
        let load_err = |message: String| BackendError::Load {
            path: dir.to_owned(),
            message,
        };
        // The GGUF lives only until llama.cpp has read it.
        let gguf = std::env::temp_dir().join(format!(
            "ganglion-bert-{}-{:x}.gguf",
            std::process::id(),
            rand::random::<u64>()
        ));
        let converted = super::bert_gguf::convert(dir, &gguf);
        let backend = super::llama_cpp::backend();
        let model = converted.and_then(|()| {
            let params = LlamaModelParams::default().with_use_mmap(false);
            LlamaModel::load_from_file(backend?, &gguf, &params).map_err(|e| e.to_string())
        });
        let _ = std::fs::remove_file(&gguf);
        let model = model.map_err(load_err)?;
        // A position past the model's own would abort llama.cpp, not fail.
        let longest = max_tokens
            .min(TOKENS_PER_ENCODE)
            .min(usize::try_from(model.n_ctx_train()).unwrap_or(0));
        // Unpadded: each text is its own sequence.
        let tokenizer = super::embeddings::tokenizer(dir, longest, None).map_err(load_err)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("llama.cpp embeddings".into())
            .spawn(move || engine(&model, threads, &queue, &ready_tx))
            .map_err(|e| load_err(e.to_string()))?;
        ready_rx
            .recv()
            .map_err(|_| load_err("the engine thread stopped".into()))?
            .map_err(load_err)?;
        Ok(Self {
            tokenizer,
            jobs: std::sync::Mutex::new(jobs),
        })
    }

    /// Embeds a batch of texts: one unit-length vector each, and the number of tokens read.
    /// Blocking (call from a blocking thread).
    pub fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, u32), BackendError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| BackendError::Run(e.to_string()))?;
        let ids: Vec<Vec<u32>> = encodings.iter().map(|e| e.get_ids().to_vec()).collect();
        // Truncation keeps every text within one encode; a text of no tokens has no mean.
        if ids
            .iter()
            .any(|t| t.is_empty() || t.len() > TOKENS_PER_ENCODE)
        {
            return Err(BackendError::Run(
                "a text has no tokens, or too many".into(),
            ));
        }
        let tokens = ids.iter().map(Vec::len).sum::<usize>();
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((ids, reply))
            .map_err(|_| BackendError::Run("the engine stopped".into()))?;
        let vectors = answer
            .recv()
            .map_err(|_| BackendError::Run("the engine stopped".into()))?
            .map_err(BackendError::Run)?;
        Ok((vectors, u32::try_from(tokens).unwrap_or(u32::MAX)))
    }
}

fn engine(
    model: &LlamaModel,
    threads: usize,
    queue: &std::sync::mpsc::Receiver<Job>,
    ready: &std::sync::mpsc::SyncSender<Result<(), String>>,
) {
    let threads = i32::try_from(threads.max(1)).unwrap_or(1);
    let tokens = u32::try_from(TOKENS_PER_ENCODE).unwrap_or(512);
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_pooling_type(LlamaPoolingType::Mean)
        .with_n_ctx(NonZeroU32::new(tokens))
        .with_n_batch(tokens)
        .with_n_ubatch(tokens)
        .with_n_seq_max(SEQUENCES_PER_ENCODE as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = match super::llama_cpp::new_context(model, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batch = LlamaBatch::new(TOKENS_PER_ENCODE, SEQUENCES_PER_ENCODE as i32);
    while let Ok((texts, reply)) = queue.recv() {
        // A job that fails or panics fails alone: the engine goes on with the next.
        let embedded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut vectors = Vec::with_capacity(texts.len());
            let mut outcome = Ok(());
            for group in groups(&texts) {
                batch.clear();
                let mut added = Ok(());
                for (seq, ids) in group.iter().enumerate() {
                    for (pos, id) in ids.iter().enumerate() {
                        let token = LlamaToken::new(i32::try_from(*id).unwrap_or(0));
                        added = added.and_then(|()| {
                            batch
                                .add(token, pos as i32, &[seq as i32], true)
                                .map_err(|e| e.to_string())
                        });
                    }
                }
                outcome = added
                    .and_then(|()| ctx.encode(&mut batch).map_err(|e| format!("encode: {e}")))
                    .and_then(|()| {
                        for seq in 0..group.len() {
                            let pooled = ctx
                                .embeddings_seq_ith(seq as i32)
                                .map_err(|e| format!("embeddings: {e}"))?;
                            vectors.push(unit(pooled));
                        }
                        Ok(())
                    });
                ctx.clear_kv_cache();
                if outcome.is_err() {
                    break;
                }
            }
            outcome.map(|()| vectors)
        }))
        .unwrap_or_else(|_| {
            ctx.clear_kv_cache();
            Err("the embedding engine failed on this batch".to_owned())
        });
        let _ = reply.send(embedded);
    }
}

/// Consecutive texts in groups that fit one encode.
fn groups(texts: &[Vec<u32>]) -> Vec<&[Vec<u32>]> {
    let mut groups = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, ids) in texts.iter().enumerate() {
        let full = i > start
            && (tokens + ids.len() > TOKENS_PER_ENCODE || i - start == SEQUENCES_PER_ENCODE);
        if full {
            groups.push(&texts[start..i]);
            (start, tokens) = (i, 0);
        }
        tokens += ids.len();
    }
    if start < texts.len() {
        groups.push(&texts[start..]);
    }
    groups
}

/// `v` scaled to unit length (a zero vector stays zero).
fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter()
        .map(|x| if norm > 0.0 { x / norm } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_grouped_within_an_encode() {
        let texts = vec![vec![0; 150], vec![0; 100], vec![0; 50], vec![0; 256]];
        let sizes: Vec<usize> = groups(&texts).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1]);
        let many = vec![vec![0; 3]; 70];
        let sizes: Vec<usize> = groups(&many).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, vec![32, 32, 6]);
        assert!(groups(&[]).is_empty());
    }

    #[test]
    fn vectors_are_scaled_to_unit_length() {
        assert_eq!(unit(&[3.0, 4.0]), vec![0.6, 0.8]);
        assert_eq!(unit(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
