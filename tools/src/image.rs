//! The squashfs image of a package, written and read in pure Rust with `backhand` (no
//! `mksquashfs` needed on the packing machine).
//!
//! Images are reproducible: entries are added in byte order of their names, every time is
//! zero, every owner is the manifest's uid/gid, and only permission bits come from the
//! source tree. Regular files, directories and symlinks are allowed; device nodes, FIFOs
//! and sockets are refused (the runtime provides `/dev`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Cursor, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemReader, FilesystemWriter, InnerNode, NodeHeader};

/// Data block size of the image: squashfs's default, a good ratio on small devices.
const SQUASHFS_BLOCK_SIZE: u32 = 128 * 1024;
/// The image is padded to whole dm-verity data blocks.
const PAD_TO: usize = 4096;
/// Mode of mount points the packer creates.
const MOUNT_POINT_MODE: u16 = 0o755;

/// What goes into a package's image.
pub struct ImageSpec<'a> {
    /// The directory whose tree becomes the image root.
    pub root: &'a Path,
    /// Owner of every entry (the manifest's uid).
    pub uid: u32,
    /// Group of every entry (the manifest's gid).
    pub gid: u32,
    /// Absolute paths that must be directories in the image because the manifest mounts
    /// something there; created (with parents, mode 0755) when the root lacks them.
    pub mount_points: &'a [&'a str],
}

/// Counts of what `unpack_image` wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    /// Regular files.
    pub files: u64,
    /// Directories (without the root).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// Why an image cannot be built or unpacked. Each names the path and what to do.
#[derive(Debug)]
pub enum ImageError {
    /// The root is missing or not a directory.
    RootNotDir(PathBuf),
    /// A file type that cannot go into a package.
    Unsupported {
        /// The entry.
        path: PathBuf,
        /// Its type, in words.
        kind: &'static str,
    },
    /// A mount point exists in the root but is not a directory.
    MountPointNotDir(PathBuf),
    /// A name that is not valid UTF-8 (squashfs names are bytes, but manifests and tools
    /// speak UTF-8).
    Name(PathBuf),
    /// Reading or writing a file failed.
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The squashfs library refused the tree or the image.
    Squashfs(String),
    /// An image entry would land outside the output directory.
    UnsafeEntry(PathBuf),
    /// The output directory exists and is not empty.
    OutputNotEmpty(PathBuf),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::RootNotDir(p) => {
                write!(f, "{}: the package root must be a directory", p.display())
            }
            ImageError::Unsupported { path, kind } => write!(
                f,
                "{}: a {kind} cannot go in a package; remove it from the root (the runtime provides /dev)",
                path.display()
            ),
            ImageError::MountPointNotDir(p) => write!(
                f,
                "{}: the manifest mounts something here, but in the root it is not a directory; remove it or change the mount",
                p.display()
            ),
            ImageError::Name(p) => {
                write!(f, "{}: file names must be UTF-8; rename it", p.display())
            }
            ImageError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ImageError::Squashfs(e) => write!(f, "squashfs: {e}"),
            ImageError::UnsafeEntry(p) => write!(
                f,
                "{}: the image names a path outside the output directory; refusing it",
                p.display()
            ),
            ImageError::OutputNotEmpty(p) => write!(
                f,
                "{}: exists and is not empty; choose a new directory",
                p.display()
            ),
        }
    }
}

impl std::error::Error for ImageError {}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn squashfs_err(e: backhand::BackhandError) -> ImageError {
    ImageError::Squashfs(e.to_string())
}

/// The entries of `dir`, sorted by name bytes so the image never depends on readdir order.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, fs::Metadata)>, ImageError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| ImageError::Name(path.clone()))?;
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        entries.push((name, path, meta));
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(entries)
}

