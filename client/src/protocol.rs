//! Identifiers and opening messages of the Ganglion wire protocol.
//!
//! One QUIC connection joins two parties; its ALPN says who they are. Node-to-node connections
//! use [`ALPN_PEER`] and mutual TLS; client connections use [`ALPN_CLIENT`] and server-side TLS.
//! Every bidirectional stream a node opens to a peer starts with a [`PeerStreamKind`] frame.

use serde::{Deserialize, Serialize};

/// ALPN of node-to-node connections (mutual TLS, cluster CA on both sides). Its version moves
/// with any change of what peers exchange (6: requests may carry texts to classify, images
/// and recordings; 8: usage counts cached prompt tokens; 9: a cache hit says how long it may
/// still be served), so that nodes of two builds never
/// misread each other.
pub const ALPN_PEER: &[u8] = b"ganglion-peer/9";

/// ALPN of client-to-node connections (server-authenticated TLS); 5: requests may carry texts
/// to classify, images and recordings; 6: usage counts cached prompt tokens.
pub const ALPN_CLIENT: &[u8] = b"ganglion-client/6";

/// Application close code of a node that stops serving a connection (it shuts down, or its
/// gateway restarts): retry, or use another node.
pub const CLOSE_NOT_SERVING: u32 = 0;

/// Application close code of a node that serves clients on loopback only, closing a client
/// connection from elsewhere.
pub const CLOSE_CLIENTS_LOOPBACK_ONLY: u32 = 7;

/// Application close code of a node too busy to finish a handshake in time: retry in 1 s.
pub const CLOSE_OVERLOADED: u32 = 8;

/// Bound on the opening frame of a stream: it names the stream's purpose and nothing more.
pub const MAX_OPEN_FRAME_LEN: usize = 1024;

/// The first frame on every bidirectional stream opened on a peer connection: what the stream
/// carries from then on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PeerStreamKind {
    /// The ractor_cluster control-plane session (opened once, by the dialing node). After this
    /// frame the stream carries ractor_cluster's own framing.
    Cluster,
    /// A request handed over by a peer: from here on, exactly a client's data-plane stream
    /// (one `ClientRequest`, then response frames).
    Data,
    /// A unidirectional stream carrying one advert of the sending node (a bounded frame).
    Advert,
    /// A quota request to an account's home node, and its answer.
    Quota,
    /// A cache lookup at a shard of this node, and its answer (then, when the asker is to
    /// fill the key, its fill or its giving up).
    Cache,
    /// A request for the node's dashboard report, and the report (added after `Cache`, so
    /// that older peers refuse it rather than misread it).
    Report,
    /// A pull of the node's whole revoked-key set, sent in chunks (added after `Report`).
    Revoked,
}

/// Bound on a client's request frame (prompt and texts included).
pub const MAX_REQUEST_FRAME_LEN: usize = 1024 * 1024;
/// Bound on one response frame.
pub const MAX_RESPONSE_FRAME_LEN: usize = 4 * 1024 * 1024;
/// Largest prompt a node accepts, in bytes of message text.
pub const MAX_PROMPT_BYTES: usize = 32 * 1024;
/// Largest `max_tokens` a node accepts.
pub const MAX_OUTPUT_TOKENS: u32 = 2048;
/// Most texts in one embedding request.
pub const MAX_EMBED_BATCH: usize = 64;
/// Longest text to embed, in bytes.
pub const MAX_EMBED_TEXT_BYTES: usize = 8 * 1024;
/// Largest image a request may carry, in bytes of its PNG or JPEG file (the request frame, 1
/// MiB, bounds it too).
pub const MAX_IMAGE_BYTES: usize = 1000 * 1024;
/// Largest recording a request may carry, in bytes of its WAV file.
pub const MAX_AUDIO_BYTES: usize = 1000 * 1024;
/// Most chat messages in one request.
pub const MAX_MESSAGES: usize = 256;
/// Most stop strings in one request.
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 64;
/// Longest model id, in bytes.
pub const MAX_MODEL_ID_BYTES: usize = 128;
/// Most nodes a request's path may name (well above any hop budget a node grants).
pub const MAX_PATH_NODES: usize = 16;
/// Longest node name on a path, in bytes.
pub const MAX_NODE_NAME_BYTES: usize = 64;
/// Most attempts a route may list.
pub const MAX_ROUTE_ATTEMPTS: usize = 64;
/// Most fallback models a request may name.
pub const MAX_FALLBACKS: usize = 3;
/// Longest reason an attempt may give, in bytes.
pub const MAX_ATTEMPT_REASON_BYTES: usize = 1024;
/// Largest hop budget a request may carry; nodes clamp a client's to [`DEFAULT_HOP_BUDGET`].
pub const MAX_HOP_BUDGET: u8 = 8;
/// Longest API key, in bytes.
pub const MAX_API_KEY_BYTES: usize = 1024;
/// Longest custom cache key, in bytes.
pub const MAX_CACHE_KEY_BYTES: usize = 256;
/// Shortest cache TTL a request may ask for, in seconds (AI Gateway's minimum).
pub const MIN_CACHE_TTL_SECS: u32 = 60;
/// Longest cache TTL a request may ask for, in seconds (30 days).
pub const MAX_CACHE_TTL_SECS: u32 = 30 * 24 * 3600;

