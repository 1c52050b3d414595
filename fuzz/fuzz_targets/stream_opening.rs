//! The opening frame of a stream a peer opens (which kind of stream it is), then a handed-over
//! request on a `Data` stream: what a node reads from a member before anything else.
#![no_main]

use ganglion_client::protocol::{ClientRequest, MAX_OPEN_FRAME_LEN, MAX_REQUEST_FRAME_LEN};
use ganglion_client::{PeerStreamKind, read_frame};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    let kind = futures::executor::block_on(read_frame::<_, PeerStreamKind>(
        &mut stream,
        MAX_OPEN_FRAME_LEN,
    ));
    if let Ok(Some(PeerStreamKind::Data)) = kind {
        let _ = futures::executor::block_on(read_frame::<_, ClientRequest>(
            &mut stream,
            MAX_REQUEST_FRAME_LEN,
        ));
    }
});
