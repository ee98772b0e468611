//! Compiles a package's seccomp policy into a classic BPF program at pack time.
//!
//! The device only loads the program (its hash is signed with the package), so everything
//! that can go wrong with a policy — a misspelt syscall, a bad argument rule, a program too
//! long for the kernel — is reported here, on the developer's machine.
//!
//! Shape of the program (all jumps forward, none longer than 255, so it never depends on
//! how large the policy is):
//!
//! 1. `seccomp_data.arch` must be the package's architecture, else `KILL_PROCESS`: a
//!    syscall number means something else under another ABI (e.g. i386 on x86_64, arm on
//!    aarch64). On x86_64, x32 syscalls (numbers from `0x4000_0000` up) are killed too.
//! 2. Syscalls allowed without conditions: one `jeq` each, in chunks that share a
//!    `ret ALLOW`.
//! 3. Syscalls allowed for some argument values: a block per syscall, skipped unless the
//!    number matches; inside it every test that matches returns `ALLOW`, and the block ends
//!    in the default action (no other block can match the same number) — or, for the
//!    default profile's `clone` (allowed without namespace flags), in `ERRNO(EPERM)`.
//! 4. The default action: `ERRNO(ENOSYS)`. Not `EPERM`: glibc falls back from `clone3` to
//!    `clone` only on `ENOSYS`, and programs generally treat `ENOSYS` as "not supported
//!    here" and carry on, where `EPERM` is an error. Not `KILL`: a denied syscall should be
//!    a failing call the program can report, not a mysterious `SIGSYS`.
//!
//! Under the default profile a `clone` with a namespace flag gets `EPERM`, what the kernel
//! itself answers an unprivileged namespace request (and Docker's profile too): here the
//! call exists and works, only this use of it is refused, and `ENOSYS` would send libc
//! looking for another call that is not there. Manifest rules for `clone` add up with the
//! profile's as for any syscall: `clone = "any"` allows every `clone`, namespaces included;
//! an argument rule allows the calls it matches on top of the profile's, and the rest still
//! get `EPERM`.
//!
//! `execve` is always allowed: the runtime installs the filter and then execs the app, so
//! a filter without it could never start anything.

mod default_profile;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use nanostar_protocol::limits::MAX_SECCOMP_INSTRUCTIONS;
use nanostar_protocol::npk::Arch;
use nanostar_protocol::npk::seccomp::Instruction;

use default_profile::{CLONE_NAMESPACE_FLAGS, DEFAULT_PROFILE};

/// Which base list of syscalls a policy starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Nothing allowed but the allow list (and `execve`, which the runtime needs to exec
    /// the app).
    None,
    /// A Docker-like default set for ordinary unprivileged programs (see
    /// `seccomp/default_profile.rs` for what is in and what was left out).
    Default,
}

/// A condition on one syscall argument: the argument equals one of `values`, or (with a
/// `mask`) sets no bit outside `mask`. Either one matching is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgRule<'a> {
    /// Which argument, `0..=5`.
    pub index: u8,
    /// Allowed values, compared as full 64-bit numbers.
    pub values: &'a [u64],
    /// Allowed bits: the argument matches when `arg & !mask == 0`.
    pub mask: Option<u64>,
}

/// One allowed syscall, optionally only for some argument values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule<'a> {
    /// The syscall's name as in `man 2 syscalls` (e.g. `openat`, `_llseek`, `set_tls`).
    pub name: &'a str,
    /// `None` allows every call; otherwise only calls the rule matches. Several rules for
    /// the same syscall add up: a call is allowed if any of them matches, and a rule
    /// without arguments (or the syscall being in the profile) allows every call.
    pub args: Option<ArgRule<'a>>,
}

/// Why a policy does not compile. The messages say what to change in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompError {
    /// A syscall name that the architecture does not have.
    UnknownSyscall {
        /// The name as written.
        name: String,
        /// The architecture compiled for.
        arch: Arch,
    },
    /// An argument index above 5.
    ArgIndex {
        /// The syscall the rule is for.
        name: String,
        /// The index as written.
        index: u8,
    },
    /// An argument rule with neither values nor a mask, which could match nothing.
    EmptyArgRule {
        /// The syscall the rule is for.
        name: String,
    },
    /// The package's architecture is `any`, which has no syscalls to filter.
    NoArch,
    /// The program would be longer than the kernel accepts.
    TooLong {
        /// How many instructions it would need.
        instructions: usize,
    },
}

