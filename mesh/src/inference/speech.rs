//! Speech to text: Moonshine base (English) on ONNX Runtime, greedy.
//!
//! Moonshine reads raw 16 kHz audio (no mel spectrogram): its encoder turns the samples into
//! hidden states (about 41 per second), and its merged decoder generates tokens one at a time
//! with a key/value cache. The first step runs the decoder's "no cache" branch
//! (`use_cache_branch` false, empty past tensors): it computes the cross-attention keys and
//! values from the encoder's states once, and they are fed back unchanged on every later step
//! (that branch returns them empty); the self-attention cache grows by one position a step.
//! Generation ends at the end token or after 6.5 tokens per second of audio (Moonshine's model
//! card; at least 8), which stops a decoder that would otherwise repeat itself on noise.
//!
//! - [`audio`]: WAV files, checked from their header and decoded to mono 16 kHz.

pub mod audio;

use std::path::Path;

use tokenizers::Tokenizer;

use super::BackendError;
use super::onnx::{NamedInput, Network, Tensor, Values};

/// Shortest input the encoder takes: its convolutions need about 900 samples for one output;
/// 0.1 s (Moonshine's own lower limit) is padded with silence up to this.
const MIN_SAMPLES: usize = 1_600;

/// Most tokens per second of audio (Moonshine's model card: 6.5).
const TOKENS_PER_SECOND: f64 = 6.5;

/// Fewest tokens allowed however short the recording: a word, its punctuation and the end.
const MIN_TOKENS: usize = 8;

/// The decoder's tokens a recording of `samples` 16 kHz samples may generate (the end token
/// included).
fn max_tokens(samples: usize) -> usize {
    let seconds = samples as f64 / f64::from(audio::RATE);
    ((seconds * TOKENS_PER_SECOND).ceil() as usize).max(MIN_TOKENS)
}

/// Moonshine: an encoder over raw 16 kHz audio and a decoder with a key/value cache, greedy.
pub struct Moonshine {
    encoder: Network,
    decoder: Network,
    tokenizer: Tokenizer,
    /// The start and end tokens (`<s>`, `</s>`).
    start: u32,
    end: u32,
    /// Key/value heads and their width, per decoder layer (8 and 52 for base).
    heads: usize,
    head_dim: usize,
    /// The cache inputs, four per layer in the order {decoder, encoder} × {key, value}, and the
    /// outputs that feed them, in the same order.
    past: Vec<String>,
    present: Vec<String>,
}

impl Moonshine {
    /// Loads `encoder_model.ort`, `decoder_model_merged.ort` and `tokenizer.json` from `dir`, on
    /// the ONNX Runtime library `library`, each graph's operators on `threads` threads. Reads the
    /// decoder's layer count and cache shape from its declared inputs, and refuses a graph whose
    /// inputs are not Moonshine's.
    pub fn load(library: &Path, dir: &Path, threads: usize) -> Result<Self, BackendError> {
        let encoder = Network::load(library, &dir.join("encoder_model.ort"), threads)?;
        let decoder_path = dir.join("decoder_model_merged.ort");
        let decoder = Network::load(library, &decoder_path, threads)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| BackendError::Load {
            path: tokenizer_path.clone(),
            message: e.to_string(),
        })?;
        let token = |name: &str| {
            tokenizer
                .token_to_id(name)
                .ok_or_else(|| BackendError::Load {
                    path: tokenizer_path.clone(),
                    message: format!("no {name} token"),
                })
        };
        let (start, end) = (token("<s>")?, token("</s>")?);

