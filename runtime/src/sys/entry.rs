//! `_start` for each architecture, the arguments and environment it finds, and the panic
//! handler.

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_char};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::limits::ARGS_COPY_LEN;

/// argc and argv as the kernel left them on the initial stack; set once in `_start`.
static ARGC: AtomicUsize = AtomicUsize::new(0);
static ARGV: AtomicPtr<*const c_char> = AtomicPtr::new(core::ptr::null_mut());

/// A copy of the argument strings (the kernel's contiguous `argv[0]..` area), made in
/// `_start` when they fit, so that no Rust reference ever points into the kernel's area
/// and a container's init may blank it ([`hide_command_line`]).
struct ArgsCopy(UnsafeCell<[u8; ARGS_COPY_LEN]>);

// SAFETY: written once, in `start_rust`, before any other code runs (one thread), and
// only read after that.
unsafe impl Sync for ArgsCopy {}

static ARGS_COPY: ArgsCopy = ArgsCopy(UnsafeCell::new([0; ARGS_COPY_LEN]));
/// Bytes in [`ARGS_COPY`]; 0 when the arguments did not fit and are read in place.
static ARGS_LEN: AtomicUsize = AtomicUsize::new(0);

// The kernel enters with the stack pointer at argc, followed by argv[], NULL, envp[], NULL,
// auxv. Each `_start` clears the frame pointer, passes that address to Rust and aligns the
// stack as the ABI requires.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym start_rust,
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, #0",
    "mov x30, #0",
    "mov x0, sp",
    "and sp, x0, #-16",
    "bl {entry}",
    "udf #0",
    entry = sym start_rust,
);

#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    ".globl _start",
    ".type _start,%function",
    ".arm",
    "_start:",
    "mov fp, #0",
    "mov lr, #0",
    "mov r0, sp",
    "bic sp, sp, #15",
    "bl {entry}",
    "udf #0",
    entry = sym start_rust,
);

/// Called by `_start` with the initial stack pointer.
///
/// # Safety
/// `sp` must be the stack pointer the kernel passed to `_start`.
unsafe extern "C" fn start_rust(sp: *const usize) -> ! {
    // SAFETY: the kernel's initial stack starts with argc, then argc argv pointers.
    let argc = unsafe { *sp };
    // SAFETY: argv follows argc on the initial stack.
    let argv = unsafe { sp.add(1) } as *mut *const c_char;
    ARGC.store(argc, Ordering::Relaxed);
    ARGV.store(argv, Ordering::Relaxed);
    if argc > 0 {
        // SAFETY: argv[0] and argv[argc - 1] are NUL-terminated strings the kernel wrote
        // one after another (`copy_strings` in exec) into one area of the initial stack.
        let (first, last) = unsafe { (*argv, *argv.add(argc - 1)) };
        // SAFETY: as above: `last` is NUL-terminated and lies after `first` in that area.
        let len = unsafe { last.add(CStr::from_ptr(last).to_bytes_with_nul().len()) } as usize
            - first as usize;
        if len <= ARGS_COPY_LEN {
            // SAFETY: `len` bytes from `first` are the kernel's argument area; the copy
            // is not yet read by anyone (nothing else has run).
            unsafe {
                core::ptr::copy_nonoverlapping(first.cast::<u8>(), ARGS_COPY.0.get().cast(), len)
            };
            ARGS_LEN.store(len, Ordering::Relaxed);
        }
    }
    // SAFETY: every program linking this library defines `nanostar_main` (the `nanostar`
    // binary calls `crate::start`; the test probe its own) with this signature.
    super::syscall::exit_group(i32::from(unsafe { nanostar_main() }))
}

unsafe extern "Rust" {
    /// The program's main, defined by the binary that links this library, so that other
    /// no_std programs (the test probe) reuse this entry point, panic handler and mem
    /// functions.
    fn nanostar_main() -> u8;
}

/// argv[1..] as byte strings (from the copy made at start, when there is one).
pub fn args() -> impl Iterator<Item = &'static [u8]> {
    let argc = ARGC.load(Ordering::Relaxed);
    let argv = ARGV.load(Ordering::Relaxed);
    let copied = ARGS_LEN.load(Ordering::Relaxed);
    // SAFETY: the copy is complete and never written again (see `ArgsCopy`).
    let copy: &'static [u8; ARGS_COPY_LEN] = unsafe { &*ARGS_COPY.0.get() };
    Strings {
        // SAFETY: argv[0..=argc] is on the initial stack; with argc = 0, argv[0] is the
        // NULL ending argv, so nothing is read past it.
        next: unsafe { argv.add(argc.min(1)) },
        // SAFETY: argv[0] exists (it is argv's NULL when argc = 0, and then nothing was
        // copied, so it is never used as a base).
        first: unsafe { *argv },
        copy: &copy[..copied],
    }
}

