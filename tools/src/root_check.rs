//! The checks `npk pack` makes on a package root before writing anything: the manifest's
//! `init` must be a program the container can start. A package that passes them can still
//! fail at run time, but not because a file it needs was left out of the image.
//!
//! - `init` exists in the root, symlinks followed *inside the root* (see [`Root`]), and is
//!   a regular file its owner may execute: every file in the image belongs to the
//!   container's uid, so the owner's bits are the ones the kernel checks.
//! - A script (`#!`) needs its interpreter in the root, checked the same way.
//! - The ELF program that runs (init, or the script's interpreter) is built for the
//!   package's architecture.
//! - A dynamically linked program finds its interpreter and, recursively, every library it
//!   needs, where the dynamic linker would look: `DT_RPATH`, `LD_LIBRARY_PATH` from the
//!   manifest's `env`, `DT_RUNPATH`, the root's `/etc/ld.so.conf`, the default and
//!   multiarch directories (for musl: its own defaults or `/etc/ld-musl-ARCH.path`).
//!
//! The manifest's mounts replace what the root has at their mount points, so paths at or
//! below one are not checked: the mount provides them at run time ([`Checked::unchecked`]).
//! Resource packages (no `init`) have nothing to check.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nanostar_protocol::npk::Arch;
use nanostar_protocol::npk::manifest::Manifest;

use crate::elf::{Class, Elf, ElfError, Header};

/// Linux follows at most this many symlinks in one lookup (MAXSYMLINKS).
const MAX_SYMLINKS: u32 = 40;
/// Linux follows at most this many `#!` scripts in a row before the ELF program
/// ("4 levels of binfmt rewrites", `exec_binprm`).
const MAX_SCRIPTS: usize = 4;
/// The kernel reads this much of a file to find `#!` and the interpreter (BINPRM_BUF_SIZE).
const SCRIPT_HEAD: usize = 256;
/// `ld.so.conf` files read at most (includes included), and their largest size.
const MAX_CONF_FILES: usize = 256;
const MAX_CONF_LEN: u64 = 1 << 20;
/// The hint every "which architecture?" error ends with.
const ARCH_HINT: &str = "pass --arch x86_64|aarch64|arm";

/// A package root seen as the container will see it: `/` is the root directory, and the
/// manifest's mount points hide whatever the root has there.
pub struct Root<'a> {
    dir: &'a Path,
    mounts: Vec<&'a str>,
}

/// Where a path inside the root leads.
#[derive(Debug)]
pub enum Resolved {
    /// An entry of the root.
    Entry {
        /// Its path inside the root, symlinks followed.
        path: String,
        /// The same on this machine.
        host: PathBuf,
        /// Its metadata (never a symlink's).
        meta: fs::Metadata,
    },
    /// At or below this mount point: the mount provides it at run time, not the root.
    Mounted(String),
}

/// Why a path does not lead to an entry of the root. Paths are inside the root.
#[derive(Debug)]
pub enum ResolveError {
    /// `missing` does not exist; `via` is the symlink whose target named it, if any.
    NotFound {
        /// The first path that does not exist.
        missing: String,
        /// The symlink that led there.
        via: Option<String>,
    },
    /// A path below `path` was asked for, but `path` is not a directory.
    NotDir {
        /// The file in the way.
        path: String,
    },
    /// The symlink `link` climbs above the root with `..`.
    Escapes {
        /// The symlink.
        link: String,
        /// Its target.
        target: PathBuf,
    },
    /// More than [`MAX_SYMLINKS`] symlinks, counting to `link`: a loop, most likely.
    Loop {
        /// Where the count ran out.
        link: String,
    },
    /// The path itself climbs above the root with `..`.
    AboveRoot,
    /// Reading the root failed.
    Io {
        /// The path on this machine.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound { missing, via: None } => {
                write!(f, "is not in the root (no {missing})")
            }
            ResolveError::NotFound {
                missing,
                via: Some(link),
            } => write!(
                f,
                "is not in the root: the symlink {link} leads to {missing}, which does not exist"
            ),
            ResolveError::NotDir { path } => {
                write!(f, "is not in the root: {path} is not a directory")
            }
            ResolveError::Escapes { link, target } => write!(
                f,
                "leads out of the root: the symlink {link} points to {}, above the root; \
                 links resolve inside the package (an absolute target starts at its root)",
                target.display()
            ),
            ResolveError::Loop { link } => write!(
                f,
                "cannot be resolved: more than {MAX_SYMLINKS} symlinks by {link} (a loop?)"
            ),
            ResolveError::AboveRoot => f.write_str("climbs above the root with `..`"),
            ResolveError::Io { path, error } => {
                write!(f, "cannot be read: {} ({error})", path.display())
            }
        }
    }
}

