//! The Rust client of the Ganglion inference mesh, and the wire protocol that nodes and
//! clients speak.
//!
//! Everything that crosses a QUIC stream is a [`codec`] frame: a version byte, a length, and a
//! bincode payload whose size is checked before anything is allocated. [`protocol`] names the
//! ALPN identifiers and the messages that open each stream.
//!
//! [`Client`] connects to the first reachable node of a list (verifying it against the cluster
//! CA) and sends requests: [`Client::generate`], [`Client::generate_stream`], [`Client::embed`], [`Client::classify`],
//! [`Client::list_models`]. The `ganglion` binary is a command-line front end to it.

pub mod client;
pub mod codec;
pub mod protocol;

pub use client::{
    ClassifyRequest, Client, ClientBuilder, ClientError, EmbedRequest, GenerateRequest, Generation,
    GenerationStream, StreamEvent, TextsRequest,
};
pub use codec::{FrameError, MAX_FRAME_LEN, read_frame, write_frame};
pub use protocol::{ALPN_CLIENT, ALPN_PEER, CachePolicy, CacheStatus, PeerStreamKind};
