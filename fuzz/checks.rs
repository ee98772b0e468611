//! What each fuzz target does with its input, in one place: the `cargo fuzz` targets
//! (`fuzz/fuzz_targets/*.rs`, nightly) call these, and so does the stable replay test
//! (`runtime/tests/fuzz_corpus.rs`), which runs every file of `fuzz/corpus/TARGET/`
//! through the same function, so CI exercises the corpus without nightly.
//!
//! Each function feeds untrusted bytes to one decoder the way the runtime or the client
//! does, and panics (the fuzzer's "crash") when a decoder panics or breaks one of its
//! promises: what it accepts validates, re-encodes and decodes to the same value.
//!
//! Included with `#[path]` by both users, so it may use only what both depend on: the
//! protocol crate and the runtime crate (`nanostar`).

use std::fmt::Write as _;

use nanostar::config;
use nanostar::text::{self, ExitText, Refusal, Subject};
use nanostar_protocol::console::{
    ExitStatus, FrameDecoder, Message, Notification, Reply, peek_hello_version, peek_request_id,
};
use nanostar_protocol::limits::{MAX_FRAME_LEN, MAX_MANIFEST_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::npk::header::HEADER_LEN;
use nanostar_protocol::npk::{Manifest, PublicKey, UnverifiedHeader};

/// The NPK header decoder: parse, verify against a fixed key, accept unsigned, then the
/// manifest and seccomp regions the header points at (what a store does with a file's
/// first bytes before it trusts any of them).
pub fn npk_header(data: &[u8]) {
    let Ok(header) = UnverifiedHeader::new(data) else {
        return;
    };
    let _ = header.verify(&[PublicKey([7; 32])]);
    let Ok(verified) = header.accept_unsigned() else {
        return;
    };
    assert_eq!(verified.check(), Ok(()));
    let _ = verified.check_file_len(data.len() as u64);
    let rest = &data[HEADER_LEN..];
    let manifest_len = (verified.manifest_len as usize).min(rest.len());
    let _ = verified.manifest(&rest[..manifest_len]);
    let _ = verified.seccomp(&rest[manifest_len..]);
}

/// The manifest decoder: whatever it accepts validates and survives a re-encode and
/// decode unchanged.
pub fn manifest(data: &[u8]) {
    let Ok(manifest) = Manifest::decode(data) else {
        return;
    };
    assert_eq!(manifest.validate(), Ok(()));
    let mut buf = [0u8; MAX_MANIFEST_LEN];
    let again = manifest
        .encode(&mut buf)
        .expect("an accepted manifest re-encodes");
    assert_eq!(Manifest::decode(again), Ok(manifest));
}

/// Splits a fuzz input into frames as a reader would meet them: the first byte picks the
/// size of each read, so every way a frame can straddle two reads is explored. Calls
/// `each` with every frame's payload.
fn frames(data: &[u8], mut each: impl FnMut(&[u8])) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split).max(1);
    let mut decoder = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
    for mut input in stream.chunks(piece) {
        while let Some(frame) = decoder.decode(&mut input) {
            if let Ok(payload) = frame {
                assert!(payload.len() <= MAX_FRAME_LEN);
                each(payload);
            }
        }
    }
}

/// A decoded message must re-encode to one frame that decodes to the same message.
fn round_trip(message: &Message) {
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
    assert!(input.is_empty(), "one frame, nothing after it");
    assert_eq!(Message::decode(payload).as_ref(), Ok(message));
}

/// What the runtime decodes from a client (`server/dispatch.rs`): frames, the peeks at
/// a `Hello`'s version and a request's id that come before the full decode, the decode,
/// the permission the request needs, and the message as each protocol version sees it.
pub fn console_frame(data: &[u8]) {
    frames(data, |payload| {
        let version = peek_hello_version(payload);
        let id = peek_request_id(payload);
        let Ok(message) = Message::decode(payload) else {
            return;
        };
        match &message {
            Message::Hello(hello) => assert_eq!(version, Some(hello.protocol_version)),
            Message::Request { id: got, .. } => assert_eq!(id, Some(*got)),
            _ => {}
        }
        let _ = message.permission();
        round_trip(&message);
        for v in 1..=nanostar_protocol::console::PROTOCOL_VERSION {
            if let Some(older) = message.clone().for_version(v) {
                round_trip(&older);
            }
        }
    });
}

/// What the client decodes from a runtime (`cli/connection.rs`) and then puts into words
/// (`text`): frames, the decode, and every reply and notification rendered the way the
/// client prints them, including a manifest that `inspect` returns whole.
pub fn console_client(data: &[u8]) {
    frames(data, |payload| {
        let Ok(message) = Message::decode(payload) else {
            return;
        };
        round_trip(&message);
        let mut out = String::new();
        let subject = Subject {
            command: "fuzz",
            name: Some("package"),
            version: None,
            repository: "default",
            file: None,
        };
        match &message {
            Message::Reply { reply, .. } => match reply {
                Reply::Error(e) => {
                    let _ = write!(out, "{}", Refusal(e, &subject));
                    let _ = text::error_text(e);
                    let _ = text::error_code(e);
                }
                Reply::Packages { packages, .. } => {
                    for p in packages {
                        let _ = write!(out, "{} {}", p.package.name, p.package.version);
                        if let Some(c) = p.container {
                            let _ = text::state_name(c.state);
                            let _ = write!(out, "{}", text::Uptime(c.uptime_ms));
                            exit(&mut out, c.last_exit);
                        }
                    }
                }
                Reply::Inspected(i) => {
                    let whole =
                        i.manifest_offset == 0 && i.manifest.len() == i.manifest_len as usize;
                    if whole && let Ok(m) = Manifest::decode(i.manifest) {
                        assert_eq!(m.validate(), Ok(()));
                    }
                    if let Some(key) = i.key {
                        let _ = write!(out, "{}", text::Hex(&key));
                    }
                }
                Reply::Stopped(status) | Reply::Ended(status) => exit(&mut out, Some(*status)),
                _ => {}
            },
            Message::Notification(
                Notification::Exited { status, .. } | Notification::GaveUp { status, .. },
            ) => exit(&mut out, Some(*status)),
            _ => {}
        }
        let _ = write!(out, "{message:?}");
    });
}

fn exit(out: &mut String, status: Option<ExitStatus>) {
    if let Some(status) = status {
        let _ = write!(out, "{}", ExitText(status));
        let _ = write!(out, "{}", text::ExitSentence(status, "exited with code "));
    }
}

/// The runtime's configuration parser (`config::parse`) on any text: what it accepts
/// keeps the promises `Config` documents (absolute paths, at most the limits' counts).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = config::parse(text) else {
        return;
    };
    for path in [
        config.run_dir,
        config.data_dir,
        config.socket,
        config.data_mount,
    ] {
        assert!(path.starts_with('/'), "{path:?} is not absolute");
    }
    for repository in &config.repositories {
        assert!(repository.dir.starts_with('/'));
        for key in &repository.keys {
            assert!(key.starts_with('/'));
        }
    }
    let _ = config.permissions(0, 0);
    let _ = config.permissions(u32::MAX, u32::MAX);
}

/// A target's check.
pub type Check = fn(&[u8]);

/// Every target by its directory name under `fuzz/corpus/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("npk_header", npk_header),
    ("manifest", manifest),
    ("console_frame", console_frame),
    ("console_client", console_client),
    ("config", config),
];
