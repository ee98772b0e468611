//! Packing, opening and checking whole NPK files (layout in `docs/npk-format.md`).

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ed25519_compact::KeyPair;
use nanostar_protocol::limits::MAX_MANIFEST_LEN;
use nanostar_protocol::npk::header::{
    HASH_SHA256, HEADER_LEN, SALT_FIELD_LEN, VERITY_HASH_TYPE, sha256,
};
use nanostar_protocol::npk::manifest::{Manifest, MountKind, SeccompProfile};
use nanostar_protocol::npk::seccomp::Program;
use nanostar_protocol::npk::verity::{BLOCK_SIZE, DIGEST_LEN, hash_block};
use nanostar_protocol::npk::{
    Arch, ContentError, Contents, HeaderError, HeaderFields, KeyId, PublicKey, UnverifiedHeader,
    VerifiedHeader, VerityParams,
};

use crate::image::{self, ImageSpec, MountPoint};
use crate::manifest::{Explained, SourceManifest};
use crate::seccomp;
use crate::verity;

/// What `pack` needs besides the manifest.
pub struct PackInput<'a> {
    /// The parsed manifest.
    pub manifest: &'a SourceManifest,
    /// The directory that becomes the image.
    pub root: &'a Path,
    /// Signing key; `None` packs an unsigned package for repositories without keys.
    pub key: Option<&'a KeyPair>,
    /// Architecture; `None` reads it from the ELF header of `init` in the root. Packing
    /// does not check the root: `npk pack` runs [`crate::root_check::check`] first.
    pub arch: Option<Arch>,
}

/// A packed package.
pub struct Packed {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Its header fields.
    pub header: HeaderFields,
}

/// Packs a package. `progress` gets the file bytes added to the image so far.
pub fn pack(input: &PackInput, progress: &mut dyn FnMut(u64)) -> Result<Packed> {
    let manifest = input.manifest.manifest()?;
    let mut manifest_buf = vec![0u8; MAX_MANIFEST_LEN];
    let manifest_bytes = manifest
        .encode(&mut manifest_buf)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}",
                Explained {
                    error: e,
                    manifest: &manifest
                }
            )
        })?
        .to_vec();
    let arch = match input.arch {
        Some(arch) => arch,
        None => detect_arch(&manifest, input.root)?,
    };
    let seccomp = compile_seccomp(&manifest, arch)?;
    let mount_points: Vec<MountPoint> = manifest
        .mounts
        .iter()
        .map(|m| MountPoint {
            target: m.target,
            file_allowed: matches!(m.kind, MountKind::Bind { .. }),
        })
        .collect();
    let spec = ImageSpec {
        root: input.root,
        uid: manifest.uid,
        gid: manifest.gid,
        mount_points: &mount_points,
    };
    let image = image::build_image(&spec, progress)
        .with_context(|| format!("cannot build the image of {}", input.root.display()))?;
    let salt = verity::derive_salt(&image);
    let tree =
        verity::build(&image, &salt).context("the image is not a whole number of 4 KiB blocks")?;

    let manifest_len = u32::try_from(manifest_bytes.len())?;
    let seccomp_len = u32::try_from(seccomp.len())?;
    let image_offset = HeaderFields::image_offset_for(manifest_len, seccomp_len);
    let image_size = image.len() as u64;
    let header = HeaderFields {
        arch,
        manifest_len,
        manifest_sha256: sha256(&manifest_bytes),
        seccomp_len,
        seccomp_sha256: sha256(&seccomp),
        image_offset,
        image_size,
        verity: VerityParams {
            hash_type: VERITY_HASH_TYPE,
            algorithm: HASH_SHA256,
            data_block_size: BLOCK_SIZE,
            hash_block_size: BLOCK_SIZE,
            data_blocks: tree.layout.data_blocks(),
            hash_offset: image_offset + image_size,
            hash_size: tree.bytes.len() as u64,
            salt_len: SALT_FIELD_LEN as u8,
            salt,
            root_hash: tree.root_hash,
        },
    };
    header
        .check()
        .map_err(|e| anyhow::anyhow!("internal error: packed header is inconsistent ({e:?})"))?;
    let signature = input.key.map(|pair| {
        let sig = pair.sk.sign(header.encode_signed(), None);
        (PublicKey(*pair.pk).id(), *sig)
    });

    let mut bytes = Vec::with_capacity(header.file_len() as usize);
    bytes.extend_from_slice(&header.encode(signature));
    bytes.extend_from_slice(&manifest_bytes);
    bytes.extend_from_slice(&seccomp);
    bytes.resize(image_offset as usize, 0);
    bytes.extend_from_slice(&image);
    bytes.extend_from_slice(&tree.bytes);
    Ok(Packed { bytes, header })
}

