//! A QUIC bidirectional stream as a ractor_cluster transport, with the peer's claimed node name
//! checked against its certificate before ractor_cluster sees it.
//!
//! ractor_cluster frames its own messages (a u64 big-endian length, then a protobuf
//! `NetworkMessage`) and accepts any connected byte stream through
//! [`ractor_cluster::ClusterBidiStream`]. It elects between two sessions that claim the same
//! node name as soon as one authenticates, so a member that claimed another member's name
//! could evict the real one before any later check ran. The read half here is
//! [`NameCheckedRead`]: every authentication message that names the peer (`NameMessage` from a
//! dialer, `Challenge` from an acceptor) must name `<certificate name>@ganglion`, or the stream
//! fails and the QUIC connection is closed before the message reaches ractor_cluster.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::CloseCode;

/// Identifies the QUIC connection a ractor_cluster session runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLabel {
    /// The peer's name from its certificate.
    pub peer: String,
    /// quinn's stable id of the connection.
    pub connection_id: usize,
}

const LABEL_PREFIX: &str = "quic:";

impl fmt::Display for SessionLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{LABEL_PREFIX}{}#{}", self.peer, self.connection_id)
    }
}

impl SessionLabel {
    /// Parses a label written by [`fmt::Display`]; sessions from any other transport (such as
    /// ractor_cluster's TCP listener) have none.
    pub fn parse(label: &str) -> Option<Self> {
        let (peer, id) = label.strip_prefix(LABEL_PREFIX)?.rsplit_once('#')?;
        Some(Self {
            peer: peer.to_owned(),
            connection_id: id.parse().ok()?,
        })
    }
}

/// One QUIC bidirectional stream carrying a ractor_cluster session.
#[derive(Debug)]
pub struct QuicClusterStream {
    /// Sending half.
    pub send: quinn::SendStream,
    /// Receiving half.
    pub recv: quinn::RecvStream,
    /// Which connection this is.
    pub label: SessionLabel,
    /// The connection, closed if the peer claims a name that is not its certificate's or
    /// stops taking what this node writes.
    pub connection: quinn::Connection,
    /// The ractor_cluster node name the peer must use (`<certificate name>@ganglion`).
    pub expected_name: String,
}

impl ClusterBidiStream for QuicClusterStream {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let on_mismatch = self.connection.clone();
        let read = NameCheckedRead::new(self.recv, self.expected_name, move |_| {
            CloseCode::NameMismatch.close(&on_mismatch);
        });
        let on_stall = self.connection;
        let write = TimedWrite::new(self.send, WRITE_TIMEOUT, move || {
            CloseCode::SessionTimeout.close(&on_stall);
        });
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.label.to_string())
    }
}

/// Largest ractor_cluster frame a node accepts (its NodeServer is configured with the same
/// bound). The control plane carries process-group membership and small actor messages; adverts
/// and requests travel on streams of their own.
pub const MAX_CLUSTER_FRAME: u64 = 1024 * 1024;

/// A write to a peer's cluster stream that makes no progress for this long fails, and the
/// connection is closed: a member that stops reading cannot make this node queue for ever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs once, with the claimed name, when a peer claims a name that is not its own.
type OnMismatch = Box<dyn FnOnce(&str) + Send>;

/// Length prefix of a ractor_cluster frame.
const LENGTH_BYTES: usize = 8;

/// Reads a ractor_cluster stream frame by frame, checking the node name in every
/// authentication message before handing the frame on.
///
/// Each frame is buffered whole (at most [`MAX_CLUSTER_FRAME`], growing as bytes arrive) and
/// decoded with the same oneof semantics ractor_cluster's prost types have (the last value of
/// a oneof wins, fields may come in any order), so what is checked is exactly what
/// ractor_cluster will act on.
pub struct NameCheckedRead<R> {
    inner: R,
    expected: String,
    on_mismatch: Option<OnMismatch>,
    state: ReadState,
}

enum ReadState {
    /// Collecting a frame's length.
    Length(Vec<u8>),
    /// Collecting a whole frame (length included) of `total` bytes.
    Body { buf: Vec<u8>, total: usize },
    /// Handing a checked frame on.
    Release { buf: Vec<u8>, pos: usize },
    /// The stream was refused.
    Failed,
}

