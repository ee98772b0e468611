//! The squashfs image of a package, written and read in pure Rust with `backhand`, so the
//! packing machine needs no `mksquashfs`.
//!
//! Images are reproducible (design decision 6): entries are in byte order of their names,
//! every time is zero, every owner is the manifest's uid/gid, and only the permission bits
//! come from the source tree. Regular files, directories and symlinks are allowed; device
//! nodes, FIFOs and sockets are refused (the runtime provides `/dev`).
//!
//! Where `backhand` would make the image depend on more than the tree, or hides an error,
//! this module works around it; each place says why.

use std::cell::{Cell, RefCell};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Cursor, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Component, Path, PathBuf};

use backhand::compression::Compressor;
use backhand::{
    BackhandError, FilesystemCompressor, FilesystemReader, FilesystemWriter, InnerNode, NodeHeader,
};

/// Data block size: squashfs's default, a good ratio without large reads on small devices.
const SQUASHFS_BLOCK_SIZE: u32 = 128 * 1024;
/// dm-verity hashes whole 4 KiB data blocks, so the image is padded to them.
const PAD_TO: usize = 4096;
/// Mode of the mount points the packer creates: what `mkdir -p` gives under umask 022.
const MOUNT_POINT_MODE: u16 = 0o755;

/// What goes into a package's image.
pub struct ImageSpec<'a> {
    /// The directory whose tree becomes the image root.
    pub root: &'a Path,
    /// Owner of every entry in the image (the manifest's uid), so the packing user's
    /// identity never leaks into the image and the app can read its own files.
    pub uid: u32,
    /// Group of every entry in the image (the manifest's gid).
    pub gid: u32,
    /// Where the manifest mounts something (e.g. "/data", "/lib/foo"): these must exist in
    /// the image, since it is read-only and the runtime cannot create them. Created as
    /// directories (with parents, mode 0755) if the root lacks them.
    pub mount_points: &'a [MountPoint<'a>],
}

/// One mount target of the manifest, as the image must hold it. The runtime opens each
/// target inside the image without following any symlink and refuses the start if one is
/// in the way, so the packer refuses the same roots: every component must be a real
/// directory (or missing, then it is created), and the target itself a directory, or a
/// regular file where a file may be mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountPoint<'a> {
    /// Absolute path inside the container.
    pub target: &'a str,
    /// `true` for a bind mount, whose host path may be a file: a regular file at the target
    /// is kept (a missing target is still made a directory).
    pub file_allowed: bool,
}

/// Counts of what [`unpack_image`] wrote, for the user's summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    /// Regular files.
    pub files: u64,
    /// Directories, not counting the output directory itself.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// Why an image cannot be built or unpacked. Each variant names the path involved and its
