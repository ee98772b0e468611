//! The NPK header decoder on arbitrary bytes: parse, verify against a fixed key, accept
//! unsigned, then the manifest and seccomp regions the header points at.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanostar_protocol::npk::header::HEADER_LEN;
use nanostar_protocol::npk::{PublicKey, UnverifiedHeader};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = UnverifiedHeader::new(data) else { return };
    let _ = header.verify(&[PublicKey([7; 32])]);
    let Ok(verified) = header.accept_unsigned() else { return };
    assert_eq!(verified.check(), Ok(()));
    let _ = verified.check_file_len(data.len() as u64);
    let rest = &data[HEADER_LEN..];
    let manifest_len = (verified.manifest_len as usize).min(rest.len());
    let _ = verified.manifest(&rest[..manifest_len]);
    let _ = verified.seccomp(&rest[manifest_len..]);
});
