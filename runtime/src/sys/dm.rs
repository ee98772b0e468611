//! Device-mapper ioctls on `/dev/mapper/control` (`include/uapi/linux/dm-ioctl.h`), which
//! neither rustix nor linux-raw-sys wrap: the structs are defined here.
//!
//! Every command sends one fixed-size packet that starts with `struct dm_ioctl`; its
//! `data_size` is the packet's size. Layout facts (312-byte `dm_ioctl`, 40-byte
//! `dm_target_spec`) are checked at compile time; they hold on 32-bit ARM too, where `u64`
//! is 8-aligned. The opcodes are `_IOWR(0xfd, n, struct dm_ioctl)`, composed with rustix's
//! `opcode` helpers.

use core::ffi::CStr;
use core::mem::{offset_of, size_of};

use rustix::fd::BorrowedFd;
use rustix::io;
use rustix::ioctl::{self, Opcode, Updater, opcode};

/// The control device.
pub const CONTROL: &CStr = c"/dev/mapper/control";
/// Longest device name (`DM_NAME_LEN` is 128 with the NUL).
pub const NAME_MAX: usize = 127;
/// Longest target parameter string (without its NUL) that fits the table-load packet.
pub const PARAMS_MAX: usize = 1023;

/// `DM_READONLY_FLAG`: the table's devices are opened read-only (verity requires it).
const DM_READONLY_FLAG: u32 = 1 << 0;
/// The interface version we speak (`DM_VERSION_MAJOR`); minor 0 accepts any kernel 4.x.
const DM_VERSION_MAJOR: u32 = 4;
/// `DM_MAX_TYPE_NAME`.
const TYPE_NAME_LEN: usize = 16;
/// `DM_IOCTL` (the ioctl group).
const DM_IOCTL: u8 = 0xfd;

/// `DM_VERSION`.
const DM_VERSION: Opcode = opcode::read_write::<DmIoctl>(DM_IOCTL, 0);
/// `DM_DEV_CREATE`.
const DM_DEV_CREATE: Opcode = opcode::read_write::<DmIoctl>(DM_IOCTL, 3);
/// `DM_DEV_REMOVE`.
const DM_DEV_REMOVE: Opcode = opcode::read_write::<DmIoctl>(DM_IOCTL, 4);
/// `DM_DEV_SUSPEND` (suspend or, without `DM_SUSPEND_FLAG`, resume).
const DM_DEV_SUSPEND: Opcode = opcode::read_write::<DmIoctl>(DM_IOCTL, 6);
/// `DM_TABLE_LOAD`.
const DM_TABLE_LOAD: Opcode = opcode::read_write::<DmIoctl>(DM_IOCTL, 9);

/// `struct dm_ioctl` from `include/uapi/linux/dm-ioctl.h`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; 128],
    uuid: [u8; 129],
    data: [u8; 7],
}

/// `struct dm_target_spec` from `include/uapi/linux/dm-ioctl.h`; the NUL-terminated
/// parameter string follows it.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmTargetSpec {
    sector_start: u64,
    length: u64,
    status: i32,
    next: u32,
    target_type: [u8; TYPE_NAME_LEN],
}

const _: () = assert!(size_of::<DmIoctl>() == 312);
const _: () = assert!(offset_of!(DmIoctl, dev) == 40);
const _: () = assert!(offset_of!(DmIoctl, name) == 48);
const _: () = assert!(offset_of!(DmIoctl, uuid) == 176);
const _: () = assert!(size_of::<DmTargetSpec>() == 40);
// The opcodes as linux-raw-sys's `ioctl` module and the guest run (platform.md §6) have
// them; the encoding is the same on x86_64, aarch64 and arm.
const _: () = assert!(DM_VERSION == 0xC138_FD00);
const _: () = assert!(DM_DEV_CREATE == 0xC138_FD03);
const _: () = assert!(DM_DEV_REMOVE == 0xC138_FD04);
const _: () = assert!(DM_DEV_SUSPEND == 0xC138_FD06);
const _: () = assert!(DM_TABLE_LOAD == 0xC138_FD09);

/// The table-load packet: header, one target spec, its parameters (NUL-terminated).
#[repr(C)]
struct TableLoad {
    header: DmIoctl,
    spec: DmTargetSpec,
    params: [u8; PARAMS_MAX + 1],
}