/// What a client asks for on a fresh stream (the stream's first and only client frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
// One value per stream, decoded once: its size on the stack does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ClientRequest {
    /// Run a model.
    Infer(Request),
    /// List the catalog and which nodes host each model.
    ListModels,
    /// The calling account's usage today (authenticated by the API key).
    Usage {
        /// The caller's API key.
        api_key: Option<ApiKey>,
    },
    /// List the catalog and which nodes host each model, under the key rule of every request:
    /// without a key only where keyless requests are served (`ListModels` is its keyless
    /// form). Last, so that the variants before it keep their wire indices.
    Models {
        /// The caller's API key.
        api_key: Option<ApiKey>,
    },
}

/// An inference request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Client-generated id, unique per client; echoed in logs and responses.
    pub id: u128,
    /// Catalog id of the model, e.g. `@ganglion/smollm2-135m-instruct`.
    pub model: String,
    /// The task input.
    pub input: Input,
    /// Generation parameters (ignored by embedding models).
    pub parameters: Parameters,
    /// Time budget in milliseconds from when the node receives the request.
    pub deadline_ms: Option<u64>,
    /// How many more times the request may be handed from node to node.
    pub hop_budget: u8,
    /// Nodes the request has passed through, entry first; it never returns to one of them.
    #[serde(deserialize_with = "bounded::path")]
    pub path: Vec<String>,
    /// The caller's API key (from a client; a node never passes it on).
    pub api_key: Option<ApiKey>,
    /// The account the entry node verified (set by nodes on handoff; a client's is ignored).
    pub account: Option<Account>,
    /// The charge id the entry node gave the request (set by nodes; a client's is ignored): the
    /// ledger charges it once, however often it is handed on.
    pub charge_id: Option<u128>,
    /// How the mesh's result cache treats the request (only the entry node reads it).
    pub cache: CachePolicy,
    /// Models to try, in order, when `model` is unavailable, overloaded or fails before its
    /// first output (as AI Gateway's fallbacks); at most [`MAX_FALLBACKS`]. Only the entry
    /// node reads them.
    #[serde(deserialize_with = "bounded::fallbacks")]
    pub fallbacks: Vec<String>,
    /// A generation another node started and was lost running (set by nodes; a client's is
    /// ignored): the new executor continues it.
    pub resume: Option<Resume>,
}

/// A generation whose executor was lost after output had reached the client: what the client
/// already has, for the next executor to read as the start of its answer and continue, with no
/// text lost or repeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The answer's text the client has (every earlier executor's, in order).
    pub text: String,
    /// The node lost last.
    pub from: String,
    /// Moves so far (this one included).
    pub moves: u8,
}

/// Most bytes of text a resumed generation carries: what [`MAX_OUTPUT_TOKENS`] tokens make.
pub const MAX_RESUME_BYTES: usize = 64 * 1024;

/// Most times one generation moves to another executor.
pub const MAX_MOVES: u8 = 2;

/// A request's cache controls, as AI Gateway's `cf-aig-cache-ttl`, `cf-aig-skip-cache` and
/// `cf-aig-cache-key` headers give them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePolicy {
    /// How long a stored answer may be served, in seconds ([`MIN_CACHE_TTL_SECS`] to
    /// [`MAX_CACHE_TTL_SECS`]); unset: the entry node's default.
    pub ttl_secs: Option<u32>,
    /// Neither look up nor store: always run the model (`BYPASS`).
    pub skip: bool,
    /// A key of the caller's own in place of the input and parameters (still per account and
    /// model): requests with the same key share one answer.
    pub key: Option<String>,
}

/// What the cache did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CacheStatus {
    /// Answered from the cache: no model ran, no Neurons charged.
    Hit,
    /// Not in the cache: a model ran, and its answer was stored.
    Miss,
    /// The cache was not used: skipped, not deterministic, or no shard anywhere.
    Bypass,
}

impl CacheStatus {
    /// `HIT`, `MISS` or `BYPASS`, as AI Gateway's `cf-aig-cache-status` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
        }
    }
}

/// The cache's part in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReport {
    /// What it did.
    pub status: CacheStatus,
    /// The shard that owns the request's key, as `<node>/<index>` (on a hit: the one that
    /// answered).
    pub shard: Option<String>,
    /// On a hit, how old the stored answer is, in milliseconds.
    pub age_ms: Option<u64>,
}

impl CacheReport {
    /// The cache was not used.
    pub fn bypass() -> Self {
        Self {
            status: CacheStatus::Bypass,
            shard: None,
            age_ms: None,
        }
    }
}

impl Request {
    /// A request for `model` with `input`, everything else as a client starts it: a fresh
    /// random id, the model's default parameters, the node's default deadline, the default hop
    /// budget, no key, the cache as the entry node's defaults say.
    pub fn new(model: impl Into<String>, input: Input) -> Self {
        Self {
            id: rand::random(),
            model: model.into(),
            input,
            parameters: Parameters::default(),
            deadline_ms: None,
            hop_budget: DEFAULT_HOP_BUDGET,
            path: Vec::new(),
            api_key: None,
            account: None,
            charge_id: None,
            cache: CachePolicy::default(),
            fallbacks: Vec::new(),
            resume: None,
        }
    }
}

/// An account's usage today, mesh-wide, as the node asked knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUsage {
    /// The account.
    pub account: String,
    /// Its plan.
    pub plan: Plan,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Micro-Neurons used today.
    pub used_micro: u64,
    /// Requests charged today.
    pub requests: u64,
    /// Requests answered from the cache today (free).
    pub cached_requests: u64,
    /// The free daily allocation, in micro-Neurons.
    pub allocation_micro: u64,
    /// The day's limit in micro-Neurons, if any.
    pub limit_micro: Option<u64>,
    /// When the day resets (Unix seconds).
    pub resets_at: u64,
}