/// message says what to do about it.
#[derive(Debug)]
pub enum ImageError {
    /// The package root is missing or not a directory.
    RootNotDir(PathBuf),
    /// The package root is empty and no mount point is asked for: such an image holds
    /// nothing, and backhand cannot record a non-root owner for a lone root directory.
    EmptyRoot(PathBuf),
    /// A file type that cannot go in a package (device node, FIFO, socket).
    Unsupported {
        /// The entry in the root.
        path: PathBuf,
        /// Its type, in words.
        kind: &'static str,
    },
    /// A mount target, or a directory on its way, is a symlink in the root. The runtime
    /// follows no symlink to a mount target (one could point out of the container's root
    /// before `pivot_root`), so it would refuse to start the package.
    MountThroughSymlink {
        /// The manifest's mount target.
        target: String,
        /// The symlink, as a path inside the container.
        link: String,
        /// What the symlink points to.
        to: PathBuf,
    },
    /// A mount target, or a directory on its way, exists in the root but is not a
    /// directory (nor, at a bind mount's target, a regular file).
    MountPointNotDir {
        /// The manifest's mount target.
        target: String,
        /// The entry in the way, as a path inside the container.
        at: String,
        /// Its type, in words.
        kind: &'static str,
    },
    /// A mount point that is not an absolute path of plain names.
    BadMountPoint(PathBuf),
    /// Reading or writing a file failed.
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The squashfs library refused the tree, or the image is damaged or not squashfs.
    Squashfs {
        /// The package root when building; the entry or output directory when unpacking.
        path: PathBuf,
        /// What went wrong, in words.
        what: String,
    },
    /// The image holds a file type that packages never contain.
    UnsupportedInImage {
        /// The entry, as named in the image.
        path: PathBuf,
        /// Its type, in words.
        kind: &'static str,
    },
    /// An image entry would land outside the output directory.
    UnsafeEntry(PathBuf),
    /// The output directory exists and is not empty.
    OutputNotEmpty(PathBuf),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::RootNotDir(p) => write!(
                f,
                "{}: the package root must be an existing directory; check the path",
                p.display()
            ),
            ImageError::EmptyRoot(p) => write!(
                f,
                "{}: the package root is empty; put the app's files in it",
                p.display()
            ),
            ImageError::Unsupported { path, kind } => write!(
                f,
                "{}: {kind}s cannot go in a package; remove it from the root (the runtime provides /dev)",
                path.display()
            ),
            ImageError::MountThroughSymlink { target, link, to } => write!(
                f,
                "mount target {target} passes through the symlink {link} -> {} in the package \
                 root; mount at the real path instead (the runtime follows no symlink to a \
                 mount target)",
                to.display()
            ),
            ImageError::MountPointNotDir { target, at, kind } if target == at => write!(
                f,
                "mount target {target} is a {kind} in the package root, not a directory{}; \
                 remove it or change the mount",
                if *kind == "regular file" {
                    " (only a bind mount may be mounted on a file)"
                } else {
                    ""
                }
            ),
            ImageError::MountPointNotDir { target, at, kind } => write!(
                f,
                "mount target {target} lies below {at}, which is a {kind} in the package root, \
                 not a directory; remove it or change the mount"
            ),
            ImageError::BadMountPoint(p) => write!(
                f,
                "{}: a mount point must be an absolute path without `.` or `..`; fix the manifest",
                p.display()
            ),
            ImageError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ImageError::Squashfs { path, what } => {
                write!(f, "{}: squashfs: {what}", path.display())
            }
            ImageError::UnsupportedInImage { path, kind } => write!(
                f,
                "{}: the image holds a {kind}, which packages never contain; the image was not made by npk",
                path.display()
            ),
            ImageError::UnsafeEntry(p) => write!(
                f,
                "{}: the image names a path outside the output directory or through a symlink; \
                 refusing the image",
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

impl std::error::Error for ImageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ImageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Adds the path to an I/O error.
fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Adds the path to a backhand error. Backhand is built without its `error-strings`
/// feature, so its `Display` prints nothing: the words are ours.
fn squashfs_err(path: &Path, e: BackhandError) -> ImageError {
    let what = match e {
        BackhandError::StdIo(source) => {
            return ImageError::Io {
                path: path.to_path_buf(),
                source,
            };
        }
        BackhandError::UnsupportedSquashfsVersion(major, minor) => {
            format!("version {major}.{minor} is not supported (only 4.0)")
        }
        BackhandError::UnsupportedCompression(c) => format!("compression {c} is not supported"),
        BackhandError::InvalidFilePath => "invalid file name in the image".into(),
        BackhandError::DuplicatedFileName => "the same name twice in one directory".into(),
        BackhandError::IdNotFoundInTable | BackhandError::InvalidIdTable => {
            "owner missing from the id table".into()
        }
        BackhandError::NumericConversion(s) | BackhandError::InternalState(s) => s,
        _ => "the image is damaged or not a squashfs 4.0 image".into(),
    };
    ImageError::Squashfs {
        path: path.to_path_buf(),
        what,
    }
}

/// The root's metadata, following a symlink given as the root itself (the user named it).
fn root_dir(root: &Path) -> Result<fs::Metadata, ImageError> {
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => Ok(meta),
        _ => Err(ImageError::RootNotDir(root.to_path_buf())),
    }
}

/// One directory entry, not followed if it is a symlink.
struct Entry {
    name: OsString,
    path: PathBuf,
    meta: fs::Metadata,
}

/// The entries of `dir`, sorted by name bytes so the image never depends on readdir order.
fn sorted_entries(dir: &Path) -> Result<Vec<Entry>, ImageError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        entries.push(Entry {
            name: entry.file_name(),
            path,
            meta,
        });
    }
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(entries)
}

/// Total bytes of regular files under `root` (symlinks not followed), to size the
/// progress bar that [`build_image`]'s callback drives.
pub fn total_file_bytes(root: &Path) -> Result<u64, ImageError> {
    root_dir(root)?;
    tree_file_bytes(root)
}

fn tree_file_bytes(dir: &Path) -> Result<u64, ImageError> {
    let mut total = 0;
    for entry in sorted_entries(dir)? {
        if entry.meta.is_dir() {
            total += tree_file_bytes(&entry.path)?;
        } else if entry.meta.is_file() {
            total += entry.meta.len();
        }
    }
    Ok(total)
}

/// Counts file bytes as backhand reads them, for the progress callback, and remembers
/// which file failed: backhand's error does not say.
struct Progress<'p> {
    done: Cell<u64>,
    report: RefCell<&'p mut dyn FnMut(u64)>,
    failed: RefCell<Option<PathBuf>>,
}

impl Progress<'_> {
    fn add(&self, n: usize) {
        self.done.set(self.done.get() + n as u64);
        if let Ok(mut report) = self.report.try_borrow_mut() {
            report(self.done.get());
        }
    }
}

/// A file opened on its first read and closed at its end, so a large tree does not hold
/// one descriptor per file until backhand writes the image.
struct LazyFile<'p> {
    path: PathBuf,
    file: Option<File>,
    finished: bool,
    progress: &'p Progress<'p>,
}

impl LazyFile<'_> {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

