//! `nanostar-soak`: random install / uninstall / start / stop / kill / logs / mount /
//! umount / list / inspect work from several concurrent clients against a live runtime
//! for a bounded time, then a check that the runtime's descriptors, memory, loop devices,
//! mounts and cgroups are back where they started (`nanostar_tools::soak`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use nanostar_tools::soak::{self, Options, Target};

#[derive(Parser)]
#[command(
    name = "nanostar-soak",
    version,
    about = "Drive a live nanostar runtime with random work from concurrent clients, then check it left nothing behind",
    after_help = "Where: --runtime starts the given x86_64 device build on this host (as root, in private \
mount and PID namespaces); --socket with --pid attaches to a runtime that already runs (its repository \
`default` must take unsigned packages); --board boots that QEMU board with --runtime (the board's build) \
as PID 1 and soaks it over the virtio console.\n\n\
Exit codes: 0 passed; 1 a failure or something left behind (the summary says which); 2 bad command \
line; 3 the soak could not run (no runtime, no board)."
)]
struct Cli {
    /// How long the clients run: 30s, 10m, 1h.
    #[arg(long, default_value = "60s", value_parser = soak::parse_duration)]
    duration: std::time::Duration,
    /// Concurrent clients; each owns two app packages (the runtime's container table
    /// holds 16, so more than 7 clients meet `Full(Containers)` refusals).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// The seed of every random choice (the default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// The probe (tests/probe) built for the runtime's architecture: the app of every
    /// package.
    #[arg(long)]
    probe: PathBuf,
    /// The runtime binary: started on this host, or with --board the board's PID 1.
    #[arg(long, conflicts_with = "socket")]
    runtime: Option<PathBuf>,
    /// Attach to the runtime serving this socket (with --pid).
    #[arg(long, requires = "pid")]
    socket: Option<PathBuf>,
    /// The attached runtime's pid.
    #[arg(long, requires = "socket")]
    pid: Option<u32>,
    /// The attached runtime's cgroup directory (its configuration's `cgroup`).
    #[arg(long, requires = "socket")]
    cgroup: Option<PathBuf>,
    /// Boot this board (a folder under board/: qemu-armv7, qemu-aarch64) with --runtime.
    #[arg(long, requires = "runtime")]
    board: Option<String>,
    /// Print each failure as it happens, and the board's serial console.
    #[arg(long)]
    verbose: bool,
    /// Keep every frame sent and received under DIR/console_frame and DIR/console_client
    /// (inputs for the fuzz corpus).
    #[arg(long, value_name = "DIR")]
    capture: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("nanostar-soak: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let target = match (cli.board, cli.runtime, cli.socket, cli.pid) {
        (Some(board), Some(runtime), _, _) => Target::Board { board, runtime },
        (None, Some(runtime), _, _) => Target::Host { runtime },
        (None, None, Some(socket), Some(pid)) => Target::Attach {
            socket,
            pid,
            cgroup: cli.cgroup,
        },
        _ => anyhow::bail!("give --runtime (with or without --board), or --socket and --pid"),
    };
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "nanostar-soak: {} clients for {:?}, seed {seed}",
        cli.clients, cli.duration
    );
    let summary = soak::run(&Options {
        duration: cli.duration,
        clients: cli.clients,
        seed,
        probe: cli.probe,
        target,
        verbose: cli.verbose,
        capture: cli.capture,
    })?;
    println!("{summary}");
    println!("seed {seed}");
    Ok(summary.passed())
}