/// An API key as it travels: its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// An account, as the entry node verified it from an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The account's name.
    pub name: String,
    /// The key that was used (its id).
    pub key_id: String,
    /// The account's plan.
    pub plan: Plan,
    /// Most Neurons the account may use a day, if limited below its plan.
    pub daily_limit: Option<u64>,
}

/// Longest account name, in bytes.
pub const MAX_ACCOUNT_NAME_BYTES: usize = 64;

/// Whether `name` can name an account: 1 to [`MAX_ACCOUNT_NAME_BYTES`] bytes without control
/// characters. Keys are signed only for such names; a handed-over request or an advert naming
/// any other is refused, so that no record anywhere carries one.
pub fn account_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_ACCOUNT_NAME_BYTES && !name.chars().any(char::is_control)
}

/// Whether `kid` names a key: 16 lowercase hex digits, or `-` for keyless (anonymous) access.
pub fn key_id_ok(kid: &str) -> bool {
    kid == "-" || (kid.len() == 16 && kid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// An account's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// Stopped at its free daily allocation.
    Free,
    /// Keeps running past it; the overage is billable.
    Paid,
}

/// Hops a client request may take by default (entry node plus up to three handoffs).
pub const DEFAULT_HOP_BUDGET: u8 = 3;

/// Task input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Input {
    /// Chat messages for a text-generation model.
    Chat(#[serde(deserialize_with = "bounded::messages")] Vec<ChatMessage>),
    /// Texts for an embedding model.
    Embed(#[serde(deserialize_with = "bounded::texts")] Vec<String>),
    /// Texts for a text classifier (sentiment, moderation, language): one list of labels each.
    Classify(#[serde(deserialize_with = "bounded::texts")] Vec<String>),
    /// An image (the bytes of a PNG or JPEG file) for an image model: OCR reads its text, an
    /// image classifier labels it. Bounded by the request frame, then by [`MAX_IMAGE_BYTES`].
    Image(Vec<u8>),
    /// A recording (the bytes of a WAV file) for a speech model, which answers its text.
    /// Bounded by the request frame, then by [`MAX_AUDIO_BYTES`].
    Audio(Vec<u8>),
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
}

/// Chat roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// Generation parameters. Unset means the model's default; no temperature (or 0) means
/// greedy decoding, so identical requests give identical output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Sampling temperature; `None` or 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold.
    pub top_p: Option<f32>,
    /// Seed of the sampler; with a temperature, the same seed gives the same output.
    pub seed: Option<u64>,
    /// Strings that end generation.
    #[serde(deserialize_with = "bounded::stops")]
    pub stop: Vec<String>,
}

/// One frame of a node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
// A request has one final frame and many deltas, which are moved, not copied, on their way.
#[allow(clippy::large_enum_variant)]
pub enum ResponseFrame {
    /// Newly generated text.
    Delta(String),
    /// The complete answer; the last frame of a successful request.
    Final(FinalResponse),
    /// The request failed; the last frame.
    Error(WireError),
    /// Answer to [`ClientRequest::Usage`].
    Usage(AccountUsage),
    /// Answer to [`ClientRequest::ListModels`].
    Models(Vec<ModelListing>),
}

/// The complete answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalResponse {
    /// The request's id.
    pub id: u128,
    /// The output.
    pub output: Output,
    /// Tokens in and out.
    pub usage: Usage,
    /// Where the time went.
    pub timings: Timings,
    /// Which nodes handled it.
    pub route: Route,
    /// What the cache did (set by the entry node).
    pub cache: CacheReport,
}

impl FinalResponse {
    /// Whether the answer came from the result cache (no model ran for it).
    pub fn from_cache(&self) -> bool {
        self.cache.status == CacheStatus::Hit
    }

    /// One line for people: where the answer came from, the way it took and the time at each
    /// node; an answer from the cache says so, and which shard held it.
    pub fn route_line(&self) -> String {
        let route = &self.route;
        let times: Vec<String> = route
            .per_hop
            .iter()
            .map(|h| format!("{} {:.1} ms", h.node, h.total_ms))
            .collect();
        let hops = route.hops();
        let mut line = if self.from_cache() {
            let mut from = String::from("from the cache");
            if let Some(shard) = &self.cache.shard {
                from.push_str(&format!(" (shard {shard}"));
                if let Some(age) = self.cache.age_ms {
                    from.push_str(&format!(", stored {:.1} s ago", age as f64 / 1000.0));
                }
                from.push(')');
            }
            format!(
                "{from} at {}, no model ran ({})",
                route.entry,
                times.join(", ")
            )
        } else {
            format!(
                "{} (executed by {}, {hops} hop{}; time at each node: {})",
                route.path.join(" → "),
                route.executed_by,
                if hops == 1 { "" } else { "s" },
                times.join(", ")
            )
        };
        for m in &route.migrations {
            line.push_str(&format!(
                "; migrated from {} at token {}",
                m.from, m.at_token
            ));
        }
        if !route.models_tried.is_empty() {
            let tried: Vec<String> = route
                .models_tried
                .iter()
                .map(|m| format!("{} ({})", m.model, m.code.as_str()))
                .collect();
            line.push_str(&format!(
                "; answered by {} after {}",
                route.model,
                tried.join(", ")
            ));
        }
        line
    }
}

/// Model output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Output {
    /// Generated text.
    Text {
        /// The whole text.
        text: String,
        /// Why generation ended.
        finish_reason: FinishReason,
    },
    /// One unit-length vector per input text.
    Embeddings(Vec<Vec<f32>>),
    /// Per input text (or for the one image), its labels with their scores, the likeliest
    /// first.
    Labels(Vec<Vec<Label>>),
    /// The text an OCR model read, one region (a line) each, top to bottom.
    Regions(Vec<TextRegion>),
}