impl Read for LazyFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.read_some(buf);
        if result.is_err() {
            *self.progress.failed.borrow_mut() = Some(self.path.clone());
        }
        result
    }
}

/// Builds the squashfs 4.0 image (gzip, 128 KiB blocks) of `spec.root`, padded with zeros
/// to a multiple of 4096 bytes. `progress` gets the file bytes read so far; its last value
/// is [`total_file_bytes`] of the root.
pub fn build_image(spec: &ImageSpec, progress: &mut dyn FnMut(u64)) -> Result<Vec<u8>, ImageError> {
    let root_meta = root_dir(spec.root)?;
    // Before any file is read: a root the runtime would refuse to start fails fast.
    for mount_point in spec.mount_points {
        check_mount_point(spec.root, mount_point)?;
    }
    let progress = Progress {
        done: Cell::new(0),
        report: RefCell::new(progress),
        failed: RefCell::new(None),
    };
    let mut writer = new_writer(spec, &root_meta)?;
    let entries = add_tree(&mut writer, spec, spec.root, Path::new("/"), &progress)?;
    let mount_points = add_mount_points(&mut writer, spec)?;
    if entries + mount_points == 0 {
        return Err(ImageError::EmptyRoot(spec.root.to_path_buf()));
    }
    let mut out = Cursor::new(Vec::new());
    let written = writer.write(&mut out).map_err(|e| {
        let failed = progress.failed.borrow_mut().take();
        squashfs_err(failed.as_deref().unwrap_or(spec.root), e)
    })?;
    Ok(padded(out.into_inner(), written.1))
}

/// A writer set up for reproducible images. The default writer already has time 0; it is
/// set anyway so a changed default cannot slip the clock in.
fn new_writer<'c>(
    spec: &ImageSpec,
    root_meta: &fs::Metadata,
) -> Result<FilesystemWriter<'static, 'static, 'c>, ImageError> {
    let mut writer = FilesystemWriter::default();
    writer.set_block_size(SQUASHFS_BLOCK_SIZE);
    writer.set_time(0);
    let compressor = FilesystemCompressor::new(Compressor::Gzip, None)
        .map_err(|e| squashfs_err(spec.root, e))?;
    writer.set_compressor(compressor);
    writer.set_root_mode(mode_bits(root_meta));
    writer.set_root_uid(spec.uid);
    writer.set_root_gid(spec.gid);
    // Backhand pads to 4 KiB but adds a whole extra block when already aligned: we pad.
    writer.set_no_padding();
    // Backhand's duplicate detection trusts a 64-bit xxhash without comparing contents (two
    // colliding files would silently share one's data), and it rewinds the output over the
    // duplicate, leaving stale bytes past the end of the image. Exactness first.
    writer.set_no_duplicate_files(false);
    Ok(writer)
}

/// The image cut to the length backhand reports (nothing stale after it), zero-padded to
/// whole dm-verity blocks.
fn padded(mut image: Vec<u8>, written: u64) -> Vec<u8> {
    let len = usize::try_from(written)
        .unwrap_or(image.len())
        .min(image.len());
    image.truncate(len);
    image.resize(len.next_multiple_of(PAD_TO), 0);
    image
}

/// Permission bits only (incl. setuid, setgid, sticky): the file type comes from the node.
fn mode_bits(meta: &fs::Metadata) -> u16 {
    (meta.permissions().mode() & 0o7777) as u16
}

/// Adds the tree under `dir` at `image_dir`, in name order. Returns the number of entries.
fn add_tree<'p>(
    w: &mut FilesystemWriter<'_, '_, 'p>,
    spec: &ImageSpec,
    dir: &Path,
    image_dir: &Path,
    progress: &'p Progress<'p>,
) -> Result<u64, ImageError> {
    let mut count = 0;
    for entry in sorted_entries(dir)? {
        let target = image_dir.join(&entry.name);
        let header = NodeHeader::new(mode_bits(&entry.meta), spec.uid, spec.gid, 0);
        let ft = entry.meta.file_type();
        let pushed = if ft.is_dir() {
            w.push_dir(&target, header)
        } else if ft.is_file() {
            // Opened once now so an unreadable file is reported here, before any work.
            File::open(&entry.path).map_err(io_err(&entry.path))?;
            let file = LazyFile {
                path: entry.path.clone(),
                file: None,
                finished: false,
                progress,
            };
            w.push_file(file, &target, header)
        } else if ft.is_symlink() {
            let link = fs::read_link(&entry.path).map_err(io_err(&entry.path))?;
            w.push_symlink(link, &target, header)
        } else {
            return Err(unsupported(entry.path, ft));
        };
        pushed.map_err(|e| squashfs_err(&entry.path, e))?;
        count += 1;
        if ft.is_dir() {
            count += add_tree(w, spec, &entry.path, &target, progress)?;
        }
    }
    Ok(count)
}

fn unsupported(path: PathBuf, ft: fs::FileType) -> ImageError {
    let kind = if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "device node"
    };
    ImageError::Unsupported { path, kind }
}

