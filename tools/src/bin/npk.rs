//! `npk`: make, sign, inspect, verify and unpack nanostar packages.
//!
//! Exit codes: 0 success; 1 any other error; 2 bad command line; and for `verify`, the
//! broken part: 3 header, 4 signature, 5 manifest, 6 seccomp, 7 image, 8 hash tree.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nanostar_protocol::npk::header::FORMAT_VERSION;
use nanostar_protocol::npk::manifest::SeccompProfile;
use nanostar_protocol::npk::{Arch, Trust};
use nanostar_tools::keys::{self, hex};
use nanostar_tools::manifest::{SourceManifest, describe, to_toml};
use nanostar_tools::package::{self, Opened, PackInput};
use nanostar_tools::{containment, image, output, root_check};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "npk",
    version,
    about = "Make, sign, inspect, verify and unpack nanostar packages (NPKs)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 key pair: DIR/NAME.key (secret, 0600) and DIR/NAME.pub.
    Keygen {
        /// Path and stem of the key files, e.g. keys/release.
        #[arg(long)]
        out: PathBuf,
    },
    /// Pack a directory into a package, signed if --key is given.
    ///
    /// Before writing anything, pack checks that the root can run the manifest's `init`:
    /// it exists (symlinks resolve inside the root), is a regular file its owner may
    /// execute, a script's #! interpreter is there too, the ELF program is built for the
    /// package's architecture, and a dynamically linked one finds its interpreter and every
    /// library it needs (DT_RPATH, LD_LIBRARY_PATH from the manifest's env, DT_RUNPATH, the
    /// root's /etc/ld.so.conf, the default and multiarch directories). Paths under the
    /// manifest's mount points are left to the mounts. Resource packages (no `init`) are
    /// not checked.
    Pack {
        /// The manifest (TOML).
        #[arg(long)]
        manifest: PathBuf,
        /// The directory that becomes the package's root file system.
        #[arg(long)]
        root: PathBuf,
        /// Secret key to sign with; without it the package is unsigned (keyless repositories only).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Output file, or a directory to write NAME-VERSION.npk into.
        #[arg(long)]
        out: PathBuf,
        /// Architecture: x86_64, aarch64, arm or any. Default: read from init's ELF header.
        #[arg(long, value_parser = parse_arch)]
        arch: Option<Arch>,
        /// Skip the checks of init, its interpreter and its libraries against the root (for
        /// files the device provides some other way); prints a warning.
        #[arg(long)]
        no_root_check: bool,
        /// Let the app keep this capability although it breaks containment (CAP_SYS_ADMIN,
        /// CAP_SYS_PTRACE, ...: see docs/manifest.md); prints a warning. Repeat for each.
        #[arg(long = "allow-capability", value_name = "CAP")]
        allow_capability: Vec<String>,
    },
    /// Show a package's header and manifest.
    Inspect {
        /// The package.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check signature, manifest, seccomp program, image and hash tree; exit code names the broken part.
    Verify {
        /// The package.
        file: PathBuf,
        /// Trusted public key(s); the package must be signed by one of them.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
    },
    /// Write the package's root file tree into a new directory.
    Unpack {
        /// The package.
        file: PathBuf,
        /// Directory to create (must not exist, or be empty).
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::from_name(s)
        .ok_or_else(|| format!("`{s}` is not an architecture; use x86_64, aarch64, arm or any"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { out } => keygen(&out),
        Command::Pack {
            manifest,
            root,
            key,
            out,
            arch,
            no_root_check,
            allow_capability,
        } => pack(
            &manifest,
            &root,
            key.as_deref(),
            &out,
            arch,
            !no_root_check,
            &allow_capability,
        ),
        Command::Inspect { file, json } => inspect(&file, json),
        Command::Verify { file, key } => verify(&file, &key),
        Command::Unpack { file, out } => unpack(&file, &out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("npk: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn keygen(out: &Path) -> Result<ExitCode> {
    let (secret, public) = keys::generate(out)?;
    println!(
        "secret key: {} (keep it off devices and out of version control)",
        secret.display()
    );
    println!(
        "public key: {} (give it to repositories that should trust this signer)",
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Roots smaller than this pack in well under a second: no progress bar.
const PROGRESS_THRESHOLD: u64 = 4 << 20;

fn pack(
    manifest: &Path,
    root: &Path,
    key: Option<&Path>,
    out: &Path,
    arch: Option<Arch>,
    root_check: bool,
    allowed_capabilities: &[String],
) -> Result<ExitCode> {
    let started = Instant::now();
    let source = SourceManifest::read(manifest)?;
    for warning in containment::check(&source.manifest()?, allowed_capabilities)? {
        eprintln!("npk: {warning}");
    }
    let pair = key.map(keys::read_secret).transpose()?;
    let total = image::total_file_bytes(root)
        .with_context(|| format!("cannot read root {}", root.display()))?;
    let arch = if root_check {
        let checked = root_check::check(&source.manifest()?, root, arch).map_err(|e| {
            anyhow::anyhow!(
                "{e}\n(if the device provides this some other way, --no-root-check packs without these checks)"
            )
        })?;
        if !checked.unchecked.is_empty() {
            eprintln!(
                "npk: note: not checked, the manifest's mounts provide them at run time: {}",
                checked.unchecked.join(", ")
            );
        }
        Some(checked.arch)
    } else {
        eprintln!(
            "npk: warning: --no-root-check: init, its interpreter and its libraries were not \
             checked against the root; the package may not start"
        );
        arch
    };
    let bar = if total >= PROGRESS_THRESHOLD {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("packing {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let input = PackInput {
        manifest: &source,
        root,
        key: pair.as_ref(),
        arch,
    };
    let packed = package::pack(&input, &mut |done| bar.set_position(done))?;
    bar.finish_and_clear();
    let m = source.manifest()?;
    let path = if out.is_dir() {
        out.join(format!("{}-{}.npk", m.name, m.version))
    } else {
        out.to_path_buf()
    };
    output::write_atomically(&path, &packed.bytes)?;
    let signed = if pair.is_some() { "signed" } else { "unsigned" };
    println!(
        "{} {} {}: {} bytes ({} image), {signed}, {} in {:.2?}",
        m.name,
        m.version,
        packed.header.arch.name(),
        packed.bytes.len(),
        packed.header.image_size,
        path.display(),
        started.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}

fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

fn inspect(file: &Path, as_json: bool) -> Result<ExitCode> {
    let bytes = read(file)?;
    let p = package::open(&bytes, None).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&inspect_json(&p))?);
        return Ok(ExitCode::SUCCESS);
    }
    let h = &p.header;
    let v = &h.verity;
    let signature = if p.signed {
        format!(
            "signed by key {} (not checked: use verify)",
            hex(&p.key_id.0)
        )
    } else {
        "unsigned".into()
    };
    println!(
        "format:       NPK version {FORMAT_VERSION}, {} bytes",
        bytes.len()
    );
    println!("architecture: {}", h.arch.name());
    println!("signature:    {signature}");
    println!(
        "manifest:     {} bytes, sha256 {}",
        h.manifest_len,
        hex(&h.manifest_sha256)
    );
    println!("seccomp:      {}", seccomp_text(&p));
    println!(
        "image:        squashfs, {} bytes at offset {}",
        h.image_size, h.image_offset
    );
    println!(
        "verity:       sha256, {} data blocks of {}, tree of {} bytes at offset {}",
        v.data_blocks, v.data_block_size, v.hash_size, v.hash_offset
    );
    println!("  salt        {}", hex(v.salt()));
    println!("  root hash   {}", hex(&v.root_hash));
    println!("\n# manifest\n{}", to_toml(&p.manifest)?);
    Ok(ExitCode::SUCCESS)
}

/// Which filter the package's app runs under, in the manifest's words: `open` made sure
/// the program is there exactly when the manifest asks for one.
fn seccomp_choice(p: &Opened) -> &'static str {
    match &p.manifest.seccomp {
        _ if p.manifest.is_resource() => "none: a resource package never runs",
        None => "the default profile (no [seccomp] table)",
        Some(s) => match s.profile {
            SeccompProfile::Default => "the default profile and the allow list",
            SeccompProfile::None => "only the allow list (profile \"none\")",
            SeccompProfile::Unconfined => "NO FILTER: the manifest chose profile \"unconfined\"",
        },
    }
}

/// The profile the app runs under, for scripts: `default` (also without a `[seccomp]`
/// table), `none`, `unconfined` (no filter), or null for a resource.
fn seccomp_profile(p: &Opened) -> serde_json::Value {
    if p.manifest.is_resource() {
        return json!(null);
    }
    let profile = p.manifest.seccomp.as_ref().map(|s| s.profile);
    json!(match profile {
        None | Some(SeccompProfile::Default) => "default",
        Some(SeccompProfile::None) => "none",
        Some(SeccompProfile::Unconfined) => "unconfined",
    })
}

fn seccomp_text(p: &Opened) -> String {
    if p.seccomp.is_empty() {
        return seccomp_choice(p).to_string();
    }
    format!(
        "{}: {} instructions, sha256 {}",
        seccomp_choice(p),
        p.seccomp.len(),
        hex(&p.header.seccomp_sha256)
    )
}

fn inspect_json(p: &Opened) -> serde_json::Value {
    let h = &p.header;
    let v = &h.verity;
    json!({
        "format_version": FORMAT_VERSION,
        "file_size": p.bytes.len(),
        "arch": h.arch.name(),
        "signed": p.signed,
        "key_id": if p.signed { json!(hex(&p.key_id.0)) } else { json!(null) },
        "manifest_len": h.manifest_len,
        "manifest_sha256": hex(&h.manifest_sha256),
        "seccomp_instructions": p.seccomp.len(),
        "seccomp_profile": seccomp_profile(p),
        "seccomp_sha256": hex(&h.seccomp_sha256),
        "image_offset": h.image_offset,
        "image_size": h.image_size,
        "verity": {
            "version": v.hash_type,
            "algorithm": "sha256",
            "data_block_size": v.data_block_size,
            "hash_block_size": v.hash_block_size,
            "data_blocks": v.data_blocks,
            "hash_offset": v.hash_offset,
            "hash_size": v.hash_size,
            "salt": hex(v.salt()),
            "root_hash": hex(&v.root_hash),
        },
        "manifest": describe(&p.manifest),
    })
}

fn verify(file: &Path, key_files: &[PathBuf]) -> Result<ExitCode> {
    let keys = key_files
        .iter()
        .map(|k| keys::read_public(k))
        .collect::<Result<Vec<_>>>()?;
    let bytes = read(file)?;
    let started = Instant::now();
    let result =
        package::open(&bytes, Some(&keys)).and_then(|p| package::check_image(&p).map(|()| p));
    match result {
        Ok(p) => {
            let Trust::Signed(id) = p.header.trust() else {
                bail!("internal error: verified without a signature")
            };
            println!(
                "{}: ok: {} {} signed by key {}; manifest, seccomp, image and hash tree match (checked in {:.2?})",
                file.display(),
                p.manifest.name,
                p.manifest.version,
                hex(&id.0),
                started.elapsed()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            eprintln!("npk: {}: {broken}", file.display());
            Ok(ExitCode::from(broken.exit_code()))
        }
    }
}

fn unpack(file: &Path, out: &Path) -> Result<ExitCode> {
    let bytes = read(file)?;
    let p = package::open(&bytes, None).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    package::check_image(&p).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let stats = image::unpack_image(p.image(), out)
        .with_context(|| format!("cannot unpack into {}", out.display()))?;
    println!(
        "{} {}: {} files, {} directories, {} symlinks, {} bytes into {}",
        p.manifest.name,
        p.manifest.version,
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.bytes,
        out.display()
    );
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}
