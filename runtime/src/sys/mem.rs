//! `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp` and `strlen`: without libc nobody else
//! provides them (the compiler emits calls to them, rustix's vDSO parser calls `strlen`).
//!
//! Byte loops with an empty `asm!` inside, so LLVM cannot recognise the loop and turn it
//! back into a call to the very function being defined.

use core::ffi::c_char;

#[inline(always)]
fn opaque() {
    // SAFETY: an empty asm block has no effect; it only stops loop idiom recognition.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) }
}

/// # Safety
/// As C's `memcpy`: `dst` and `src` valid for `n` bytes and not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        opaque();
        // SAFETY: the caller guarantees both ranges are valid for n bytes.
        unsafe { *dst.add(i) = *src.add(i) };
    }
    dst
}

/// # Safety
/// As C's `memmove`: `dst` and `src` valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) {
        for i in 0..n {
            opaque();
            // SAFETY: valid ranges; copying forwards is correct when dst is below src.
            unsafe { *dst.add(i) = *src.add(i) };
        }
    } else {
        for i in (0..n).rev() {
            opaque();
            // SAFETY: valid ranges; copying backwards is correct when dst is above src.
            unsafe { *dst.add(i) = *src.add(i) };
        }
    }
    dst
}

/// # Safety
/// As C's `memset`: `dst` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        opaque();
        // SAFETY: the caller guarantees dst is valid for n bytes.
        unsafe { *dst.add(i) = value as u8 };
    }
    dst
}

/// # Safety
/// As C's `memcmp`: both pointers valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        opaque();
        // SAFETY: the caller guarantees both ranges are valid for n bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// As `memcmp`; only equality matters.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// As C's `strlen`: `s` points to a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: the caller guarantees a NUL terminator within the allocation.
    while unsafe { *s.add(n) } != 0 {
        opaque();
        n += 1;
    }
    n
}
