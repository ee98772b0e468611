//! The NPK header: a fixed 328-byte block at the start of every package.
//!
//! Bytes 0..256 are the signed part: magic, format version, and every parameter the device
//! later hands to the kernel or trusts (architecture, manifest and seccomp digests, image
//! position, the whole verity table). Bytes 256..328 carry the key id and the Ed25519
//! signature over bytes 0..256. All integers are little endian. `docs/npk-format.md` is the
//! specification; this module is its implementation.
//!
//! Reading is a typestate: [`UnverifiedHeader`] only knows magic and version; the fields
//! become readable as a [`VerifiedHeader`], made by [`UnverifiedHeader::verify`] (signature
//! against trusted keys) or [`UnverifiedHeader::accept_unsigned`] (development repositories
//! without keys). Nothing else of a package is read before that.

use core::ops::Deref;

use ed25519_compact::{PublicKey as EdPublicKey, Signature};
use sha2::{Digest, Sha256};

use super::Arch;
use super::keys::{KeyId, PublicKey};
use super::manifest::{Manifest, ManifestError};
use super::seccomp::{Program, ProgramError};
use super::verity::{self, Layout};
use crate::limits::{MAX_MANIFEST_LEN, MAX_SECCOMP_INSTRUCTIONS};

/// First 8 bytes of every NPK. The high byte and CR LF catch text-mode transfers.
pub const MAGIC: [u8; 8] = *b"\x89NPK\r\n\x1a\n";
/// The format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the signed part of the header.
pub const SIGNED_LEN: usize = 256;
/// Length of the whole header; the manifest starts here.
pub const HEADER_LEN: usize = 328;
/// Alignment of the image inside the file: loop devices and verity read whole pages.
pub const IMAGE_ALIGN: u64 = 4096;
/// Length of the salt field; salts are exactly this long in packages we write.
pub const SALT_FIELD_LEN: usize = 32;
/// Largest `image_offset` the rules allow: the header, the largest manifest and the largest
/// seccomp program, aligned. Everything before the image fits in a buffer this long.
pub const MAX_IMAGE_OFFSET: usize =
    (HEADER_LEN + MAX_MANIFEST_LEN + MAX_SECCOMP_INSTRUCTIONS * super::seccomp::INSTRUCTION_LEN)
        .next_multiple_of(IMAGE_ALIGN as usize);
/// Largest image accepted, 4 GiB: far above any package a small device installs, and it
/// keeps every offset computation far from overflow.
pub const MAX_IMAGE_SIZE: u64 = 1 << 32;

/// Verity hash algorithm code for SHA-256 (the only one).
pub const HASH_SHA256: u8 = 1;
/// dm-verity hash type 1 (salt first, the format cryptsetup writes).
pub const VERITY_HASH_TYPE: u8 = 1;

// Field offsets in the header; see docs/npk-format.md.
const OFF_VERSION: usize = 8;
const OFF_ARCH: usize = 10;
const OFF_MANIFEST_LEN: usize = 12;
const OFF_MANIFEST_SHA: usize = 16;
const OFF_SECCOMP_LEN: usize = 48;
const OFF_SECCOMP_SHA: usize = 52;
const OFF_RESERVED_A: usize = 84;
const OFF_IMAGE_OFFSET: usize = 88;
const OFF_IMAGE_SIZE: usize = 96;
const OFF_HASH_TYPE: usize = 104;
const OFF_HASH_ALGORITHM: usize = 105;
const OFF_SALT_LEN: usize = 106;
const OFF_RESERVED_B: usize = 107;
const OFF_DATA_BLOCK_SIZE: usize = 108;
const OFF_HASH_BLOCK_SIZE: usize = 112;
const OFF_RESERVED_C: usize = 116;
const OFF_DATA_BLOCKS: usize = 120;
const OFF_HASH_OFFSET: usize = 128;
const OFF_HASH_SIZE: usize = 136;
const OFF_SALT: usize = 144;
const OFF_ROOT_HASH: usize = 176;
const OFF_RESERVED_D: usize = 208;
const OFF_KEY_ID: usize = 256;
const OFF_SIGNATURE: usize = 264;

