//! The file commands, and reading files in pieces (whole or line by line) into fixed
//! buffers.

use core::mem::MaybeUninit;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags, SeekFrom};
use rustix::io::Errno;

use crate::line::Line;

/// Bytes read (and written) per system call.
const CHUNK_LEN: usize = 4096;
/// The longest line [`for_each_line`] passes on; longer lines are cut to their start.
pub const MAX_LINE_LEN: usize = 4096;
/// The longest name of a directory entry (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;

fn open_read(path: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
}

/// Reads the file at `path` to its end in [`CHUNK_LEN`] pieces, passing each to `f`.
pub fn read_chunks(
    path: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let fd = open_read(path)?;
    let mut buf = [0u8; CHUNK_LEN];
    loop {
        match rustix::io::read(&fd, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => f(&buf[..n])?,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Calls `f` with each line of the file at `path` (without its newline; a line longer
/// than [`MAX_LINE_LEN`] is cut to its first [`MAX_LINE_LEN`] bytes). The file is read in
/// pieces: it may be much larger than any buffer here.
pub fn for_each_line(path: &[u8], mut f: impl FnMut(&[u8])) -> Result<(), Errno> {
    // The start of a line whose end is in a later piece.
    let mut carry = heapless::Vec::<u8, MAX_LINE_LEN>::new();
    read_chunks(path, |mut chunk| {
        while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
            if carry.is_empty() {
                f(&chunk[..newline]);
            } else {
                append(&mut carry, &chunk[..newline]);
                f(&carry);
                carry.clear();
            }
            chunk = &chunk[newline + 1..];
        }
        append(&mut carry, chunk);
        Ok(())
    })?;
    if !carry.is_empty() {
        f(&carry);
    }
    Ok(())
}

/// Appends `bytes` to `line`, cut to the room left.
fn append(line: &mut heapless::Vec<u8, MAX_LINE_LEN>, bytes: &[u8]) {
    let room = MAX_LINE_LEN - line.len();
    // Cannot fail: cut to the room left.
    let _ = line.extend_from_slice(&bytes[..room.min(bytes.len())]);
}

/// `cat PATH`.
pub fn cat(path: &[u8]) -> Result<(), Errno> {
    read_chunks(path, |chunk| {
        nanostar::sys::write_all(nanostar::sys::StdFd::Out, chunk)
    })
}

/// `read PATH`: the file's length as read.
pub fn read(path: &[u8]) -> Result<u64, Errno> {
    let mut len = 0u64;
    read_chunks(path, |chunk| {
        len += chunk.len() as u64;
        Ok(())
    })?;
    Ok(len)
}

fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match rustix::io::write(&fd, bytes) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `write PATH TEXT`.
pub fn write(path: &[u8], text: &[u8]) -> Result<(), Errno> {
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::from_bits_truncate(0o644),
    )?;
    write_all(&fd, text)?;
    write_all(&fd, b"\n")
}

/// `touch PATH`.
pub fn touch(path: &[u8]) -> Result<(), Errno> {
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::from_bits_truncate(0o644),
    )?;
    let now = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    rustix::fs::futimens(
        &fd,
        &rustix::fs::Timestamps {
            last_access: now,
            last_modification: now,
        },
    )
}

/// `mkdir PATH`.
pub fn mkdir(path: &[u8]) -> Result<(), Errno> {
    rustix::fs::mkdir(path, Mode::from_bits_truncate(0o755))
}

/// `stat PATH`: owner and permission bits (including set-id and sticky bits).
pub fn stat(path: &[u8]) -> Result<(), Errno> {
    let st = rustix::fs::stat(path)?;
    Line::out()
        .bytes(b"stat ")
        .bytes(path)
        .fmt(format_args!(
            " uid={} gid={} mode={:o}",
            st.st_uid,
            st.st_gid,
            st.st_mode & 0o7777
        ))
        .end();
    Ok(())
}

/// `ls PATH`: the entries in bytewise order, without a table to sort them in: each pass
/// over the directory prints the smallest name greater than the previous pass's.
pub fn ls(path: &[u8]) -> Result<(), Errno> {
    let dir = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // Empty at first: every name is greater.
    let mut previous = heapless::Vec::<u8, MAX_NAME_LEN>::new();
    loop {
        rustix::fs::seek(&dir, SeekFrom::Start(0))?;
        let mut next = heapless::Vec::<u8, MAX_NAME_LEN>::new();
        let mut found = false;
        let mut buf = [MaybeUninit::<u8>::uninit(); CHUNK_LEN];
        let mut entries = rustix::fs::RawDir::new(&dir, &mut buf);
        while let Some(entry) = entries.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." || name <= previous.as_slice() {
                continue;
            }
            if !found || name < next.as_slice() {
                next.clear();
                // Cannot fail: entry names are at most NAME_MAX bytes.
                let _ = next.extend_from_slice(name);
                found = true;
            }
        }
        if !found {
            return Ok(());
        }
        Line::out().bytes(b"entry ").bytes(&next).end();
        previous = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(content: &[u8]) -> Vec<Vec<u8>> {
        let path = std::env::temp_dir().join(format!(
            "nanostar-probe-lines-{}-{}",
            std::process::id(),
            content.len()
        ));
        std::fs::write(&path, content).unwrap();
        let mut lines = Vec::new();
        for_each_line(path.to_str().unwrap().as_bytes(), |l| {
            lines.push(l.to_vec())
        })
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        lines
    }

    #[test]
    fn lines_across_read_pieces() {
        // Lines of every length from 0 to 300 bytes: many cross a 4 KiB piece boundary.
        let expected: Vec<Vec<u8>> = (0..300).map(|n| vec![b'a' + (n % 26) as u8; n]).collect();
        let mut content = expected.join(&b'\n');
        content.push(b'\n');
        assert!(content.len() > 10 * CHUNK_LEN);
        assert_eq!(lines_of(&content), expected);
        // Without a final newline the last line still counts.
        assert_eq!(lines_of(b"one\ntwo"), [&b"one"[..], b"two"]);
    }

    #[test]
    fn long_lines_are_cut_to_their_start() {
        let mut content = vec![b'x'; MAX_LINE_LEN + 5000];
        content.extend_from_slice(b"\nnext\n");
        let lines = lines_of(&content);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], vec![b'x'; MAX_LINE_LEN]);
        assert_eq!(lines[1], b"next");
    }
}
