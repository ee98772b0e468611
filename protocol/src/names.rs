//! Sets of named flags stored as bitsets (capabilities, console permissions).
//!
//! On the wire a set is one integer; the names exist for the host's TOML and for
//! human-readable output, and a bit's position is its identity (append-only).

/// Looks `name` up in `table` and returns its bit position.
pub fn bit_of(table: &[&str], name: &str) -> Option<u32> {
    table
        .iter()
        .position(|n| *n == name)
        .and_then(|p| u32::try_from(p).ok())
}

/// The names of the set bits of `bits`, in bit order; bits beyond `table` are skipped.
pub fn names_of<'t>(table: &'t [&'t str], bits: u64) -> impl Iterator<Item = &'t str> + 't {
    table
        .iter()
        .enumerate()
        .filter(move |(i, _)| bits & (1u64 << i) != 0)
        .map(|(_, n)| *n)
}

/// A mask with the low `table.len()` bits set: every bit that has a name.
pub const fn known_mask(len: usize) -> u64 {
    if len >= 64 {
        u64::MAX
    } else {
        (1u64 << len) - 1
    }
}