/// Why a header is refused. Each variant names the one thing that is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    Truncated,
    /// Not an NPK (wrong magic).
    Magic,
    /// A format version this runtime does not read.
    Version(u16),
    /// The package carries no signature but the repository requires one.
    Unsigned,
    /// Signed by a key the repository does not trust.
    UnknownKey(KeyId),
    /// The signature does not match the header (tampered or corrupt).
    Signature,
    /// A reserved byte is not zero.
    Reserved,
    /// Unknown architecture code.
    Arch(u16),
    /// Manifest length is zero or above the limit.
    ManifestLength,
    /// Seccomp length is not whole instructions or above the limit.
    SeccompLength,
    /// Image offset is not aligned or overlaps the manifest or seccomp program.
    ImageOffset,
    /// Image size is zero, unaligned or too large.
    ImageSize,
    /// Unsupported verity hash type or algorithm.
    VerityAlgorithm,
    /// Unsupported data or hash block size.
    BlockSize,
    /// Data block count does not match the image size.
    DataBlocks,
    /// Hash tree does not start right after the image.
    HashOffset,
    /// Hash tree size does not match its geometry.
    HashSize,
    /// Salt longer than its field, or padding after it not zero.
    Salt,
    /// The file's length differs from what the header describes.
    FileLength,
}

/// Why the manifest or seccomp program of a verified package is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentError {
    /// The bytes given are not as long as the header says.
    Length,
    /// The manifest's SHA-256 differs from the signed digest.
    ManifestDigest,
    /// The manifest decodes badly or breaks a rule.
    Manifest(ManifestError),
    /// The seccomp program's SHA-256 differs from the signed digest.
    SeccompDigest,
    /// The seccomp program is malformed.
    Seccomp(ProgramError),
    /// A byte between the seccomp program and the image is not zero. No digest covers
    /// these bytes, so they must hold nothing.
    Padding,
    /// The manifest asks for a seccomp filter (no `[seccomp]` table, or a profile other
    /// than `unconfined`) but the package carries no program: packed by an npk from before
    /// filters were the default, or made by hand to skip the filter.
    SeccompMissing,
    /// The package carries a seccomp program although its manifest chose no filter
    /// (`unconfined`) or it is a resource, which never runs.
    SeccompUnexpected,
}

/// The checked contents before the image: the manifest and the seccomp program.
#[derive(Debug, Clone, PartialEq)]
pub struct Contents<'b> {
    /// The decoded, validated manifest.
    pub manifest: Manifest<'b>,
    /// The seccomp program, present exactly when the manifest wants one.
    pub seccomp: Program<'b>,
}

/// The dm-verity parameters of a package: everything that goes into the verity table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerityParams {
    /// dm-verity hash type (1).
    pub hash_type: u8,
    /// Hash algorithm code ([`HASH_SHA256`]).
    pub algorithm: u8,
    /// Data block size in bytes (4096).
    pub data_block_size: u32,
    /// Hash block size in bytes (4096).
    pub hash_block_size: u32,
    /// Number of data blocks: the image size divided by the data block size.
    pub data_blocks: u64,
    /// Offset of the hash tree from the start of the file.
    pub hash_offset: u64,
    /// Size of the hash tree in bytes.
    pub hash_size: u64,
    /// Salt length in bytes.
    pub salt_len: u8,
    /// Salt; bytes beyond `salt_len` are zero.
    pub salt: [u8; SALT_FIELD_LEN],
    /// Root hash of the tree.
    pub root_hash: [u8; verity::DIGEST_LEN],
}

impl VerityParams {
    /// The salt's meaningful bytes.
    pub fn salt(&self) -> &[u8] {
        &self.salt[..usize::from(self.salt_len).min(SALT_FIELD_LEN)]
    }
}

