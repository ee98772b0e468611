//! The console frame decoder and message decoder on an arbitrary byte stream, fed in
//! pieces whose sizes come from the input itself. Whatever decodes as a message must
//! re-encode to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanostar_protocol::console::{FrameDecoder, Message};
use nanostar_protocol::limits::{MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so splits are explored too.
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split).max(1);
    let mut decoder = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
    for mut input in stream.chunks(piece) {
        while let Some(frame) = decoder.decode(&mut input) {
            let Ok(payload) = frame else { continue };
            let Ok(message) = Message::decode(payload) else {
                continue;
            };
            let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
            let encoded = message
                .encode(&mut wire)
                .expect("an accepted message re-encodes");
            let mut again = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
            let mut input = encoded;
            let payload = again
                .decode(&mut input)
                .expect("a frame")
                .expect("a whole frame");
            assert_eq!(Message::decode(payload), Ok(message));
        }
    }
});
