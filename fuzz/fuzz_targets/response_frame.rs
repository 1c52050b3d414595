//! A response frame, as the client crate (and a node reading a peer's answer) reads it: the
//! bounded frame reader, then the route bounds a node checks on a peer's final answer.
#![no_main]

use ganglion_client::protocol::{MAX_RESPONSE_FRAME_LEN, ResponseFrame};
use ganglion_client::read_frame;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    // A stream may carry several frames: read until it ends or breaks.
    for _ in 0..8 {
        match futures::executor::block_on(read_frame::<_, ResponseFrame>(
            &mut stream,
            MAX_RESPONSE_FRAME_LEN,
        )) {
            Ok(Some(ResponseFrame::Final(response))) => {
                let _ = response.route.within_bounds();
                let _ = response.route.hops();
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
});