/// The fields of a header. Build one to write a package; read one from a [`VerifiedHeader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFields {
    /// Architecture of the package's code.
    pub arch: Arch,
    /// Length of the encoded manifest, which starts at [`HEADER_LEN`].
    pub manifest_len: u32,
    /// SHA-256 of the encoded manifest.
    pub manifest_sha256: [u8; 32],
    /// Length of the seccomp program, which follows the manifest (0 = no filter).
    pub seccomp_len: u32,
    /// SHA-256 of the seccomp program.
    pub seccomp_sha256: [u8; 32],
    /// Offset of the squashfs image, a multiple of [`IMAGE_ALIGN`].
    pub image_offset: u64,
    /// Size of the image (a whole number of data blocks).
    pub image_size: u64,
    /// Verity parameters.
    pub verity: VerityParams,
}

impl HeaderFields {
    /// Offset of the seccomp program in the file.
    pub fn seccomp_offset(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.manifest_len)
    }

    /// The file length this header describes.
    pub fn file_len(&self) -> u64 {
        self.verity.hash_offset + self.verity.hash_size
    }

    /// The smallest image offset after a manifest and seccomp program of these lengths.
    pub fn image_offset_for(manifest_len: u32, seccomp_len: u32) -> u64 {
        (HEADER_LEN as u64 + u64::from(manifest_len) + u64::from(seccomp_len))
            .next_multiple_of(IMAGE_ALIGN)
    }

    /// The signed part of the header.
    pub fn encode_signed(&self) -> [u8; SIGNED_LEN] {
        let mut b = [0u8; SIGNED_LEN];
        b[..8].copy_from_slice(&MAGIC);
        put(&mut b, OFF_VERSION, &FORMAT_VERSION.to_le_bytes());
        put(&mut b, OFF_ARCH, &self.arch.code().to_le_bytes());
        put(&mut b, OFF_MANIFEST_LEN, &self.manifest_len.to_le_bytes());
        put(&mut b, OFF_MANIFEST_SHA, &self.manifest_sha256);
        put(&mut b, OFF_SECCOMP_LEN, &self.seccomp_len.to_le_bytes());
        put(&mut b, OFF_SECCOMP_SHA, &self.seccomp_sha256);
        put(&mut b, OFF_IMAGE_OFFSET, &self.image_offset.to_le_bytes());
        put(&mut b, OFF_IMAGE_SIZE, &self.image_size.to_le_bytes());
        let v = &self.verity;
        b[OFF_HASH_TYPE] = v.hash_type;
        b[OFF_HASH_ALGORITHM] = v.algorithm;
        b[OFF_SALT_LEN] = v.salt_len;
        put(
            &mut b,
            OFF_DATA_BLOCK_SIZE,
            &v.data_block_size.to_le_bytes(),
        );
        put(
            &mut b,
            OFF_HASH_BLOCK_SIZE,
            &v.hash_block_size.to_le_bytes(),
        );
        put(&mut b, OFF_DATA_BLOCKS, &v.data_blocks.to_le_bytes());
        put(&mut b, OFF_HASH_OFFSET, &v.hash_offset.to_le_bytes());
        put(&mut b, OFF_HASH_SIZE, &v.hash_size.to_le_bytes());
        put(&mut b, OFF_SALT, &v.salt);
        put(&mut b, OFF_ROOT_HASH, &v.root_hash);
        b
    }

    /// The whole header: the signed part, then key id and signature (zeros if unsigned).
    pub fn encode(&self, signature: Option<(KeyId, [u8; 64])>) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..SIGNED_LEN].copy_from_slice(&self.encode_signed());
        if let Some((key_id, sig)) = signature {
            put(&mut b, OFF_KEY_ID, &key_id.0);
            put(&mut b, OFF_SIGNATURE, &sig);
        }
        b
    }

    fn decode(b: &[u8; HEADER_LEN]) -> Result<HeaderFields, HeaderError> {
        let reserved = [
            OFF_RESERVED_A..OFF_IMAGE_OFFSET,
            OFF_RESERVED_B..OFF_DATA_BLOCK_SIZE,
            OFF_RESERVED_C..OFF_DATA_BLOCKS,
            OFF_RESERVED_D..SIGNED_LEN,
        ];
        if reserved.into_iter().any(|r| b[r].iter().any(|&x| x != 0)) {
            return Err(HeaderError::Reserved);
        }
        let arch_code = u16_at(b, OFF_ARCH);
        let fields = HeaderFields {
            arch: Arch::from_code(arch_code).ok_or(HeaderError::Arch(arch_code))?,
            manifest_len: u32_at(b, OFF_MANIFEST_LEN),
            manifest_sha256: array_at(b, OFF_MANIFEST_SHA),
            seccomp_len: u32_at(b, OFF_SECCOMP_LEN),
            seccomp_sha256: array_at(b, OFF_SECCOMP_SHA),
            image_offset: u64_at(b, OFF_IMAGE_OFFSET),
            image_size: u64_at(b, OFF_IMAGE_SIZE),
            verity: VerityParams {
                hash_type: b[OFF_HASH_TYPE],
                algorithm: b[OFF_HASH_ALGORITHM],
                data_block_size: u32_at(b, OFF_DATA_BLOCK_SIZE),
                hash_block_size: u32_at(b, OFF_HASH_BLOCK_SIZE),
                data_blocks: u64_at(b, OFF_DATA_BLOCKS),
                hash_offset: u64_at(b, OFF_HASH_OFFSET),
                hash_size: u64_at(b, OFF_HASH_SIZE),
                salt_len: b[OFF_SALT_LEN],
                salt: array_at(b, OFF_SALT),
                root_hash: array_at(b, OFF_ROOT_HASH),
            },
        };
        fields.check()?;
        Ok(fields)
    }

    /// Every consistency rule of the format; the writer calls it too.
    pub fn check(&self) -> Result<(), HeaderError> {
        if self.manifest_len == 0 || self.manifest_len as usize > MAX_MANIFEST_LEN {
            return Err(HeaderError::ManifestLength);
        }
        let seccomp_len = self.seccomp_len as usize;
        if !seccomp_len.is_multiple_of(super::seccomp::INSTRUCTION_LEN)
            || seccomp_len / super::seccomp::INSTRUCTION_LEN > MAX_SECCOMP_INSTRUCTIONS
        {
            return Err(HeaderError::SeccompLength);
        }
        if self.image_offset != Self::image_offset_for(self.manifest_len, self.seccomp_len) {
            return Err(HeaderError::ImageOffset);
        }
        let v = &self.verity;
        if v.hash_type != VERITY_HASH_TYPE || v.algorithm != HASH_SHA256 {
            return Err(HeaderError::VerityAlgorithm);
        }
        if v.data_block_size != verity::BLOCK_SIZE || v.hash_block_size != verity::BLOCK_SIZE {
            return Err(HeaderError::BlockSize);
        }
        if self.image_size == 0
            || !self.image_size.is_multiple_of(u64::from(v.data_block_size))
            || self.image_size > MAX_IMAGE_SIZE
        {
            return Err(HeaderError::ImageSize);
        }
        if v.data_blocks != self.image_size / u64::from(v.data_block_size) {
            return Err(HeaderError::DataBlocks);
        }
        if v.hash_offset != self.image_offset + self.image_size {
            return Err(HeaderError::HashOffset);
        }
        let layout = Layout::new(v.data_blocks).ok_or(HeaderError::DataBlocks)?;
        if v.hash_size != layout.total_bytes() {
            return Err(HeaderError::HashSize);
        }
        if usize::from(v.salt_len) > SALT_FIELD_LEN
            || v.salt[usize::from(v.salt_len)..].iter().any(|&x| x != 0)
        {
            return Err(HeaderError::Salt);
        }
        Ok(())
    }
}

