//! The client: connect to the first reachable node of a list, then send requests, each on its
//! own QUIC stream.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rustls::pki_types::CertificateDer;

use crate::codec::{read_frame, write_frame};
use crate::protocol::{
    ALPN_CLIENT, CLOSE_CLIENTS_LOOPBACK_ONLY, CLOSE_NOT_SERVING, CLOSE_OVERLOADED, CachePolicy,
    ChatMessage, ClientRequest, ErrorCode, FinalResponse, Input, Label, MAX_REQUEST_FRAME_LEN,
    MAX_RESPONSE_FRAME_LEN, ModelListing, Output, Parameters, Request, ResponseFrame, Role,
    WireError,
};

/// The DNS name every node certificate carries; clients verify it against the cluster CA.
pub const NODE_SERVER_NAME: &str = "node.ganglion.internal";

/// The longest a client waits for its handshake with a node to finish, counted from its first
/// packet, once the node has answered (a node that answers nothing within the connect timeout
/// is unreachable). A node gives every handshake at least this long, so that it never drops a
/// connection its client already counts as open.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait before trying an overloaded node again.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The builder was given something unusable.
    #[error("client configuration: {0}")]
    Config(String),
    /// No node of the list could be reached.
    #[error("no node reachable: {}", .tried.iter().map(|(a, e)| format!("{a}: {e}")).collect::<Vec<_>>().join("; "))]
    Unreachable {
        /// Each address tried, and why it failed.
        tried: Vec<(SocketAddr, String)>,
    },
    /// The connection or stream broke.
    #[error("connection to {node} failed: {message}")]
    Connection {
        /// The node.
        node: SocketAddr,
        /// What happened.
        message: String,
    },
    /// The node answered something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The node refused or failed the request, with a stable code.
    // Transparent: its text is the node's error, once (not again as its own cause).
    #[error(transparent)]
    Server(#[from] WireError),
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The node's error code, when the node answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server(e) => Some(e.code),
            _ => None,
        }
    }

    /// How long to wait before trying again, when trying again later may succeed: the mesh
    /// (a full queue, or a node that refused or gave up on the connection) was `overloaded`.
    /// The QUIC form of HTTP's `retry-after`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.code() {
            Some(ErrorCode::Overloaded) => Some(OVERLOADED_RETRY_AFTER),
            _ => None,
        }
    }
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    nodes: Vec<SocketAddr>,
    ca: Vec<CertificateDer<'static>>,
    connect_timeout: Duration,
    request_timeout: Duration,
    api_key: Option<crate::protocol::ApiKey>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            ca: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(120),
            api_key: None,
        }
    }
}

impl ClientBuilder {
    /// Adds a node address; the client connects to the first reachable one, in order.
    pub fn node(mut self, addr: SocketAddr) -> Self {
        self.nodes.push(addr);
        self
    }