/// The package's seccomp program: none for a resource or an explicit `unconfined`,
/// otherwise the policy compiled, and the default profile when the manifest has no
/// `[seccomp]` table (so no app goes without a filter by leaving the table out).
fn compile_seccomp(manifest: &Manifest, arch: Arch) -> Result<Vec<u8>> {
    if !manifest.wants_seccomp_program() {
        return Ok(Vec::new());
    }
    if arch == Arch::Any {
        bail!(
            "seccomp: a package for any architecture cannot carry a seccomp filter, and an app \
             gets the default profile unless its manifest says otherwise; pass --arch, or choose \
             no filter with [seccomp] profile = \"unconfined\""
        );
    }
    let (profile, allow) = match &manifest.seccomp {
        None => (seccomp::Profile::Default, &[][..]),
        Some(policy) => (
            match policy.profile {
                SeccompProfile::None => seccomp::Profile::None,
                SeccompProfile::Default => seccomp::Profile::Default,
                SeccompProfile::Unconfined => {
                    bail!("internal error: an unconfined package gets no program")
                }
            },
            &policy.allow[..],
        ),
    };
    let rules: Vec<seccomp::Rule> = allow
        .iter()
        .map(|r| seccomp::Rule {
            name: r.name,
            args: r.args.as_ref().map(|a| seccomp::ArgRule {
                index: a.index,
                values: &a.values,
                mask: a.mask,
            }),
        })
        .collect();
    let program =
        seccomp::compile(arch, profile, &rules).map_err(|e| anyhow::anyhow!("seccomp: {e}"))?;
    Ok(program.iter().flat_map(|i| i.encode()).collect())
}

/// Reads the architecture from the ELF header of `init`, found inside `root` the way the
/// container will find it (symlinks resolve inside the root).
fn detect_arch(manifest: &Manifest, root: &Path) -> Result<Arch> {
    crate::root_check::detect_arch(manifest, root).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The part of a package that is broken, for `npk verify` and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// Not a well-formed header (or a truncated file).
    Header(HeaderError),
    /// Unsigned, unknown key, or a signature that does not match.
    Signature(HeaderError),
    /// The manifest does not match its signed digest or does not decode.
    Manifest(ContentError),
    /// The seccomp program does not match its signed digest, or is missing or present
    /// against the manifest's choice.
    Seccomp(ContentError),
    /// Bytes between the seccomp program and the image are not zero.
    Padding,
    /// An image block does not match the hash tree (first bad block).
    Image(u64),
    /// The stored hash tree does not match the signed root hash.
    HashTree,
}

impl Broken {
    /// Which part, in one word, as `npk verify` reports it.
    pub fn part(&self) -> &'static str {
        match self {
            Broken::Header(_) | Broken::Padding => "header",
            Broken::Signature(_) => "signature",
            Broken::Manifest(_) => "manifest",
            Broken::Seccomp(_) => "seccomp",
            Broken::Image(_) => "image",
            Broken::HashTree => "hash tree",
        }
    }

    /// The exit code of `npk verify` for this part (documented in README.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Broken::Header(_) | Broken::Padding => 3,
            Broken::Signature(_) => 4,
            Broken::Manifest(_) => 5,
            Broken::Seccomp(_) => 6,
            Broken::Image(_) => 7,
            Broken::HashTree => 8,
        }
    }
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.part())?;
        match self {
            Broken::Header(e) => f.write_str(&header_text(*e)),
            Broken::Signature(HeaderError::Unsigned) => f.write_str(
                "the package is not signed; pack it with --key for a repository that has keys",
            ),
            Broken::Signature(HeaderError::UnknownKey(KeyId(id))) => write!(
                f,
                "signed by key {}, which is not among the keys given; check you have the right .pub file",
                crate::keys::hex(id)
            ),
            Broken::Signature(_) => f.write_str(
                "the signature does not match the header: the file was altered or corrupted",
            ),
            Broken::Manifest(ContentError::Manifest(e)) => write!(
                f,
                "the manifest breaks a rule ({:?} of {:?})",
                e.problem, e.field
            ),
            Broken::Manifest(_) => {
                f.write_str("the manifest does not match its signed digest: the file was altered")
            }
            Broken::Seccomp(ContentError::SeccompMissing) => f.write_str(
                "the package carries no seccomp program, but its manifest does not choose \
                 `profile = \"unconfined\"`: the device refuses it (packed by an npk from before \
                 filters were the default? pack it again)",
            ),
            Broken::Seccomp(ContentError::SeccompUnexpected) => f.write_str(
                "the package carries a seccomp program, but its manifest chose no filter \
                 (`unconfined`) or it is a resource: the file was not made by npk",
            ),
            Broken::Seccomp(ContentError::Seccomp(_)) => f.write_str(
                "the seccomp program is not a whole number of instructions within the kernel's limit",
            ),
            Broken::Seccomp(_) => f.write_str(
                "the seccomp program does not match its signed digest: the file was altered",
            ),
            Broken::Padding => f.write_str(
                "the bytes between the seccomp program and the image are not zero (no digest \
                 covers them, so they must be): the file was altered",
            ),
            Broken::Image(block) => write!(
                f,
                "image block {block} does not match the hash tree: the image was altered"
            ),
            Broken::HashTree => f.write_str(
                "the hash tree does not match the signed root hash: the tree was altered",
            ),
        }
    }
}