/// How a verified header came to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Its signature checked out against this key.
    Signed(KeyId),
    /// Accepted without a signature check (a repository without keys).
    Unchecked,
}

/// A header whose magic and version are right, and nothing else is known yet.
#[derive(Debug, Clone, Copy)]
pub struct UnverifiedHeader<'a> {
    bytes: &'a [u8; HEADER_LEN],
}

impl<'a> UnverifiedHeader<'a> {
    /// Takes the first [`HEADER_LEN`] bytes of `bytes` and checks magic and version.
    pub fn new(bytes: &'a [u8]) -> Result<UnverifiedHeader<'a>, HeaderError> {
        // Magic first, so a short file of another kind is "not an NPK", not "truncated".
        if bytes.iter().zip(MAGIC.iter()).any(|(a, b)| a != b) {
            return Err(HeaderError::Magic);
        }
        let bytes: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(HeaderError::Truncated)?;
        let version = u16_at(bytes, OFF_VERSION);
        if version != FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        Ok(UnverifiedHeader { bytes })
    }

    /// The id of the key that claims to have signed this header ([`KeyId::NONE`] if unsigned).
    pub fn key_id(&self) -> KeyId {
        KeyId(array_at(self.bytes, OFF_KEY_ID))
    }

    /// `true` if the header carries a signature (it is not yet checked).
    pub fn is_signed(&self) -> bool {
        self.key_id() != KeyId::NONE || self.bytes[OFF_SIGNATURE..].iter().any(|&b| b != 0)
    }

    /// Checks the signature against the trusted `keys`, then the header's consistency.
    pub fn verify(self, keys: &[PublicKey]) -> Result<VerifiedHeader, HeaderError> {
        if !self.is_signed() {
            return Err(HeaderError::Unsigned);
        }
        let id = self.key_id();
        let key = keys
            .iter()
            .find(|k| k.id() == id)
            .ok_or(HeaderError::UnknownKey(id))?;
        let public = EdPublicKey::new(key.0);
        let signature = Signature::new(array_at(self.bytes, OFF_SIGNATURE));
        public
            .verify(&self.bytes[..SIGNED_LEN], &signature)
            .map_err(|_| HeaderError::Signature)?;
        let fields = HeaderFields::decode(self.bytes)?;
        Ok(VerifiedHeader {
            fields,
            trust: Trust::Signed(id),
            signer: id,
        })
    }

    /// Accepts the header without a signature check (repositories without keys), after
    /// its consistency checks.
    pub fn accept_unsigned(self) -> Result<VerifiedHeader, HeaderError> {
        let fields = HeaderFields::decode(self.bytes)?;
        Ok(VerifiedHeader {
            fields,
            trust: Trust::Unchecked,
            signer: self.key_id(),
        })
    }
}

/// A header that is trusted: its fields may be read and used. Only made by
/// [`UnverifiedHeader::verify`] and [`UnverifiedHeader::accept_unsigned`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedHeader {
    fields: HeaderFields,
    trust: Trust,
    /// The key id the header names, checked or not (see [`VerifiedHeader::signer`]).
    signer: KeyId,
}