    /// Trusts the cluster CA in PEM text.
    pub fn ca_pem(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        use rustls_pki_types::pem::PemObject;
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Config("no certificate in the CA file".into()));
        }
        self.ca.extend(certs);
        Ok(self)
    }

    /// Trusts the cluster CA in a PEM file (`ca.crt` of any identity folder).
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
        self.ca_pem(&pem)
    }

    /// Time allowed per node to connect.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for a whole request (also sent to the node as its deadline).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The API key every request carries (`ganglion-node issue-key` makes one).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(crate::protocol::ApiKey(key.into()));
        self
    }

    /// Connects to the first reachable node.
    pub async fn connect(self) -> Result<Client, ClientError> {
        if self.nodes.is_empty() {
            return Err(ClientError::Config("no node address given".into()));
        }
        if self.ca.is_empty() {
            return Err(ClientError::Config("no cluster CA given".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in &self.ca {
            roots
                .add(cert.clone())
                .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(2)));
        config.transport_config(Arc::new(transport));
        let bind: SocketAddr = if self.nodes[0].is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("literal address");
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| ClientError::Config(format!("cannot open a UDP socket: {e}")))?;
        endpoint.set_default_client_config(config);

        let mut tried = Vec::new();
        let mut busy = 0;
        for node in &self.nodes {
            match self.dial(&endpoint, *node).await {
                Ok(connection) => {
                    return Ok(Client {
                        endpoint,
                        connection,
                        node: *node,
                        request_timeout: self.request_timeout,
                        api_key: self.api_key.clone(),
                    });
                }
                Err(failure) => {
                    busy += usize::from(failure.busy);
                    tried.push((*node, failure.why));
                }
            }
        }
        if busy == self.nodes.len() {
            // Every node is there but busy: the same answer as a full queue, so that callers
            // back off rather than give up.
            let why: Vec<String> = tried.iter().map(|(a, e)| format!("{a}: {e}")).collect();
            return Err(ClientError::Server(WireError::new(
                ErrorCode::Overloaded,
                format!(
                    "every node is overloaded; retry in 1 s ({})",
                    why.join("; ")
                ),
            )));
        }
        Err(ClientError::Unreachable { tried })
    }

    /// Connects to `node`. A node that answers nothing within the connect timeout is
    /// unreachable. One that answers is there, and busy if it then refuses the connection,
    /// gives up on it, or does not finish the handshake within [`HANDSHAKE_TIMEOUT`].
    async fn dial(
        &self,
        endpoint: &quinn::Endpoint,
        node: SocketAddr,
    ) -> Result<quinn::Connection, DialFailure> {
        let started = tokio::time::Instant::now();
        let failed = |e: quinn::ConnectionError| match turned_away(&e) {
            Some(how) => DialFailure {
                busy: true,
                why: how.to_owned(),
            },
            None => DialFailure {
                busy: false,
                why: e.to_string(),
            },
        };
        let mut connecting = endpoint
            .connect(node, NODE_SERVER_NAME)
            .map_err(|e| DialFailure {
                busy: false,
                why: e.to_string(),
            })?;
        // The handshake data (the protocol the node chose) arrives with its first flight.
        let first_flight = tokio::time::timeout(self.connect_timeout, connecting.handshake_data())
            .await
            .map(|answered| answered.map(|_| ()));
        match first_flight {
            Err(_) => {
                return Err(DialFailure {
                    busy: false,
                    why: format!("no answer within {:?}", self.connect_timeout),
                });
            }
            Ok(Err(e)) => return Err(failed(e)),
            Ok(Ok(())) => {}
        }
        let limit = self.connect_timeout.max(HANDSHAKE_TIMEOUT);
        let handshake = tokio::time::timeout_at(started + limit, &mut connecting).await;
        match handshake {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(DialFailure {
                busy: true,
                why: format!("answered, but did not finish the handshake within {limit:?}"),
            }),
        }
    }
}

/// Why one node of the list could not be connected to.
struct DialFailure {
    /// The node is there but too busy for the connection now.
    busy: bool,
    /// What happened, for people.
    why: String,
}

/// A connection to one node of a Ganglion mesh.
///
/// ```no_run
/// # async fn demo() -> Result<(), ganglion_client::ClientError> {
/// use ganglion_client::{Client, GenerateRequest};
///
/// let client = Client::builder()
///     .node("127.0.0.1:7400".parse().unwrap())
///     .ca_file("cluster/ca.crt")?
///     .connect()
///     .await?;
/// let answer = client
///     .generate(GenerateRequest::new("@ganglion/smollm2-135m-instruct", "What is the capital of France?").max_tokens(32))
///     .await?;
/// println!("{} (served by {})", answer.text, answer.response.route.executed_by);
///
/// let vectors = client.embed("@ganglion/all-minilm-l6-v2", vec!["hello".into(), "world".into()]).await?;
/// assert_eq!(vectors.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    node: SocketAddr,
    request_timeout: Duration,
    api_key: Option<crate::protocol::ApiKey>,
}

/// A text-generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Catalog id of the model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Generation parameters.
    pub parameters: Parameters,
    /// Cache controls.
    pub cache: CachePolicy,
    /// Models to try in order when `model` cannot answer (at most
    /// [`crate::protocol::MAX_FALLBACKS`]).
    pub fallbacks: Vec<String>,
}

