//! Randomized decoding of console frames on stable Rust: random bytes, and valid frames
//! with random bit flips, truncations, splices and inserted delimiters, in random pieces
//! and into buffers of random sizes. The frame decoder and the message decoder must return
//! without panicking; what the message decoder accepts must re-encode to a frame that
//! decodes to the same message; and a valid frame after a delimiter always comes out
//! whole (resynchronisation). `fuzz/fuzz_targets/console_frame.rs` is the
//! coverage-guided version.

mod common;

use common::Rng;
use nanostar_protocol::console::{
    Error, FrameDecoder, Hello, Inspected, Message, Notification, PackageId, PackageInfo, Reply,
    Request,
};
use nanostar_protocol::limits::{MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::npk::manifest::EnvVar;
use nanostar_protocol::version::Version;

const ITERATIONS: usize = 100_000;

fn seeds() -> Vec<Vec<u8>> {
    let pkg = PackageId {
        name: "hello",
        version: Version::new(1, 2, 3),
    };
    let info = PackageInfo {
        package: pkg,
        repository: "system",
        mounted: true,
        container: None,
    };
    let messages = [
        Message::Hello(Hello {
            protocol_version: 1,
            client: "cli",
        }),
        Message::Request {
            id: 1,
            request: Request::List { after: Some(pkg) },
        },
        Message::Request {
            id: 2,
            request: Request::InstallChunk {
                data: &[0, 1, 2, 3, 0, 0, 9],
            },
        },
        Message::Request {
            id: 3,
            request: Request::Start {
                name: "hello",
                version: None,
                args: Some(heapless::Vec::from_slice(&["-v", "x"]).unwrap()),
                env: heapless::Vec::from_slice(&[EnvVar {
                    key: "A",
                    value: "b",
                }])
                .unwrap(),
            },
        },
        Message::Reply {
            id: 1,
            reply: Reply::Packages {
                packages: heapless::Vec::from_slice(&[info, info]).unwrap(),
                more: true,
            },
        },
        Message::Reply {
            id: 4,
            reply: Reply::Inspected(Inspected {
                package: info,
                size: 4096,
                key: None,
                manifest_len: 4,
                manifest_offset: 0,
                manifest: &[1, 0, 2, 0],
            }),
        },
        Message::Reply {
            id: 5,
            reply: Reply::Error(Error::Busy { used_by: pkg }),
        },
        Message::Notification(Notification::Installed {
            package: pkg,
            repository: "system",
        }),
    ];
    let mut wire = vec![0u8; MAX_WIRE_FRAME_LEN];
    messages
        .iter()
        .map(|m| m.encode(&mut wire).unwrap().to_vec())
        .collect()
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            2 => b.truncate(rng.below(b.len() + 1)),
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let at = rng.below(b.len() + 1);
                b.splice(at..at, other[from..].iter().copied());
            }
            4 => {
                let at = rng.below(b.len() + 1);
                b.insert(at, 0);
            }
            _ => {
                let at = rng.below(b.len() + 1);
                let len = rng.below(16);
                let junk = rng.bytes(len);
                b.splice(at..at, junk);
            }
        }
    }
    b
}

/// Whatever the message decoder accepts survives a re-encode and a decode.
fn check_payload(payload: &[u8]) -> bool {
    let Ok(m) = Message::decode(payload) else {
        return false;
    };
    let mut wire = vec![0u8; MAX_WIRE_FRAME_LEN];
    let frame = m.encode(&mut wire).expect("an accepted message re-encodes");
    let mut d = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
    let mut input = frame;
    let again = d
        .decode(&mut input)
        .expect("a frame")
        .expect("a whole frame");
    assert_eq!(Message::decode(again), Ok(m));
    true
}

#[test]
fn random_and_mutated_streams() {
    let seeds = seeds();
    let mut rng = Rng(0x00C0_FFEE_D00D);
    let mut accepted = 0;
    let mut frames = 0;
    for i in 0..ITERATIONS {
        let junk = if rng.below(4) == 0 {
            let len = rng.below(200);
            rng.bytes(len)
        } else {
            mutate(&mut rng, &seeds)
        };
        // The junk, a delimiter, then a known-good frame: it must come out whole.
        let good = &seeds[rng.below(seeds.len())];
        let mut stream = junk;
        stream.push(0);
        stream.extend(good);
        let cap = [4, 64, 300, MAX_FRAME_LEN][rng.below(4)];
        let mut d = FrameDecoder::new(vec![0u8; cap]);
        let mut last = None;
        let mut at = 0;
        while at < stream.len() {
            let n = (1 + rng.below(64)).min(stream.len() - at);
            let mut input = &stream[at..at + n];
            while let Some(r) = d.decode(&mut input) {
                if let Ok(payload) = r {
                    frames += 1;
                    assert!(payload.len() <= cap);
                    accepted += usize::from(check_payload(payload));
                    last = Some(payload.to_vec());
                }
            }
            at += n;
        }
        if good.len() <= cap {
            let want = {
                let mut d = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
                let mut input = &good[..];
                d.decode(&mut input).unwrap().unwrap().to_vec()
            };
            assert_eq!(last.as_deref(), Some(&want[..]), "iteration {i}");
        }
        // Raw bytes straight into the message decoder as well.
        let raw = mutate(&mut rng, &seeds);
        accepted += usize::from(check_payload(&raw));
    }
    // Sanity: the mutations reach the decoder often and are sometimes still valid.
    assert!(
        frames > ITERATIONS / 2 && accepted > 100,
        "{frames} {accepted}"
    );
}
