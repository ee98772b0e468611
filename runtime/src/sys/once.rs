//! Static storage handed out once as `&'static mut`: the runtime's large tables live in
//! `.bss` instead of on the stack, where the compiler's stack probes would touch (and so
//! make resident) every page of a large frame even while the table is empty.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A value in static memory that one caller may borrow mutably, once.
pub struct TakeOnce<T> {
    taken: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reachable through `take`, which hands out at most one
// reference for the life of the program, so no two threads can reach it at once.
unsafe impl<T: Send> Sync for TakeOnce<T> {}

impl<T> TakeOnce<T> {
    /// Storage holding `value` (built at compile time).
    pub const fn new(value: T) -> TakeOnce<T> {
        TakeOnce {
            taken: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, the first time; `None` after that.
    // A `&mut` from `&self` is sound here: `taken` lets exactly one caller through.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: `taken` was false, so this is the only reference ever handed out.
        Some(unsafe { &mut *self.value.get() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_once() {
        static CELL: TakeOnce<[u8; 4]> = TakeOnce::new([1, 2, 3, 4]);
        let v = CELL.take().unwrap();
        v[0] = 9;
        assert_eq!(*v, [9, 2, 3, 4]);
        assert!(CELL.take().is_none());
    }
}
