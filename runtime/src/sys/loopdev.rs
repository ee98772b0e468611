//! Loop device ioctls (`include/uapi/linux/loop.h`), which rustix does not wrap.
//!
//! The kernel structs `loop_info64` and `loop_config` come from linux-raw-sys
//! (`loop_device` feature); their sizes are checked at compile time below, because the
//! same layout must hold on 32-bit ARM (where `u64` is 8-aligned as on the 64-bit targets).
//! The opcodes are composed with rustix's `opcode` helpers: every loop ioctl is `_IO('L', n)`.

use core::ffi::c_void;

use linux_raw_sys::loop_device::{
    LO_FLAGS_AUTOCLEAR, LO_FLAGS_READ_ONLY, loop_config, loop_info64,
};
use rustix::fd::{AsRawFd, BorrowedFd};
use rustix::io;
use rustix::ioctl::{self, IntegerSetter, Ioctl, IoctlOutput, NoArg, Opcode, Setter, opcode};

const _: () = assert!(core::mem::size_of::<loop_info64>() == 232);
const _: () = assert!(core::mem::size_of::<loop_config>() == 304);

/// `LOOP_SET_FD`: bind a backing file (the fd is the argument).
const LOOP_SET_FD: Opcode = opcode::none(b'L', 0x00);
/// `LOOP_CLR_FD`: unbind the backing file.
const LOOP_CLR_FD: Opcode = opcode::none(b'L', 0x01);
/// `LOOP_SET_STATUS64`: offset, size limit, flags of a bound device.
const LOOP_SET_STATUS64: Opcode = opcode::none(b'L', 0x04);
/// `LOOP_CONFIGURE` (Linux 5.8): bind and set the status in one step.
const LOOP_CONFIGURE: Opcode = opcode::none(b'L', 0x0A);
/// `LOOP_CTL_GET_FREE` on `/dev/loop-control`: the index of a free device (created if none).
const LOOP_CTL_GET_FREE: Opcode = opcode::none(b'L', 0x82);

// The composed opcodes are the kernel header's values on every target.
const _: () = {
    use linux_raw_sys::loop_device as k;
    assert!(LOOP_SET_FD == k::LOOP_SET_FD as Opcode);
    assert!(LOOP_CLR_FD == k::LOOP_CLR_FD as Opcode);
    assert!(LOOP_SET_STATUS64 == k::LOOP_SET_STATUS64 as Opcode);
    assert!(LOOP_CONFIGURE == k::LOOP_CONFIGURE as Opcode);
    assert!(LOOP_CTL_GET_FREE == k::LOOP_CTL_GET_FREE as Opcode);
};

/// What to attach to a loop device besides the backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attach<'a> {
    /// Byte offset of the device's first byte in the backing file.
    pub offset: u64,
    /// Device size in bytes (0 = up to the end of the file).
    pub size_limit: u64,
    /// Shown by `losetup` as the backing file name; truncated to 63 bytes.
    pub file_name: &'a [u8],
}

impl Attach<'_> {
    /// The `loop_info64` for this attachment: read-only, detached on last close.
    fn info(&self) -> loop_info64 {
        let mut name = [0u8; 64];
        let len = self.file_name.len().min(name.len() - 1);
        name[..len].copy_from_slice(&self.file_name[..len]);
        loop_info64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: self.offset,
            lo_sizelimit: self.size_limit,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_READ_ONLY as u32 | LO_FLAGS_AUTOCLEAR as u32,
            lo_file_name: name,
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// An ioctl without argument whose result is the syscall's return value.
struct ReturnsInt<const OPCODE: Opcode>;

// SAFETY: the opcode takes no argument (null pointer) and does not write through one; the
// output is the non-negative return value of the syscall.
unsafe impl<const OPCODE: Opcode> Ioctl for ReturnsInt<OPCODE> {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        OPCODE
    }

    fn as_ptr(&mut self) -> *mut c_void {
        core::ptr::null_mut()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// `ioctl(LOOP_CTL_GET_FREE)` on `/dev/loop-control`: the index N of a free `/dev/loopN`.
pub fn get_free(control: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns the index (or an error).
    let n = unsafe { ioctl::ioctl(control, ReturnsInt::<LOOP_CTL_GET_FREE>) }?;
    u32::try_from(n).map_err(|_| io::Errno::RANGE)
}

/// `ioctl(LOOP_CONFIGURE)`: binds `backing` to the loop device `dev`, read-only with
/// autoclear, at the offset and size of `attach`; logical block size left at 512.
pub fn configure(dev: BorrowedFd<'_>, backing: BorrowedFd<'_>, attach: &Attach) -> io::Result<()> {
    let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| io::Errno::BADF)?;
    let config = loop_config {
        fd,
        block_size: 0,
        info: attach.info(),
        __reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config` through the pointer; Setter
    // passes a pointer to `config`, which lives for the call.
    unsafe { ioctl::ioctl(dev, Setter::<LOOP_CONFIGURE, loop_config>::new(config)) }
}

/// `ioctl(LOOP_SET_FD)`: binds `backing` to `dev` (older kernels; follow with
/// [`set_status`]). Read-only because both files are open read-only.
pub fn set_fd(dev: BorrowedFd<'_>, backing: BorrowedFd<'_>) -> io::Result<()> {
    let fd = usize::try_from(backing.as_raw_fd()).map_err(|_| io::Errno::BADF)?;
    // SAFETY: LOOP_SET_FD takes the backing file descriptor as its integer argument and
    // dereferences no pointer.
    unsafe { ioctl::ioctl(dev, IntegerSetter::<LOOP_SET_FD>::new_usize(fd)) }
}

/// `ioctl(LOOP_SET_STATUS64)`: offset, size limit and autoclear for a bound device.
pub fn set_status(dev: BorrowedFd<'_>, attach: &Attach) -> io::Result<()> {
    // SAFETY: LOOP_SET_STATUS64 reads one `struct loop_info64` through the pointer; Setter
    // passes a pointer to the value, which lives for the call.
    unsafe {
        ioctl::ioctl(
            dev,
            Setter::<LOOP_SET_STATUS64, loop_info64>::new(attach.info()),
        )
    }
}

/// `ioctl(LOOP_CLR_FD)`: unbinds the backing file (when the last opener closes the device).
pub fn clear_fd(dev: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument.
    unsafe { ioctl::ioctl(dev, NoArg::<LOOP_CLR_FD>::new()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_read_only_autoclear_with_a_truncated_name() {
        let long = [b'x'; 100];
        let info = Attach {
            offset: 4096,
            size_limit: 8192,
            file_name: &long,
        }
        .info();
        assert_eq!(info.lo_offset, 4096);
        assert_eq!(info.lo_sizelimit, 8192);
        assert_eq!(info.lo_flags, 1 | 4);
        assert_eq!(info.lo_file_name[62], b'x');
        assert_eq!(info.lo_file_name[63], 0);
    }
}