impl fmt::Display for SeccompError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeccompError::UnknownSyscall { name, arch } => write!(
                f,
                "syscall `{name}` does not exist on {}; check the name in the manifest's seccomp.allow",
                arch.name()
            ),
            SeccompError::ArgIndex { name, index } => write!(
                f,
                "seccomp.allow.{name}: argument index {index} is out of range; syscalls have arguments 0 to {MAX_ARG_INDEX}"
            ),
            SeccompError::EmptyArgRule { name } => write!(
                f,
                "seccomp.allow.{name}: the argument rule has neither values nor a mask, so it matches nothing; add `values` or `mask`, or drop the rule's arguments to allow every call"
            ),
            SeccompError::NoArch => write!(
                f,
                "a seccomp policy needs a machine architecture, but the package is for `any`; set the package's arch or remove the seccomp section"
            ),
            SeccompError::TooLong { instructions } => write!(
                f,
                "the seccomp filter needs {instructions} instructions, more than the kernel's limit of {MAX_SECCOMP_INSTRUCTIONS}; allow fewer syscalls or argument values"
            ),
        }
    }
}

impl std::error::Error for SeccompError {}

// Classic BPF opcodes (linux/bpf_common.h), only the ones this compiler emits.
/// `BPF_LD | BPF_W | BPF_ABS`: load 32 bits of `seccomp_data` at offset `k`.
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JA`: jump forward by `k` (32 bits, so it can skip any distance).
const BPF_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`: `A == k`.
const BPF_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`: `A >= k` (unsigned).
const BPF_JGE_K: u16 = 0x35;
/// `BPF_JMP | BPF_JSET | BPF_K`: `A & k != 0`.
const BPF_JSET_K: u16 = 0x45;
/// `BPF_RET | BPF_K`: return `k` as the seccomp action.
const BPF_RET_K: u16 = 0x06;

// Seccomp actions (linux/seccomp.h).
/// Kill the whole process (thread group), not just the thread.
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Fail the syscall with the errno in the low 16 bits.
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Run the syscall.
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// `ENOSYS` (the same number on all supported architectures).
const ENOSYS: u32 = 38;
/// `EPERM` (the same number on all supported architectures).
const EPERM: u32 = 1;
/// What a syscall the policy does not allow gets.
const RET_DENY: u32 = SECCOMP_RET_ERRNO | ENOSYS;
/// What the default profile's `clone` gets for a namespace flag.
const RET_DENY_NAMESPACE: u32 = SECCOMP_RET_ERRNO | EPERM;

// Offsets in `struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;
/// x86_64's marker for x32 syscalls (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Highest syscall argument index.
const MAX_ARG_INDEX: u8 = 5;
/// Longest forward jump a conditional jump can encode.
const MAX_JUMP: usize = u8::MAX as usize;
/// Most values compared in one run that shares a `ret ALLOW`: keeps the jump over the run
/// (values plus the loads around them) within [`MAX_JUMP`].
const MAX_RUN: usize = 250;

/// ARM's private syscalls (`__ARM_NR_*`, `0x0f0000 + n`), which the `syscalls` crate does
/// not list. Named as libseccomp and Docker name them; `ARM_set_tls` etc. also work.
const ARM_PRIVATE_SYSCALLS: &[(&str, u32)] = &[
    ("breakpoint", 0x000f_0001),
    ("cacheflush", 0x000f_0002),
    ("usr26", 0x000f_0003),
    ("usr32", 0x000f_0004),
    ("set_tls", 0x000f_0005),
    ("get_tls", 0x000f_0006),
];

/// The 64-bit-time syscalls (`clock_gettime64`, ..., `futex_time64`) that only 32-bit ABIs
/// have; the `syscalls` crate lists them for aarch64 too.
const TIME64_ONLY_32_BIT: std::ops::RangeInclusive<i32> = 403..=423;

