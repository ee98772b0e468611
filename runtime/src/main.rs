//! The `nanostar` binary. On device targets the library's `_start` is the entry point
//! (`sys::entry`); host builds are an ordinary std program.
#![cfg_attr(nanostar_device, no_std)]
#![cfg_attr(nanostar_device, no_main)]

// Links the library, whose `_start`, panic handler and mem functions make the program.
#[cfg(nanostar_device)]
use nanostar as _;

#[cfg(not(nanostar_device))]
fn main() {
    std::process::exit(i32::from(nanostar::start()))
}