/// Creates the directories the manifest mounts on that the root lacks (checked by
/// [`check_mount_point`] first). Returns how many were made.
fn add_mount_points(w: &mut FilesystemWriter, spec: &ImageSpec) -> Result<u64, ImageError> {
    let mut created = 0;
    for mount_point in spec.mount_points {
        let relative = mount_point.target.trim_start_matches('/');
        let mut source = spec.root.to_path_buf();
        let mut image = PathBuf::from("/");
        for name in relative.split('/').filter(|n| !n.is_empty()) {
            source.push(name);
            image.push(name);
            if fs::symlink_metadata(&source).is_err() {
                created += push_mount_dir(w, spec, &image)?;
            }
        }
    }
    Ok(created)
}

/// Checks one mount target against the root as the runtime will resolve it inside the
/// image: component by component, following no symlink (absolute or relative, wherever
/// it points), each a real directory or missing; the target itself a directory, a regular
/// file if `file_allowed`, or missing.
pub fn check_mount_point(root: &Path, mount_point: &MountPoint) -> Result<(), ImageError> {
    let target = mount_point.target;
    let bad = || ImageError::BadMountPoint(PathBuf::from(target));
    let relative = target.strip_prefix('/').ok_or_else(bad)?;
    let mut source = root.to_path_buf();
    let mut inside = String::new();
    let names: Vec<&str> = relative.split('/').filter(|n| !n.is_empty()).collect();
    for (i, name) in names.iter().enumerate() {
        if *name == "." || *name == ".." {
            return Err(bad());
        }
        source.push(name);
        inside.push('/');
        inside.push_str(name);
        let meta = match fs::symlink_metadata(&source) {
            Ok(meta) => meta,
            // Missing: made as a directory, and so is everything below it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&source)(e)),
        };
        let ft = meta.file_type();
        let last = i + 1 == names.len();
        if ft.is_symlink() {
            let to = fs::read_link(&source).map_err(io_err(&source))?;
            return Err(ImageError::MountThroughSymlink {
                target: target.to_string(),
                link: inside,
                to,
            });
        }
        if ft.is_dir() || (last && ft.is_file() && mount_point.file_allowed) {
            continue;
        }
        return Err(ImageError::MountPointNotDir {
            target: target.to_string(),
            at: inside,
            kind: file_kind(ft),
        });
    }
    Ok(())
}

/// A file type in words, for errors.
fn file_kind(ft: fs::FileType) -> &'static str {
    if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "device node"
    }
}

/// Adds one mount point directory; 0 if an earlier mount point already made it.
fn push_mount_dir(
    w: &mut FilesystemWriter,
    spec: &ImageSpec,
    image: &Path,
) -> Result<u64, ImageError> {
    let header = NodeHeader::new(MOUNT_POINT_MODE, spec.uid, spec.gid, 0);
    match w.push_dir(image, header) {
        Ok(()) => Ok(1),
        Err(BackhandError::DuplicatedFileName) => Ok(0),
        Err(e) => Err(squashfs_err(image, e)),
    }
}

/// Writes the tree of `image` (trailing zero padding allowed) under `out`, which must not
/// exist or be an empty directory. Recreates files, directories, symlinks and permission
/// bits, not owners. Refuses entries that would land outside `out`, and turns a crash of
/// the squashfs reader on a hostile image into an error.
pub fn unpack_image(image: &[u8], out: &Path) -> Result<UnpackStats, ImageError> {
    prepare_output(out)?;
    match catch_unwind(AssertUnwindSafe(|| unpack_tree(image, out))) {
        Ok(result) => result,
        Err(_) => Err(ImageError::Squashfs {
            path: out.to_path_buf(),
            what: "the reader failed on this image; it is damaged or hostile".into(),
        }),
    }
}

/// Creates `out` or checks it is an empty directory, so unpacking never mixes trees.
fn prepare_output(out: &Path) -> Result<(), ImageError> {
    match fs::read_dir(out) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(ImageError::OutputNotEmpty(out.to_path_buf())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(out).map_err(io_err(out))
        }
        Err(e) => Err(ImageError::Io {
            path: out.to_path_buf(),
            source: e,
        }),
    }
}

fn unpack_tree(image: &[u8], out: &Path) -> Result<UnpackStats, ImageError> {
    let reader =
        FilesystemReader::from_reader(Cursor::new(image)).map_err(|e| squashfs_err(out, e))?;
    let mut stats = UnpackStats::default();
    let mut dirs = Vec::new();
    // Nodes come sorted by path, so every parent is made before its children.
    for node in reader.files() {
        let relative = safe_relative(&node.fullpath)
            .ok_or_else(|| ImageError::UnsafeEntry(node.fullpath.clone()))?;
        let mode = u32::from(node.header.permissions & 0o7777);
        if relative.as_os_str().is_empty() {
            dirs.push((out.to_path_buf(), mode));
            continue;
        }
        check_parents_are_dirs(out, &relative)?;
        let dest = out.join(&relative);
        match &node.inner {
            InnerNode::Dir(_) => {
                fs::create_dir(&dest).map_err(io_err(&dest))?;
                dirs.push((dest, mode));
                stats.dirs += 1;
            }
            InnerNode::File(file) => {
                stats.bytes += unpack_file(&reader, file, &node.fullpath, &dest, mode)?;
                stats.files += 1;
            }
            InnerNode::Symlink(link) => {
                symlink(&link.link, &dest).map_err(io_err(&dest))?;
                stats.symlinks += 1;
            }
            other => return Err(unsupported_in_image(&node.fullpath, other)),
        }
    }
    // Directory modes last, deepest first, so a read-only directory does not block its
    // own contents.
    for (dir, mode) in dirs.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(*mode)).map_err(io_err(dir))?;
    }
    Ok(stats)
}