/// Kernel (and strace) names that the `syscalls` crate spells differently.
const ALIASES: &[(Arch, &str, &str)] = &[
    (Arch::Aarch64, "newfstatat", "fstatat"),
    (Arch::Arm, "sync_file_range2", "arm_sync_file_range"),
    (Arch::Arm, "fadvise64_64", "arm_fadvise64_64"),
];

/// The syscall number of `name` on `arch`, or `None` if the architecture has no such
/// syscall (always `None` for `Arch::Any`).
pub fn syscall_number(arch: Arch, name: &str) -> Option<u32> {
    let name = ALIASES
        .iter()
        .find(|(a, alias, _)| *a == arch && *alias == name)
        .map_or(name, |(_, _, canonical)| canonical);
    let id = match arch {
        Arch::Any => return None,
        Arch::X86_64 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
        Arch::Aarch64 => {
            let id = syscalls::aarch64::Sysno::from_str(name).ok()?.id();
            if TIME64_ONLY_32_BIT.contains(&id) {
                return None;
            }
            id
        }
        Arch::Arm => match syscalls::arm::Sysno::from_str(name) {
            Ok(sysno) => sysno.id(),
            Err(()) => return arm_private_syscall(name),
        },
    };
    u32::try_from(id).ok()
}

fn arm_private_syscall(name: &str) -> Option<u32> {
    let name = name.strip_prefix("ARM_").unwrap_or(name);
    ARM_PRIVATE_SYSCALLS
        .iter()
        .find(|(private, _)| *private == name)
        .map(|(_, nr)| *nr)
}

/// The names in the default profile that exist on `arch`, in alphabetical order.
pub fn default_profile(arch: Arch) -> impl Iterator<Item = &'static str> {
    DEFAULT_PROFILE
        .iter()
        .copied()
        .filter(move |name| syscall_number(arch, name).is_some())
}

/// Compiles a policy for `arch`: the syscalls of `profile`, those in `allow` and `execve`
/// are allowed; every other syscall fails with `ENOSYS`; a syscall made under another
/// architecture's ABI kills the process. The same inputs always give the same program.
pub fn compile(
    arch: Arch,
    profile: Profile,
    allow: &[Rule],
) -> Result<Vec<Instruction>, SeccompError> {
    let audit_arch = arch.audit_arch().ok_or(SeccompError::NoArch)?;
    let policy = Policy::new(arch, profile, allow)?;

    let mut program = prologue(arch, audit_arch);
    program.extend(allow_any_of(&policy.unconditional()));
    for (nr, tests) in policy.conditional() {
        program.extend(conditional_block(nr, tests));
    }
    program.push(ret(RET_DENY));

    if program.len() > MAX_SECCOMP_INSTRUCTIONS {
        return Err(SeccompError::TooLong {
            instructions: program.len(),
        });
    }
    Ok(program)
}

/// Argument tests under which one syscall is allowed; any one passing allows it.
#[derive(Debug)]
struct ArgTests {
    /// `(index, value)`: the argument equals the value.
    values: BTreeSet<(u8, u64)>,
    /// `(index, mask)`: the argument has no bits outside the mask.
    masks: BTreeSet<(u8, u64)>,
    /// What a call that passes no test gets.
    deny: u32,
}

impl ArgTests {
    fn new(deny: u32) -> ArgTests {
        ArgTests {
            values: BTreeSet::new(),
            masks: BTreeSet::new(),
            deny,
        }
    }
}

/// How one syscall is allowed.
#[derive(Debug)]
enum Allowance {
    Always,
    When(ArgTests),
}

/// The policy resolved to syscall numbers, sorted by number so that output is
/// deterministic and duplicates merge.
struct Policy(BTreeMap<u32, Allowance>);

