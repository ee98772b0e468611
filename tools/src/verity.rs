//! Builds the dm-verity hash tree of an image (format 1, SHA-256, 4 KiB blocks) in the
//! layout of [`nanostar_protocol::npk::verity::Layout`]: the layout `veritysetup format
//! --no-superblock` writes, top level first.

use nanostar_protocol::npk::verity::{BLOCK_SIZE, DIGEST_LEN, Layout, hash_block};
use sha2::{Digest, Sha256};

/// A built tree.
pub struct HashTree {
    /// The tree, ready to append after the image.
    pub bytes: Vec<u8>,
    /// The root hash that the header signs.
    pub root_hash: [u8; DIGEST_LEN],
    /// Its geometry.
    pub layout: Layout,
}

/// Domain separation for the derived salt, so it can never equal another hash we compute.
const SALT_DOMAIN: &[u8] = b"nanostar verity salt v1\0";

/// The salt of an image: `SHA-256(domain ‖ SHA-256(image))`. Derived from the content so
/// packing is reproducible, yet different for every image.
pub fn derive_salt(image: &[u8]) -> [u8; 32] {
    let image_digest = Sha256::digest(image);
    let mut h = Sha256::new();
    h.update(SALT_DOMAIN);
    h.update(image_digest);
    h.finalize().into()
}

/// Builds the tree of `image`, whose length must be a positive multiple of 4096.
pub fn build(image: &[u8], salt: &[u8]) -> Option<HashTree> {
    let block = BLOCK_SIZE as usize;
    if image.is_empty() || !image.len().is_multiple_of(block) {
        return None;
    }
    let layout = Layout::new((image.len() / block) as u64)?;
    let mut bytes = vec![0u8; layout.total_bytes() as usize];
    // Digests of the level below, starting with the data blocks.
    let mut below: Vec<[u8; DIGEST_LEN]> = image
        .chunks_exact(block)
        .map(|b| hash_block(salt, b))
        .collect();
    for level in 0..layout.levels() {
        let start = layout.level_start(level) as usize * block;
        let len = layout.level_blocks(level) as usize * block;
        let region = &mut bytes[start..start + len];
        for (slot, digest) in region.chunks_exact_mut(DIGEST_LEN).zip(&below) {
            slot.copy_from_slice(digest);
        }
        below = region
            .chunks_exact(block)
            .map(|b| hash_block(salt, b))
            .collect();
    }
    // `below` is now the digest of the top block (or of the single data block).
    let root_hash = *below.first()?;
    Some(HashTree {
        bytes,
        root_hash,
        layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_block_has_no_tree() {
        let image = vec![7u8; 4096];
        let t = build(&image, b"salt").unwrap();
        assert!(t.bytes.is_empty());
        assert_eq!(t.root_hash, hash_block(b"salt", &image));
    }

    #[test]
    fn two_levels_link_up() {
        let image: Vec<u8> = (0..129 * 4096u32).map(|i| (i % 251) as u8).collect();
        let salt = derive_salt(&image);
        let t = build(&image, &salt).unwrap();
        assert_eq!(t.bytes.len(), 3 * 4096);
        // Top level (block 0) holds the digests of the two level-0 blocks (blocks 1 and 2).
        assert_eq!(&t.bytes[..32], &hash_block(&salt, &t.bytes[4096..8192]));
        assert_eq!(&t.bytes[32..64], &hash_block(&salt, &t.bytes[8192..12288]));
        assert!(t.bytes[64..4096].iter().all(|&b| b == 0));
        // Level 0 holds the digests of the data blocks.
        assert_eq!(
            &t.bytes[4096 + 32 * 5..4096 + 32 * 6],
            &hash_block(&salt, &image[5 * 4096..6 * 4096])
        );
        assert_eq!(t.root_hash, hash_block(&salt, &t.bytes[..4096]));
        assert!(build(&image[..100], &salt).is_none() && build(&[], &salt).is_none());
    }
}