        let wrong = |message: String| BackendError::Load {
            path: decoder_path.clone(),
            message,
        };
        let encoder_inputs = encoder.inputs();
        if encoder_inputs.len() != 1 || encoder_inputs[0].name != "input_values" {
            return Err(BackendError::Load {
                path: dir.join("encoder_model.ort"),
                message: "the encoder does not take input_values alone".into(),
            });
        }
        let inputs = decoder.inputs();
        let declared = |name: &str| inputs.iter().find(|input| input.name == name);
        // Layers are numbered from 0; every input but three belongs to one, four each.
        let layers = inputs.len().saturating_sub(3) / 4;
        let mut past = Vec::with_capacity(layers * 4);
        let mut present = Vec::with_capacity(layers * 4);
        for layer in 0..layers {
            for part in [
                "decoder.key",
                "decoder.value",
                "encoder.key",
                "encoder.value",
            ] {
                past.push(format!("past_key_values.{layer}.{part}"));
                present.push(format!("present.{layer}.{part}"));
            }
        }
        let fed = ["input_ids", "encoder_hidden_states", "use_cache_branch"];
        if layers == 0
            || inputs.len() != 3 + layers * 4
            || fed.iter().any(|name| declared(name).is_none())
            || past.iter().any(|name| declared(name).is_none())
        {
            let names: Vec<&str> = inputs.iter().map(|input| input.name.as_str()).collect();
            return Err(wrong(format!(
                "not Moonshine's merged decoder (inputs {names:?})"
            )));
        }
        let (heads, head_dim) = match declared(&past[0]).map(|input| input.shape.as_slice()) {
            Some([_, Some(heads), _, Some(head_dim)]) if *heads > 0 && *head_dim > 0 => {
                (*heads, *head_dim)
            }
            _ => return Err(wrong(format!("{} has no fixed heads and width", past[0]))),
        };
        Ok(Self {
            encoder,
            decoder,
            tokenizer,
            start,
            end,
            heads,
            head_dim,
            past,
            present,
        })
    }

    /// Transcribes 16 kHz mono samples: the text, and the tokens generated (the end token
    /// included when reached: the decoder steps run). At most [`audio::MAX_SECONDS`] of audio;
    /// shorter than 0.1 s is padded with silence. Stops with `DeadlineExceeded` at `deadline`
    /// (checked between decoder steps). CPU-bound; call from a blocking thread.
    pub fn transcribe(
        &self,
        samples: &[f32],
        deadline: std::time::Instant,
    ) -> Result<(String, u32), BackendError> {
        if samples.is_empty() {
            return Err(BackendError::Input("the recording is empty".into()));
        }
        let longest = (audio::MAX_SECONDS * f64::from(audio::RATE)) as usize;
        if samples.len() > longest {
            return Err(BackendError::Input(format!(
                "a recording of {} samples exceeds the limit of {} s",
                samples.len(),
                audio::MAX_SECONDS
            )));
        }
        let mut input: Vec<f32> = samples
            .iter()
            .map(|s| {
                if s.is_finite() {
                    s.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            })
            .collect();
        input.resize(input.len().max(MIN_SAMPLES), 0.0);

        let states = self
            .encoder
            .run_named(
                &[NamedInput {
                    name: "input_values",
                    shape: vec![1, input.len()],
                    values: Values::F32(&input),
                }],
                &["last_hidden_state"],
            )?
            .pop()
            .ok_or_else(|| BackendError::Run("the encoder gave no output".into()))?;
        if states.shape.len() != 3 || states.shape[1] == 0 {
            return Err(BackendError::Run(format!(
                "the encoder gave states of shape {:?}",
                states.shape
            )));
        }

        let tokens = self.decode(&states, max_tokens(samples.len()), deadline)?;
        let text = self
            .tokenizer
            .decode(&tokens, true)
            .map_err(|e| BackendError::Run(format!("detokenizing: {e}")))?;
        let generated = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        Ok((text.trim().to_owned(), generated))
    }

    /// The greedy loop: tokens after the start token, up to and including the end token, at
    /// most `limit` of them.
    fn decode(
        &self,
        states: &Tensor,
        limit: usize,
        deadline: std::time::Instant,
    ) -> Result<Vec<u32>, BackendError> {
        let layers = self.past.len() / 4;
        // The cache before the first step: no positions ([1, heads, 0, width], no values).
        let empty = Tensor {
            shape: vec![1, self.heads, 0, self.head_dim],
            data: Vec::new(),
        };
        let mut cache: Vec<Tensor> = vec![empty; self.past.len()];
        let mut tokens = Vec::with_capacity(limit);
        let mut last = self.start;
        // The first step fills every cache entry; later ones only the decoder's own (the
        // encoder's are returned empty by the cached branch and kept from the first step).
        let first_outputs: Vec<&str> = std::iter::once("logits")
            .chain(self.present.iter().map(String::as_str))
            .collect();
        let decoder_slots: Vec<usize> = (0..layers).flat_map(|l| [4 * l, 4 * l + 1]).collect();
        let later_outputs: Vec<&str> = std::iter::once("logits")
            .chain(decoder_slots.iter().map(|&i| self.present[i].as_str()))
            .collect();

        for step in 0..limit {
            if std::time::Instant::now() >= deadline {
                return Err(BackendError::DeadlineExceeded);
            }
            let first = step == 0;
            let ids = [i64::from(last)];
            let branch = [!first];
            let mut inputs = Vec::with_capacity(3 + self.past.len());
            inputs.push(NamedInput {
                name: "input_ids",
                shape: vec![1, 1],
                values: Values::I64(&ids),
            });
            inputs.push(NamedInput {
                name: "encoder_hidden_states",
                shape: states.shape.clone(),
                values: Values::F32(&states.data),
            });
            inputs.push(NamedInput {
                name: "use_cache_branch",
                shape: vec![1],
                values: Values::Bool(&branch),
            });
            for (name, tensor) in self.past.iter().zip(&cache) {
                inputs.push(NamedInput {
                    name: name.as_str(),
                    shape: tensor.shape.clone(),
                    values: Values::F32(&tensor.data),
                });
            }
            let wanted = if first {
                &first_outputs
            } else {
                &later_outputs
            };
            let mut outputs = self.decoder.run_named(&inputs, wanted)?.into_iter();
            drop(inputs);

            let logits = outputs
                .next()
                .ok_or_else(|| BackendError::Run("the decoder gave no logits".into()))?;
            let next = argmax_last(&logits)?;
            tokens.push(next);
            if next == self.end {
                break;
            }
            if first {
                for (slot, tensor) in cache.iter_mut().zip(outputs) {
                    *slot = tensor;
                }
            } else {
                for (&slot, tensor) in decoder_slots.iter().zip(outputs) {
                    cache[slot] = tensor;
                }
            }
            last = next;
        }
        Ok(tokens)
    }
}

