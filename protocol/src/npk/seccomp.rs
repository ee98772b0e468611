//! The seccomp program stored in a package: classic BPF, compiled on the host at pack time.
//!
//! The program is a sequence of `struct sock_filter` instructions, 8 bytes each, little
//! endian: `code: u16`, `jt: u8`, `jf: u8`, `k: u32`. The device passes it to
//! `seccomp(SECCOMP_SET_MODE_FILTER)` as is; its SHA-256 is in the signed header, so the
//! device never compiles or edits a filter. An empty program means "no filter".

use crate::limits::MAX_SECCOMP_INSTRUCTIONS;

/// Bytes per encoded instruction.
pub const INSTRUCTION_LEN: usize = 8;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    /// Opcode (`BPF_LD | BPF_W | BPF_ABS`, ...).
    pub code: u16,
    /// Jump offset if the condition is true.
    pub jt: u8,
    /// Jump offset if the condition is false.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

impl Instruction {
    /// The 8-byte little-endian wire form.
    pub fn encode(&self) -> [u8; INSTRUCTION_LEN] {
        let mut out = [0u8; INSTRUCTION_LEN];
        out[0..2].copy_from_slice(&self.code.to_le_bytes());
        out[2] = self.jt;
        out[3] = self.jf;
        out[4..8].copy_from_slice(&self.k.to_le_bytes());
        out
    }

    /// Decodes one instruction from its wire form.
    pub fn decode(bytes: &[u8; INSTRUCTION_LEN]) -> Instruction {
        Instruction {
            code: u16::from_le_bytes([bytes[0], bytes[1]]),
            jt: bytes[2],
            jf: bytes[3],
            k: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }
}

/// Why a seccomp program's bytes are not a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramError {
    /// The length is not a multiple of 8 bytes.
    PartialInstruction,
    /// More instructions than the kernel accepts (`BPF_MAXINSNS`).
    TooLong,
}

/// A seccomp program borrowed from a package, checked for shape (not for meaning: the
/// kernel's verifier does that when it is loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program<'a> {
    bytes: &'a [u8],
}

impl<'a> Program<'a> {
    /// Checks that `bytes` is a whole number of instructions within the kernel's limit.
    pub fn new(bytes: &'a [u8]) -> Result<Program<'a>, ProgramError> {
        if !bytes.len().is_multiple_of(INSTRUCTION_LEN) {
            return Err(ProgramError::PartialInstruction);
        }
        if bytes.len() / INSTRUCTION_LEN > MAX_SECCOMP_INSTRUCTIONS {
            return Err(ProgramError::TooLong);
        }
        Ok(Program { bytes })
    }

    /// `true` when the package asks for no filter.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.bytes.len() / INSTRUCTION_LEN
    }

    /// The raw little-endian instructions.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The instructions, decoded.
    pub fn instructions(&self) -> impl Iterator<Item = Instruction> + 'a {
        self.bytes.chunks_exact(INSTRUCTION_LEN).map(|c| {
            let mut raw = [0u8; INSTRUCTION_LEN];
            raw.copy_from_slice(c);
            Instruction::decode(&raw)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_round_trip() {
        let i = Instruction {
            code: 0x15,
            jt: 1,
            jf: 200,
            k: 0xdead_beef,
        };
        assert_eq!(Instruction::decode(&i.encode()), i);
        assert_eq!(i.encode(), [0x15, 0, 1, 200, 0xef, 0xbe, 0xad, 0xde]);
    }

    #[test]
    fn program_shape() {
        assert_eq!(Program::new(&[0; 7]), Err(ProgramError::PartialInstruction));
        let too_long = [0u8; (MAX_SECCOMP_INSTRUCTIONS + 1) * INSTRUCTION_LEN];
        assert_eq!(Program::new(&too_long), Err(ProgramError::TooLong));
        let p = Program::new(&[0; 16]).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.instructions().count(), 2);
        assert!(Program::new(&[]).unwrap().is_empty());
    }
}