/// One step of a path being resolved.
enum Step {
    Up,
    Name(OsString),
}

fn steps(path: &Path) -> impl DoubleEndedIterator<Item = Step> + '_ {
    path.components().filter_map(|c| match c {
        Component::ParentDir => Some(Step::Up),
        Component::Normal(n) => Some(Step::Name(n.to_os_string())),
        _ => None,
    })
}

/// `/a/b` for the components `a`, `b`.
fn in_root(parts: &[OsString]) -> String {
    if parts.is_empty() {
        return "/".into();
    }
    parts
        .iter()
        .map(|p| format!("/{}", p.to_string_lossy()))
        .collect()
}

impl<'a> Root<'a> {
    /// The root at `dir`, with the mount points of `manifest`.
    pub fn new(dir: &'a Path, manifest: &Manifest<'a>) -> Root<'a> {
        Root {
            dir,
            mounts: manifest.mounts.iter().map(|m| m.target).collect(),
        }
    }

    /// Follows `path` (absolute inside the root) as the kernel would with the root as `/`:
    /// an absolute symlink target starts at the root, and `..` never leaves it (a link
    /// that tries is an error, as is a loop).
    pub fn resolve(&self, path: &Path) -> Result<Resolved, ResolveError> {
        // Each pending step remembers the symlink (path and target) whose target it is from.
        type Via = Option<Rc<(String, PathBuf)>>;
        let mut pending: Vec<(Step, Via)> = steps(path).rev().map(|s| (s, None)).collect();
        let mut cur: Vec<OsString> = Vec::new();
        let mut followed = 0;
        while let Some((step, via)) = pending.pop() {
            let name = match step {
                Step::Name(n) => n,
                Step::Up => {
                    if cur.pop().is_none() {
                        return Err(match via {
                            Some(v) => ResolveError::Escapes {
                                link: v.0.clone(),
                                target: v.1.clone(),
                            },
                            None => ResolveError::AboveRoot,
                        });
                    }
                    continue;
                }
            };
            cur.push(name);
            let here = in_root(&cur);
            if self.mounts.contains(&here.as_str()) {
                return Ok(Resolved::Mounted(here));
            }
            let host: PathBuf = self.dir.join(cur.iter().collect::<PathBuf>());
            let meta = match fs::symlink_metadata(&host) {
                Ok(meta) => meta,
                // `npk pack` creates the missing parents of mount points as directories.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && !pending.is_empty()
                        && self.mounts.iter().any(|m| {
                            m.strip_prefix(here.as_str())
                                .is_some_and(|rest| rest.starts_with('/'))
                        }) =>
                {
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ResolveError::NotFound {
                        missing: here,
                        via: via.map(|v| v.0.clone()),
                    });
                }
                Err(error) => return Err(ResolveError::Io { path: host, error }),
            };
            if meta.file_type().is_symlink() {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(ResolveError::Loop { link: here });
                }
                let target =
                    fs::read_link(&host).map_err(|error| ResolveError::Io { path: host, error })?;
                cur.pop();
                if target.has_root() {
                    cur.clear();
                }
                let via = Some(Rc::new((here, target.clone())));
                pending.extend(steps(&target).rev().map(|s| (s, via.clone())));
            } else if !meta.is_dir() && !pending.is_empty() {
                return Err(ResolveError::NotDir { path: here });
            } else if pending.is_empty() {
                return Ok(Resolved::Entry {
                    path: here,
                    host,
                    meta,
                });
            }
        }
        // The root itself, or a path that ends in `..`.
        let host = self.dir.join(cur.iter().collect::<PathBuf>());
        let meta = fs::metadata(&host).map_err(|error| ResolveError::Io {
            path: host.clone(),
            error,
        })?;
        Ok(Resolved::Entry {
            path: in_root(&cur),
            host,
            meta,
        })
    }

    /// The names in the directory `dir` of the root, sorted; empty if it is not one.
    fn list(&self, dir: &str) -> Vec<OsString> {
        let Ok(Resolved::Entry { host, meta, .. }) = self.resolve(Path::new(dir)) else {
            return Vec::new();
        };
        if !meta.is_dir() {
            return Vec::new();
        }
        let mut names: Vec<OsString> = fs::read_dir(host)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        names
    }

    /// A regular file's text (at most [`MAX_CONF_LEN`] bytes), if there is one.
    fn read_text(&self, path: &str) -> Option<String> {
        let Ok(Resolved::Entry { host, meta, .. }) = self.resolve(Path::new(path)) else {
            return None;
        };
        // Checked before opening: opening a FIFO would block.
        if !meta.is_file() {
            return None;
        }
        let mut text = Vec::new();
        File::open(host)
            .ok()?
            .take(MAX_CONF_LEN)
            .read_to_end(&mut text)
            .ok()?;
        Some(String::from_utf8_lossy(&text).into_owned())
    }
}

