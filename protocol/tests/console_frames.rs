//! The console frame decoder on a byte stream as `read()` delivers it: whole, one byte at
//! a time, in random pieces, after garbage, with oversize and truncated frames.

mod common;

use common::Rng;
use nanostar_protocol::console::{
    FrameDecoder, FrameError, Message, PackageId, Reply, Request, encode_frame,
};
use nanostar_protocol::limits::{MAX_CHUNK_LEN, MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::version::Version;

type Out = Vec<Result<Vec<u8>, FrameError>>;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; payload.len() + payload.len() / 254 + 2];
    encode_frame(payload, &mut out).unwrap().to_vec()
}

fn message_frame(m: &Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; MAX_WIRE_FRAME_LEN];
    m.encode(&mut out).unwrap().to_vec()
}

/// Feeds `stream` in the pieces `cuts` gives, collecting what the decoder yields.
fn feed<B: AsMut<[u8]>>(
    decoder: &mut FrameDecoder<B>,
    stream: &[u8],
    mut cut: impl FnMut(usize) -> usize,
) -> Out {
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let n = cut(stream.len() - at).clamp(1, stream.len() - at);
        let mut input = &stream[at..at + n];
        while let Some(r) = decoder.decode(&mut input) {
            out.push(r.map(<[u8]>::to_vec));
        }
        assert!(input.is_empty());
        at += n;
    }
    out
}

fn payloads() -> Vec<Vec<u8>> {
    let mut p = vec![
        vec![0],
        vec![1],
        vec![0, 0, 0],
        b"hello".to_vec(),
        vec![0xFF; 254],
        vec![0xFF; 255],
        (0..=255u8).cycle().take(3000).collect(),
        vec![7; MAX_FRAME_LEN],
    ];
    let pkg = PackageId {
        name: "hello",
        version: Version::new(1, 0, 0),
    };
    let chunk = vec![0u8; MAX_CHUNK_LEN];
    for m in [
        Message::Request {
            id: 1,
            request: Request::Mount(pkg),
        },
        Message::Request {
            id: 2,
            request: Request::InstallChunk { data: &chunk },
        },
        Message::Reply {
            id: 2,
            reply: Reply::Installed(pkg),
        },
    ] {
        let wire = message_frame(&m);
        let mut d = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
        let mut input = &wire[..];
        p.push(d.decode(&mut input).unwrap().unwrap().to_vec());
    }
    p
}

fn ok(payloads: &[Vec<u8>]) -> Out {
    payloads.iter().cloned().map(Ok).collect()
}

#[test]
fn whole_bytewise_and_random_pieces() {
    let payloads = payloads();
    let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    let want = ok(&payloads);
    let mut d = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
    assert_eq!(feed(&mut d, &stream, |n| n), want);
    assert_eq!(feed(&mut d, &stream, |_| 1), want);
    let mut rng = Rng(0x5EED);
    for _ in 0..200 {
        assert_eq!(feed(&mut d, &stream, |_| 1 + rng.below(600)), want);
    }
    assert!(!d.in_frame());
}

#[test]
fn empty_frames_are_ignored() {
    let mut d = FrameDecoder::new([0u8; 16]);
    let mut stream = vec![0, 0, 0];
    stream.extend(frame(b"x"));
    stream.extend([0, 0]);
    assert_eq!(feed(&mut d, &stream, |_| 1), ok(&[b"x".to_vec()]));
}

#[test]
fn garbage_before_and_between_frames() {
    let payloads = payloads();
    let mut rng = Rng(42);
    for round in 0..100 {
        // Garbage: any bytes, ending with a delimiter (a serial client sends one first).
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for p in &payloads {
            let garbage: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            stream.extend(&garbage);
            stream.push(0);
            stream.extend(frame(p));
            want.push(p.clone());
        }
        let mut d = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
        let got = feed(&mut d, &stream, |_| 1 + rng.below(100));
        // Garbage may decode as junk frames or errors; every real frame comes out whole,
        // in order.
        let frames: Vec<Vec<u8>> = got.into_iter().filter_map(Result::ok).collect();
        let mut it = frames.iter();
        for w in &want {
            assert!(it.any(|f| f == w), "round {round}: a frame was lost");
        }
    }
}

#[test]
fn oversize_frame_is_skipped() {
    let mut d = FrameDecoder::new([0u8; 8]);
    let mut stream = frame(&[9; 9]);
    stream.extend(frame(&[1; 8]));
    stream.extend(frame(&[2; 300]));
    stream.extend(frame(&[0; 9]));
    stream.extend(frame(&[]));
    stream.extend(frame(&[3]));
    let want = vec![
        Err(FrameError::TooLong),
        Ok(vec![1; 8]),
        Err(FrameError::TooLong),
        Err(FrameError::TooLong),
        Ok(vec![]),
        Ok(vec![3]),
    ];
    assert_eq!(feed(&mut d, &stream, |n| n), want);
    assert_eq!(feed(&mut d, &stream, |_| 1), want);
    let mut rng = Rng(7);
    for _ in 0..100 {
        assert_eq!(feed(&mut d, &stream, |_| 1 + rng.below(20)), want);
    }

    // One byte over MAX_FRAME_LEN, between two good frames, at full size.
    let mut d = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
    let mut stream = frame(b"a");
    stream.extend(frame(&vec![5; MAX_FRAME_LEN + 1]));
    stream.extend(frame(b"b"));
    let want = vec![
        Ok(b"a".to_vec()),
        Err(FrameError::TooLong),
        Ok(b"b".to_vec()),
    ];
    assert_eq!(feed(&mut d, &stream, |_| 1 + rng.below(4000)), want);
}

#[test]
fn truncated_frames() {
    let good = frame(b"second frame");
    for full in [frame(b"the first frame"), frame(&[0; 20]), frame(&[7; 600])] {
        for cut in 1..full.len() - 1 {
            // The sender died mid-frame: at end of stream the decoder holds a partial one.
            let mut d = FrameDecoder::new(vec![0u8; 1024]);
            assert_eq!(feed(&mut d, &full[..cut], |_| 1), Vec::new());
            assert!(d.in_frame());
            d.reset();
            assert!(!d.in_frame());
            assert_eq!(feed(&mut d, &good, |n| n), ok(&[b"second frame".to_vec()]));

            // The rest was lost and a delimiter follows: an error or a short junk frame,
            // never the next frame's loss.
            let mut stream = full[..cut].to_vec();
            stream.push(0);
            stream.extend(&good);
            let mut d = FrameDecoder::new(vec![0u8; 1024]);
            let got = feed(&mut d, &stream, |_| 3);
            assert_eq!(got.len(), 2, "cut {cut}");
            assert_eq!(got[1], Ok(b"second frame".to_vec()));
            match &got[0] {
                Err(FrameError::Corrupt) => {}
                Ok(junk) => assert!(junk.len() < 600),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }
}

#[test]
fn truncated_messages_do_not_decode() {
    let m = Message::Reply {
        id: 9,
        reply: Reply::Installed(PackageId {
            name: "hello",
            version: Version::new(1, 2, 3),
        }),
    };
    let wire = message_frame(&m);
    let mut d = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
    let mut input = &wire[..];
    let payload = d.decode(&mut input).unwrap().unwrap().to_vec();
    assert_eq!(Message::decode(&payload), Ok(m));
    for cut in 0..payload.len() {
        assert!(Message::decode(&payload[..cut]).is_err(), "cut {cut}");
    }
}