impl GenerateRequest {
    /// A single user prompt.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: prompt.into(),
            }],
            parameters: Parameters::default(),
            cache: CachePolicy::default(),
            fallbacks: Vec::new(),
        }
    }

    /// Models to try in order when `model` is unavailable, overloaded or fails before its
    /// first output; the final route says which model answered and why the others did not.
    pub fn fallbacks(mut self, models: Vec<String>) -> Self {
        self.fallbacks = models;
        self
    }

    /// Most tokens to generate.
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.parameters.max_tokens = Some(n);
        self
    }

    /// Strings that end the answer (the answer stops before the first one generated).
    pub fn stop(mut self, stops: Vec<String>) -> Self {
        self.parameters.stop = stops;
        self
    }

    /// Sampling temperature (0 or unset: greedy).
    pub fn temperature(mut self, t: f32) -> Self {
        self.parameters.temperature = Some(t);
        self
    }

    /// Sampler seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.parameters.seed = Some(seed);
        self
    }

    /// Cache controls.
    pub fn cache(mut self, cache: CachePolicy) -> Self {
        self.cache = cache;
        self
    }
}

/// A request on a batch of texts: to embed, or to classify.
#[derive(Debug, Clone)]
pub struct TextsRequest {
    /// Catalog id of the model.
    pub model: String,
    /// The texts.
    pub texts: Vec<String>,
    /// Cache controls.
    pub cache: CachePolicy,
    /// Models to try in order when `model` cannot answer.
    pub fallbacks: Vec<String>,
}

/// An embedding request.
pub type EmbedRequest = TextsRequest;

/// A classification request.
pub type ClassifyRequest = TextsRequest;

impl TextsRequest {
    /// Texts for `model`.
    pub fn new(model: impl Into<String>, texts: Vec<String>) -> Self {
        Self {
            model: model.into(),
            texts,
            cache: CachePolicy::default(),
            fallbacks: Vec::new(),
        }
    }

    /// Cache controls.
    pub fn cache(mut self, cache: CachePolicy) -> Self {
        self.cache = cache;
        self
    }

    /// Models to try in order when `model` is unavailable, overloaded or fails (see
    /// [`GenerateRequest::fallbacks`]).
    pub fn fallbacks(mut self, models: Vec<String>) -> Self {
        self.fallbacks = models;
        self
    }
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// The node's whole final response (usage, timings, route).
    pub response: FinalResponse,
}

/// One item of a generation stream.
#[derive(Debug, Clone, PartialEq)]
// One item per frame, moved once: boxing the final response would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum StreamEvent {
    /// New text.
    Delta(String),
    /// The complete answer; the last item.
    Final(FinalResponse),
}

/// A stream of generated text, then the final response. Dropping it cancels the request.
pub type GenerationStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ClientError>> + Send>>;

impl Client {
    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The node this client is connected to.
    pub fn node(&self) -> SocketAddr {
        self.node
    }

    /// Generates text and returns the complete answer.
    pub async fn generate(&self, request: GenerateRequest) -> Result<Generation, ClientError> {
        use futures::StreamExt;
        let mut stream = self.generate_stream(request).await?;
        while let Some(event) = stream.next().await {
            if let StreamEvent::Final(response) = event? {
                let text = match &response.output {
                    Output::Text { text, .. } => text.clone(),
                    _ => {
                        return Err(ClientError::Protocol(
                            "a text model answered with something else".into(),
                        ));
                    }
                };
                return Ok(Generation { text, response });
            }
        }
        Err(ClientError::Protocol(
            "the stream ended without a final response".into(),
        ))
    }

    /// Generates text as a stream of deltas followed by the final response.
    pub async fn generate_stream(
        &self,
        request: GenerateRequest,
    ) -> Result<GenerationStream, ClientError> {
        let request = self.request(
            request.model,
            Input::Chat(request.messages),
            request.parameters,
            request.cache,
            request.fallbacks,
        );
        let (send, recv) = self.open(&ClientRequest::Infer(request)).await?;
        let node = self.node;
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let timeout = self.request_timeout;
        let open = (send, recv, self.connection.clone());
        let stream = futures::stream::unfold(Some(open), move |state| async move {
            let (send, mut recv, connection) = state?;
            let frame = match tokio::time::timeout_at(
                deadline,
                read_frame::<_, ResponseFrame>(&mut recv, MAX_RESPONSE_FRAME_LEN),
            )
            .await
            {
                Err(_) => return Some((Err(ClientError::Timeout(timeout)), None)),
                Ok(Err(e)) => return Some((Err(broken(node, &connection, &e)), None)),
                Ok(Ok(None)) => {
                    return Some((
                        Err(ClientError::Protocol(
                            "the stream ended without a final response".into(),
                        )),
                        None,
                    ));
                }
                Ok(Ok(Some(frame))) => frame,
            };
            match frame {
                ResponseFrame::Delta(text) => {
                    Some((Ok(StreamEvent::Delta(text)), Some((send, recv, connection))))
                }
                ResponseFrame::Final(response) => Some((Ok(StreamEvent::Final(response)), None)),
                ResponseFrame::Error(error) => Some((Err(ClientError::Server(error)), None)),
                other => Some((
                    Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
                    None,
                )),
            }
        });
        Ok(Box::pin(stream))
    }