/// What passed: the package's architecture (given, or read from init's ELF header) and the
/// files the check could not see.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    /// The architecture to pack for.
    pub arch: Arch,
    /// Files under a mount point, which the mount provides at run time, each with its
    /// mount point: "libc.so.6 (mount /lib)".
    pub unchecked: Vec<String>,
}

/// A file the program needs that the root lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// A library name (`DT_NEEDED`) or the interpreter's path.
    pub name: String,
    /// Why it is needed, if not simply by the program: "the interpreter", "for /lib/libx.so".
    pub needed_by: Option<String>,
    /// Candidates found but unusable: "/lib/libc.so.6 is a 32-bit x86 file".
    pub notes: Vec<String>,
}

/// Why a root cannot run its manifest's `init`. Messages name the file and say what to do.
#[derive(Debug)]
pub enum RootError {
    /// A program (init or an interpreter) is not in the root.
    Resolve {
        /// The program, in words: "init /bin/app".
        what: String,
        /// Its path inside the root.
        path: PathBuf,
        /// Why.
        error: ResolveError,
        /// What to change.
        fix: &'static str,
    },
    /// A directory or a special file where a program should be.
    NotAFile {
        /// The program, in words.
        what: String,
        /// "a directory", ...
        kind: &'static str,
    },
    /// The owner (the container's uid) lacks permission bits the kernel needs.
    Permission {
        /// The program, in words.
        what: String,
        /// The file on this machine.
        host: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The `chmod` symbolic mode that fixes it: "u+x" or "u+rx".
        chmod: &'static str,
    },
    /// A `#!` line the kernel cannot use.
    Shebang {
        /// The script, in words.
        what: String,
        /// What is wrong with the line.
        problem: String,
    },
    /// Scripts run by scripts deeper than the kernel follows.
    TooDeep {
        /// The last script, in words.
        what: String,
    },
    /// Neither an ELF program nor a script.
    NotAProgram {
        /// The file, in words.
        what: String,
        /// What it is instead.
        detail: String,
    },
    /// A broken or truncated ELF file.
    BadElf {
        /// The file, in words.
        what: String,
        /// The parser's reason.
        error: ElfError,
    },
    /// An ELF program for another architecture than the package's.
    WrongArch {
        /// The program, in words.
        what: String,
        /// What it is for: "x86_64".
        is: String,
        /// The package's architecture.
        arch: Arch,
        /// The architecture of the program, if nanostar runs it.
        suggest: Option<Arch>,
    },
    /// No `--arch`, and init does not tell.
    UnknownArch {
        /// The program, in words.
        what: String,
        /// Why it does not tell: "is a script".
        why: String,
    },
    /// The dynamically linked program's interpreter or libraries are not all in the root.
    Missing {
        /// The program, in words.
        what: String,
        /// Everything missing, in the order found.
        missing: Vec<Missing>,
        /// The directories searched for libraries, in order.
        searched: Vec<String>,
    },
    /// Reading a file of the root failed.
    Io {
        /// The file on this machine.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
}

impl fmt::Display for RootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootError::Resolve {
                what,
                path,
                error: ResolveError::NotFound { missing, via: None },
                fix,
            } if Path::new(missing) == path => write!(f, "{what} is not in the root; {fix}"),
            RootError::Resolve {
                what, error, fix, ..
            } => write!(f, "{what} {error}; {fix}"),
            RootError::NotAFile { what, kind } => {
                write!(f, "{what} is {kind}, not a program file; name a program")
            }
            RootError::Permission {
                what,
                host,
                mode,
                chmod,
            } => write!(
                f,
                "{what} is not {} by its owner (mode {:04o}), and every file in the image \
                 belongs to the container's uid; chmod {chmod} {}",
                if *chmod == "u+x" {
                    "executable"
                } else {
                    "readable and executable"
                },
                mode & 0o7777,
                host.display()
            ),
            RootError::Shebang { what, problem } => write!(f, "{what} {problem}"),
            RootError::TooDeep { what } => write!(
                f,
                "{what} is a script too: the kernel follows at most {MAX_SCRIPTS} #! \
                 interpreters in a row; name an ELF program in one of the #! lines"
            ),
            RootError::NotAProgram { what, detail } => {
                write!(f, "{what} {detail}, so the kernel cannot run it")
            }
            RootError::BadElf { what, error } => write!(f, "{what}: {error}"),
            RootError::WrongArch {
                what,
                is,
                arch,
                suggest,
            } => {
                write!(
                    f,
                    "{what} is {} program but --arch is {}",
                    article(is),
                    arch.name()
                )?;
                match suggest {
                    Some(s) if *arch == Arch::Any => write!(
                        f,
                        "; a package for any architecture holds no programs: pack with --arch {}",
                        s.name()
                    ),
                    Some(s) => write!(
                        f,
                        "; pack with --arch {}, or put {} build in the root",
                        s.name(),
                        article(arch.name())
                    ),
                    None => write!(f, "; put {} build in the root", article(arch.name())),
                }
            }
            RootError::UnknownArch { what, why } => {
                write!(
                    f,
                    "{what} {why}, so its architecture is unknown; {ARCH_HINT}"
                )
            }
            RootError::Missing {
                what,
                missing,
                searched,
            } => {
                let items: Vec<String> = missing.iter().map(missing_text).collect();
                write!(f, "{what} needs, not in the root: {}", items.join(", "))?;
                if !searched.is_empty() {
                    write!(f, " (searched {})", searched.join(", "))?;
                }
                f.write_str(
                    "; copy them into the root (`ldd` on a machine where the program runs \
                     lists them)",
                )
            }
            RootError::Io { path, error } => write!(f, "cannot read {} ({error})", path.display()),
        }
    }
}

