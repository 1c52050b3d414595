//! A QUIC bidirectional stream as a ractor_cluster transport.
//!
//! ractor_cluster frames its own messages (length-prefixed protobuf) and accepts any connected
//! byte stream through [`ractor_cluster::ClusterBidiStream`]. The stream's label tells the
//! node which QUIC connection (and so which certificate) a session arrived on; the cluster host
//! uses it to bind the session's claimed node name to the certificate's name.

use std::fmt;

use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream};

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
}

impl ClusterBidiStream for QuicClusterStream {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        (Box::new(self.recv), Box::new(self.send))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.label.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