/// The strings of a NULL-terminated array of pointers on the initial stack (argv or envp),
/// in order. When `copy` is not empty each string is read from it, at the offset its
/// pointer has from `first` (the start of the kernel's argument area that was copied).
struct Strings {
    next: *const *const c_char,
    first: *const c_char,
    copy: &'static [u8],
}

impl Iterator for Strings {
    type Item = &'static [u8];

    fn next(&mut self) -> Option<&'static [u8]> {
        // SAFETY: `next` stays inside the NULL-terminated array: it stops at the NULL.
        let string = unsafe { *self.next };
        if string.is_null() {
            return None;
        }
        // SAFETY: `string` was not the NULL, so the next slot is still inside the array.
        self.next = unsafe { self.next.add(1) };
        if !self.copy.is_empty() {
            let at = string as usize - self.first as usize;
            return Some(
                CStr::from_bytes_until_nul(&self.copy[at..]).map_or(&[][..], CStr::to_bytes),
            );
        }
        // SAFETY: `string` is a NUL-terminated string the kernel copied onto the initial
        // stack, which lives (unchanged: only a copied argument area is ever blanked) as
        // long as the process.
        Some(unsafe { CStr::from_ptr(string) }.to_bytes())
    }
}

/// Overwrites the kernel's argument area with `name` and NULs, so that
/// `/proc/self/cmdline` (what `ps` shows) reads `name` instead of the process's command
/// line; `false` (nothing changed) when the arguments were not copied at start. Later
/// calls of [`args`] still see the original arguments.
pub fn hide_command_line(name: &CStr) -> bool {
    let len = ARGS_LEN.load(Ordering::Relaxed);
    let argv = ARGV.load(Ordering::Relaxed);
    if len == 0 || argv.is_null() {
        return false;
    }
    // SAFETY: argv[0] exists when the area was copied (argc > 0).
    let area = unsafe { *argv }.cast::<u8>().cast_mut();
    let name = name.to_bytes();
    let keep = &name[..name.len().min(len - 1)];
    let bytes = keep.iter().copied().chain(core::iter::repeat(0));
    for (i, byte) in bytes.take(len).enumerate() {
        // SAFETY: `area..area + len` is the kernel's argument area on this process's
        // (writable) initial stack; no Rust reference points into it, because `args`
        // reads the copy whenever the area was copied.
        unsafe { area.add(i).write_volatile(byte) };
    }
    true
}

/// The environment (`envp`, which follows argv's NULL on the initial stack) as byte
/// strings `KEY=value`.
pub fn env() -> impl Iterator<Item = &'static [u8]> {
    let argc = ARGC.load(Ordering::Relaxed);
    let argv = ARGV.load(Ordering::Relaxed);
    Strings {
        // SAFETY: envp starts after argv[argc], the NULL ending argv; the environment is a
        // NULL-terminated array of NUL-terminated strings on the initial stack.
        next: unsafe { argv.add(argc + 1) },
        first: core::ptr::null(),
        // Read in place: only the argument area is ever blanked, never the environment.
        copy: &[],
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut line = PanicLine {
        buf: [0; 256],
        len: 0,
    };
    let _ = core::fmt::Write::write_fmt(&mut line, format_args!("panicked: {info}\n"));
    let _ = super::write_all(super::StdFd::Err, &line.buf[..line.len]);
    super::syscall::exit_group(101)
}

/// The panic message, cut at 256 bytes: a panic needs no module above `sys` to be said.
struct PanicLine {
    buf: [u8; 256],
    len: usize,
}

impl core::fmt::Write for PanicLine {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The prebuilt ARM `core` carries unwind tables that name this symbol; with
/// `panic = "abort"` it is never called.
#[cfg(target_arch = "arm")]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// compiler_builtins' outline atomics on aarch64 ask `getauxval(AT_HWCAP)` for LSE support;
/// answering 0 selects the plain load/store-exclusive paths, correct on every ARMv8.
#[cfg(target_arch = "aarch64")]
#[unsafe(no_mangle)]
extern "C" fn getauxval(_kind: core::ffi::c_ulong) -> core::ffi::c_ulong {
    0
}