impl std::error::Error for RootError {}

/// `name` with its indefinite article: "an x86_64", "an arm", "a big-endian ...".
fn article(name: &str) -> String {
    let first = name.chars().next().unwrap_or('a').to_ascii_lowercase();
    let an = matches!(first, 'a' | 'e' | 'i' | 'o' | 'u' | 'x');
    format!("{} {name}", if an { "an" } else { "a" })
}

fn missing_text(m: &Missing) -> String {
    let mut extra: Vec<&str> = m.needed_by.iter().map(String::as_str).collect();
    extra.extend(m.notes.iter().map(String::as_str));
    if extra.is_empty() {
        m.name.clone()
    } else {
        format!("{} ({})", m.name, extra.join("; "))
    }
}

/// Checks that `root` can run the `init` of `manifest` for `arch` (`None`: read it from
/// init's ELF header) and returns the architecture to pack for.
pub fn check(manifest: &Manifest, root: &Path, arch: Option<Arch>) -> Result<Checked, RootError> {
    let Some(init) = manifest.init else {
        return Ok(Checked {
            arch: arch.unwrap_or(Arch::Any),
            unchecked: Vec::new(),
        });
    };
    let root = Root::new(root, manifest);
    let mut unchecked = Vec::new();
    let mut what = format!("init {init}");
    let mut path = PathBuf::from(init);
    let mut fix = "put the program there or correct `init` in the manifest";
    // Scripts followed so far, to their interpreters.
    let mut depth = 0;
    loop {
        let (here, host, meta) = match program(&root, &what, &path, fix)? {
            Resolved::Mounted(mount) => {
                let arch = arch.ok_or_else(|| RootError::UnknownArch {
                    what: what.clone(),
                    why: format!("is under the mount point {mount}"),
                })?;
                unchecked.push(format!("{} (mount {mount})", path.display()));
                return Ok(Checked { arch, unchecked });
            }
            Resolved::Entry { path, host, meta } => (path, host, meta),
        };
        let mut head = Vec::with_capacity(SCRIPT_HEAD);
        File::open(&host)
            .and_then(|f| f.take(SCRIPT_HEAD as u64).read_to_end(&mut head))
            .map_err(|error| RootError::Io {
                path: host.clone(),
                error,
            })?;
        if let Some(line) = head.strip_prefix(b"#!") {
            if meta.permissions().mode() & 0o400 == 0 {
                // The interpreter opens the script to read it, as the container's uid.
                return Err(RootError::Permission {
                    what,
                    host,
                    mode: meta.permissions().mode(),
                    chmod: "u+rx",
                });
            }
            if depth >= MAX_SCRIPTS {
                return Err(RootError::TooDeep { what });
            }
            let interp = interpreter(line).map_err(|problem| RootError::Shebang {
                what: what.clone(),
                problem,
            })?;
            what = format!("the interpreter {} of init {init}", interp.display());
            path = interp;
            fix = "add it to the root or change the script's #! line";
            depth += 1;
            continue;
        }
        let elf = read_elf(&host, &what)?;
        let arch = match arch {
            Some(arch) => arch,
            None if depth == 0 => elf.header.arch().ok_or_else(|| RootError::UnknownArch {
                what: what.clone(),
                why: format!(
                    "is for {}, which nanostar does not run",
                    elf.header.arch_name()
                ),
            })?,
            None => {
                return Err(RootError::UnknownArch {
                    what: format!("init {init}"),
                    why: "is a script".into(),
                });
            }
        };
        if !elf.header.runs_on(arch) {
            return Err(RootError::WrongArch {
                what,
                is: elf.header.arch_name(),
                arch,
                suggest: elf.header.arch(),
            });
        }
        if elf.interp.is_some() {
            libraries(&root, manifest, arch, &what, &here, elf, &mut unchecked)?;
        }
        return Ok(Checked { arch, unchecked });
    }
}

