//! Raw system calls with up to six arguments, for the few calls rustix does not have
//! (their numbers are in [`super::nr`]), and `exit_group`.

use rustix::io::Errno;

/// Makes system call `nr` with four arguments (a zero fifth, which the kernel ignores).
///
/// # Safety
/// The arguments must be what the kernel expects for `nr`: pointers valid for what the
/// call reads or writes.
#[inline]
pub unsafe fn raw4(nr: usize, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
    // SAFETY: the caller vouches for the four arguments; the fifth is unused by `nr`.
    unsafe { raw5(nr, a0, a1, a2, a3, 0) }
}

/// Makes system call `nr` with five arguments (a zero sixth, which the kernel ignores).
///
/// # Safety
/// The arguments must be what the kernel expects for `nr`: pointers valid for what the
/// call reads or writes.
#[inline]
pub unsafe fn raw5(nr: usize, a0: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> isize {
    // SAFETY: the caller vouches for the five arguments; the sixth is unused by `nr`.
    unsafe { raw6(nr, a0, a1, a2, a3, a4, 0) }
}

/// Makes system call `nr` with six arguments and returns the kernel's raw result (six
/// for `sync_file_range2` on arm, whose two 64-bit arguments take two registers each).
///
/// # Safety
/// The arguments must be what the kernel expects for `nr`: pointers valid for what the
/// call reads or writes.
#[inline]
pub unsafe fn raw6(
    nr: usize,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
) -> isize {
    let ret: isize;
    // SAFETY: a system call instruction with the registers each ABI assigns; the caller
    // vouches for the arguments. On arm, r7 holds the number but cannot be an operand
    // (it may be the frame pointer): it is saved, set and restored by hand.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a0, in("rsi") a1, in("rdx") a2, in("r10") a3, in("r8") a4, in("r9") a5,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a0 as isize => ret,
            in("x1") a1, in("x2") a2, in("x3") a3, in("x4") a4, in("x5") a5,
            options(nostack),
        );
        #[cfg(target_arch = "arm")]
        core::arch::asm!(
            "mov {saved}, r7",
            "mov r7, {nr}",
            "svc 0",
            "mov r7, {saved}",
            nr = in(reg) nr,
            saved = out(reg) _,
            inlateout("r0") a0 as isize => ret,
            in("r1") a1, in("r2") a2, in("r3") a3, in("r4") a4, in("r5") a5,
            options(nostack),
        );
    }
    ret
}

/// `exit_group(code)`: ends the process at once. rustix keeps its own behind an unstable
/// feature, so the call is made here, without a return path.
pub fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group takes one integer and never returns. r7 cannot be named as an
    // operand on arm (it may be the frame pointer); it is set by hand, and never restored
    // since nothing runs after the call.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!(
            "syscall",
            in("rax") super::nr::EXIT_GROUP,
            in("rdi") code as isize,
            options(noreturn),
        );
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!(
            "svc 0",
            in("x8") super::nr::EXIT_GROUP,
            in("x0") code as isize,
            options(noreturn),
        );
        #[cfg(target_arch = "arm")]
        core::arch::asm!(
            "mov r7, #{nr}",
            "svc 0",
            nr = const super::nr::EXIT_GROUP,
            in("r0") code as isize,
            options(noreturn),
        );
    }
}

/// The kernel returns `-errno` in `-4095..0` and a value otherwise.
pub fn result(ret: isize) -> Result<usize, Errno> {
    if (-4095..0).contains(&ret) {
        Err(Errno::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}