impl<R> NameCheckedRead<R> {
    /// Wraps `inner`; `on_mismatch` runs once, with the claimed name, if the check fails.
    pub fn new(
        inner: R,
        expected: String,
        on_mismatch: impl FnOnce(&str) + Send + 'static,
    ) -> Self {
        Self {
            inner,
            expected,
            on_mismatch: Some(Box::new(on_mismatch)),
            state: ReadState::Length(Vec::with_capacity(LENGTH_BYTES)),
        }
    }

    fn refuse(&mut self, claimed: &str) -> io::Error {
        tracing::warn!(%claimed, expected = %self.expected, "cluster session refused: claimed node name does not match the certificate");
        if let Some(hook) = self.on_mismatch.take() {
            hook(claimed);
        }
        self.state = ReadState::Failed;
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cluster node name `{claimed}` does not match the certificate (`{}`)",
                self.expected
            ),
        )
    }
}

/// Mirrors of ractor_cluster's wire types (meta.proto, auth.proto) with just enough of them to
/// read a claimed name; the other variants are kept as opaque bytes.
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NetworkMessage {
        #[prost(oneof = "Network", tags = "1, 2, 3")]
        pub message: Option<Network>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Network {
        #[prost(message, tag = "1")]
        Auth(AuthenticationMessage),
        #[prost(bytes, tag = "2")]
        Node(Vec<u8>),
        #[prost(bytes, tag = "3")]
        Control(Vec<u8>),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthenticationMessage {
        #[prost(oneof = "Auth", tags = "1, 2, 3, 4, 5, 6")]
        pub msg: Option<Auth>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Auth {
        #[prost(message, tag = "1")]
        Name(Named),
        #[prost(bytes, tag = "2")]
        ServerStatus(Vec<u8>),
        #[prost(bytes, tag = "3")]
        ClientStatus(Vec<u8>),
        #[prost(message, tag = "4")]
        ServerChallenge(Named),
        #[prost(bytes, tag = "5")]
        ClientChallenge(Vec<u8>),
        #[prost(bytes, tag = "6")]
        ServerAck(Vec<u8>),
    }

    /// `NameMessage` and `Challenge` both carry the sender's name in field 1.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Named {
        #[prost(string, tag = "1")]
        pub name: String,
    }
}

/// The node name a frame's payload claims, if it is an authentication message that names its
/// sender.
fn claimed_name(payload: &[u8]) -> Result<Option<String>, prost::DecodeError> {
    use prost::Message;
    let message = wire::NetworkMessage::decode(payload)?;
    Ok(match message.message {
        Some(wire::Network::Auth(wire::AuthenticationMessage {
            msg: Some(wire::Auth::Name(named) | wire::Auth::ServerChallenge(named)),
        })) => Some(named.name),
        _ => None,
    })
}

/// Reads from `inner` into `buf` until it holds `want` bytes; `Ready(Ok(false))` when the
/// stream ends first.
fn fill<R: AsyncRead + Unpin>(
    inner: &mut R,
    cx: &mut Context<'_>,
    buf: &mut Vec<u8>,
    want: usize,
) -> Poll<io::Result<bool>> {
    while buf.len() < want {
        let mut chunk = [0u8; 8192];
        let room = (want - buf.len()).min(chunk.len());
        let mut read = ReadBuf::new(&mut chunk[..room]);
        ready!(Pin::new(&mut *inner).poll_read(cx, &mut read))?;
        if read.filled().is_empty() {
            return Poll::Ready(Ok(false));
        }
        buf.extend_from_slice(read.filled());
    }
    Poll::Ready(Ok(true))
}

impl<R: AsyncRead + Unpin> AsyncRead for NameCheckedRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                ReadState::Failed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "cluster session refused",
                    )));
                }
                ReadState::Length(buf) => {
                    let complete = ready!(fill(&mut this.inner, cx, buf, LENGTH_BYTES))?;
                    let buf = std::mem::take(buf);
                    if !complete {
                        // The stream ended: cleanly between frames, or inside a length that
                        // ractor_cluster then finds short.
                        if buf.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        this.state = ReadState::Release { buf, pos: 0 };
                        continue;
                    }
                    let length = frame_length(&buf);
                    if length > MAX_CLUSTER_FRAME {
                        this.state = ReadState::Failed;
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("cluster frame of {length} bytes exceeds {MAX_CLUSTER_FRAME}"),
                        )));
                    }
                    // Bounded by MAX_CLUSTER_FRAME just above.
                    let total = LENGTH_BYTES + length as usize;
                    this.state = ReadState::Body { buf, total };
                }
                ReadState::Body { buf, total } => {
                    let total = *total;
                    let complete = ready!(fill(&mut this.inner, cx, buf, total))?;
                    let buf = std::mem::take(buf);
                    if complete {
                        match claimed_name(&buf[LENGTH_BYTES..]) {
                            Ok(Some(claimed)) if claimed != this.expected => {
                                return Poll::Ready(Err(this.refuse(&claimed)));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                this.state = ReadState::Failed;
                                return Poll::Ready(Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    format!("invalid cluster frame: {e}"),
                                )));
                            }
                        }
                    }
                    this.state = ReadState::Release { buf, pos: 0 };
                }
                ReadState::Release { buf, pos } => {
                    if *pos < buf.len() {
                        let n = (buf.len() - *pos).min(out.remaining());
                        out.put_slice(&buf[*pos..*pos + n]);
                        *pos += n;
                        return Poll::Ready(Ok(()));
                    }
                    this.state = ReadState::Length(Vec::with_capacity(LENGTH_BYTES));
                }
            }
        }
    }
}

