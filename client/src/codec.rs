//! Length-prefixed bincode frames: the one place that knows the wire encoding.
//!
//! A frame is `[version: u8][length: u32, big-endian][payload: length bytes]`, the payload being
//! bincode 2 (serde, standard config). The length is checked against the caller's bound before a
//! byte of the payload is read or allocated, so a hostile length prefix costs nothing. Swapping
//! the encoding means changing this module only.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version byte that starts every frame; bumped when the framing or encoding changes.
pub const FRAME_VERSION: u8 = 1;

/// The largest payload any Ganglion frame may carry (4 MiB). Callers pass tighter bounds
/// where they know better.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

const HEADER_LEN: usize = 5;

/// What a frame's buffer starts with before its bytes arrive.
const INITIAL_PAYLOAD_CAPACITY: usize = 16 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The underlying stream failed.
    #[error("frame i/o failed: {0}")]
    Io(#[source] std::io::Error),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The frame was written by an incompatible protocol version.
    #[error("unsupported frame version {found} (this build speaks {FRAME_VERSION})")]
    Version {
        /// The version byte that arrived.
        found: u8,
    },
    /// The frame is larger than the bound for this stream.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared (or encoded) payload length.
        len: usize,
        /// The bound that applied.
        max: usize,
    },
    /// The payload is not a valid encoding of the expected message.
    #[error("malformed frame payload: {0}")]
    Malformed(String),
    /// The value could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Encodes `value` as one complete frame (header and payload).
pub fn encode<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![FRAME_VERSION, 0, 0, 0, 0];
    bincode::serde::encode_into_std_write(value, &mut frame, config())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = frame.len() - HEADER_LEN;
    if len > max.min(MAX_FRAME_LEN) {
        return Err(FrameError::TooLarge { len, max });
    }
    let len = u32::try_from(len).expect("bounded by MAX_FRAME_LEN, which fits in u32");
    frame[1..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// Decodes a payload (the bytes after the header); every byte must belong to the value.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (value, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        )));
    }
    Ok(value)
}

/// Parses a frame header, returning the payload length once it is known to be within `max`.
pub fn check_header(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    if header[0] != FRAME_VERSION {
        return Err(FrameError::Version { found: header[0] });
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let max = max.min(MAX_FRAME_LEN);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Writes `value` as one frame.
pub async fn write_frame<W, T>(writer: &mut W, value: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let frame = encode(value, max)?;
    writer.write_all(&frame).await.map_err(FrameError::Io)
}

/// Reads one frame of at most `max` payload bytes.
///
/// Returns `Ok(None)` when the stream ends cleanly before a new frame starts.
pub async fn read_frame<R, T>(reader: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader
            .read(&mut header[filled..])
            .await
            .map_err(FrameError::Io)?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let len = check_header(header, max)?;
    // The buffer grows as bytes arrive rather than from the declared length: a sender that
    // announces a large frame and stalls holds only what it actually sent.
    let mut payload = Vec::with_capacity(len.min(INITIAL_PAYLOAD_CAPACITY));
    let read = (&mut *reader)
        .take(len as u64)
        .read_to_end(&mut payload)
        .await
        .map_err(FrameError::Io)?;
    if read != len {
        return Err(FrameError::Truncated);
    }
    decode_payload(&payload).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        values: Vec<u32>,
        flag: Option<bool>,
    }

    fn sample() -> Sample {
        Sample {
            name: "node-a".into(),
            values: vec![1, 2, 3, u32::MAX],
            flag: Some(true),
        }
    }

    #[tokio::test]
    async fn round_trip_over_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &sample(), 1024).await.expect("write");
        write_frame(
            &mut a,
            &Sample {
                name: String::new(),
                values: vec![],
                flag: None,
            },
            1024,
        )
        .await
        .expect("write");
        drop(a);
        let first: Option<Sample> = read_frame(&mut b, 1024).await.expect("read");
        assert_eq!(first, Some(sample()));
        let second: Option<Sample> = read_frame(&mut b, 1024).await.expect("read");
        assert_eq!(second.expect("second frame").flag, None);
        let end: Option<Sample> = read_frame(&mut b, 1024).await.expect("clean end");
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn oversized_length_is_rejected_before_reading_the_payload() {
        // A header that claims 1 GiB and then nothing: the reader must refuse at once rather
        // than allocate or wait for a gigabyte.
        let mut frame = vec![FRAME_VERSION];
        frame.extend_from_slice(&(1u32 << 30).to_be_bytes());
        let mut reader = frame.as_slice();
        let err = read_frame::<_, Sample>(&mut reader, 4096)
            .await
            .expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { len, max: 4096 } if len == 1 << 30));
    }

    #[test]
    fn encoding_beyond_the_bound_fails() {
        let big = Sample {
            name: "x".repeat(100),
            values: vec![],
            flag: None,
        };
        assert!(matches!(
            encode(&big, 50),
            Err(FrameError::TooLarge { max: 50, .. })
        ));
        assert!(encode(&big, 200).is_ok());
    }

    #[tokio::test]
    async fn malformed_payload_and_wrong_version_are_errors() {
        let mut garbage = vec![FRAME_VERSION];
        garbage.extend_from_slice(&3u32.to_be_bytes());
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        let err = read_frame::<_, Sample>(&mut garbage.as_slice(), 1024)
            .await
            .expect_err("bad");
        assert!(matches!(err, FrameError::Malformed(_)), "{err:?}");

        let mut frame = encode(&sample(), 1024).expect("encode");
        frame[0] = 9;
        let err = read_frame::<_, Sample>(&mut frame.as_slice(), 1024)
            .await
            .expect_err("version");
        assert!(matches!(err, FrameError::Version { found: 9 }));
    }

    #[tokio::test]
    async fn truncated_frames_and_trailing_bytes_are_errors() {
        let frame = encode(&sample(), 1024).expect("encode");
        let cut = &frame[..frame.len() - 1];
        let err = read_frame::<_, Sample>(&mut &cut[..], 1024)
            .await
            .expect_err("cut");
        assert!(matches!(err, FrameError::Truncated));
        let err = read_frame::<_, Sample>(&mut &frame[..3], 1024)
            .await
            .expect_err("cut header");
        assert!(matches!(err, FrameError::Truncated));

        let mut padded = frame.clone();
        padded.push(0);
        let len = u32::try_from(padded.len() - HEADER_LEN).expect("small");
        padded[1..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        let err = read_frame::<_, Sample>(&mut padded.as_slice(), 1024)
            .await
            .expect_err("pad");
        assert!(matches!(err, FrameError::Malformed(_)));
    }
}