/// Resolves a program and checks it is a regular file its owner may execute.
fn program(root: &Root, what: &str, path: &Path, fix: &'static str) -> Result<Resolved, RootError> {
    let resolved = root.resolve(path).map_err(|error| RootError::Resolve {
        what: what.into(),
        path: path.to_path_buf(),
        error,
        fix,
    })?;
    if let Resolved::Entry { host, meta, .. } = &resolved {
        let ft = meta.file_type();
        if !ft.is_file() {
            let kind = if ft.is_dir() {
                "a directory"
            } else {
                "a special file"
            };
            return Err(RootError::NotAFile {
                what: what.into(),
                kind,
            });
        }
        let mode = meta.permissions().mode();
        if mode & 0o100 == 0 {
            return Err(RootError::Permission {
                what: what.into(),
                host: host.clone(),
                mode,
                chmod: "u+x",
            });
        }
    }
    Ok(resolved)
}

/// The interpreter named by a `#!` line (after the `#!`), as the kernel reads it: spaces
/// and tabs, then a path up to a space, tab or newline.
fn interpreter(line: &[u8]) -> Result<PathBuf, String> {
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let name = line
        .split(|&b| b == b' ' || b == b'\t' || b == 0)
        .find(|w| !w.is_empty())
        .ok_or("starts with #! but names no interpreter; write e.g. #!/bin/sh")?;
    let path = PathBuf::from(OsStr::from_bytes(name));
    if !path.is_absolute() {
        return Err(format!(
            "names the interpreter `{}` in its #! line, which is not an absolute path; \
             write e.g. #!/bin/sh",
            path.display()
        ));
    }
    Ok(path)
}

fn read_elf(host: &Path, what: &str) -> Result<Elf, RootError> {
    let file = File::open(host).map_err(|error| RootError::Io {
        path: host.to_path_buf(),
        error,
    })?;
    let elf = Elf::read(&file).map_err(|error| match error {
        ElfError::NotElf => RootError::NotAProgram {
            what: what.into(),
            detail: "is neither an ELF program nor a script starting with #!".into(),
        },
        error => RootError::BadElf {
            what: what.into(),
            error,
        },
    })?;
    if !elf.header.is_program() {
        return Err(RootError::NotAProgram {
            what: what.into(),
            detail: format!(
                "is an ELF file of type {} (not an executable or shared object)",
                elf.header.kind
            ),
        });
    }
    Ok(elf)
}

/// A shared object to check the libraries of.
struct Object {
    /// Its real path inside the root.
    path: String,
    elf: Elf,
    /// `DT_RPATH` directories of the objects that loaded it, used while it has no
    /// `DT_RUNPATH` (the dynamic linker's rule).
    inherited: Vec<String>,
}

