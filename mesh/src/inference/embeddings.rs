//! Sentence embeddings with candle's BERT: tokenize, encode, mean-pool over the attention mask
//! and L2-normalise, as sentence-transformers does for all-MiniLM-L6-v2.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use super::BackendError;

/// A loaded embedding model.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl Embedder {
    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` from `dir`; inputs are
    /// truncated to `max_tokens`.
    pub fn load(dir: &Path, max_tokens: usize) -> Result<Self, BackendError> {
        let load_err = |message: String| BackendError::Load {
            path: dir.to_owned(),
            message,
        };
        let config: Config = serde_json::from_slice(
            &std::fs::read(dir.join("config.json")).map_err(|e| load_err(e.to_string()))?,
        )
        .map_err(|e| load_err(format!("config.json: {e}")))?;
        // Padded: the batch is one tensor.
        let tokenizer =
            tokenizer(dir, max_tokens, Some(PaddingParams::default())).map_err(load_err)?;
        let device = Device::Cpu;
        let weights =
            std::fs::read(dir.join("model.safetensors")).map_err(|e| load_err(e.to_string()))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| load_err(e.to_string()))?;
        let model = BertModel::load(vb, &config).map_err(|e| load_err(e.to_string()))?;
        Ok(Self {
            model,
            tokenizer,
            device,
        })
    }

    /// Embeds a batch of texts: one unit-length vector each, and the number of tokens read.
    /// CPU-bound; call from a blocking thread.
    pub fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, u32), BackendError> {
        let run = |e: candle_core::Error| BackendError::Run(e.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| BackendError::Run(e.to_string()))?;
        let tokens: u32 = encodings
            .iter()
            .map(|e| e.get_attention_mask().iter().sum::<u32>())
            .sum();
        let rows = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor, BackendError> {
            let rows = encodings
                .iter()
                .map(|e| Tensor::new(f(e), &self.device))
                .collect::<candle_core::Result<Vec<_>>>()
                .map_err(run)?;
            Tensor::stack(&rows, 0).map_err(run)
        };
        let ids = rows(tokenizers::Encoding::get_ids)?;
        let type_ids = rows(tokenizers::Encoding::get_type_ids)?;
        let mask = rows(tokenizers::Encoding::get_attention_mask)?;
        let hidden = self
            .model
            .forward(&ids, &type_ids, Some(&mask))
            .map_err(run)?;
        let pooled = mean_pool(&hidden, &mask).map_err(run)?;
        let norms = pooled
            .sqr()
            .and_then(|s| s.sum_keepdim(1))
            .and_then(|s| s.sqrt())
            .map_err(run)?;
        let unit = pooled.broadcast_div(&norms).map_err(run)?;
        Ok((unit.to_vec2::<f32>().map_err(run)?, tokens))
    }
}

/// The model's own tokenizer (`tokenizer.json` in `dir`), cutting texts at `max_tokens`, with
/// `padding` (or none).
pub(super) fn tokenizer(
    dir: &Path,
    max_tokens: usize,
    padding: Option<PaddingParams>,
) -> Result<Tokenizer, String> {
    let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| format!("tokenizer.json: {e}"))?;
    tokenizer.with_padding(padding);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            ..Default::default()
        }))
        .map_err(|e| format!("truncation: {e}"))?;
    Ok(tokenizer)
}

/// Mean of the token vectors that the attention mask keeps.
fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    summed.broadcast_div(&counts)
}
