//! The fuzz corpus, replayed on stable: every file under `fuzz/corpus/TARGET/` goes
//! through the same check its `cargo fuzz` target runs (`fuzz/checks.rs`), so CI
//! exercises the decoders that see untrusted bytes (NPK header, manifest, console frames
//! in both directions, the configuration) with the inputs the fuzzer found, without
//! nightly. A panic names the file; an input that once crashed a decoder stays in the
//! corpus as its regression test.

use std::path::Path;

#[path = "../../fuzz/checks.rs"]
mod checks;

/// Every target has a corpus in the repository, and every file of it passes its check.
#[test]
fn every_corpus_file_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, check) in checks::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 8,
            "{target}: only {} corpus files",
            files.len()
        );
        for file in &files {
            let data = std::fs::read(file).unwrap();
            let name = file.display().to_string();
            if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                panic!("{target}: {name}: {why}");
            }
        }
        eprintln!("{target}: {} files", files.len());
    }
}
