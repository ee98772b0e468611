//! The manifest decoder on arbitrary bytes; whatever it accepts must validate and survive
//! a re-encode and decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanostar_protocol::limits::MAX_MANIFEST_LEN;
use nanostar_protocol::npk::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::decode(data) else { return };
    assert_eq!(manifest.validate(), Ok(()));
    let mut buf = [0u8; MAX_MANIFEST_LEN];
    let again = manifest.encode(&mut buf).expect("an accepted manifest re-encodes");
    assert_eq!(Manifest::decode(again), Ok(manifest));
});