impl Policy {
    fn new(arch: Arch, profile: Profile, allow: &[Rule]) -> Result<Policy, SeccompError> {
        let mut policy = Policy(BTreeMap::new());
        let base = match profile {
            Profile::None => None,
            Profile::Default => Some(default_profile(arch)),
        };
        for name in base.into_iter().flatten().chain(["execve"]) {
            if let Some(nr) = syscall_number(arch, name) {
                policy.allow_always(nr);
            }
        }
        if profile == Profile::Default {
            // `clone`'s flags are argument 0 on every supported ABI, and the kernel reads
            // only their low 32 bits (`lower_32_bits(clone_flags)`), so the high ones are
            // allowed and no namespace flag may be set in the low ones.
            let no_namespace = ArgRule {
                index: 0,
                values: &[],
                mask: Some(!u64::from(CLONE_NAMESPACE_FLAGS)),
            };
            if let Some(nr) = syscall_number(arch, "clone") {
                policy.allow_when(nr, &no_namespace, RET_DENY_NAMESPACE);
            }
        }
        for rule in allow {
            policy.add_rule(arch, rule)?;
        }
        Ok(policy)
    }

    fn add_rule(&mut self, arch: Arch, rule: &Rule) -> Result<(), SeccompError> {
        let nr = syscall_number(arch, rule.name).ok_or_else(|| SeccompError::UnknownSyscall {
            name: rule.name.to_string(),
            arch,
        })?;
        match &rule.args {
            None => self.allow_always(nr),
            Some(args) => {
                check_arg_rule(rule.name, args)?;
                self.allow_when(nr, args, RET_DENY);
            }
        }
        Ok(())
    }

    fn allow_always(&mut self, nr: u32) {
        self.0.insert(nr, Allowance::Always);
    }

    /// Adds `args` to the tests of `nr`; `deny` is what a call passing none gets, unless
    /// earlier tests already chose it (the profile's come first).
    fn allow_when(&mut self, nr: u32, args: &ArgRule, deny: u32) {
        let allowance = self
            .0
            .entry(nr)
            .or_insert_with(|| Allowance::When(ArgTests::new(deny)));
        if let Allowance::When(tests) = allowance {
            tests
                .values
                .extend(args.values.iter().map(|value| (args.index, *value)));
            tests.masks.extend(args.mask.map(|mask| (args.index, mask)));
        }
    }

    fn unconditional(&self) -> Vec<u32> {
        self.0
            .iter()
            .filter(|(_, allowance)| matches!(allowance, Allowance::Always))
            .map(|(nr, _)| *nr)
            .collect()
    }

    fn conditional(&self) -> impl Iterator<Item = (u32, &ArgTests)> {
        self.0.iter().filter_map(|(nr, allowance)| match allowance {
            Allowance::Always => None,
            Allowance::When(tests) => Some((*nr, tests)),
        })
    }
}