/// The payload length in a frame's first [`LENGTH_BYTES`].
fn frame_length(buf: &[u8]) -> u64 {
    buf.get(..LENGTH_BYTES)
        .and_then(|b| <[u8; LENGTH_BYTES]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// A write half on which each batch of writes (up to the flush that ends it) must be done
/// within `timeout`, or it fails; `on_stall` runs once when that happens. Timing the whole batch,
/// not each write, means a peer that takes a byte now and then cannot keep a batch going.
pub struct TimedWrite<W> {
    inner: W,
    timeout: Duration,
    batch_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    on_stall: Option<Box<dyn FnOnce() + Send>>,
}

impl<W> TimedWrite<W> {
    /// Wraps `inner`.
    pub fn new(inner: W, timeout: Duration, on_stall: impl FnOnce() + Send + 'static) -> Self {
        Self {
            inner,
            timeout,
            batch_deadline: None,
            on_stall: Some(Box::new(on_stall)),
        }
    }

    /// Fails the batch if its time is up (registering the timer's wake-up otherwise).
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let timeout = self.timeout;
        let deadline = self
            .batch_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            if let Some(hook) = self.on_stall.take() {
                hook();
            }
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer did not take cluster traffic in time",
            ));
        }
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for TimedWrite<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_deadline(cx)?;
        let flushed = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        // The batch is done: the next write starts a new one.
        self.batch_deadline = None;
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tokio::io::AsyncReadExt;

    #[test]
    fn labels_round_trip_and_foreign_labels_do_not_parse() {
        let label = SessionLabel {
            peer: "edge-1".into(),
            connection_id: 42,
        };
        assert_eq!(SessionLabel::parse(&label.to_string()), Some(label));
        assert_eq!(SessionLabel::parse("127.0.0.1:4000"), None);
        assert_eq!(SessionLabel::parse("quic:edge-1#x"), None);
    }

    // The shapes ractor_cluster puts on the wire (meta.proto, auth.proto), for the tests.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Network {
        #[prost(message, optional, tag = "1")]
        auth: Option<Auth>,
        #[prost(bytes = "vec", optional, tag = "2")]
        node: Option<Vec<u8>>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Auth {
        #[prost(message, optional, tag = "1")]
        name: Option<Name>,
        #[prost(message, optional, tag = "4")]
        server_challenge: Option<Name>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Name {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(uint64, tag = "4")]
        nonce: u64,
    }

    fn frame(message: &Network) -> Vec<u8> {
        let payload = message.encode_to_vec();
        let mut frame = (payload.len() as u64).to_be_bytes().to_vec();
        frame.extend(payload);
        frame
    }

    fn named(name: &str) -> Network {
        Network {
            auth: Some(Auth {
                name: Some(Name {
                    name: name.into(),
                    nonce: 7,
                }),
                server_challenge: None,
            }),
            node: None,
        }
    }

    async fn read_all(bytes: Vec<u8>) -> (io::Result<Vec<u8>>, bool) {
        let tripped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = tripped.clone();
        let mut reader = NameCheckedRead::new(bytes.as_slice(), "a@ganglion".into(), move |_| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst)
        });
        let mut out = Vec::new();
        let result = reader.read_to_end(&mut out).await.map(|_| out);
        (result, tripped.load(std::sync::atomic::Ordering::SeqCst))
    }

    #[tokio::test]
    async fn the_right_name_and_other_frames_pass_unchanged() {
        let mut bytes = frame(&named("a@ganglion"));
        bytes.extend(frame(&Network {
            auth: None,
            node: Some(vec![9; 20_000]),
        }));
        bytes.extend(frame(&Network::default()));
        let challenge = Network {
            auth: Some(Auth {
                name: None,
                server_challenge: Some(Name {
                    name: "a@ganglion".into(),
                    nonce: 1,
                }),
            }),
            node: None,
        };
        bytes.extend(frame(&challenge));
        let (read, tripped) = read_all(bytes.clone()).await;
        assert_eq!(read.expect("passes"), bytes);
        assert!(!tripped);
    }

    #[tokio::test]
    async fn another_members_name_is_refused_before_it_is_read() {
        // Even after other traffic: a name claimed at any point is checked.
        let mut bytes = frame(&Network {
            auth: None,
            node: Some(vec![1; 10]),
        });
        bytes.extend(frame(&named("b@ganglion")));
        let (read, tripped) = read_all(bytes).await;
        assert_eq!(
            read.expect_err("refused").kind(),
            io::ErrorKind::PermissionDenied
        );
        assert!(tripped);

        let challenge = Network {
            auth: Some(Auth {
                name: None,
                server_challenge: Some(Name {
                    name: "b@ganglion".into(),
                    nonce: 1,
                }),
            }),
            node: None,
        };
        let (read, tripped) = read_all(frame(&challenge)).await;
        assert!(read.is_err());
        assert!(tripped);
    }

    #[tokio::test]
    async fn a_batch_that_does_not_finish_in_time_fails_and_a_finished_one_resets_the_clock() {
        use tokio::io::AsyncWriteExt;
        let tripped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = tripped.clone();
        // A pipe whose reader takes nothing: the second write blocks.
        let (writer, _reader) = tokio::io::duplex(8);
        let mut timed = TimedWrite::new(writer, Duration::from_millis(100), move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst)
        });
        timed.write_all(b"1234").await.expect("room");
        timed.flush().await.expect("flushed");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A new batch starts its own clock: the idle time before it does not count.
        timed.write_all(b"5678").await.expect("room");
        let stuck = timed.write_all(b"more than fits").await;
        assert_eq!(
            stuck.expect_err("timed out").kind(),
            io::ErrorKind::TimedOut
        );
        assert!(tripped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn oversized_frames_are_refused() {
        let mut bytes = (MAX_CLUSTER_FRAME + 1).to_be_bytes().to_vec();
        bytes.push(0x0a);
        let (read, _) = read_all(bytes).await;
        assert_eq!(
            read.expect_err("refused").kind(),
            io::ErrorKind::InvalidData
        );
    }

    /// Protobuf field `field`, wire type 2, holding `bytes`.
    fn ld(field: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2, u8::try_from(bytes.len()).expect("short")];
        out.extend_from_slice(bytes);
        out
    }

    fn raw_frame(payload: Vec<u8>) -> Vec<u8> {
        let mut frame = (payload.len() as u64).to_be_bytes().to_vec();
        frame.extend(payload);
        frame
    }

    #[tokio::test]
    async fn reordered_padded_or_doubled_claims_are_read_as_ractor_cluster_reads_them() {
        let name = |n: &[u8]| ld(1, n);
        let claim_b = ld(1, &ld(1, &name(b"b@ganglion")));
        let cases = [
            // Another field first, then the claim.
            [vec![0x12, 0x00], claim_b.clone()].concat(),
            // An unknown field first.
            [vec![0x78, 0x00], claim_b.clone()].concat(),
            // The auth key written over-long (0x8a 0x00 is field 1, wire type 2).
            [vec![0x8a, 0x00], claim_b[1..].to_vec()].concat(),
            // The right name, then another one in the same oneof: the last one counts.
            ld(
                1,
                &[ld(1, &name(b"a@ganglion")), ld(4, &name(b"b@ganglion"))].concat(),
            ),
            // The right name in one auth value, another in a later one.
            [
                ld(1, &ld(1, &name(b"a@ganglion"))),
                ld(1, &ld(1, &name(b"b@ganglion"))),
            ]
            .concat(),
        ];
        for (i, payload) in cases.into_iter().enumerate() {
            let (read, tripped) = read_all(raw_frame(payload)).await;
            assert!(read.is_err() && tripped, "case {i} got through");
        }
    }
}
