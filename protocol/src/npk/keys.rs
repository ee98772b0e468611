//! Ed25519 public keys that a repository trusts, and their key files.
//!
//! A public key file is either our text form, `nanostar-ed25519-public:` followed by 64 hex
//! digits (and optional trailing whitespace), or a raw 32-byte key as Northstar writes it.

use sha2::{Digest, Sha256};

use crate::hex;

/// Prefix of a public key file in text form.
pub const PUBLIC_KEY_PREFIX: &str = "nanostar-ed25519-public:";
/// Prefix of a secret key file in text form (host only: the device never sees one).
pub const SECRET_KEY_PREFIX: &str = "nanostar-ed25519-secret:";

/// Short identifier of a key, stored next to a signature so the device tries the right key
/// first and can say "signed by an unknown key": the first 8 bytes of SHA-256(public key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of an unsigned package.
    pub const NONE: KeyId = KeyId([0; 8]);
}

/// An Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// Why a key file does not hold a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileError {
    /// Neither 32 raw bytes nor the text form.
    Format,
    /// The text form with a bad hex part.
    Hex,
}

impl PublicKey {
    /// The key's id.
    pub fn id(&self) -> KeyId {
        let digest: [u8; 32] = Sha256::digest(self.0).into();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    /// Reads a public key file (text form or raw 32 bytes).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<PublicKey, KeyFileError> {
        parse_key_file(bytes, PUBLIC_KEY_PREFIX).map(PublicKey)
    }
}

/// Reads a 32-byte key from a key file with the given text prefix, or raw.
pub fn parse_key_file(bytes: &[u8], prefix: &str) -> Result<[u8; 32], KeyFileError> {
    if let Some(rest) = bytes.strip_prefix(prefix.as_bytes()) {
        return hex::decode::<32>(rest.trim_ascii()).map_err(|_| KeyFileError::Hex);
    }
    <[u8; 32]>::try_from(bytes).map_err(|_| KeyFileError::Format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files() {
        let text = b"nanostar-ed25519-public:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
        let key = PublicKey::from_file_bytes(text).unwrap();
        assert_eq!(key.0[31], 31);
        assert_eq!(PublicKey::from_file_bytes(&key.0), Ok(key));
        assert_eq!(
            PublicKey::from_file_bytes(b"nanostar-ed25519-public:00"),
            Err(KeyFileError::Hex)
        );
        assert_eq!(
            PublicKey::from_file_bytes(&[0; 31]),
            Err(KeyFileError::Format)
        );
        assert_ne!(key.id(), KeyId::NONE);
    }
}