    /// Embeds texts: one unit-length vector per text.
    pub async fn embed(
        &self,
        model: impl Into<String>,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, ClientError> {
        let response = self.embed_full(model, texts).await?;
        match response.output {
            Output::Embeddings(vectors) => Ok(vectors),
            _ => Err(ClientError::Protocol(
                "an embedding model answered with something else".into(),
            )),
        }
    }

    /// Embeds texts and returns the node's whole final response (usage, timings, route).
    pub async fn embed_full(
        &self,
        model: impl Into<String>,
        texts: Vec<String>,
    ) -> Result<FinalResponse, ClientError> {
        self.embed_request(EmbedRequest::new(model, texts)).await
    }

    /// Embeds texts as `request` says and returns the node's whole final response.
    pub async fn embed_request(&self, request: EmbedRequest) -> Result<FinalResponse, ClientError> {
        self.texts_request(request, Input::Embed).await
    }

    /// Classifies texts: for each, its labels with their scores, the likeliest first.
    pub async fn classify(
        &self,
        model: impl Into<String>,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<Label>>, ClientError> {
        let count = texts.len();
        let response = self
            .classify_request(ClassifyRequest::new(model, texts))
            .await?;
        match response.output {
            Output::Labels(labels) if labels.len() == count => Ok(labels),
            _ => Err(ClientError::Protocol(
                "a text classifier answered with something other than one list per text".into(),
            )),
        }
    }

    /// Classifies texts as `request` says and returns the node's whole final response.
    pub async fn classify_request(
        &self,
        request: ClassifyRequest,
    ) -> Result<FinalResponse, ClientError> {
        self.texts_request(request, Input::Classify).await
    }

    /// Runs an image model on an image file's bytes (PNG or JPEG, at most
    /// [`crate::protocol::MAX_IMAGE_BYTES`]) and returns the node's whole final response:
    /// [`Output::Regions`] from OCR, [`Output::Labels`] (one list) from a classifier.
    pub async fn image(
        &self,
        model: impl Into<String>,
        image: Vec<u8>,
        cache: CachePolicy,
    ) -> Result<FinalResponse, ClientError> {
        self.file_request(model.into(), Input::Image(image), cache)
            .await
    }

    /// Transcribes a recording (a WAV file, at most [`crate::protocol::MAX_AUDIO_BYTES`]) with
    /// a speech model and returns the node's whole final response ([`Output::Text`]).
    pub async fn transcribe(
        &self,
        model: impl Into<String>,
        wav: Vec<u8>,
        cache: CachePolicy,
    ) -> Result<FinalResponse, ClientError> {
        self.file_request(model.into(), Input::Audio(wav), cache)
            .await
    }

    /// Sends a file (an image, a recording) and reads its one answer, which must fit it.
    async fn file_request(
        &self,
        model: String,
        input: Input,
        cache: CachePolicy,
    ) -> Result<FinalResponse, ClientError> {
        let request = self.request(
            model,
            input.clone(),
            Parameters::default(),
            cache,
            Vec::new(),
        );
        let (_send, mut recv) = self.open(&ClientRequest::Infer(request)).await?;
        let mut frame = self.read_one(&mut recv).await?;
        // A node of another build may stream text before its final frame: it is in the final
        // frame too.
        for _ in 0..MAX_SKIPPED_DELTAS {
            if !matches!(frame, ResponseFrame::Delta(_)) {
                break;
            }
            frame = self.read_one(&mut recv).await?;
        }
        match frame {
            ResponseFrame::Final(response) if response.output.answers(&input) => Ok(response),
            ResponseFrame::Final(_) => Err(ClientError::Protocol(
                "the model answered with something that does not fit the file".into(),
            )),
            ResponseFrame::Error(error) => Err(ClientError::Server(error)),
            other => Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
        }
    }

    /// Sends a request on a batch of texts, as `input` wraps them, and reads its one answer.
    async fn texts_request(
        &self,
        request: TextsRequest,
        input: fn(Vec<String>) -> Input,
    ) -> Result<FinalResponse, ClientError> {
        let request = self.request(
            request.model,
            input(request.texts),
            Parameters::default(),
            request.cache,
            request.fallbacks,
        );
        let (_send, mut recv) = self.open(&ClientRequest::Infer(request)).await?;
        match self.read_one(&mut recv).await? {
            ResponseFrame::Final(response) => Ok(response),
            ResponseFrame::Error(error) => Err(ClientError::Server(error)),
            other => Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
        }
    }

    /// The catalog, and which nodes host each model (with the client's API key, unless the node
    /// serves keyless requests).
    pub async fn list_models(&self) -> Result<Vec<ModelListing>, ClientError> {
        let request = ClientRequest::Models {
            api_key: self.api_key.clone(),
        };
        let (_send, mut recv) = self.open(&request).await?;
        match self.read_one(&mut recv).await? {
            ResponseFrame::Models(models) => Ok(models),
            ResponseFrame::Error(error) => Err(ClientError::Server(error)),
            other => Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
        }
    }

    /// The calling account's usage today (needs an API key).
    pub async fn usage(&self) -> Result<crate::protocol::AccountUsage, ClientError> {
        let request = ClientRequest::Usage {
            api_key: self.api_key.clone(),
        };
        let (_send, mut recv) = self.open(&request).await?;
        match self.read_one(&mut recv).await? {
            ResponseFrame::Usage(usage) => Ok(usage),
            ResponseFrame::Error(error) => Err(ClientError::Server(error)),
            other => Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.connection
            .close(quinn::VarInt::from_u32(0), b"client done");
        self.endpoint.wait_idle().await;
    }

    fn request(
        &self,
        model: String,
        input: Input,
        parameters: Parameters,
        cache: CachePolicy,
        fallbacks: Vec<String>,
    ) -> Request {
        Request {
            parameters,
            deadline_ms: Some(self.request_timeout.as_millis() as u64),
            api_key: self.api_key.clone(),
            cache,
            fallbacks,
            ..Request::new(model, input)
        }
    }

    async fn open(
        &self,
        request: &ClientRequest,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let fail = |e: &dyn std::fmt::Display| broken(self.node, &self.connection, e);
        let (mut send, recv) = self.connection.open_bi().await.map_err(|e| fail(&e))?;
        write_frame(&mut send, request, MAX_REQUEST_FRAME_LEN)
            .await
            .map_err(|e| match e {
                crate::FrameError::TooLarge { len, max } => ClientError::Server(WireError::new(
                    ErrorCode::TooLarge,
                    format!("request of {len} bytes exceeds the frame limit of {max}"),
                )),
                other => fail(&other),
            })?;
        send.finish().map_err(|e| fail(&e))?;
        Ok((send, recv))
    }

    async fn read_one(&self, recv: &mut quinn::RecvStream) -> Result<ResponseFrame, ClientError> {
        match tokio::time::timeout(
            self.request_timeout,
            read_frame::<_, ResponseFrame>(recv, MAX_RESPONSE_FRAME_LEN),
        )
        .await
        {
            Err(_) => Err(ClientError::Timeout(self.request_timeout)),
            Ok(Err(e)) => Err(broken(self.node, &self.connection, &e)),
            Ok(Ok(None)) => Err(ClientError::Protocol(
                "the stream ended without an answer".into(),
            )),
            Ok(Ok(Some(frame))) => Ok(frame),
        }
    }
}

/// Most text deltas read past before a file's final frame.
const MAX_SKIPPED_DELTAS: usize = 4096;

/// What a failed stream means: how the connection ended, when it has (so that an overloaded,
/// restarting or silent node is told apart from a broken stream), else the stream's own error.
fn broken(
    node: SocketAddr,
    connection: &quinn::Connection,
    error: &dyn std::fmt::Display,
) -> ClientError {
    match connection.close_reason() {
        Some(reason) => ended(node, &reason),
        None => ClientError::Connection {
            node,
            message: error.to_string(),
        },
    }
}

/// What a connection to `node` that ended for `reason` means to its caller.
fn ended(node: SocketAddr, reason: &quinn::ConnectionError) -> ClientError {
    let closed_with = |code: u32| {
        matches!(reason, quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(code))
    };
    if let Some(how) = turned_away(reason) {
        ClientError::Server(WireError::new(
            ErrorCode::Overloaded,
            format!("node {node} {how}; retry in 1 s"),
        ))
    } else if closed_with(CLOSE_CLIENTS_LOOPBACK_ONLY) {
        ClientError::Connection {
            node,
            message: "this node serves clients on loopback only".into(),
        }
    } else if closed_with(CLOSE_NOT_SERVING) {
        ClientError::Server(WireError::new(
            ErrorCode::Unavailable,
            format!("node {node} stopped serving the connection; retry, or use another node"),
        ))
    } else if matches!(reason, quinn::ConnectionError::TimedOut) {
        ClientError::Connection {
            node,
            message: "the node stopped answering (idle timeout)".into(),
        }
    } else {
        ClientError::Connection {
            node,
            message: reason.to_string(),
        }
    }
}

/// How the node turned the connection away for lack of room, if it did: it refused it before
/// the handshake (at its connection or handshake limit), gave up during the handshake (a node
/// closing a connection it has not finished sends `APPLICATION_ERROR`, whatever its code), or
/// closed it with [`CLOSE_OVERLOADED`].
fn turned_away(reason: &quinn::ConnectionError) -> Option<&'static str> {
    use quinn::TransportErrorCode as Transport;
    match reason {
        quinn::ConnectionError::ConnectionClosed(close)
            if close.error_code == Transport::CONNECTION_REFUSED =>
        {
            Some("refused the connection (at its connection or handshake limit)")
        }
        quinn::ConnectionError::ConnectionClosed(close)
            if close.error_code == Transport::APPLICATION_ERROR =>
        {
            Some("gave up on the handshake (overloaded, or shutting down)")
        }
        quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(CLOSE_OVERLOADED) =>
        {
            Some("is overloaded and closed the connection")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_by_node(code: u32) -> quinn::ConnectionError {
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(code),
            reason: Default::default(),
        })
    }

    fn closed_by_quic(code: quinn::TransportErrorCode) -> quinn::ConnectionError {
        quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: code,
            frame_type: None,
            reason: Default::default(),
        })
    }