/// A region of an image and the text read in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextRegion {
    /// The text.
    pub text: String,
    /// How sure the model is of it, 0 to 1.
    pub score: f32,
    /// Left edge, in the image's pixels.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Most labels one text or image may be given.
pub const MAX_LABELS: usize = 32;
/// Longest label, in bytes.
pub const MAX_LABEL_BYTES: usize = 64;
/// Most regions an OCR answer may hold.
pub const MAX_REGIONS: usize = 512;
/// Longest text of one region, in bytes.
pub const MAX_REGION_TEXT_BYTES: usize = 4096;
/// Longest embedding vector.
pub const MAX_DIMENSIONS: usize = 8192;

impl Output {
    /// Whether the output is within the protocol's bounds (labels, regions and vectors of
    /// bounded sizes, finite scores from 0 to 1): what a node checks of an answer a peer sent
    /// before keeping or passing on anything of it.
    pub fn within_bounds(&self) -> bool {
        let score_ok = |s: f32| (0.0..=1.0).contains(&s);
        match self {
            Self::Text { .. } => true,
            Self::Embeddings(vectors) => vectors
                .iter()
                .all(|v| v.len() <= MAX_DIMENSIONS && v.iter().all(|x| x.is_finite())),
            Self::Labels(lists) => lists.iter().all(|labels| {
                labels.len() <= MAX_LABELS
                    && labels
                        .iter()
                        .all(|l| l.label.len() <= MAX_LABEL_BYTES && score_ok(l.score))
            }),
            Self::Regions(regions) => {
                regions.len() <= MAX_REGIONS
                    && regions
                        .iter()
                        .all(|r| r.text.len() <= MAX_REGION_TEXT_BYTES && score_ok(r.score))
            }
        }
    }

    /// Whether the output answers `input`, within bounds: text for a chat, one vector or list
    /// of labels per text, one list of labels or the regions read for an image.
    pub fn answers(&self, input: &Input) -> bool {
        let fits = match (input, self) {
            (Input::Chat(_), Self::Text { .. }) => true,
            (Input::Embed(texts), Self::Embeddings(vectors)) => {
                vectors.len() == texts.len()
                    && vectors
                        .windows(2)
                        .all(|pair| pair[0].len() == pair[1].len())
            }
            (Input::Classify(texts), Self::Labels(lists)) => lists.len() == texts.len(),
            (Input::Image(_), Self::Labels(lists)) => lists.len() == 1,
            (Input::Image(_), Self::Regions(_)) => true,
            (Input::Audio(_), Self::Text { .. }) => true,
            _ => false,
        };
        fits && self.within_bounds()
    }
}

/// A label a classifier gives a text, with its score (0 to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// The label, e.g. `POSITIVE`, `hate_speech` or `eng`.
    pub label: String,
    /// How likely it is, 0 to 1.
    pub score: f32,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its answer.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (or embedded tokens).
    pub input_tokens: u32,
    /// Of the prompt tokens, those not read again: the executor reused the work of an earlier
    /// prompt of the same account that began the same way.
    pub cached_input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// What the request cost, in micro-Neurons (millionths of a Neuron).
    pub micro_neurons: u64,
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting in the model's admission queue.
    pub queue_ms: f64,
    /// From arrival to the first generated token (text generation only).
    pub first_token_ms: Option<f64>,
    /// From arrival to the final frame.
    pub total_ms: f64,
}

/// Which nodes handled a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// The node the client connected to.
    pub entry: String,
    /// The node that ran the model.
    pub executed_by: String,
    /// Every node the request passed through, entry first, executor last.
    pub path: Vec<String>,
    /// Candidates tried and given up on before the one that served, with why.
    pub attempts: Vec<Attempt>,
    /// Time from arrival to final frame at each node of the path (entry first); the
    /// difference between neighbours is the time a hop added.
    pub per_hop: Vec<HopTime>,
    /// The model that answered (the request's, or one of its fallbacks).
    pub model: String,
    /// The request's models given up on before the one that answered, with why.
    pub models_tried: Vec<ModelAttempt>,
    /// Executors lost after output had started, whose generation another continued.
    pub migrations: Vec<Migration>,
}

/// A generation that moved: its executor was lost mid-stream and another continued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// The executor lost.
    pub from: String,
    /// The answer's tokens the next executor took over, as it counted them.
    pub at_token: u32,
}

/// A model of a request's list (its own, or a fallback) that did not answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelAttempt {
    /// The model.
    pub model: String,
    /// Why it did not answer, as a matchable code.
    pub code: ErrorCode,
    /// Why it did not answer, for people.
    pub reason: String,
}

impl Route {
    /// Handoffs between nodes (0 when the entry node served).
    pub fn hops(&self) -> usize {
        self.path.len().saturating_sub(1)
    }