fn check_arg_rule(name: &str, args: &ArgRule) -> Result<(), SeccompError> {
    if args.index > MAX_ARG_INDEX {
        return Err(SeccompError::ArgIndex {
            name: name.to_string(),
            index: args.index,
        });
    }
    if args.values.is_empty() && args.mask.is_none() {
        return Err(SeccompError::EmptyArgRule {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn load(offset: u32) -> Instruction {
    Instruction {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

/// A conditional jump; callers keep `jt` and `jf` within [`MAX_JUMP`].
fn jump(code: u16, k: u32, jt: usize, jf: usize) -> Instruction {
    debug_assert!(jt <= MAX_JUMP && jf <= MAX_JUMP);
    let offset = |n: usize| u8::try_from(n).unwrap_or(u8::MAX);
    Instruction {
        code,
        jt: offset(jt),
        jf: offset(jf),
        k,
    }
}

fn ret(action: u32) -> Instruction {
    Instruction {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: action,
    }
}

/// Offset of the low 32 bits of argument `index` (all supported ABIs are little endian).
fn arg_low(index: u8) -> u32 {
    OFFSET_ARGS + 8 * u32::from(index)
}

/// Offset of the high 32 bits of argument `index`.
fn arg_high(index: u8) -> u32 {
    arg_low(index) + 4
}

/// Kills the process on a foreign ABI; leaves the syscall number in `A`.
fn prologue(arch: Arch, audit_arch: u32) -> Vec<Instruction> {
    let mut program = vec![
        load(OFFSET_ARCH),
        jump(BPF_JEQ_K, audit_arch, 1, 0),
        ret(SECCOMP_RET_KILL_PROCESS),
        load(OFFSET_NR),
    ];
    if arch == Arch::X86_64 {
        program.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
        program.push(ret(SECCOMP_RET_KILL_PROCESS));
    }
    program
}

/// Returns `ALLOW` if `A` equals any of `constants`, else falls through. Each run of up to
/// [`MAX_RUN`] comparisons jumps to its own `ret ALLOW` right after it.
fn allow_any_of(constants: &[u32]) -> Vec<Instruction> {
    let mut block = Vec::new();
    for run in constants.chunks(MAX_RUN) {
        let last = run.len() - 1;
        for (i, k) in run.iter().enumerate() {
            let (jt, jf) = if i == last { (0, 1) } else { (last - i, 0) };
            block.push(jump(BPF_JEQ_K, *k, jt, jf));
        }
        block.push(ret(SECCOMP_RET_ALLOW));
    }
    block
}

/// The block for one syscall allowed only under argument tests: skipped unless `A == nr`;
/// inside, a passing test returns `ALLOW` and the end returns the default action.
fn conditional_block(nr: u32, tests: &ArgTests) -> Vec<Instruction> {
    let mut body = Vec::new();
    for ((index, high), lows) in values_by_high_word(tests) {
        body.extend(values_block(index, high, &lows));
    }
    for (index, mask) in &tests.masks {
        body.extend(mask_block(*index, *mask));
    }
    body.push(ret(tests.deny));

    let mut block = if body.len() <= MAX_JUMP {
        vec![jump(BPF_JEQ_K, nr, 0, body.len())]
    } else {
        // Too far for an 8-bit skip: jump over an unconditional `ja` that skips the body.
        let skip = u32::try_from(body.len()).unwrap_or(u32::MAX);
        vec![
            jump(BPF_JEQ_K, nr, 1, 0),
            Instruction {
                code: BPF_JA,
                jt: 0,
                jf: 0,
                k: skip,
            },
        ]
    };
    block.extend(body);
    block
}

/// Groups value tests by argument and high word, so each group loads the high word once
/// and then compares only low words.
fn values_by_high_word(tests: &ArgTests) -> BTreeMap<(u8, u32), Vec<u32>> {
    let mut groups: BTreeMap<(u8, u32), Vec<u32>> = BTreeMap::new();
    for (index, value) in &tests.values {
        let (high, low) = split(*value);
        groups.entry((*index, high)).or_default().push(low);
    }
    groups
}

/// `ALLOW` if argument `index` has high word `high` and a low word in `lows`; falls through
/// otherwise (with `A` clobbered).
fn values_block(index: u8, high: u32, lows: &[u32]) -> Vec<Instruction> {
    let mut block = Vec::new();
    for run in lows.chunks(MAX_RUN) {
        let compare = allow_any_of(run);
        block.push(load(arg_high(index)));
        block.push(jump(BPF_JEQ_K, high, 0, 1 + compare.len()));
        block.push(load(arg_low(index)));
        block.extend(compare);
    }
    block
}

/// `ALLOW` if argument `index` has no bit set outside `mask`; falls through otherwise.
/// A mask that allows every high bit (the default profile's `clone`) tests the low word
/// only.
fn mask_block(index: u8, mask: u64) -> Vec<Instruction> {
    let (forbidden_high, forbidden_low) = split(!mask);
    if forbidden_high == 0 {
        return vec![
            load(arg_low(index)),
            jump(BPF_JSET_K, forbidden_low, 1, 0),
            ret(SECCOMP_RET_ALLOW),
        ];
    }
    vec![
        load(arg_low(index)),
        jump(BPF_JSET_K, forbidden_low, 3, 0),
        load(arg_high(index)),
        jump(BPF_JSET_K, forbidden_high, 1, 0),
        ret(SECCOMP_RET_ALLOW),
    ]
}

/// `(high, low)` 32-bit halves.
fn split(value: u64) -> (u32, u32) {
    ((value >> 32) as u32, value as u32)
}

#[cfg(test)]
mod tests;