    #[test]
    fn how_a_connection_ended_decides_the_error_and_whether_to_retry() {
        let node: SocketAddr = "127.0.0.1:7400".parse().expect("address");
        let busy = [
            closed_by_node(CLOSE_OVERLOADED),
            closed_by_quic(quinn::TransportErrorCode::CONNECTION_REFUSED),
            closed_by_quic(quinn::TransportErrorCode::APPLICATION_ERROR),
        ];
        for reason in busy {
            let e = ended(node, &reason);
            assert_eq!(e.code(), Some(ErrorCode::Overloaded), "{reason}");
            assert_eq!(e.retry_after(), Some(Duration::from_secs(1)), "{reason}");
        }

        let restarting = ended(node, &closed_by_node(CLOSE_NOT_SERVING));
        assert_eq!(restarting.code(), Some(ErrorCode::Unavailable));
        assert_eq!(restarting.retry_after(), None);

        let loopback_only = ended(node, &closed_by_node(CLOSE_CLIENTS_LOOPBACK_ONLY));
        let ClientError::Connection { message, .. } = &loopback_only else {
            panic!("{loopback_only}")
        };
        assert!(message.contains("loopback only"), "{message}");
        let silent = ended(node, &quinn::ConnectionError::TimedOut);
        let ClientError::Connection { message, .. } = &silent else {
            panic!("{silent}")
        };
        assert!(message.contains("stopped answering"), "{message}");
        for other in [
            closed_by_node(3),
            closed_by_quic(quinn::TransportErrorCode::PROTOCOL_VIOLATION),
            quinn::ConnectionError::Reset,
        ] {
            let e = ended(node, &other);
            assert!(matches!(e, ClientError::Connection { .. }), "{e}");
            assert_eq!(e.retry_after(), None, "{e}");
        }
        assert_eq!(
            ClientError::Timeout(Duration::from_secs(1)).retry_after(),
            None
        );
    }
}
