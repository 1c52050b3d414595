//! The Rust client of the Ganglion inference mesh, and the wire protocol that nodes and
//! clients speak.
//!
//! Everything that crosses a QUIC stream is a [`codec`] frame: a version byte, a length, and a
//! bincode payload whose size is checked before anything is allocated. [`protocol`] names the
//! ALPN identifiers and the messages that open each stream.
//!
//! The request/response client arrives with the inference data plane; today this crate holds
//! the protocol both sides build on.

pub mod codec;
pub mod protocol;

pub use codec::{FrameError, MAX_FRAME_LEN, read_frame, write_frame};
pub use protocol::{ALPN_CLIENT, ALPN_PEER, PeerStreamKind};
