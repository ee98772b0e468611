//! The `nanostar` binary. On device targets the library's `_start` is the entry point
//! (`sys::entry`); host builds are an ordinary std program.
#![cfg_attr(nanostar_device, no_std)]
#![cfg_attr(nanostar_device, no_main)]

/// Called by the library's `_start` (`sys::entry`), whose panic handler and mem functions
/// make the rest of the program.
#[cfg(nanostar_device)]
#[unsafe(no_mangle)]
fn nanostar_main() -> u8 {
    nanostar::start()
}

#[cfg(not(nanostar_device))]
fn main() {
    std::process::exit(i32::from(nanostar::start()))
}
