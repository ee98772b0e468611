//! Monotonic time for the loop's deadlines and timers (install deadlines, stop timeouts,
//! restart back-off). `CLOCK_MONOTONIC`: a board whose wall clock is set late (no RTC,
//! NTP later) must not fire or postpone a timer.

use rustix::event::Timespec;
use rustix::time::ClockId;

/// `clock_gettime(CLOCK_MONOTONIC)`.
pub fn now() -> Timespec {
    rustix::time::clock_gettime(ClockId::Monotonic)
}

/// The moment `ms` milliseconds from now.
pub fn after_ms(ms: u32) -> Timespec {
    let t = now();
    let total_ns = t.tv_nsec + i64::from(ms % 1000) * 1_000_000;
    Timespec {
        tv_sec: t.tv_sec + i64::from(ms / 1000) + total_ns / 1_000_000_000,
        tv_nsec: (total_ns % 1_000_000_000) as _,
    }
}

/// Whether `a` comes before `b`.
pub fn is_before(a: &Timespec, b: &Timespec) -> bool {
    (a.tv_sec, a.tv_nsec) < (b.tv_sec, b.tv_nsec)
}

/// The earlier of two moments.
pub fn earliest(a: Option<Timespec>, b: Option<Timespec>) -> Option<Timespec> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if is_before(&b, &a) { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// How long from now until `t` (zero if it has passed).
pub fn until(t: &Timespec) -> Timespec {
    let n = now();
    let ns = ((t.tv_sec - n.tv_sec) * 1_000_000_000 + (t.tv_nsec - n.tv_nsec)).max(0);
    Timespec {
        tv_sec: ns / 1_000_000_000,
        tv_nsec: (ns % 1_000_000_000) as _,
    }
}

/// Milliseconds from `since` to now (zero if `since` is later).
pub fn ms_since(since: &Timespec) -> u64 {
    let n = now();
    ((n.tv_sec - since.tv_sec) * 1000 + (n.tv_nsec - since.tv_nsec) / 1_000_000).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_carries_nanoseconds_into_seconds() {
        let a = after_ms(1999);
        assert!(a.tv_nsec < 1_000_000_000);
        assert!(is_before(&now(), &a));
        assert!(until(&a).tv_sec <= 1);
    }

    #[test]
    fn earliest_and_past_deadlines() {
        let soon = after_ms(10);
        let later = after_ms(10_000);
        assert_eq!(earliest(Some(later), Some(soon)), Some(soon));
        assert_eq!(earliest(None, Some(later)), Some(later));
        let past = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        assert_eq!(until(&past).tv_sec, 0);
        assert_eq!(until(&past).tv_nsec, 0);
    }
}