/// The outcome of looking for one library.
enum Found {
    /// A usable object, at this real path inside the root.
    Object(String, Box<Elf>),
    /// Under a mount point: assumed there.
    Mounted(String),
    /// Not here; with a note if a candidate was unusable.
    No(Option<String>),
}

/// Finds the interpreter and every library of the dynamically linked program `elf` at
/// `path`, recursively, each once.
fn libraries(
    root: &Root,
    manifest: &Manifest,
    arch: Arch,
    what: &str,
    path: &str,
    elf: Elf,
    unchecked: &mut Vec<String>,
) -> Result<(), RootError> {
    let interp = elf.interp.clone().unwrap_or_default();
    let interp_name = PathBuf::from(&interp);
    let musl = interp_name
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("ld-musl-"))
        .map(|n| n.split('.').next().unwrap_or(n).to_string());
    let mut missing = Vec::new();
    // Names already loaded: the dynamic linker itself is, by its file name.
    let mut loaded: BTreeSet<OsString> = BTreeSet::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue = vec![Object {
        path: path.into(),
        elf,
        inherited: Vec::new(),
    }];
    let interp_path = if interp_name.is_absolute() {
        interp_name.clone()
    } else {
        Path::new("/").join(&interp_name)
    };
    match candidate(root, &interp_path, arch, true) {
        Found::Object(real, elf) => {
            loaded.extend(interp_name.file_name().map(OsStr::to_os_string));
            loaded.extend(Path::new(&real).file_name().map(OsStr::to_os_string));
            if seen.insert(real.clone()) {
                queue.push(Object {
                    path: real,
                    elf: *elf,
                    inherited: Vec::new(),
                });
            }
        }
        Found::Mounted(mount) => {
            loaded.extend(interp_name.file_name().map(OsStr::to_os_string));
            unchecked.push(format!("{} (mount {mount})", interp_name.display()));
        }
        Found::No(note) => missing.push(Missing {
            name: interp_name.display().to_string(),
            needed_by: Some("the interpreter".into()),
            notes: note.into_iter().collect(),
        }),
    }
    let (conf, defaults) = match &musl {
        Some(name) => match musl_dirs(root, name) {
            Some(dirs) => (dirs, Vec::new()),
            None => (Vec::new(), default_dirs(arch, true)),
        },
        None => (ld_so_conf(root), default_dirs(arch, false)),
    };
    let env_dirs: Vec<String> = manifest
        .env
        .iter()
        .filter(|v| v.key == "LD_LIBRARY_PATH")
        .flat_map(|v| v.value.split([':', ';']))
        .map(String::from)
        .collect();
    let mut searched: Vec<String> = Vec::new();
    // Each real path is queued once, so the walk ends within the root's files.
    while let Some(object) = queue.pop() {
        let origin = Path::new(&object.path)
            .parent()
            .map_or("/".into(), |p| p.display().to_string());
        let class = object.elf.header.class;
        let expand = |list: &Option<OsString>| -> Vec<String> {
            list.iter()
                .flat_map(|l| split_path_list(&l.to_string_lossy(), &origin, class))
                .collect()
        };
        let own_rpath = expand(&object.elf.rpath);
        let runpath = expand(&object.elf.runpath);
        let mut dirs: Vec<String> = Vec::new();
        if object.elf.runpath.is_none() {
            dirs.extend(own_rpath.iter().cloned());
            dirs.extend(object.inherited.iter().cloned());
        }
        dirs.extend(
            env_dirs
                .iter()
                .flat_map(|d| split_path_list(d, &origin, class)),
        );
        dirs.extend(runpath);
        dirs.extend(conf.iter().cloned());
        dirs.extend(defaults.iter().cloned());
        dedup(&mut dirs);
        let inherited: Vec<String> = if object.elf.runpath.is_none() {
            own_rpath.into_iter().chain(object.inherited).collect()
        } else {
            Vec::new()
        };
        let needed_by = (object.path != path).then(|| format!("for {}", object.path));
        for name in &object.elf.needed {
            if !loaded.insert(name.clone()) {
                continue;
            }
            let mut notes = Vec::new();
            let found = if name.as_bytes().contains(&b'/') {
                let p = Path::new("/").join(name);
                match candidate(root, &p, arch, false) {
                    Found::No(note) => {
                        notes.extend(note);
                        None
                    }
                    found => Some(found),
                }
            } else {
                dirs.iter().find_map(|dir| {
                    match candidate(root, &Path::new(dir).join(name), arch, false) {
                        Found::No(note) => {
                            notes.extend(note);
                            None
                        }
                        found => Some(found),
                    }
                })
            };
            match found {
                Some(Found::Object(real, elf)) => {
                    if seen.insert(real.clone()) {
                        queue.push(Object {
                            path: real,
                            elf: *elf,
                            inherited: inherited.clone(),
                        });
                    }
                }
                Some(Found::Mounted(mount)) => {
                    unchecked.push(format!("{} (mount {mount})", name.to_string_lossy()));
                }
                Some(Found::No(_)) | None => {
                    if !name.as_bytes().contains(&b'/') {
                        searched.extend(dirs.iter().cloned());
                    }
                    missing.push(Missing {
                        name: name.to_string_lossy().into_owned(),
                        needed_by: needed_by.clone(),
                        notes,
                    });
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    dedup(&mut searched);
    Err(RootError::Missing {
        what: what.into(),
        missing,
        searched,
    })
}

/// Looks at one candidate path for the interpreter (`exec`: it must be executable) or a
/// library.
fn candidate(root: &Root, path: &Path, arch: Arch, exec: bool) -> Found {
    let shown = path.display();
    let (real, host, meta) = match root.resolve(path) {
        Ok(Resolved::Entry { path, host, meta }) => (path, host, meta),
        Ok(Resolved::Mounted(mount)) => return Found::Mounted(mount),
        Err(ResolveError::NotFound { .. } | ResolveError::NotDir { .. }) => {
            return Found::No(None);
        }
        Err(e) => return Found::No(Some(format!("{shown} {e}"))),
    };
    if !meta.is_file() {
        return Found::No(Some(format!("{shown} is not a regular file")));
    }
    let mode = meta.permissions().mode();
    if exec && mode & 0o100 == 0 {
        return Found::No(Some(format!(
            "{shown} is not executable by its owner (mode {:04o}; chmod u+x)",
            mode & 0o7777
        )));
    }
    let elf = match File::open(&host)
        .map_err(ElfError::Io)
        .and_then(|f| Elf::read(&f))
    {
        Ok(elf) => elf,
        Err(e) => return Found::No(Some(format!("{shown}: {e}"))),
    };
    if !elf.header.runs_on(arch) {
        return Found::No(Some(format!(
            "{shown} is {}",
            article(&format!("{} file", elf.header.arch_name()))
        )));
    }
    Found::Object(real, Box::new(elf))
}

/// Directories from a `DT_RPATH`/`DT_RUNPATH`/`LD_LIBRARY_PATH` list: `$ORIGIN` is the
/// object's directory, `$LIB` the class's library directory; entries with other tokens
/// (`$PLATFORM`) or relative ones (relative to a working directory) are left out.
fn split_path_list(list: &str, origin: &str, class: Class) -> Vec<String> {
    let lib = match class {
        Class::Elf32 => "lib",
        Class::Elf64 => "lib64",
    };
    list.split(':')
        .map(|d| {
            d.replace("${ORIGIN}", origin)
                .replace("$ORIGIN", origin)
                .replace("${LIB}", lib)
                .replace("$LIB", lib)
        })
        .filter(|d| d.starts_with('/') && !d.contains('$'))
        .collect()
}

fn dedup(list: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    list.retain(|d| seen.insert(d.clone()));
}

/// Debian's multiarch directory names for an architecture.
fn multiarch(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Any => &[],
        Arch::X86_64 => &["x86_64-linux-gnu"],
        Arch::Aarch64 => &["aarch64-linux-gnu"],
        Arch::Arm => &["arm-linux-gnueabihf", "arm-linux-gnueabi"],
    }
}

/// Where the dynamic linker looks when nothing else names the library.
fn default_dirs(arch: Arch, musl: bool) -> Vec<String> {
    if musl {
        return ["/lib", "/usr/local/lib", "/usr/lib"]
            .map(String::from)
            .to_vec();
    }
    let mut dirs: Vec<String> = Vec::new();
    for base in ["/lib", "/usr/lib"] {
        dirs.extend(multiarch(arch).iter().map(|m| format!("{base}/{m}")));
    }
    dirs.extend(["/lib", "/usr/lib", "/lib64", "/usr/lib64"].map(String::from));
    dirs
}

/// musl reads `/etc/ld-musl-ARCH.path` (directories separated by newlines or colons)
/// instead of its defaults; it never reads `ld.so.conf`.
fn musl_dirs(root: &Root, arch: &str) -> Option<Vec<String>> {
    root.read_text(&format!("/etc/ld-musl-{arch}.path"))
        .map(|text| {
            text.split(['\n', ':'])
                .map(str::trim)
                .filter(|d| d.starts_with('/'))
                .map(String::from)
                .collect()
        })
}

/// The directories glibc's `ldconfig` would put in the cache: `/etc/ld.so.conf` with its
/// `include`s, and `/etc/ld.so.conf.d/*.conf` (which Debian's includes anyway).
fn ld_so_conf(root: &Root) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut read = BTreeSet::new();
    conf_file(root, "/etc/ld.so.conf", &mut dirs, &mut read);
    for file in glob(root, "/etc/ld.so.conf.d/*.conf") {
        conf_file(root, &file, &mut dirs, &mut read);
    }
    dedup(&mut dirs);
    dirs
}

fn conf_file(root: &Root, path: &str, dirs: &mut Vec<String>, read: &mut BTreeSet<String>) {
    if read.len() >= MAX_CONF_FILES || !read.insert(path.into()) {
        return;
    }
    let Some(text) = root.read_text(path) else {
        return;
    };
    let here = Path::new(path).parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(patterns) = line.strip_prefix("include") {
            if !patterns.starts_with([' ', '\t']) {
                continue;
            }
            for pattern in patterns.split_whitespace() {
                let pattern = here.join(pattern).display().to_string();
                for file in glob(root, &pattern) {
                    conf_file(root, &file, dirs, read);
                }
            }
        } else if !line.starts_with("hwcap") {
            // Old syntax allowed "DIR=TYPE"; several directories may share a line.
            dirs.extend(
                line.split([' ', '\t', ',', ':'])
                    .map(|d| d.split('=').next().unwrap_or_default())
                    .filter(|d| d.starts_with('/'))
                    .map(|d| d.trim_end_matches('/').to_string())
                    .filter(|d| !d.is_empty()),
            );
        }
    }
}

