//! Ed25519 key files on the host: generation, and reading secret and public keys in our
//! text form or Northstar's raw 32-byte form.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ed25519_compact::{KeyPair, Seed};
use nanostar_protocol::npk::keys::{
    PUBLIC_KEY_PREFIX, PublicKey, SECRET_KEY_PREFIX, parse_key_file,
};

/// Writes `<stem>.key` (mode 0600) and `<stem>.pub` for a new random key pair, creating
/// missing parent directories (`--out keys/release` in a fresh checkout); refuses to
/// overwrite either. Returns both paths.
pub fn generate(stem: &Path) -> Result<(PathBuf, PathBuf)> {
    let secret_path = stem.with_extension("key");
    let public_path = stem.with_extension("pub");
    if let Some(dir) = secret_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the key directory {}", dir.display()))?;
    }
    for p in [&secret_path, &public_path] {
        if p.exists() {
            bail!(
                "{} exists; keygen never overwrites a key: choose another name or remove it first",
                p.display()
            );
        }
    }
    let pair = KeyPair::from_seed(Seed::generate());
    let seed = pair.sk.seed();
    write_new(
        &secret_path,
        0o600,
        format!("{SECRET_KEY_PREFIX}{}\n", hex(seed.as_ref())).as_bytes(),
    )?;
    write_new(
        &public_path,
        0o644,
        format!("{PUBLIC_KEY_PREFIX}{}\n", hex(pair.pk.as_ref())).as_bytes(),
    )?;
    Ok((secret_path, public_path))
}

fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a secret key file: ours, or a raw 32-byte seed (Northstar's `.key`).
pub fn read_secret(path: &Path) -> Result<KeyPair> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read secret key {}", path.display()))?;
    let seed = parse_key_file(&bytes, SECRET_KEY_PREFIX).map_err(|_| {
        anyhow::anyhow!(
            "{} is not a secret key: expected `npk keygen` output or a raw 32-byte seed",
            path.display()
        )
    })?;
    Ok(KeyPair::from_seed(Seed::new(seed)))
}

/// Reads a public key file: ours, or a raw 32-byte key (Northstar's `.pub`).
pub fn read_public(path: &Path) -> Result<PublicKey> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read public key {}", path.display()))?;
    PublicKey::from_file_bytes(&bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} is not a public key: expected `npk keygen` output (.pub) or a raw 32-byte key",
            path.display()
        )
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_creates_missing_directories() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk) = generate(&dir.path().join("keys/team/release")).unwrap();
        assert_eq!(sk, dir.path().join("keys/team/release.key"));
        assert_eq!(
            std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_public(&pk).unwrap().0, *read_secret(&sk).unwrap().pk);
        // A file where a directory should be is reported, not overwritten.
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let e = format!("{:#}", generate(&dir.path().join("file/dev")).unwrap_err());
        assert!(e.contains("cannot create the key directory"), "{e}");
    }

    #[test]
    fn generate_read_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("dev");
        let (sk, pk) = generate(&stem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let pair = read_secret(&sk).unwrap();
        assert_eq!(read_public(&pk).unwrap().0, *pair.pk);
        let e = generate(&stem).unwrap_err().to_string();
        assert!(e.contains("never overwrites"), "{e}");
        // Northstar's raw forms.
        let raw_sk = dir.path().join("ns.key");
        std::fs::write(&raw_sk, pair.sk.seed().as_ref()).unwrap();
        assert_eq!(*read_secret(&raw_sk).unwrap().pk, *pair.pk);
        let raw_pk = dir.path().join("ns.pub");
        std::fs::write(&raw_pk, pair.pk.as_ref()).unwrap();
        assert_eq!(read_public(&raw_pk).unwrap().0, *pair.pk);
        std::fs::write(&raw_pk, b"garbage").unwrap();
        assert!(
            read_public(&raw_pk)
                .unwrap_err()
                .to_string()
                .contains("not a public key")
        );
    }
}