/// Writes one file's content to `dest` (which must not exist), then its mode. Returns
/// the bytes written.
fn unpack_file(
    reader: &FilesystemReader,
    file: &backhand::SquashfsFileReader,
    name: &Path,
    dest: &Path,
    mode: u32,
) -> Result<u64, ImageError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(io_err(dest))?;
    let mut data = reader
        .file(file)
        .reader_checked()
        .map_err(|e| squashfs_err(name, e))?;
    let bytes = io::copy(&mut data, &mut f).map_err(io_err(dest))?;
    // After the content: chmod by the owner keeps setuid/setgid, a write would clear them.
    fs::set_permissions(dest, fs::Permissions::from_mode(mode)).map_err(io_err(dest))?;
    Ok(bytes)
}

fn unsupported_in_image<T>(path: &Path, node: &InnerNode<T>) -> ImageError {
    let kind = match node {
        InnerNode::CharacterDevice(_) => "character device",
        InnerNode::BlockDevice(_) => "block device",
        InnerNode::NamedPipe => "FIFO",
        InnerNode::Socket => "socket",
        _ => "special file",
    };
    ImageError::UnsupportedInImage {
        path: path.to_path_buf(),
        kind,
    }
}

/// The path below the image root, or `None` if it has `.`, `..` or other non-name parts.
/// Backhand already refuses entry names with `/` or equal to `.` or `..`; this keeps the
/// guarantee here, next to the writes it protects.
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

