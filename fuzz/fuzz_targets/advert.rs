//! A peer's advert, as a node's cluster host reads it from an `Advert` stream: the bounded
//! frame reader, then the directory's bounds check. Nothing may panic; an advert that passes
//! the check must encode within the advert bound, decode and encode again to the same bytes.
#![no_main]

use ganglion::peer::advert::{MAX_ADVERT_LEN, PeerAdvert};
use ganglion_client::codec::{decode_payload, encode};
use ganglion_client::read_frame;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    let read =
        futures::executor::block_on(read_frame::<_, PeerAdvert>(&mut stream, MAX_ADVERT_LEN));
    let Ok(Some(advert)) = read else {
        return;
    };
    // Filed under the certificate's name: the sender's own name passes that part of the check.
    if advert.check(&advert.name).is_err() {
        return;
    }
    let frame = encode(&advert, MAX_ADVERT_LEN).expect("a checked advert encodes");
    let again: PeerAdvert = decode_payload(&frame[5..]).expect("and decodes again");
    let twice = encode(&again, MAX_ADVERT_LEN).expect("and encodes again");
    assert_eq!(frame, twice);
});