/// A packet the kernel reads as a `dm_ioctl` followed by `data_size - 312` bytes.
///
/// # Safety
/// Implementors are `#[repr(C)]` and start with the [`DmIoctl`] that `header` returns.
unsafe trait Packet {
    fn header(&mut self) -> &mut DmIoctl;
}

// SAFETY: DmIoctl is itself the header.
unsafe impl Packet for DmIoctl {
    fn header(&mut self) -> &mut DmIoctl {
        self
    }
}

// SAFETY: TableLoad is #[repr(C)] with the header as its first field.
unsafe impl Packet for TableLoad {
    fn header(&mut self) -> &mut DmIoctl {
        &mut self.header
    }
}

/// A device-mapper device, by name or by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device<'a> {
    /// The name given at creation.
    Name(&'a [u8]),
    /// The block device number.
    Number {
        /// Major number.
        major: u32,
        /// Minor number (the N of `/dev/dm-N`).
        minor: u32,
    },
}

/// One target of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// Length in 512-byte sectors (the target starts at sector 0).
    pub sectors: u64,
    /// Target type, e.g. `b"verity"`.
    pub kind: &'a [u8],
    /// Parameter string (without NUL).
    pub params: &'a [u8],
}

impl DmIoctl {
    /// A header for `device` with `flags`, speaking interface 4.x.
    fn new(device: Device, flags: u32) -> io::Result<DmIoctl> {
        let mut header = DmIoctl {
            version: [DM_VERSION_MAJOR, 0, 0],
            data_size: 0,
            data_start: size_of::<DmIoctl>() as u32,
            target_count: 0,
            open_count: 0,
            flags,
            event_nr: 0,
            padding: 0,
            dev: 0,
            name: [0; 128],
            uuid: [0; 129],
            data: [0; 7],
        };
        match device {
            Device::Name(name) => {
                if name.is_empty() || name.contains(&0) || name.contains(&b'/') {
                    return Err(io::Errno::INVAL);
                }
                if name.len() > NAME_MAX {
                    return Err(io::Errno::NAMETOOLONG);
                }
                header.name[..name.len()].copy_from_slice(name);
            }
            Device::Number { major, minor } => header.dev = encode_dev(major, minor),
        }
        Ok(header)
    }
}

/// The kernel's `huge_encode_dev` (= `new_encode_dev`) of a device number.
fn encode_dev(major: u32, minor: u32) -> u64 {
    u64::from((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12))
}

