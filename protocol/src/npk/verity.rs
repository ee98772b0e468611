//! Geometry of a dm-verity hash tree (format 1, SHA-256, 4 KiB blocks), computed exactly as
//! the kernel's `dm-verity-target.c` does, so the device can check a signed header's tree
//! size and the host can build the tree.
//!
//! Level 0 hashes the data blocks, level 1 hashes level 0, and so on up to a level of one
//! block; every hash is `SHA-256(salt ‖ block)` and each hash block is the concatenation of
//! its 32-byte digests, zero-padded. The tree is stored top level first. The root hash is
//! the hash of the top block (or, for a single data block, of that block: no tree at all).

use sha2::{Digest, Sha256};

/// The only block size we produce and accept, for data and hash blocks alike.
pub const BLOCK_SIZE: u32 = 4096;
/// SHA-256 digest length.
pub const DIGEST_LEN: usize = 32;
/// Digests per hash block.
pub const HASHES_PER_BLOCK: u64 = (BLOCK_SIZE as u64) / (DIGEST_LEN as u64);
/// Most levels a tree can have (for `2^64 - 1` data blocks; real images need 2 or 3).
pub const MAX_LEVELS: usize = 10;
/// `log2(HASHES_PER_BLOCK)`.
const HASH_PER_BLOCK_BITS: u32 = HASHES_PER_BLOCK.trailing_zeros();

/// Where each level of a hash tree lies, in hash blocks from the start of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    data_blocks: u64,
    levels: usize,
    /// Blocks in level `i` (0 = the level that hashes the data).
    level_blocks: [u64; MAX_LEVELS],
}

impl Layout {
    /// The layout of the tree over `data_blocks` data blocks; `None` for zero blocks.
    pub fn new(data_blocks: u64) -> Option<Layout> {
        if data_blocks == 0 {
            return None;
        }
        let mut levels = 0usize;
        // As the kernel: the smallest number of levels whose fan-out covers every block.
        while (HASH_PER_BLOCK_BITS as usize * levels) < 64
            && ((data_blocks - 1) >> (HASH_PER_BLOCK_BITS as usize * levels)) != 0
        {
            levels += 1;
        }
        let mut level_blocks = [0u64; MAX_LEVELS];
        for (i, blocks) in level_blocks.iter_mut().enumerate().take(levels) {
            let shift = (i as u32 + 1) * HASH_PER_BLOCK_BITS;
            *blocks = if shift >= 64 {
                1
            } else {
                data_blocks.div_ceil(1u64 << shift)
            };
        }
        Some(Layout {
            data_blocks,
            levels,
            level_blocks,
        })
    }

    /// Data blocks covered.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// Number of hash levels (0 when there is a single data block).
    pub fn levels(&self) -> usize {
        self.levels
    }

    /// Blocks in level `level` (0 = hashes of data blocks).
    pub fn level_blocks(&self, level: usize) -> u64 {
        self.level_blocks.get(level).copied().unwrap_or(0)
    }

    /// First block of level `level`, counted from the start of the tree (top level first).
    pub fn level_start(&self, level: usize) -> u64 {
        ((level + 1)..self.levels)
            .map(|l| self.level_blocks[l])
            .sum()
    }

    /// Blocks in the whole tree.
    pub fn total_blocks(&self) -> u64 {
        self.level_blocks[..self.levels].iter().sum()
    }

    /// Bytes in the whole tree.
    pub fn total_bytes(&self) -> u64 {
        self.total_blocks() * u64::from(BLOCK_SIZE)
    }
}

/// `SHA-256(salt ‖ block)`: the hash of one data or hash block in format 1.
pub fn hash_block(salt: &[u8], block: &[u8]) -> [u8; DIGEST_LEN] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_the_kernel() {
        assert_eq!(Layout::new(0), None);
        let one = Layout::new(1).unwrap();
        assert_eq!((one.levels(), one.total_blocks()), (0, 0));
        let full = Layout::new(128).unwrap();
        assert_eq!((full.levels(), full.total_blocks()), (1, 1));
        let two = Layout::new(129).unwrap();
        assert_eq!(
            (two.levels(), two.level_blocks(0), two.level_blocks(1)),
            (2, 2, 1)
        );
        assert_eq!((two.level_start(1), two.level_start(0)), (0, 1));
        // 16 MiB = 4096 blocks: 32 blocks of level 0 under one block of level 1.
        let l = Layout::new(4096).unwrap();
        assert_eq!(
            (
                l.levels(),
                l.level_blocks(0),
                l.level_blocks(1),
                l.total_bytes()
            ),
            (2, 32, 1, 33 * 4096)
        );
        let big = Layout::new(u64::MAX).unwrap();
        assert_eq!(big.levels(), MAX_LEVELS);
        assert_eq!(big.level_blocks(MAX_LEVELS - 1), 1);
    }
}
