//! `nanostar-board`: build a board's kernel and boot it in QEMU with an initramfs around a
//! given init, streaming the serial console and exiting with the guest's verdict.
//!
//! The guest reports its result by printing `nanostar-verdict: pass` (or
//! `nanostar-verdict: fail REASON`) on the console, then powering off; with
//! `--poweroff-ok` a clean power-off alone passes (the runtime as PID 1 prints no verdict).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use nanostar_tools::board::{self, Board, BootSpec, Hvc, Outcome, RunOptions};
use nanostar_tools::output::write_atomically;

#[derive(Parser)]
#[command(
    name = "nanostar-board",
    version,
    about = "Build a QEMU board's kernel and boot it with a given init",
    after_help = "BOARD is a folder under board/ (qemu-armv7, qemu-aarch64) or a path to one; \
set NANOSTAR_BOARD_DIR to use another board/ folder.\n\n\
Exit codes of `boot`: 0 pass (verdict `pass`, or with --poweroff-ok a clean power-off; \
every --expect seen); 1 error (kernel build, QEMU missing or failing, bad input); 2 bad \
command line; 3 the guest printed `nanostar-verdict: fail`; 4 kernel panic; 5 timeout (QEMU \
killed); 6 QEMU exited without a verdict; 7 an --expect text never appeared."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the board's kernel (or find it in the cache) and print its path.
    Kernel {
        /// The board.
        board: String,
    },
    /// Write the initramfs that `boot` would use, for running QEMU by hand.
    Initramfs {
        #[command(flatten)]
        contents: Contents,
        /// Where to write the newc cpio archive.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a data disk image: a sparse file formatted ext4 (mkfs.ext4, e2fsprogs).
    Disk {
        /// The image to write (replaced if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Size in MiB.
        #[arg(long, default_value_t = 64)]
        size: u64,
    },
    /// Boot the board in QEMU and judge the guest's verdict.
    Boot {
        /// The board.
        board: String,
        #[command(flatten)]
        contents: Contents,
        /// Raw image for the virtio data disk (/dev/vda); default: a fresh 64 MiB one
        /// formatted ext4 (needs mkfs.ext4, from e2fsprogs).
        #[arg(long)]
        disk: Option<PathBuf>,
        /// Where the virtio console (/dev/hvc0) goes: socket:PATH (QEMU listens),
        /// file:PATH, or null.
        #[arg(long, default_value = "null", value_parser = Hvc::parse)]
        hvc: Hvc,
        /// Seconds from QEMU's start until it is killed and the boot fails.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Text that must appear on the serial console for a pass (repeatable).
        #[arg(long)]
        expect: Vec<String>,
        /// Appended to the board's kernel command line; `-- ARGS` passes ARGS to init.
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        append: String,
        /// Use this kernel image instead of building the board's.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// A clean power-off ("reboot: Power down", QEMU exits 0) passes without a verdict
        /// line: for an init that prints none, like the nanostar runtime as PID 1.
        #[arg(long)]
        poweroff_ok: bool,
        /// Start each console line with the host's time since QEMU's start (+1.234s).
        #[arg(long)]
        timestamps: bool,
    },
}

/// What goes into the initramfs besides the standard directories and /dev/console.
#[derive(Args)]
struct Contents {
    /// The static program that becomes /init (PID 1).
    #[arg(long)]
    init: PathBuf,
    /// An extra file, HOSTPATH:GUESTPATH (repeatable); it keeps its permission bits.
    #[arg(long = "file", value_parser = parse_file)]
    files: Vec<(PathBuf, String)>,
}

fn parse_file(s: &str) -> Result<(PathBuf, String), String> {
    match s.rsplit_once(':') {
        Some((host, guest)) if !host.is_empty() && guest.starts_with('/') => {
            Ok((host.into(), guest.into()))
        }
        _ => Err(format!(
            "want HOSTPATH:GUESTPATH with an absolute guest path, e.g. ./app:/bin/app; got {s:?}"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("nanostar-board: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> Result<u8> {
    match command {
        Command::Kernel { board } => {
            let board = Board::load(&board)?;
            println!("{}", board.build_kernel()?.display());
            Ok(0)
        }
        Command::Initramfs { contents, out } => {
            let archive = board::initramfs(&contents.init, &contents.files)?;
            write_atomically(&out, &archive)?;
            eprintln!(
                "nanostar-board: wrote {} ({} bytes)",
                out.display(),
                archive.len()
            );
            Ok(0)
        }
        Command::Disk { out, size } => {
            board::make_data_disk(&out, size << 20)?;
            eprintln!("nanostar-board: wrote {} ({size} MiB, ext4)", out.display());
            Ok(0)
        }
        Command::Boot {
            board,
            contents,
            disk,
            hvc,
            timeout,
            expect,
            append,
            kernel,
            poweroff_ok,
            timestamps,
        } => {
            let board = Board::load(&board)?;
            let spec = BootSpec {
                init: contents.init,
                files: contents.files,
                disk,
                hvc,
                append,
                kernel,
            };
            let boot = board.prepare(&spec)?;
            eprintln!(
                "nanostar-board: booting {} ({}), timeout {timeout} s",
                board.name,
                boot.kernel.display()
            );
            let options = RunOptions {
                timeout: Duration::from_secs(timeout),
                expect,
                poweroff_ok,
                timestamps,
            };
            let report = boot.run(&options, Box::new(std::io::stdout()))?;
            let secs = report.elapsed.as_secs_f64();
            match &report.outcome {
                Outcome::Pass => eprintln!("nanostar-board: {}: pass ({secs:.2} s)", board.name),
                other => eprintln!(
                    "nanostar-board: {}: FAIL after {secs:.2} s: {}",
                    board.name,
                    other.describe()
                ),
            }
            Ok(report.outcome.exit_code())
        }
    }
}