/// Total bytes of regular files under `root`, to size a progress bar.
pub fn total_file_bytes(root: &Path) -> Result<u64, ImageError> {
    let meta =
        fs::symlink_metadata(root).map_err(|_| ImageError::RootNotDir(root.to_path_buf()))?;
    if !meta.is_dir() {
        return Err(ImageError::RootNotDir(root.to_path_buf()));
    }
    let mut total = 0;
    for (_, path, meta) in sorted_entries(root)? {
        if meta.is_dir() {
            total += total_file_bytes(&path)?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Reports bytes read from all files to the progress callback.
struct Progress<'p> {
    done: Cell<u64>,
    report: RefCell<&'p mut dyn FnMut(u64)>,
}

impl Progress<'_> {
    fn add(&self, n: usize) {
        self.done.set(self.done.get() + n as u64);
        (self.report.borrow_mut())(self.done.get());
    }
}

/// A file opened on first read and closed at its end, so a large tree does not hold one
/// descriptor per file until the image is written.
struct LazyFile<'p> {
    path: PathBuf,
    file: Option<File>,
    finished: bool,
    progress: &'p Progress<'p>,
}

impl Read for LazyFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(File::open(&self.path)?),
        };
        let n = file.read(buf)?;
        if n == 0 {
            self.file = None;
            self.finished = true;
        }
        self.progress.add(n);
        Ok(n)
    }
}

/// Builds the image of `spec.root`, padded to a multiple of 4096 bytes. `progress` gets
/// the file bytes read so far.
pub fn build_image(spec: &ImageSpec, progress: &mut dyn FnMut(u64)) -> Result<Vec<u8>, ImageError> {
    let root_meta =
        fs::metadata(spec.root).map_err(|_| ImageError::RootNotDir(spec.root.to_path_buf()))?;
    if !root_meta.is_dir() {
        return Err(ImageError::RootNotDir(spec.root.to_path_buf()));
    }
    let progress = Progress {
        done: Cell::new(0),
        report: RefCell::new(progress),
    };
    let mut writer = FilesystemWriter::default();
    writer.set_block_size(SQUASHFS_BLOCK_SIZE);
    writer.set_time(0);
    writer.set_compressor(FilesystemCompressor::new(Compressor::Gzip, None).map_err(squashfs_err)?);
    writer.set_root_mode(mode_bits(&root_meta));
    writer.set_root_uid(spec.uid);
    writer.set_root_gid(spec.gid);
    add_tree(&mut writer, spec, spec.root, Path::new("/"), &progress)?;
    add_mount_points(&mut writer, spec)?;

    let mut out = Cursor::new(Vec::new());
    writer.write(&mut out).map_err(squashfs_err)?;
    let mut image = out.into_inner();
    image.resize(image.len().next_multiple_of(PAD_TO), 0);
    Ok(image)
}

fn mode_bits(meta: &fs::Metadata) -> u16 {
    (meta.permissions().mode() & 0o7777) as u16
}