/// The inverse of [`encode_dev`]: `(major, minor)`.
fn decode_dev(dev: u64) -> (u32, u32) {
    let dev = dev as u32;
    ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// `ioctl(OPCODE)` on the control device with `packet`, whose `data_size` is set here.
fn call<const OPCODE: Opcode, P: Packet>(
    control: BorrowedFd<'_>,
    packet: &mut P,
) -> io::Result<()> {
    packet.header().data_size = size_of::<P>() as u32;
    // SAFETY: every DM opcode reads and writes a `struct dm_ioctl` and the `data_size - 312`
    // bytes after it; `P` starts with that header (Packet's contract) and `data_size` is
    // exactly `P`'s size, so the kernel stays inside `packet`, which is borrowed mutably
    // for the call.
    unsafe { ioctl::ioctl(control, Updater::<OPCODE, P>::new(packet)) }
}

/// `ioctl(DM_VERSION)`: the kernel's device-mapper interface version.
pub fn version(control: BorrowedFd<'_>) -> io::Result<[u32; 3]> {
    let mut header = DmIoctl::new(Device::Number { major: 0, minor: 0 }, 0)?;
    call::<DM_VERSION, _>(control, &mut header)?;
    Ok(header.version)
}

/// `ioctl(DM_DEV_CREATE)`: a new device without a table; returns its `(major, minor)`.
pub fn create(control: BorrowedFd<'_>, name: &[u8]) -> io::Result<(u32, u32)> {
    let mut header = DmIoctl::new(Device::Name(name), 0)?;
    call::<DM_DEV_CREATE, _>(control, &mut header)?;
    Ok(decode_dev(header.dev))
}

/// The `DM_TABLE_LOAD` packet for a read-only table of one target.
fn table_load_packet(name: &[u8], target: &Target) -> io::Result<TableLoad> {
    if target.kind.len() >= TYPE_NAME_LEN || target.kind.contains(&0) {
        return Err(io::Errno::INVAL);
    }
    if target.params.len() > PARAMS_MAX || target.params.contains(&0) {
        return Err(io::Errno::TOOBIG);
    }
    let mut header = DmIoctl::new(Device::Name(name), DM_READONLY_FLAG)?;
    header.target_count = 1;
    let mut spec = DmTargetSpec {
        sector_start: 0,
        length: target.sectors,
        status: 0,
        next: 0,
        target_type: [0; TYPE_NAME_LEN],
    };
    spec.target_type[..target.kind.len()].copy_from_slice(target.kind);
    let mut params = [0u8; PARAMS_MAX + 1];
    params[..target.params.len()].copy_from_slice(target.params);
    Ok(TableLoad {
        header,
        spec,
        params,
    })
}

/// `ioctl(DM_TABLE_LOAD)` with `DM_READONLY_FLAG`: loads a one-target table into the
/// device's inactive slot (made live by [`resume`]).
pub fn load_table(control: BorrowedFd<'_>, name: &[u8], target: &Target) -> io::Result<()> {
    let mut packet = table_load_packet(name, target)?;
    call::<DM_TABLE_LOAD, _>(control, &mut packet)
}

/// `ioctl(DM_DEV_SUSPEND)` without `DM_SUSPEND_FLAG`: resumes the device, which activates
/// a loaded table.
pub fn resume(control: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let mut header = DmIoctl::new(Device::Name(name), 0)?;
    call::<DM_DEV_SUSPEND, _>(control, &mut header)
}

/// `ioctl(DM_DEV_REMOVE)`: removes the device (EBUSY while it is open or mounted).
pub fn remove(control: BorrowedFd<'_>, device: Device) -> io::Result<()> {
    let mut header = DmIoctl::new(device, 0)?;
    call::<DM_DEV_REMOVE, _>(control, &mut header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip() {
        for (major, minor) in [(253, 0), (253, 255), (254, 256), (7, 1_048_575), (4095, 12)] {
            assert_eq!(decode_dev(encode_dev(major, minor)), (major, minor));
        }
        // new_encode_dev(253, 0) as the kernel writes it.
        assert_eq!(encode_dev(253, 0), 253 << 8);
        assert_eq!(decode_dev(0xfd01), (253, 1));
    }

    #[test]
    fn names_are_checked() {
        let ok = DmIoctl::new(Device::Name(b"nanostar-hello-1.0.0"), 0).unwrap();
        assert_eq!(&ok.name[..21], b"nanostar-hello-1.0.0\0");
        assert_eq!(ok.data_start, 312);
        assert_eq!(
            DmIoctl::new(Device::Name(&[b'a'; 128]), 0).err(),
            Some(io::Errno::NAMETOOLONG)
        );
        assert!(DmIoctl::new(Device::Name(&[b'a'; 127]), 0).is_ok());
        assert_eq!(
            DmIoctl::new(Device::Name(b""), 0).err(),
            Some(io::Errno::INVAL)
        );
        assert_eq!(
            DmIoctl::new(Device::Name(b"a/b"), 0).err(),
            Some(io::Errno::INVAL)
        );
    }

    #[test]
    fn table_load_packet_layout() {
        let target = Target {
            sectors: 80,
            kind: b"verity",
            params: b"1 7:3 7:3 4096 4096 10 10 sha256 ab cd",
        };
        let mut packet = table_load_packet(b"x", &target).unwrap();
        assert_eq!(packet.header().flags, DM_READONLY_FLAG);
        assert_eq!(packet.header.target_count, 1);
        assert_eq!(offset_of!(TableLoad, spec), 312);
        assert_eq!(offset_of!(TableLoad, params), 352);
        assert_eq!(packet.spec.sector_start, 0);
        assert_eq!(packet.spec.length, 80);
        assert_eq!(&packet.spec.target_type[..7], b"verity\0");
        let len = target.params.len();
        assert_eq!(&packet.params[..len], target.params);
        assert_eq!(packet.params[len], 0);
        let too_long = [b'1'; PARAMS_MAX + 1];
        let target = Target {
            params: &too_long,
            ..target
        };
        assert_eq!(
            table_load_packet(b"x", &target).err(),
            Some(io::Errno::TOOBIG)
        );
    }
}
