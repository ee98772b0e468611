//! Randomized decoding on stable Rust: random bytes, and valid encodings with random bit
//! flips, truncations and splices, fed to every decoder that sees untrusted bytes. The
//! decoders must return (Ok or Err) without panicking; what they accept must re-validate.
//! `fuzz/` has the coverage-guided version of the same targets for `cargo fuzz`.

mod common;

use common::Rng;
use nanostar_protocol::limits::MAX_MANIFEST_LEN;
use nanostar_protocol::npk::header::{HEADER_LEN, HeaderFields, sha256};
use nanostar_protocol::npk::manifest::{Manifest, MountKind};
use nanostar_protocol::npk::seccomp::Program;
use nanostar_protocol::npk::{Arch, PublicKey, UnverifiedHeader, VerityParams};
use nanostar_protocol::version::{Version, VersionReq};

fn sample_manifest() -> Vec<u8> {
    let mut m = Manifest {
        name: "sample",
        version: Version::new(1, 0, 0),
        init: Some("/bin/sample"),
        args: heapless::Vec::from_slice(&["a", "b"]).unwrap(),
        env: heapless::Vec::new(),
        uid: 1000,
        gid: 1000,
        suppl_groups: heapless::Vec::from_slice(&[5]).unwrap(),
        mounts: heapless::Vec::new(),
        autostart: Default::default(),
        restart: Default::default(),
        stop_timeout_ms: 5000,
        cgroups: Default::default(),
        network: Default::default(),
        capabilities: Default::default(),
        rlimits: heapless::Vec::new(),
        seccomp: None,
        io: Default::default(),
        console: Default::default(),
        custom: Some("x = 1"),
    };
    m.mounts
        .push(nanostar_protocol::npk::manifest::Mount {
            target: "/res",
            kind: MountKind::Resource {
                name: "lib",
                version: VersionReq::parse(">=1.0.0").unwrap(),
                dir: "/lib",
                flags: Default::default(),
            },
        })
        .unwrap();
    let mut buf = vec![0u8; MAX_MANIFEST_LEN];
    m.encode(&mut buf).unwrap().to_vec()
}

fn sample_header() -> Vec<u8> {
    let f = HeaderFields {
        arch: Arch::Aarch64,
        manifest_len: 40,
        manifest_sha256: [1; 32],
        seccomp_len: 0,
        seccomp_sha256: sha256(&[]),
        image_offset: 4096,
        image_size: 4096 * 200,
        verity: VerityParams {
            hash_type: 1,
            algorithm: 1,
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 200,
            hash_offset: 4096 * 201,
            hash_size: 3 * 4096,
            salt_len: 32,
            salt: [2; 32],
            root_hash: [3; 32],
        },
    };
    f.encode(None).to_vec()
}

/// A random variation of `good`: flips, a cut, a splice of random bytes, or pure noise.
fn mutate(rng: &mut Rng, good: &[u8]) -> Vec<u8> {
    let mut b = good.to_vec();
    match rng.below(4) {
        0 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            let at = rng.below(b.len());
            let len = rng.below(16);
            let noise = rng.bytes(len);
            b.splice(at..at, noise);
        }
        _ => {
            let len = rng.below(2 * good.len());
            b = rng.bytes(len);
        }
    }
    b
}

const ROUNDS: usize = 200_000;

#[test]
fn manifest_decoder_survives_random_input() {
    let good = sample_manifest();
    assert!(Manifest::decode(&good).is_ok());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    for _ in 0..ROUNDS {
        let input = mutate(&mut rng, &good);
        if let Ok(m) = Manifest::decode(&input) {
            accepted += 1;
            assert_eq!(m.validate(), Ok(()));
            let mut buf = vec![0u8; MAX_MANIFEST_LEN];
            // postcard accepts over-long varints, so the bytes may differ; the value may not.
            // (The signed digest covers the exact bytes, so this is no malleability risk.)
            let again = m.encode(&mut buf).expect("an accepted manifest re-encodes");
            assert_eq!(Manifest::decode(again), Ok(m));
        }
    }
    // Some single flips land in string contents and still decode: the test exercised both paths.
    assert!(accepted > 0);
}

#[test]
fn header_decoder_survives_random_input() {
    let good = sample_header();
    let keys = [PublicKey([7; 32])];
    assert!(
        UnverifiedHeader::new(&good)
            .unwrap()
            .accept_unsigned()
            .is_ok()
    );
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..ROUNDS {
        let input = mutate(&mut rng, &good);
        if let Ok(h) = UnverifiedHeader::new(&input) {
            assert!(input.len() >= HEADER_LEN);
            let _ = h.verify(&keys);
            if let Ok(v) = h.accept_unsigned() {
                assert_eq!(v.check(), Ok(()));
                let _ = v.manifest(&input[HEADER_LEN.min(input.len())..]);
                let _ = v.check_file_len(input.len() as u64);
            }
        }
    }
}

#[test]
fn small_decoders_survive_random_input() {
    let mut rng = Rng(42);
    for _ in 0..ROUNDS / 4 {
        let len = rng.below(24);
        let b = rng.bytes(len);
        let text = String::from_utf8_lossy(&b);
        let _ = Version::parse(&text);
        let _ = VersionReq::parse(&text);
        let _ = PublicKey::from_file_bytes(&b);
        if let Ok(p) = Program::new(&b) {
            assert_eq!(p.instructions().count() * 8, b.len());
        }
    }
}