fn header_text(e: HeaderError) -> String {
    match e {
        HeaderError::Truncated => "the file is shorter than an NPK header".into(),
        HeaderError::Magic => "not an NPK file (wrong magic bytes)".into(),
        HeaderError::Version(v) => {
            format!("format version {v} is not supported by this npk; update npk")
        }
        HeaderError::FileLength => {
            "the file's length differs from what its header says: truncated or extended".into()
        }
        other => format!("inconsistent header field ({other:?}): the file is corrupt or altered"),
    }
}

/// A package file whose header was accepted, with its manifest decoded.
pub struct Opened<'b> {
    /// The whole file.
    pub bytes: &'b [u8],
    /// The header.
    pub header: VerifiedHeader,
    /// `true` if the header carries a signature (checked only if keys were given).
    pub signed: bool,
    /// The key id next to the signature.
    pub key_id: KeyId,
    /// The manifest.
    pub manifest: Manifest<'b>,
    /// The seccomp program.
    pub seccomp: Program<'b>,
}

impl<'b> Opened<'b> {
    /// The image bytes.
    pub fn image(&self) -> &'b [u8] {
        &self.bytes[self.header.image_offset as usize..][..self.header.image_size as usize]
    }

    /// The stored hash tree bytes.
    pub fn tree(&self) -> &'b [u8] {
        &self.bytes[self.header.verity.hash_offset as usize..]
            [..self.header.verity.hash_size as usize]
    }
}

/// Opens a package: header (signature checked against `keys` if given), file length,
/// manifest and seccomp digests, padding. Does not read the image; see [`check_image`].
pub fn open<'b>(bytes: &'b [u8], keys: Option<&[PublicKey]>) -> Result<Opened<'b>, Broken> {
    let unverified = UnverifiedHeader::new(bytes).map_err(Broken::Header)?;
    let (signed, key_id) = (unverified.is_signed(), unverified.key_id());
    let header = match keys {
        Some(keys) => unverified.verify(keys).map_err(|e| match e {
            HeaderError::Unsigned | HeaderError::UnknownKey(_) | HeaderError::Signature => {
                Broken::Signature(e)
            }
            other => Broken::Header(other),
        })?,
        None => unverified.accept_unsigned().map_err(Broken::Header)?,
    };
    header
        .check_file_len(bytes.len() as u64)
        .map_err(Broken::Header)?;
    // The same check of everything before the image as the device's.
    let Contents { manifest, seccomp } = header
        .contents(&bytes[HEADER_LEN..header.image_offset as usize])
        .map_err(|e| match e {
            ContentError::Length | ContentError::ManifestDigest | ContentError::Manifest(_) => {
                Broken::Manifest(e)
            }
            ContentError::Padding => Broken::Padding,
            ContentError::SeccompDigest
            | ContentError::Seccomp(_)
            | ContentError::SeccompMissing
            | ContentError::SeccompUnexpected => Broken::Seccomp(e),
        })?;
    Ok(Opened {
        bytes,
        header,
        signed,
        key_id,
        manifest,
        seccomp,
    })
}

/// Recomputes the whole hash tree from the image and compares it with the stored tree and
/// the signed root hash: tells an altered image from an altered tree.
pub fn check_image(p: &Opened) -> Result<(), Broken> {
    let v = &p.header.verity;
    let fresh = verity::build(p.image(), v.salt()).ok_or(Broken::Header(HeaderError::ImageSize))?;
    if fresh.root_hash == v.root_hash && fresh.bytes == p.tree() {
        return Ok(());
    }
    let stored = p.tree();
    if stored.is_empty() {
        // A single data block is hashed straight into the root.
        return Err(Broken::Image(0));
    }
    if hash_block(v.salt(), &stored[..BLOCK_SIZE as usize]) != v.root_hash
        || fresh.root_hash == v.root_hash
    {
        return Err(Broken::HashTree);
    }
    // The tree's top is the signed one, so the image differs: find the first block that does.
    let level0 = &stored[fresh.layout.level_start(0) as usize * BLOCK_SIZE as usize..];
    let bad = p
        .image()
        .chunks_exact(BLOCK_SIZE as usize)
        .zip(level0.chunks_exact(DIGEST_LEN))
        .position(|(block, want)| hash_block(v.salt(), block) != want)
        .unwrap_or(0) as u64;
    Err(Broken::Image(bad))
}