    /// Whether a route a peer sent back is within the protocol's bounds: as many nodes as a
    /// path may name, names of at most [`MAX_NODE_NAME_BYTES`], at most
    /// [`MAX_ROUTE_ATTEMPTS`] attempts with reasons of at most [`MAX_ATTEMPT_REASON_BYTES`].
    /// A node checks it before adding itself, and before keeping anything of it.
    pub fn within_bounds(&self) -> bool {
        let name_ok = |n: &String| n.len() <= MAX_NODE_NAME_BYTES;
        self.path.len() <= MAX_PATH_NODES
            && self.per_hop.len() <= MAX_PATH_NODES
            && self.attempts.len() <= MAX_ROUTE_ATTEMPTS
            && name_ok(&self.entry)
            && name_ok(&self.executed_by)
            && self.path.iter().all(name_ok)
            && self.per_hop.iter().all(|h| name_ok(&h.node))
            && self
                .attempts
                .iter()
                .all(|a| name_ok(&a.node) && a.reason.len() <= MAX_ATTEMPT_REASON_BYTES)
            && self.model.len() <= MAX_MODEL_ID_BYTES
            && self.migrations.len() <= usize::from(MAX_MOVES)
            && self.migrations.iter().all(|m| name_ok(&m.from))
            && self.models_tried.len() <= MAX_FALLBACKS
            && self.models_tried.iter().all(|m| {
                m.model.len() <= MAX_MODEL_ID_BYTES && m.reason.len() <= MAX_ATTEMPT_REASON_BYTES
            })
    }
}

/// A candidate that did not serve a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The node tried.
    pub node: String,
    /// Why it did not serve, as a matchable code.
    pub code: ErrorCode,
    /// Why it did not serve, for people.
    pub reason: String,
}

/// Time a request spent at one node of its path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopTime {
    /// The node.
    pub node: String,
    /// Milliseconds from arrival to the first generated token passing through (text only).
    pub first_token_ms: Option<f64>,
    /// Milliseconds from arrival to the final frame.
    pub total_ms: f64,
}

/// A catalog model and who hosts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelListing {
    /// Catalog id.
    pub id: String,
    /// `text-generation`, `text-embeddings` or `text-classification`.
    pub task: String,
    /// Its price class: `lightweight`, `standard` or `complex`.
    pub class: String,
    /// What a request costs, e.g. "1 Neurons per request (per text …)".
    pub pricing: String,
    /// Nodes hosting it now.
    pub hosted_by: Vec<String>,
}

/// A failed request, as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}{}", if *.partial { " (partial: some output was already streamed)" } else { "" })]
pub struct WireError {
    /// Stable, matchable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// Some output had already been streamed when the request failed.
    pub partial: bool,
}

impl WireError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            partial: false,
        }
    }

    /// Builds an error that ends a request after part of its output reached the requester.
    pub fn partial(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            partial: true,
            ..Self::new(code, message)
        }
    }
}

/// Stable error codes. New codes are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The model id is not in the catalog.
    UnknownModel,
    /// The request is malformed (wrong input kind, bad parameter).
    InvalidInput,
    /// The prompt, `max_tokens` or batch exceeds the node's bounds.
    TooLarge,
    /// The model's queue is full; retry later or elsewhere.
    Overloaded,
    /// No reachable node can run the model now.
    Unavailable,
    /// The deadline passed before the answer was complete.
    DeadlineExceeded,
    /// A bug or an unexpected failure on the node.
    Internal,
    /// The node running the request was lost after output had started (see `partial`).
    PeerLost,
    /// The request was cancelled: the requester went away, or read too slowly to keep up.
    Cancelled,
    /// Prompt tokens plus `max_tokens` exceed the model's context window.
    ContextLengthExceeded,
    /// No API key, or one that is malformed, forged, expired or revoked: nothing ran.
    Unauthenticated,
    /// The account has no Neurons left today (or hit its daily limit): nothing ran.
    QuotaExceeded,
}

impl ErrorCode {
    /// The code as a stable string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownModel => "unknown_model",
            Self::InvalidInput => "invalid_input",
            Self::TooLarge => "too_large",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Internal => "internal",
            Self::PeerLost => "peer_lost",
            Self::Cancelled => "cancelled",
            Self::ContextLengthExceeded => "context_length_exceeded",
            Self::Unauthenticated => "unauthenticated",
            Self::QuotaExceeded => "quota_exceeded",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lists a client controls, bounded while they are decoded: an element can take far more memory
/// than its bytes on the wire (an empty string is 1 byte there and 24 here), so a frame's length
/// alone does not bound what decoding it allocates. The bounds are 4x [`validate`]'s, which
/// then refuses with its typed error what lies between.
mod bounded {
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

    use super::{
        ChatMessage, MAX_EMBED_BATCH, MAX_FALLBACKS, MAX_MESSAGES, MAX_PATH_NODES,
        MAX_STOP_SEQUENCES,
    };

    pub fn messages<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChatMessage>, D::Error> {
        at_most::<_, _, { 4 * MAX_MESSAGES }>(d)
    }

    pub fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        at_most::<_, _, { 4 * MAX_EMBED_BATCH }>(d)
    }

    pub fn stops<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        at_most::<_, _, { 4 * MAX_STOP_SEQUENCES }>(d)
    }

    pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        at_most::<_, _, { 4 * MAX_PATH_NODES }>(d)
    }

    pub fn fallbacks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        at_most::<_, _, { 4 * MAX_FALLBACKS }>(d)
    }

    fn at_most<'de, D: Deserializer<'de>, T: Deserialize<'de>, const N: usize>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        struct AtMost<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for AtMost<T, N> {
            type Value = Vec<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a list of at most {N} elements")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                // bincode knows the length before the first element: refuse before allocating.
                if let Some(len) = seq.size_hint().filter(|len| *len > N) {
                    return Err(A::Error::invalid_length(len, &self));
                }
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N));
                while let Some(element) = seq.next_element()? {
                    if out.len() == N {
                        return Err(A::Error::invalid_length(N + 1, &self));
                    }
                    out.push(element);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(AtMost::<T, N>(PhantomData))
    }
}