/// Refuses to write below anything but a real directory, e.g. through a symlink the
/// image itself created a moment earlier.
fn check_parents_are_dirs(out: &Path, relative: &Path) -> Result<(), ImageError> {
    let mut at = out.to_path_buf();
    let Some(parent) = relative.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        at.push(c);
        let meta = fs::symlink_metadata(&at).map_err(io_err(&at))?;
        if !meta.is_dir() {
            return Err(ImageError::UnsafeEntry(at));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    use super::*;

    const UID: u32 = 1000;
    const GID: u32 = 1001;

    fn build(root: &Path, mount_points: &[&str]) -> Result<Vec<u8>, ImageError> {
        build_with(root, mount_points, false)
    }

    /// Builds with `mount_points`, each allowed to be a file if `file_allowed` (a bind).
    fn build_with(
        root: &Path,
        mount_points: &[&str],
        file_allowed: bool,
    ) -> Result<Vec<u8>, ImageError> {
        let mount_points: Vec<MountPoint> = mount_points
            .iter()
            .map(|target| MountPoint {
                target,
                file_allowed,
            })
            .collect();
        let spec = ImageSpec {
            root,
            uid: UID,
            gid: GID,
            mount_points: &mount_points,
        };
        build_image(&spec, &mut |_| {})
    }

    fn set_mode(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Deterministic bytes that gzip cannot shrink, so blocks are stored as they are.
    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 32) as u8
            })
            .collect()
    }

    /// Names with unusual bytes: spaces, UTF-8, a newline, invalid UTF-8, the longest name.
    fn odd_names() -> Vec<OsString> {
        vec![
            OsString::from("name with spaces & ünïcode"),
            OsString::from("new\nline"),
            OsString::from(std::ffi::OsStr::from_bytes(b"bad\xff\x01utf8")),
            OsString::from("n".repeat(255)),
            OsString::from("-leading-dash"),
        ]
    }

    /// Writes the sample tree under `r`, in one order or the reverse: nested, empty and
    /// deep directories, empty, multi-block and sparse files, a symlink, unusual modes
    /// and names.
    fn write_sample(r: &Path, reverse: bool) {
        let mut steps: Vec<fn(&Path)> = vec![
            |r| fs::create_dir_all(r.join("a/b/c")).unwrap(),
            |r| fs::create_dir(r.join("empty")).unwrap(),
            |r| {
                let mut deep = r.join("deep");
                for i in 0..60 {
                    deep.push(format!("d{i}"));
                }
                fs::create_dir_all(&deep).unwrap();
                fs::write(deep.join("leaf"), b"bottom").unwrap();
            },
            |r| {
                fs::create_dir(r.join("ro")).unwrap();
                fs::write(r.join("ro/inside"), b"in a read-only dir").unwrap();
            },
            |r| {
                fs::create_dir(r.join("tmp")).unwrap();
                fs::write(r.join("tmp/.hidden"), b"").unwrap();
            },
            |r| {
                for (i, name) in odd_names().into_iter().enumerate() {
                    fs::write(r.join(name), format!("odd {i}")).unwrap();
                }
            },
            |r| symlink("a/b/c/big.bin", r.join("link")).unwrap(),
            |r| symlink("/no/such/target/..", r.join("dangling")).unwrap(),
            |r| fs::write(r.join("secret"), b"s").unwrap(),
        ];
        if reverse {
            steps.reverse();
        }
        for step in &steps {
            step(r);
        }
        // Files inside the directories above, then modes (directories last).
        let mut files: Vec<(&str, Vec<u8>)> = vec![
            ("a/empty.txt", vec![]),
            ("a/b/c/big.bin", pseudo_random(1 << 20, 7)),
            ("a/suid", b"#!/bin/true\n".to_vec()),
            ("a/exact", pseudo_random(SQUASHFS_BLOCK_SIZE as usize, 9)),
            ("sparse", [vec![0; 3 << 17], b"tail".to_vec()].concat()),
        ];
        if reverse {
            files.reverse();
        }
        for (p, data) in &files {
            fs::write(r.join(p), data).unwrap();
        }
        set_mode(&r.join("a/suid"), 0o4755);
        set_mode(&r.join("secret"), 0o600);
        set_mode(&r.join("a/exact"), 0o2711);
        set_mode(&r.join("tmp"), 0o1777);
        set_mode(&r.join("a/b"), 0o700);
        set_mode(&r.join("ro"), 0o555);
        set_mode(r, 0o755);
    }

    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_sample(dir.path(), false);
        dir
    }

    /// What a tree holds, by relative path: type, permission bits and content or target.
    fn listing(root: &Path) -> BTreeMap<PathBuf, (char, u32, Vec<u8>)> {
        let mut map = BTreeMap::new();
        let meta = fs::metadata(root).unwrap();
        map.insert(PathBuf::new(), ('d', meta.mode() & 0o7777, vec![]));
        list_into(root, Path::new(""), &mut map);
        map
    }

    fn list_into(dir: &Path, rel: &Path, map: &mut BTreeMap<PathBuf, (char, u32, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.mode() & 0o7777;
            let rel = rel.join(entry.file_name());
            let value = if meta.is_dir() {
                list_into(&path, &rel, map);
                ('d', mode, vec![])
            } else if meta.is_file() {
                ('f', mode, fs::read(&path).unwrap())
            } else {
                let target = fs::read_link(&path).unwrap();
                // A symlink's own mode is not meaningful on Linux.
                ('l', 0, target.as_os_str().as_bytes().to_vec())
            };
            map.insert(rel, value);
        }
    }

    fn assert_same_tree(expected: &Path, actual: &Path) {
        let (e, a) = (listing(expected), listing(actual));
        let e_keys: Vec<_> = e.keys().collect();
        let a_keys: Vec<_> = a.keys().collect();
        assert_eq!(e_keys, a_keys, "different entries");
        for (path, value) in &e {
            assert!(a[path] == *value, "{}: differs", path.display());
        }
    }

    fn owners(root: &Path) -> Vec<(PathBuf, u32, u32)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(p) = stack.pop() {
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                for entry in fs::read_dir(&p).unwrap() {
                    stack.push(entry.unwrap().path());
                }
            }
            out.push((p, meta.uid(), meta.gid()));
        }
        out
    }

    #[test]
    fn round_trip() {
        let tree = sample_tree();
        let image = build(tree.path(), &[]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("x");
        let stats = unpack_image(&image, &dest).unwrap();
        assert_same_tree(tree.path(), &dest);
        assert_eq!(stats.files, 5 + 1 + 1 + 1 + 1 + odd_names().len() as u64);
        assert_eq!(stats.symlinks, 2);
        assert_eq!(stats.dirs, 3 + 1 + 60 + 1 + 1 + 1);
        assert_eq!(stats.bytes, total_file_bytes(tree.path()).unwrap());
    }

    #[test]
    fn reproducible_whatever_the_times_and_creation_order() {
        let a = sample_tree();
        let first = build(a.path(), &["/data"]).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
        for p in ["a/empty.txt", "a/b/c/big.bin", "secret", "a"] {
            File::open(a.path().join(p))
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        assert!(
            first == build(a.path(), &["/data"]).unwrap(),
            "times changed the image"
        );
        let b = tempfile::tempdir().unwrap();
        write_sample(b.path(), true);
        assert!(
            first == build(b.path(), &["/data"]).unwrap(),
            "creation order changed the image"
        );
        // Superblock modification time (offset 8) is zero.
        assert_eq!(first[8..12], [0; 4]);
    }

    fn unsquashfs(args: &[&std::ffi::OsStr]) -> std::process::Output {
        match Command::new("unsquashfs").args(args).output() {
            Ok(out) => out,
            Err(e) => panic!(
                "cannot run unsquashfs ({e}); install squashfs-tools (apt-get install squashfs-tools)"
            ),
        }
    }

    #[test]
    fn unsquashfs_agrees() {
        let tree = sample_tree();
        let image = build(tree.path(), &["/data"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fs.img");
        fs::write(&file, &image).unwrap();
        let list = unsquashfs(&["-lln".as_ref(), file.as_os_str()]);
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let list = String::from_utf8_lossy(&list.stdout);
        let expected = listing(tree.path());
        for path in expected
            .keys()
            .filter(|p| p.to_str().is_some_and(|s| !s.contains('\n')))
        {
            let line = format!("squashfs-root/{}", path.display());
            assert!(
                list.contains(line.trim_end_matches('/')),
                "{line} missing:\n{list}"
            );
        }
        assert!(list.contains("squashfs-root/data"), "{list}");
        let entries = list.lines().filter(|l| l.contains(" squashfs-root"));
        for line in entries {
            assert!(line.contains(&format!(" {UID}/{GID} ")), "owner: {line}");
        }
        assert!(list.contains("-rwsr-xr-x"), "setuid bit lost:\n{list}");
        assert!(list.contains("drwxrwxrwt"), "sticky bit lost:\n{list}");
        let out = dir.path().join("out");
        let x = unsquashfs(&[
            "-no-xattrs".as_ref(),
            "-d".as_ref(),
            out.as_os_str(),
            file.as_os_str(),
        ]);
        assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
        fs::remove_dir(out.join("data")).unwrap();
        assert_same_tree(tree.path(), &out);
    }

    fn is_root() -> bool {
        fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
    }

    #[test]
    fn the_kernel_mounts_it() {
        if !is_root() {
            eprintln!("note: not root, loop mount of the image not tried");
            return;
        }
        let tree = sample_tree();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fs.img");
        fs::write(&file, build(tree.path(), &[]).unwrap()).unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let m = Command::new("mount")
            .args(["-o", "loop,ro", "-t", "squashfs"])
            .arg(&file)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            m.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&m.stderr)
        );
        let result = std::panic::catch_unwind(|| {
            assert_same_tree(tree.path(), &mnt);
            for (path, uid, gid) in owners(&mnt) {
                assert_eq!((uid, gid), (UID, GID), "{}", path.display());
            }
        });
        let u = Command::new("umount").arg(&mnt).output().unwrap();
        assert!(
            u.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&u.stderr)
        );
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    #[test]
    fn mount_points_are_created_or_checked() {
        let tree = sample_tree();
        let image = build(tree.path(), &["/x/y/z", "/x/w/", "/a/b", "/empty", "/x/y"]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("u");
        let stats = unpack_image(&image, &dest).unwrap();
        assert_eq!(stats.dirs, 67 + 4, "x, x/y, x/y/z, x/w added");
        for d in ["x", "x/y", "x/y/z", "x/w"] {
            let meta = fs::metadata(dest.join(d)).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o7777, 0o755, "{d}");
        }
        // Existing directories keep their modes and contents.
        assert_eq!(
            fs::metadata(dest.join("a/b")).unwrap().mode() & 0o7777,
            0o700
        );
        assert!(dest.join("a/b/c/big.bin").is_file());
        let e = build(tree.path(), &["/secret"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mount target /secret is a regular file in the package root, not a directory \
             (only a bind mount may be mounted on a file); remove it or change the mount"
        );
        // A bind mount may have a file there (its host path may be a file), not below it.
        assert!(build_with(tree.path(), &["/secret"], true).is_ok());
        let e = build_with(tree.path(), &["/secret/below"], true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mount target /secret/below lies below /secret, which is a regular file in the \
             package root, not a directory; remove it or change the mount"
        );
        // A symlink in the way is not followed.
        assert!(matches!(
            build(tree.path(), &["/link"]),
            Err(ImageError::MountThroughSymlink { .. })
        ));
        for bad in ["data", "/a/../etc", "/./x"] {
            assert!(
                matches!(
                    build(tree.path(), &[bad]),
                    Err(ImageError::BadMountPoint(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_mount_target_through_a_symlink_is_refused_with_the_link_named() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::create_dir_all(r.join("usr/lib")).unwrap();
        symlink("/etc", r.join("data")).unwrap();
        symlink("../../..", r.join("usr/lib/up")).unwrap();
        symlink("usr", r.join("opt")).unwrap();
        for (target, link, to) in [
            ("/data", "/data", "/etc"),
            ("/usr/lib/up", "/usr/lib/up", "../../.."),
            ("/usr/lib/up/etc", "/usr/lib/up", "../../.."),
            // A link that stays inside the root is refused too: the runtime follows none.
            ("/opt/lib", "/opt", "usr"),
        ] {
            for file_allowed in [false, true] {
                let e = build_with(r, &[target], file_allowed).unwrap_err();
                assert_eq!(
                    e.to_string(),
                    format!(
                        "mount target {target} passes through the symlink {link} -> {to} in \
                         the package root; mount at the real path instead (the runtime follows \
                         no symlink to a mount target)"
                    )
                );
            }
        }
        // The real paths are fine, and a missing part is made.
        assert!(build(r, &["/etc", "/usr/lib/new/dir"]).is_ok());
        let fifo = r.join("etc/pipe");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let e = build_with(r, &["/etc/pipe"], true).unwrap_err();
        assert!(
            matches!(&e, ImageError::MountPointNotDir { kind: "FIFO", .. }),
            "{e}"
        );
    }

    #[test]
    fn special_files_and_bad_roots_are_refused() {
        let tree = sample_tree();
        let fifo = tree.path().join("a/pipe");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let e = build(tree.path(), &[]).unwrap_err();
        assert!(
            matches!(&e, ImageError::Unsupported { path, kind: "FIFO" } if path == &fifo),
            "{e}"
        );
        let message = e.to_string();
        assert!(message.contains("a/pipe") && message.contains("remove it from the root"));
        let e = build(&tree.path().join("secret"), &[]).unwrap_err();
        assert!(matches!(&e, ImageError::RootNotDir(_)), "{e}");
        assert!(e.to_string().contains("secret"), "{e}");
        assert!(matches!(
            build(&tree.path().join("missing"), &[]),
            Err(ImageError::RootNotDir(_))
        ));
        assert!(matches!(
            total_file_bytes(&tree.path().join("secret")),
            Err(ImageError::RootNotDir(_))
        ));
    }

    #[test]
    fn an_empty_root_needs_a_mount_point() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            build(root.path(), &[]),
            Err(ImageError::EmptyRoot(_))
        ));
        let image = build(root.path(), &["/data"]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let stats = unpack_image(&image, out.path()).unwrap();
        assert_eq!(
            stats,
            UnpackStats {
                dirs: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn padding_and_progress() {
        let tree = sample_tree();
        let mut calls = Vec::new();
        let spec = ImageSpec {
            root: tree.path(),
            uid: 1,
            gid: 1,
            mount_points: &[],
        };
        let image = build_image(&spec, &mut |done| calls.push(done)).unwrap();
        assert_eq!(image.len() % 4096, 0);
        assert!(calls.windows(2).all(|w| w[0] <= w[1]), "not monotonic");
        assert_eq!(
            calls.last().copied(),
            Some(total_file_bytes(tree.path()).unwrap())
        );
        // The padding is zeros after the bytes the superblock says are used.
        let used = u64::from_le_bytes(image[40..48].try_into().unwrap()) as usize;
        assert!(used <= image.len() && image.len() - used < 4096);
        assert!(image[used..].iter().all(|b| *b == 0));
    }

    #[test]
    fn unpack_refuses_garbage_and_non_empty_output() {
        let out = tempfile::tempdir().unwrap();
        for garbage in [&[][..], &[0u8; 8192][..], b"hsqs"] {
            let e = unpack_image(garbage, &out.path().join("g")).unwrap_err();
            assert!(matches!(e, ImageError::Squashfs { .. }), "{e}");
            assert!(!e.to_string().ends_with("squashfs: "), "empty message: {e}");
        }
        fs::write(out.path().join("file"), b"x").unwrap();
        let tree = sample_tree();
        let image = build(tree.path(), &[]).unwrap();
        assert!(matches!(
            unpack_image(&image, out.path()),
            Err(ImageError::OutputNotEmpty(_))
        ));
        assert_eq!(safe_relative(Path::new("/a/../b")), None);
        assert_eq!(
            safe_relative(Path::new("/a/./b")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(safe_relative(Path::new("/a/b")), Some(PathBuf::from("a/b")));
    }

    /// Flips bytes of a valid image: unpacking must fail cleanly or succeed, never panic,
    /// and never write outside its output directory.
    #[test]
    fn damaged_images_are_refused_without_panic() {
        let tree = tempfile::tempdir().unwrap();
        let r = tree.path();
        fs::create_dir_all(r.join("d/e")).unwrap();
        fs::write(r.join("d/e/f"), pseudo_random(300_000, 3)).unwrap();
        fs::write(r.join("small"), b"hello").unwrap();
        symlink("d/e", r.join("l")).unwrap();
        let image = build(r, &[]).unwrap();
        let used = u64::from_le_bytes(image[40..48].try_into().unwrap()) as usize;
        let scratch = tempfile::tempdir().unwrap();
        let noise = pseudo_random(4 * 600, 11);
        for (i, chunk) in noise.chunks(4).enumerate() {
            let mut bad = image.clone();
            let at = u32::from_le_bytes(chunk.try_into().unwrap()) as usize % used;
            bad[at] ^= chunk[0] | 1;
            let out = scratch.path().join(format!("o{i}"));
            let _ = unpack_image(&bad, &out);
            let _ = fs::remove_dir_all(&out);
        }
        assert_eq!(fs::read_dir(scratch.path()).unwrap().count(), 0);
    }
}