impl Deref for VerifiedHeader {
    type Target = HeaderFields;
    fn deref(&self) -> &HeaderFields {
        &self.fields
    }
}

impl VerifiedHeader {
    /// How the header was trusted.
    pub fn trust(&self) -> Trust {
        self.trust
    }

    /// The id of the key the header says signed it, whether or not the signature was
    /// checked (a repository without keys does not check it); `None` if unsigned.
    pub fn signer(&self) -> Option<KeyId> {
        (self.signer != KeyId::NONE).then_some(self.signer)
    }

    /// Checks the package file's length against the header.
    pub fn check_file_len(&self, len: u64) -> Result<(), HeaderError> {
        if len != self.file_len() {
            return Err(HeaderError::FileLength);
        }
        Ok(())
    }

    /// Length of everything between the header and the image: manifest, seccomp program
    /// and padding, which [`VerifiedHeader::contents`] checks together.
    pub fn contents_len(&self) -> usize {
        (self.image_offset - HEADER_LEN as u64) as usize
    }

    /// Checks `bytes`, the file from the end of the header to the image (exactly
    /// [`VerifiedHeader::contents_len`] bytes): the manifest and seccomp program against
    /// their signed digests, the padding after them is zero (nothing covers it), and the
    /// program is there exactly when the manifest asks for a filter
    /// ([`Manifest::wants_seccomp_program`]), so leaving it out of a package never
    /// switches the filter off.
    pub fn contents<'b>(&self, bytes: &'b [u8]) -> Result<Contents<'b>, ContentError> {
        if bytes.len() != self.contents_len() {
            return Err(ContentError::Length);
        }
        let (manifest, rest) = bytes.split_at(self.manifest_len as usize);
        let (seccomp, padding) = rest.split_at(self.seccomp_len as usize);
        let manifest = self.manifest(manifest)?;
        let seccomp = self.seccomp(seccomp)?;
        if padding.iter().any(|&b| b != 0) {
            return Err(ContentError::Padding);
        }
        match (manifest.wants_seccomp_program(), seccomp.is_empty()) {
            (true, true) => return Err(ContentError::SeccompMissing),
            (false, false) => return Err(ContentError::SeccompUnexpected),
            _ => {}
        }
        Ok(Contents { manifest, seccomp })
    }

    /// Checks `bytes` (the manifest region, exactly `manifest_len` bytes) against the signed
    /// digest, then decodes and validates the manifest.
    pub fn manifest<'m>(&self, bytes: &'m [u8]) -> Result<Manifest<'m>, ContentError> {
        if bytes.len() != self.manifest_len as usize {
            return Err(ContentError::Length);
        }
        if sha256(bytes) != self.manifest_sha256 {
            return Err(ContentError::ManifestDigest);
        }
        Manifest::decode(bytes).map_err(ContentError::Manifest)
    }

    /// Checks `bytes` (the seccomp region, exactly `seccomp_len` bytes) against the signed
    /// digest and returns the program.
    pub fn seccomp<'s>(&self, bytes: &'s [u8]) -> Result<Program<'s>, ContentError> {
        if bytes.len() != self.seccomp_len as usize {
            return Err(ContentError::Length);
        }
        if sha256(bytes) != self.seccomp_sha256 {
            return Err(ContentError::SeccompDigest);
        }
        Program::new(bytes).map_err(ContentError::Seccomp)
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn put(b: &mut [u8], at: usize, value: &[u8]) {
    b[at..at + value.len()].copy_from_slice(value);
}

