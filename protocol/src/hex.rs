//! Lower-case hexadecimal, without allocation (key files, root hashes, device tables).

/// Why a hex string does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HexError {
    /// The text is not exactly twice the output length.
    Length,
    /// A character is not `0-9a-fA-F`.
    Digit,
}

/// Writes `2 * bytes.len()` lower-case hex digits of `bytes` into `out` and returns them.
/// Returns `None` if `out` is too short.
pub fn encode<'o>(bytes: &[u8], out: &'o mut [u8]) -> Option<&'o str> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let out = out.get_mut(..bytes.len() * 2)?;
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    core::str::from_utf8(out).ok()
}

/// Decodes exactly `N` bytes from `2 * N` hex digits (either case).
pub fn decode<const N: usize>(text: &[u8]) -> Result<[u8; N], HexError> {
    if text.len() != 2 * N {
        return Err(HexError::Length);
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(out)
}

fn digit(c: u8) -> Result<u8, HexError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(HexError::Digit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 8];
        assert_eq!(
            encode(&[0x00, 0xab, 0x7f, 0x10], &mut buf),
            Some("00ab7f10")
        );
        assert_eq!(decode::<4>(b"00AB7f10"), Ok([0x00, 0xab, 0x7f, 0x10]));
        assert_eq!(decode::<4>(b"00ab7f1"), Err(HexError::Length));
        assert_eq!(decode::<2>(b"0g00"), Err(HexError::Digit));
        assert_eq!(encode(&[1, 2, 3, 4, 5], &mut buf), None);
    }
}