/// Files of the root matching `pattern`, whose wildcards (`*`, `?`) may only be in the
/// last component, sorted.
fn glob(root: &Root, pattern: &str) -> Vec<String> {
    let path = Path::new(pattern);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = name.as_bytes();
    if !name.contains(&b'*') && !name.contains(&b'?') {
        return vec![pattern.into()];
    }
    let dir = dir.display().to_string();
    root.list(&dir)
        .into_iter()
        .filter(|n| wildcard(name, n.as_bytes()))
        .map(|n| Path::new(&dir).join(n).display().to_string())
        .collect()
}

/// Shell wildcard match of `*` and `?` (no character classes).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The architecture in `init`'s ELF header, `init` found inside the root: what `npk pack`
/// packs for without `--arch`.
pub fn detect_arch(manifest: &Manifest, root: &Path) -> Result<Arch, RootError> {
    let Some(init) = manifest.init else {
        return Ok(Arch::Any);
    };
    let what = format!("init {init}");
    let host = match Root::new(root, manifest).resolve(Path::new(init)) {
        // Checked before opening: opening a FIFO would block.
        Ok(Resolved::Entry { meta, .. }) if !meta.is_file() => {
            return Err(RootError::UnknownArch {
                what,
                why: "is not a regular file".into(),
            });
        }
        Ok(Resolved::Entry { host, .. }) => host,
        Ok(Resolved::Mounted(mount)) => {
            return Err(RootError::UnknownArch {
                what,
                why: format!("is under the mount point {mount}"),
            });
        }
        Err(error) => {
            return Err(RootError::UnknownArch {
                what,
                why: error.to_string(),
            });
        }
    };
    let mut head = Vec::with_capacity(64);
    File::open(&host)
        .and_then(|f| f.take(64).read_to_end(&mut head))
        .map_err(|error| RootError::Io {
            path: host.clone(),
            error,
        })?;
    let header = Header::parse(&head).map_err(|e| RootError::UnknownArch {
        what: what.clone(),
        why: match e {
            ElfError::NotElf if head.starts_with(b"#!") => "is a script".into(),
            ElfError::NotElf => "is not an ELF program".into(),
            e => format!("cannot be read as ELF: {e}"),
        },
    })?;
    header.arch().ok_or_else(|| RootError::UnknownArch {
        what,
        why: format!("is for {}, which nanostar does not run", header.arch_name()),
    })
}

#[cfg(test)]
mod tests;