fn array_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array_at(b, at))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array_at(b, at))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array_at(b, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_compact::{KeyPair, Seed};

    fn fields() -> HeaderFields {
        let image_size = 129 * 4096;
        let image_offset = HeaderFields::image_offset_for(100, 16);
        HeaderFields {
            arch: Arch::Arm,
            manifest_len: 100,
            manifest_sha256: [1; 32],
            seccomp_len: 16,
            seccomp_sha256: [2; 32],
            image_offset,
            image_size,
            verity: VerityParams {
                hash_type: 1,
                algorithm: HASH_SHA256,
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: 129,
                hash_offset: image_offset + image_size,
                hash_size: 3 * 4096,
                salt_len: 32,
                salt: [3; 32],
                root_hash: [4; 32],
            },
        }
    }

    fn signed(f: &HeaderFields, pair: &KeyPair) -> [u8; HEADER_LEN] {
        let sig = pair.sk.sign(f.encode_signed(), None);
        f.encode(Some((PublicKey(*pair.pk).id(), *sig)))
    }

    #[test]
    fn signed_round_trip() {
        let pair = KeyPair::from_seed(Seed::new([7; 32]));
        let f = fields();
        assert_eq!(f.check(), Ok(()));
        let bytes = signed(&f, &pair);
        let other = PublicKey([9; 32]);
        let v = UnverifiedHeader::new(&bytes)
            .unwrap()
            .verify(&[other, PublicKey(*pair.pk)])
            .unwrap();
        assert_eq!(*v, f);
        assert_eq!(v.trust(), Trust::Signed(PublicKey(*pair.pk).id()));
        assert_eq!(v.check_file_len(f.file_len()), Ok(()));
        assert_eq!(
            v.check_file_len(f.file_len() - 1),
            Err(HeaderError::FileLength)
        );
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let pair = KeyPair::from_seed(Seed::new([7; 32]));
        let keys = [PublicKey(*pair.pk)];
        let good = signed(&fields(), &pair);
        for bit in 0..HEADER_LEN * 8 {
            let mut b = good;
            b[bit / 8] ^= 1 << (bit % 8);
            let result = UnverifiedHeader::new(&b).and_then(|h| h.verify(&keys));
            assert!(result.is_err(), "bit {bit} flipped went unnoticed");
        }
    }

    #[test]
    fn refusals() {
        let pair = KeyPair::from_seed(Seed::new([7; 32]));
        let keys = [PublicKey(*pair.pk)];
        let unsigned = fields().encode(None);
        let h = UnverifiedHeader::new(&unsigned).unwrap();
        assert!(!h.is_signed());
        assert_eq!(h.verify(&keys).unwrap_err(), HeaderError::Unsigned);
        assert_eq!(h.accept_unsigned().unwrap().trust(), Trust::Unchecked);
        let stranger = KeyPair::from_seed(Seed::new([8; 32]));
        let foreign = signed(&fields(), &stranger);
        assert_eq!(
            UnverifiedHeader::new(&foreign)
                .unwrap()
                .verify(&keys)
                .unwrap_err(),
            HeaderError::UnknownKey(PublicKey(*stranger.pk).id())
        );
        assert_eq!(
            UnverifiedHeader::new(&unsigned[..HEADER_LEN - 1]).unwrap_err(),
            HeaderError::Truncated
        );
        let mut v2 = unsigned;
        v2[OFF_VERSION] = 2;
        assert_eq!(
            UnverifiedHeader::new(&v2).unwrap_err(),
            HeaderError::Version(2)
        );
        assert_eq!(
            UnverifiedHeader::new(&[0u8; HEADER_LEN]).unwrap_err(),
            HeaderError::Magic
        );
    }

    #[test]
    fn consistency_rules() {
        let bad = |change: fn(&mut HeaderFields), expected: HeaderError| {
            let mut f = fields();
            change(&mut f);
            assert_eq!(f.check(), Err(expected));
            let bytes = f.encode(None);
            assert_eq!(
                UnverifiedHeader::new(&bytes)
                    .unwrap()
                    .accept_unsigned()
                    .unwrap_err(),
                expected
            );
        };
        bad(|f| f.manifest_len = 0, HeaderError::ManifestLength);
        bad(
            |f| f.manifest_len = MAX_MANIFEST_LEN as u32 + 1,
            HeaderError::ManifestLength,
        );
        bad(|f| f.seccomp_len = 7, HeaderError::SeccompLength);
        bad(|f| f.image_offset += 4096, HeaderError::ImageOffset);
        bad(|f| f.verity.algorithm = 2, HeaderError::VerityAlgorithm);
        bad(|f| f.verity.hash_block_size = 512, HeaderError::BlockSize);
        bad(|f| f.image_size += 1, HeaderError::ImageSize);
        bad(|f| f.verity.data_blocks += 1, HeaderError::DataBlocks);
        bad(|f| f.verity.hash_offset += 4096, HeaderError::HashOffset);
        bad(|f| f.verity.hash_size -= 4096, HeaderError::HashSize);
        bad(|f| f.verity.salt_len = 33, HeaderError::Salt);
        bad(|f| f.verity.salt_len = 16, HeaderError::Salt);
        let mut reserved = fields().encode(None);
        reserved[OFF_RESERVED_D + 3] = 1;
        assert_eq!(
            UnverifiedHeader::new(&reserved)
                .unwrap()
                .accept_unsigned()
                .unwrap_err(),
            HeaderError::Reserved
        );
        let mut arch = fields().encode(None);
        arch[OFF_ARCH] = 9;
        assert_eq!(
            UnverifiedHeader::new(&arch)
                .unwrap()
                .accept_unsigned()
                .unwrap_err(),
            HeaderError::Arch(9)
        );
    }

    #[test]
    fn content_digests() {
        let manifest = super::super::manifest::tests::minimal();
        let mut buf = [0u8; MAX_MANIFEST_LEN];
        let m = manifest.encode(&mut buf).unwrap();
        let program = [0u8; 16];
        let mut f = fields();
        f.manifest_len = m.len() as u32;
        f.manifest_sha256 = sha256(m);
        f.seccomp_sha256 = sha256(&program);
        f.image_offset = HeaderFields::image_offset_for(f.manifest_len, 16);
        f.verity.hash_offset = f.image_offset + f.image_size;
        let v = UnverifiedHeader::new(&f.encode(None))
            .unwrap()
            .accept_unsigned()
            .unwrap();
        assert_eq!(v.manifest(m).unwrap(), manifest);
        assert_eq!(v.seccomp(&program).unwrap().len(), 2);
        let mut tampered = [0u8; MAX_MANIFEST_LEN];
        tampered[..m.len()].copy_from_slice(m);
        tampered[0] ^= 1;
        assert_eq!(
            v.manifest(&tampered[..m.len()]).unwrap_err(),
            ContentError::ManifestDigest
        );
        assert_eq!(v.manifest(&m[1..]).unwrap_err(), ContentError::Length);
        assert_eq!(
            v.seccomp(&[1u8; 16]).unwrap_err(),
            ContentError::SeccompDigest
        );
    }

    /// A header for `manifest` and `program`, and the bytes between header and image.
    fn with_contents(
        manifest: &Manifest<'_>,
        program: &[u8],
    ) -> (VerifiedHeader, std::vec::Vec<u8>) {
        let mut buf = [0u8; MAX_MANIFEST_LEN];
        let m = manifest.encode(&mut buf).unwrap();
        let mut f = fields();
        f.manifest_len = m.len() as u32;
        f.manifest_sha256 = sha256(m);
        f.seccomp_len = program.len() as u32;
        f.seccomp_sha256 = sha256(program);
        f.image_offset = HeaderFields::image_offset_for(f.manifest_len, f.seccomp_len);
        f.verity.hash_offset = f.image_offset + f.image_size;
        let v = UnverifiedHeader::new(&f.encode(None))
            .unwrap()
            .accept_unsigned()
            .unwrap();
        let mut bytes = m.to_vec();
        bytes.extend_from_slice(program);
        bytes.resize(v.contents_len(), 0);
        (v, bytes)
    }

    #[test]
    fn every_byte_before_the_image_is_covered() {
        use super::super::manifest::{Seccomp, SeccompProfile};
        let app = super::super::manifest::tests::minimal();
        let program = [0u8; 16];
        let (v, good) = with_contents(&app, &program);
        let contents = v.contents(&good).unwrap();
        assert_eq!(
            (contents.manifest, contents.seccomp.len()),
            (app.clone(), 2)
        );
        // Every byte is covered: a digest, or the rule that the padding is zero.
        let padding = v.manifest_len as usize + v.seccomp_len as usize;
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            let e = v.contents(&bad).unwrap_err();
            let expected = if at >= padding {
                ContentError::Padding
            } else if at >= v.manifest_len as usize {
                ContentError::SeccompDigest
            } else {
                ContentError::ManifestDigest
            };
            assert_eq!(e, expected, "byte {at}");
        }
        assert_eq!(v.contents(&good[1..]).unwrap_err(), ContentError::Length);
        // An app without a program: refused unless its manifest chose no filter.
        let (v, bytes) = with_contents(&app, &[]);
        assert_eq!(
            v.contents(&bytes).unwrap_err(),
            ContentError::SeccompMissing
        );
        let mut unconfined = app.clone();
        unconfined.seccomp = Some(Seccomp {
            profile: SeccompProfile::Unconfined,
            allow: heapless::Vec::new(),
        });
        let (v, bytes) = with_contents(&unconfined, &[]);
        assert!(v.contents(&bytes).unwrap().seccomp.is_empty());
        // ... and one that chose none carries none; nor does a resource.
        let (v, bytes) = with_contents(&unconfined, &program);
        assert_eq!(
            v.contents(&bytes).unwrap_err(),
            ContentError::SeccompUnexpected
        );
        let mut resource = app.clone();
        resource.init = None;
        let (v, bytes) = with_contents(&resource, &program);
        assert_eq!(
            v.contents(&bytes).unwrap_err(),
            ContentError::SeccompUnexpected
        );
        let (v, bytes) = with_contents(&resource, &[]);
        assert!(v.contents(&bytes).is_ok());
    }

    #[test]
    fn the_largest_contents_fit_before_the_largest_offset() {
        let f = HeaderFields::image_offset_for(
            MAX_MANIFEST_LEN as u32,
            (MAX_SECCOMP_INSTRUCTIONS * super::super::seccomp::INSTRUCTION_LEN) as u32,
        );
        assert_eq!(f, MAX_IMAGE_OFFSET as u64);
    }
}