/// Whether `id` can name a model: 1 to [`MAX_MODEL_ID_BYTES`] bytes.
pub fn model_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_MODEL_ID_BYTES
}

/// Whether `name` can name a node: 1 to [`MAX_NODE_NAME_BYTES`] bytes.
pub fn node_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NODE_NAME_BYTES
}

/// Checks a request against the protocol's bounds; nodes call this before queueing anything.
/// Every field a client controls is bounded here: sizes, counts, numbers.
pub fn validate(request: &Request) -> Result<(), WireError> {
    let p = &request.parameters;
    let invalid = |message: String| Err(WireError::new(ErrorCode::InvalidInput, message));
    let too_large = |message: String| Err(WireError::new(ErrorCode::TooLarge, message));
    if !model_id_ok(&request.model) {
        return invalid(format!(
            "model id must be 1 to {MAX_MODEL_ID_BYTES} bytes, got {}",
            request.model.len()
        ));
    }
    if request.fallbacks.len() > MAX_FALLBACKS || !request.fallbacks.iter().all(|m| model_id_ok(m))
    {
        return invalid(format!(
            "at most {MAX_FALLBACKS} fallback models, each id of 1 to {MAX_MODEL_ID_BYTES} bytes"
        ));
    }
    if request.path.len() > MAX_PATH_NODES || !request.path.iter().all(|n| node_name_ok(n)) {
        return invalid(format!(
            "path must name at most {MAX_PATH_NODES} nodes of 1 to {MAX_NODE_NAME_BYTES} bytes"
        ));
    }
    if let Some(resume) = &request.resume
        && (resume.text.len() > MAX_RESUME_BYTES
            || !node_name_ok(&resume.from)
            || !(1..=MAX_MOVES).contains(&resume.moves)
            || !matches!(request.input, Input::Chat(_)))
    {
        return invalid(format!(
            "a resumed generation is a chat with at most {MAX_RESUME_BYTES} bytes of text, moved at most {MAX_MOVES} times, from a node named in 1 to {MAX_NODE_NAME_BYTES} bytes"
        ));
    }
    if request
        .api_key
        .as_ref()
        .is_some_and(|k| k.0.len() > MAX_API_KEY_BYTES)
    {
        return Err(WireError::new(
            ErrorCode::Unauthenticated,
            "malformed API key",
        ));
    }
    if let Some(account) = &request.account
        && (!account_name_ok(&account.name) || !key_id_ok(&account.key_id))
    {
        return invalid(format!(
            "an account must be 1 to {MAX_ACCOUNT_NAME_BYTES} bytes without control characters, \
             with a key id of 16 lowercase hex digits"
        ));
    }
    if let Some(key) = &request.cache.key
        && (key.is_empty() || key.len() > MAX_CACHE_KEY_BYTES)
    {
        return invalid(format!(
            "a cache key must be 1 to {MAX_CACHE_KEY_BYTES} bytes, got {}",
            key.len()
        ));
    }
    if let Some(ttl) = request.cache.ttl_secs
        && !(MIN_CACHE_TTL_SECS..=MAX_CACHE_TTL_SECS).contains(&ttl)
    {
        return invalid(format!(
            "cache TTL {ttl} s is outside {MIN_CACHE_TTL_SECS} to {MAX_CACHE_TTL_SECS} s"
        ));
    }
    if request.hop_budget > MAX_HOP_BUDGET {
        return invalid(format!(
            "hop budget {} exceeds the limit of {MAX_HOP_BUDGET}",
            request.hop_budget
        ));
    }
    if p.stop.len() > MAX_STOP_SEQUENCES {
        return too_large(format!(
            "{} stop strings exceed the limit of {MAX_STOP_SEQUENCES}",
            p.stop.len()
        ));
    }
    if let Some(bad) = p
        .stop
        .iter()
        .find(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return invalid(format!(
            "stop strings must be 1 to {MAX_STOP_BYTES} bytes, got one of {}",
            bad.len()
        ));
    }
    if let Some(max) = p.max_tokens {
        if max == 0 {
            return Err(WireError::new(
                ErrorCode::InvalidInput,
                "max_tokens must be at least 1",
            ));
        }
        if max > MAX_OUTPUT_TOKENS {
            return Err(WireError::new(
                ErrorCode::TooLarge,
                format!("max_tokens {max} exceeds the limit of {MAX_OUTPUT_TOKENS}"),
            ));
        }
    }
    if let Some(t) = p.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(WireError::new(
            ErrorCode::InvalidInput,
            format!("temperature {t} is outside 0..=2"),
        ));
    }
    if let Some(top_p) = p.top_p
        && !(top_p > 0.0 && top_p <= 1.0)
    {
        return Err(WireError::new(
            ErrorCode::InvalidInput,
            format!("top_p {top_p} is outside (0, 1]"),
        ));
    }
    match &request.input {
        Input::Chat(messages) => {
            if messages.is_empty() {
                return Err(WireError::new(ErrorCode::InvalidInput, "no chat messages"));
            }
            if messages.len() > MAX_MESSAGES {
                return too_large(format!(
                    "{} chat messages exceed the limit of {MAX_MESSAGES}",
                    messages.len()
                ));
            }
            if messages.iter().any(|m| m.content.contains('\0')) {
                return Err(WireError::new(
                    ErrorCode::InvalidInput,
                    "chat messages may not contain NUL characters",
                ));
            }
            let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
            if bytes > MAX_PROMPT_BYTES {
                return Err(WireError::new(
                    ErrorCode::TooLarge,
                    format!("prompt of {bytes} bytes exceeds the limit of {MAX_PROMPT_BYTES}"),
                ));
            }
        }
        Input::Embed(texts) => texts_ok(texts, "no texts to embed")?,
        Input::Classify(texts) => texts_ok(texts, "no texts to classify")?,
        Input::Image(bytes) => {
            if bytes.len() > MAX_IMAGE_BYTES {
                return Err(WireError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "an image of {} bytes exceeds the limit of {MAX_IMAGE_BYTES}",
                        bytes.len()
                    ),
                ));
            }
            // Only the header is read here; the node checks the dimensions before decoding.
            // (The recording's length, likewise, below.)
            if !(bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.starts_with(&[0xff, 0xd8, 0xff]))
            {
                return Err(WireError::new(
                    ErrorCode::InvalidInput,
                    "the image is not a PNG or JPEG file",
                ));
            }
        }
        Input::Audio(bytes) => {
            if bytes.len() > MAX_AUDIO_BYTES {
                return Err(WireError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "a recording of {} bytes exceeds the limit of {MAX_AUDIO_BYTES} (about 32 s of 16 kHz 16-bit mono WAV: convert longer or richer recordings first)",
                        bytes.len()
                    ),
                ));
            }
            if !(bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE") {
                return Err(WireError::new(
                    ErrorCode::InvalidInput,
                    "the recording is not a WAV file",
                ));
            }
        }
    }
    Ok(())
}