/// The most likely token at the last position of logits `[1, positions, vocabulary]`.
fn argmax_last(logits: &Tensor) -> Result<u32, BackendError> {
    let vocabulary = logits.shape.last().copied().unwrap_or(0);
    let row = logits
        .data
        .len()
        .checked_sub(vocabulary)
        .and_then(|start| logits.data.get(start..))
        .filter(|row| !row.is_empty())
        .ok_or_else(|| BackendError::Run(format!("logits of shape {:?}", logits.shape)))?;
    let (best, _) = row
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(best, top), (i, &v)| {
            if v > top { (i, v) } else { (best, top) }
        });
    u32::try_from(best).map_err(|_| BackendError::Run("token id out of range".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline no test reaches.
    fn later() -> std::time::Instant {
        std::time::Instant::now() + std::time::Duration::from_secs(600)
    }

    #[test]
    fn token_limit_follows_the_length() {
        assert_eq!(max_tokens(16_000 * 10), 65);
        assert_eq!(max_tokens(100), MIN_TOKENS);
        assert_eq!(max_tokens(16_000 * 60), 390);
    }

    #[test]
    fn argmax_takes_the_last_position() {
        let logits = Tensor {
            shape: vec![1, 2, 3],
            data: vec![9.0, 0.0, 0.0, 0.1, f32::NAN, 0.3],
        };
        assert_eq!(argmax_last(&logits).unwrap(), 2);
        let empty = Tensor {
            shape: vec![1, 0, 3],
            data: vec![],
        };
        assert!(argmax_last(&empty).is_err());
    }

    /// Transcribes the model's own test recording, if the model was pulled into the store.
    #[test]
    fn transcribes_beckett_if_present() {
        use crate::models::{catalog, store::ModelStore};
        let Some(root) = ModelStore::default_root() else {
            eprintln!("skipped: no HOME");
            return;
        };
        let store = ModelStore::new(root);
        let dir = store.model_dir(catalog::SPEECH);
        let wav = dir.join("beckett.wav");
        let library = match store.onnx_runtime() {
            Ok(library) if wav.exists() => library,
            _ => {
                eprintln!("skipped: Moonshine or ONNX Runtime is not in the store");
                return;
            }
        };
        let bytes = std::fs::read(&wav).unwrap();
        let seconds = audio::duration(&bytes).unwrap();
        assert!((seconds - 9.96).abs() < 0.01, "{seconds}");
        let samples = audio::samples_16k(&bytes).unwrap();
        let model = Moonshine::load(&library, &dir, 2).unwrap();
        let started = std::time::Instant::now();
        let (text, tokens) = model.transcribe(&samples, later()).unwrap();
        eprintln!("{text:?}, {tokens} tokens in {:?}", started.elapsed());
        assert_eq!(
            text,
            "Ever tried ever failed, no matter try again fail again fail better."
        );
        assert_eq!(tokens, 15);

        // The same recording as a 44.1 kHz stereo file goes through the resampler both ways.
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cursor = std::io::Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for sample in audio::resample(&samples, audio::RATE, 44_100) {
            let value = (sample * 32_767.0) as i16;
            writer.write_sample(value).unwrap();
            writer.write_sample(value).unwrap();
        }
        writer.finalize().unwrap();
        let resampled = audio::samples_16k(&cursor.into_inner()).unwrap();
        assert!(resampled.len().abs_diff(samples.len()) <= 1);
        let (text, _) = model.transcribe(&resampled, later()).unwrap();
        assert_eq!(
            text,
            "Ever tried ever failed, no matter try again fail again fail better."
        );
    }
}