fn add_tree<'p>(
    w: &mut FilesystemWriter<'_, '_, 'p>,
    spec: &ImageSpec,
    dir: &Path,
    image_dir: &Path,
    progress: &'p Progress<'p>,
) -> Result<(), ImageError> {
    for (name, path, meta) in sorted_entries(dir)? {
        let target = image_dir.join(&name);
        let header = NodeHeader::new(mode_bits(&meta), spec.uid, spec.gid, 0);
        let ft = meta.file_type();
        if ft.is_dir() {
            w.push_dir(&target, header).map_err(squashfs_err)?;
            add_tree(w, spec, &path, &target, progress)?;
        } else if ft.is_file() {
            let file = LazyFile {
                path: path.clone(),
                file: None,
                finished: false,
                progress,
            };
            // Open once now so an unreadable file is reported with its path, not later by backhand.
            File::open(&path).map_err(io_err(&path))?;
            w.push_file(file, &target, header).map_err(squashfs_err)?;
        } else if ft.is_symlink() {
            let link = fs::read_link(&path).map_err(io_err(&path))?;
            w.push_symlink(link, &target, header)
                .map_err(squashfs_err)?;
        } else {
            let kind = if ft.is_fifo() {
                "FIFO"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_block_device() {
                "block device"
            } else {
                "device node"
            };
            return Err(ImageError::Unsupported { path, kind });
        }
    }
    Ok(())
}

fn add_mount_points(w: &mut FilesystemWriter, spec: &ImageSpec) -> Result<(), ImageError> {
    for mount_point in spec.mount_points {
        let relative = mount_point.trim_start_matches('/');
        let mut source = spec.root.to_path_buf();
        let mut image = PathBuf::from("/");
        for component in relative.split('/') {
            source.push(component);
            image.push(component);
            match fs::symlink_metadata(&source) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(ImageError::MountPointNotDir(source)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let header = NodeHeader::new(MOUNT_POINT_MODE, spec.uid, spec.gid, 0);
                    // Parents created for an earlier mount point are already there.
                    match w.push_dir(&image, header) {
                        Ok(()) | Err(backhand::BackhandError::DuplicatedFileName) => {}
                        Err(e) => return Err(squashfs_err(e)),
                    }
                }
                Err(e) => {
                    return Err(ImageError::Io {
                        path: source,
                        source: e,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Writes the tree of `image` (trailing zero padding allowed) under `out`, which must not
/// exist or be empty. Refuses entries that would land outside `out`.
pub fn unpack_image(image: &[u8], out: &Path) -> Result<UnpackStats, ImageError> {
    match fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ImageError::OutputNotEmpty(out.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(out).map_err(io_err(out))?
        }
        Err(e) => {
            return Err(ImageError::Io {
                path: out.to_path_buf(),
                source: e,
            });
        }
    }
    let reader = FilesystemReader::from_reader(Cursor::new(image)).map_err(squashfs_err)?;
    let mut stats = UnpackStats::default();
    let mut dirs = Vec::new();
    for node in reader.files() {
        let Some(relative) = safe_relative(&node.fullpath) else {
            return Err(ImageError::UnsafeEntry(node.fullpath.clone()));
        };
        if relative.as_os_str().is_empty() {
            dirs.push((out.to_path_buf(), node.header.permissions));
            continue;
        }
        let dest = out.join(&relative);
        check_no_symlink_parents(out, &relative)?;
        match &node.inner {
            InnerNode::Dir(_) => {
                fs::create_dir(&dest).map_err(io_err(&dest))?;
                dirs.push((dest, node.header.permissions));
                stats.dirs += 1;
            }
            InnerNode::File(file) => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(io_err(&dest))?;
                let mut data = reader.file(file).reader_checked().map_err(squashfs_err)?;
                stats.bytes += io::copy(&mut data, &mut f).map_err(io_err(&dest))?;
                fs::set_permissions(
                    &dest,
                    fs::Permissions::from_mode(u32::from(node.header.permissions)),
                )
                .map_err(io_err(&dest))?;
                stats.files += 1;
            }
            InnerNode::Symlink(link) => {
                symlink(&link.link, &dest).map_err(io_err(&dest))?;
                stats.symlinks += 1;
            }
            _ => {
                return Err(ImageError::Unsupported {
                    path: node.fullpath.clone(),
                    kind: "special file",
                });
            }
        }
    }
    // Directory modes last, deepest first, so a read-only directory does not block its contents.
    for (dir, mode) in dirs.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(u32::from(*mode)))
            .map_err(io_err(dir))?;
    }
    Ok(stats)
}

/// The path below the image root, or `None` if it has `..`, `.` or other non-name parts.
fn safe_relative(full: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in full.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(name) => out.push(name),
            _ => return None,
        }
    }
    Some(out)
}

/// Refuses to write through a symlink the image itself created earlier.
fn check_no_symlink_parents(out: &Path, relative: &Path) -> Result<(), ImageError> {
    let mut at = out.to_path_buf();
    let mut parents = relative.components().collect::<Vec<_>>();
    parents.pop();
    for c in parents {
        at.push(c);
        let meta = fs::symlink_metadata(&at).map_err(io_err(&at))?;
        if !meta.is_dir() {
            return Err(ImageError::UnsafeEntry(at));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