/// Checks a batch of texts (to embed or classify) against the batch and text bounds.
fn texts_ok(texts: &[String], empty: &str) -> Result<(), WireError> {
    if texts.is_empty() {
        return Err(WireError::new(ErrorCode::InvalidInput, empty));
    }
    if texts.len() > MAX_EMBED_BATCH {
        return Err(WireError::new(
            ErrorCode::TooLarge,
            format!(
                "{} texts exceed the batch limit of {MAX_EMBED_BATCH}",
                texts.len()
            ),
        ));
    }
    if let Some(long) = texts.iter().find(|t| t.len() > MAX_EMBED_TEXT_BYTES) {
        return Err(WireError::new(
            ErrorCode::TooLarge,
            format!(
                "a text of {} bytes exceeds the limit of {MAX_EMBED_TEXT_BYTES}",
                long.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(text: &str) -> Request {
        Request::new(
            "m",
            Input::Chat(vec![ChatMessage {
                role: Role::User,
                content: text.into(),
            }]),
        )
    }

    #[test]
    fn fallbacks_are_bounded_in_number_and_length() {
        let mut request = chat("hi");
        request.fallbacks = vec!["a".into(); MAX_FALLBACKS];
        assert!(validate(&request).is_ok());
        request.fallbacks.push("b".into());
        assert_eq!(
            validate(&request).unwrap_err().code,
            ErrorCode::InvalidInput
        );
        request.fallbacks = vec![String::new()];
        assert_eq!(
            validate(&request).unwrap_err().code,
            ErrorCode::InvalidInput
        );
        request.fallbacks = vec!["m".repeat(MAX_MODEL_ID_BYTES + 1)];
        assert_eq!(
            validate(&request).unwrap_err().code,
            ErrorCode::InvalidInput
        );
        // Far past the bound, a list is refused before it is built.
        request.fallbacks = vec!["a".into(); 4 * MAX_FALLBACKS + 1];
        let frame =
            crate::codec::encode(&ClientRequest::Infer(request), usize::MAX).expect("encode");
        assert!(crate::codec::decode_payload::<ClientRequest>(&frame[5..]).is_err());
    }

    #[test]
    fn a_list_past_its_bound_is_refused_before_it_is_built() {
        let frame = |input: Input| {
            let request = ClientRequest::Infer(Request::new("m", input));
            crate::codec::encode(&request, usize::MAX).expect("encode")
        };
        // A million empty texts fit a request frame (1 byte each) but would take 24 MB.
        let empty = frame(Input::Embed(vec![String::new(); 1_000_000]));
        assert!(empty.len() - 5 <= MAX_REQUEST_FRAME_LEN);
        let decoded = crate::codec::decode_payload::<ClientRequest>(&empty[5..]);
        assert!(
            matches!(&decoded, Err(crate::FrameError::Malformed(m)) if m.contains("at most 256")),
            "{decoded:?}"
        );
        // Between validate's bound and 4x it, decoding succeeds and validate refuses, typed.
        let many = frame(Input::Embed(vec!["a".into(); MAX_EMBED_BATCH + 1]));
        let Ok(ClientRequest::Infer(request)) = crate::codec::decode_payload(&many[5..]) else {
            panic!("decodes");
        };
        assert_eq!(
            validate(&request).map_err(|e| e.code),
            Err(ErrorCode::TooLarge)
        );
        let mut stops = chat("hi");
        stops.parameters.stop = vec!["s".into(); 4 * MAX_STOP_SEQUENCES + 1];
        let stops = crate::codec::encode(&ClientRequest::Infer(stops), usize::MAX).expect("encode");
        assert!(crate::codec::decode_payload::<ClientRequest>(&stops[5..]).is_err());
    }

    #[test]
    fn a_route_from_a_peer_is_kept_only_within_the_path_bounds() {
        let name = |i: usize| format!("n{i}");
        let route = Route {
            entry: name(0),
            executed_by: name(1),
            path: (0..MAX_PATH_NODES).map(name).collect(),
            attempts: vec![
                Attempt {
                    node: name(2),
                    code: ErrorCode::Overloaded,
                    reason: "busy".into(),
                };
                MAX_ROUTE_ATTEMPTS
            ],
            per_hop: Vec::new(),
            model: "m".into(),
            models_tried: vec![
                ModelAttempt {
                    model: "m".into(),
                    code: ErrorCode::Unavailable,
                    reason: "no host".into(),
                };
                MAX_FALLBACKS
            ],
            migrations: vec![
                Migration {
                    from: name(3),
                    at_token: u32::MAX,
                };
                usize::from(MAX_MOVES)
            ],
        };
        assert!(route.within_bounds());
        let mut moved = route.clone();
        moved.migrations.push(moved.migrations[0].clone());
        assert!(!moved.within_bounds(), "more moves than a generation makes");
        let mut tried = route.clone();
        tried.models_tried.push(tried.models_tried[0].clone());
        assert!(
            !tried.within_bounds(),
            "more models tried than a request may name"
        );
        let mut long = route.clone();
        long.path.push(name(99));
        assert!(!long.within_bounds(), "too many nodes");
        let mut long = route.clone();
        long.executed_by = "x".repeat(MAX_NODE_NAME_BYTES + 1);
        assert!(!long.within_bounds(), "a long name");
        let mut long = route.clone();
        long.attempts.push(long.attempts[0].clone());
        assert!(!long.within_bounds(), "too many attempts");
        let mut long = route;
        long.attempts[0].reason = "x".repeat(MAX_ATTEMPT_REASON_BYTES + 1);
        assert!(!long.within_bounds(), "a long reason");
    }

    #[test]
    fn bounds_give_typed_errors() {
        assert!(validate(&chat("hi")).is_ok());
        assert_eq!(
            validate(&chat("a\0b")).unwrap_err().code,
            ErrorCode::InvalidInput,
            "a NUL cannot reach a C library"
        );
        assert_eq!(
            validate(&chat(&"x".repeat(MAX_PROMPT_BYTES + 1)))
                .unwrap_err()
                .code,
            ErrorCode::TooLarge
        );
        let mut r = chat("hi");
        r.parameters.max_tokens = Some(MAX_OUTPUT_TOKENS + 1);
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::TooLarge);
        r.parameters.max_tokens = Some(0);
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
        r.parameters.max_tokens = None;
        r.parameters.temperature = Some(f32::NAN);
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
        r.input = Input::Embed(vec!["a".into(); MAX_EMBED_BATCH + 1]);
        r.parameters = Parameters::default();
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::TooLarge);
        r.input = Input::Embed(vec![]);
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
    }

    #[test]
    fn everything_a_client_sends_is_bounded() {
        let mut r = chat("hi");
        r.parameters.stop = vec!["x".into(); MAX_STOP_SEQUENCES + 1];
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::TooLarge);
        r.parameters.stop = vec!["x".repeat(MAX_STOP_BYTES + 1)];
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
        r.parameters.stop = vec![String::new()];
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
        r.parameters.stop = vec!["x".repeat(MAX_STOP_BYTES); MAX_STOP_SEQUENCES];
        assert!(validate(&r).is_ok());

        let mut r = chat("hi");
        r.input = Input::Chat(
            (0..=MAX_MESSAGES)
                .map(|_| ChatMessage {
                    role: Role::User,
                    content: "a".into(),
                })
                .collect(),
        );
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::TooLarge);

        let mut r = chat("hi");
        r.model = "m".repeat(MAX_MODEL_ID_BYTES + 1);
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
        let mut r = chat("hi");
        r.path = vec!["n".into(); MAX_PATH_NODES + 1];
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
        let mut r = chat("hi");
        r.path = vec!["n".repeat(MAX_NODE_NAME_BYTES + 1)];
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
        let mut r = chat("hi");
        r.hop_budget = u8::MAX;
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
        let mut r = chat("hi");
        r.cache.key = Some("k".repeat(MAX_CACHE_KEY_BYTES + 1));
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
        r.cache.key = Some(String::new());
        assert_eq!(validate(&r).unwrap_err().code, ErrorCode::InvalidInput);
        r.cache.key = Some("k".repeat(MAX_CACHE_KEY_BYTES));
        assert!(validate(&r).is_ok());
        for (ttl, ok) in [
            (59, false),
            (60, true),
            (MAX_CACHE_TTL_SECS, true),
            (MAX_CACHE_TTL_SECS + 1, false),
        ] {
            r.cache.ttl_secs = Some(ttl);
            assert_eq!(validate(&r).is_ok(), ok, "ttl {ttl}");
        }
    }

    #[test]
    fn requests_and_responses_survive_the_codec() {
        let request = ClientRequest::Infer(chat("hello"));
        let frame = crate::codec::encode(&request, MAX_REQUEST_FRAME_LEN).unwrap();
        let back: ClientRequest = crate::codec::decode_payload(&frame[5..]).unwrap();
        assert_eq!(back, request);
        let error = ResponseFrame::Error(WireError::new(ErrorCode::Overloaded, "queue full"));
        let frame = crate::codec::encode(&error, MAX_RESPONSE_FRAME_LEN).unwrap();
        assert_eq!(
            crate::codec::decode_payload::<ResponseFrame>(&frame[5..]).unwrap(),
            error
        );
    }
}
