//! A client's request frame, as a node's gateway reads it from a stream: the bounded frame
//! reader, then the protocol's bounds check on whatever decodes. Nothing may panic, and a
//! request that decodes must encode, decode and encode again to the same bytes.
#![no_main]

use ganglion_client::codec::{decode_payload, encode};
use ganglion_client::protocol::{ClientRequest, MAX_REQUEST_FRAME_LEN, validate};
use ganglion_client::read_frame;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    let read = futures::executor::block_on(read_frame::<_, ClientRequest>(
        &mut stream,
        MAX_REQUEST_FRAME_LEN,
    ));
    let Ok(Some(request)) = read else {
        return;
    };
    if let ClientRequest::Infer(inner) = &request {
        let _ = validate(inner);
    }
    // Bytes, not values: a NaN a client sends is not equal to itself, yet must survive.
    let frame = encode(&request, MAX_REQUEST_FRAME_LEN).expect("a decoded request encodes");
    let again: ClientRequest = decode_payload(&frame[5..]).expect("and decodes again");
    let twice = encode(&again, MAX_REQUEST_FRAME_LEN).expect("and encodes again");
    assert_eq!(frame, twice);
});
