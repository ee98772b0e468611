//! Start latency of a container against a bare fork + exec of the same static program,
//! measured in the same run (these machines are noisy: only the ratio means something),
//! and the private memory of a running container's init. Driven by
//! `tools/bench-containers.sh`, which sets up a runtime with the probe installed.
//!
//! Usage: bench-start SOCKET PACKAGE PROBE RUNS PAUSE_MS RUNTIME_PID
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nanostar_protocol::console::{
    FrameDecoder, Hello, Message, Notification, PROTOCOL_VERSION, Reply, Request,
};

/// A blocking protocol connection, subscribed to notifications.
struct Console {
    stream: UnixStream,
    decoder: FrameDecoder<Vec<u8>>,
    pending: Vec<u8>,
    next_id: u32,
}

/// What the bench waits for.
enum Wanted {
    Reply(u32),
    Exited,
}

impl Console {
    fn open(socket: &str) -> Result<Console> {
        let stream = UnixStream::connect(socket).with_context(|| format!("connect {socket}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut console = Console {
            stream,
            decoder: FrameDecoder::new(vec![0; 16 * 1024]),
            pending: Vec::new(),
            next_id: 1,
        };
        console.send(&Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "bench-start",
        }))?;
        console.wait(|m| matches!(m, Message::Welcome(_)).then_some(0))?;
        let id = console.request(Request::Subscribe)?;
        console.wait_for(Wanted::Reply(id))?;
        Ok(console)
    }

    fn send(&mut self, message: &Message) -> Result<()> {
        let mut wire = vec![0u8; 16 * 1024];
        let bytes = message
            .encode(&mut wire)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.stream.write_all(bytes)?;
        Ok(())
    }

    fn request(&mut self, request: Request) -> Result<u32> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Message::Request { id, request })?;
        Ok(id)
    }

    /// Reads messages until `pick` returns a value.
    fn wait(&mut self, mut pick: impl FnMut(&Message) -> Option<u32>) -> Result<u32> {
        let mut buf = [0u8; 4096];
        loop {
            let mut input = &self.pending[..];
            while let Some(frame) = self.decoder.decode(&mut input) {
                let frame = frame.map_err(|e| anyhow::anyhow!("frame: {e:?}"))?;
                let message = Message::decode(frame).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                if let Message::Reply {
                    reply: Reply::Error(e),
                    ..
                } = &message
                {
                    bail!("the runtime refused: {e:?}");
                }
                if let Some(v) = pick(&message) {
                    let used = self.pending.len() - input.len();
                    self.pending.drain(..used);
                    return Ok(v);
                }
            }
            self.pending.clear();
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                bail!("the runtime closed the connection");
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    fn wait_for(&mut self, wanted: Wanted) -> Result<u32> {
        self.wait(|m| match (&wanted, m) {
            (Wanted::Reply(id), Message::Reply { id: got, .. }) if got == id => Some(0),
            (Wanted::Exited, Message::Notification(Notification::Exited { .. })) => Some(0),
            _ => None,
        })
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, package, probe, runs, pause_ms, runtime_pid] = &args[..] else {
        bail!("usage: bench-start SOCKET PACKAGE PROBE RUNS PAUSE_MS RUNTIME_PID");
    };
    let runs: usize = runs.parse()?;
    let pause = Duration::from_millis(pause_ms.parse()?);
    let mut console = Console::open(socket)?;
    let start_args: heapless::Vec<&str, 32> = heapless::Vec::from_slice(&["exit", "0"]).unwrap();

    for (label, gap) in [
        ("back to back", Duration::ZERO),
        ("after an idle pause", pause),
    ] {
        // Interleaved, so both see the same machine state.
        let (mut bare_exec, mut bare_total) = (Vec::new(), Vec::new());
        let (mut ns_running, mut ns_total) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            std::thread::sleep(gap);
            let t0 = Instant::now();
            // `spawn` returns once the child's execve succeeded (std waits on a CLOEXEC
            // pipe), the same moment the runtime replies to a start.
            let mut child = Command::new(probe)
                .args(["exit", "0"])
                .stdin(Stdio::null())
                .spawn()?;
            bare_exec.push(t0.elapsed());
            child.wait()?;
            bare_total.push(t0.elapsed());

            std::thread::sleep(gap);
            let t0 = Instant::now();
            let id = console.request(Request::Start {
                name: package,
                version: None,
                args: Some(start_args.clone()),
                env: heapless::Vec::new(),
            })?;
            console.wait_for(Wanted::Reply(id))?;
            ns_running.push(t0.elapsed());
            console.wait_for(Wanted::Exited)?;
            ns_total.push(t0.elapsed());
        }
        let (bare_exec, bare_total) = (median(bare_exec), median(bare_total));
        let (ns_running, ns_total) = (median(ns_running), median(ns_total));
        println!("{label} (median of {runs}):");
        println!(
            "  request -> app running: {}; bare fork+exec: {}; ratio {:.2}",
            ms(ns_running),
            ms(bare_exec),
            ns_running.as_secs_f64() / bare_exec.as_secs_f64()
        );
        println!(
            "  request -> app exited:  {}; bare fork+exec+wait: {}; ratio {:.2} (budget 1.5)",
            ms(ns_total),
            ms(bare_total),
            ns_total.as_secs_f64() / bare_total.as_secs_f64()
        );
    }

    // Private memory of a running container's init.
    let pause_args: heapless::Vec<&str, 32> = heapless::Vec::from_slice(&["pause"]).unwrap();
    let id = console.request(Request::Start {
        name: package,
        version: None,
        args: Some(pause_args),
        env: heapless::Vec::new(),
    })?;
    console.wait_for(Wanted::Reply(id))?;
    // The notification's pid is in the runtime's PID namespace; on this host the init is
    // the runtime's only child.
    let children = format!("/proc/{runtime_pid}/task/{runtime_pid}/children");
    let pid = std::fs::read_to_string(&children)
        .with_context(|| children.clone())?
        .split_whitespace()
        .next()
        .context("the runtime has no child")?
        .to_string();
    // Let the runtime go on with its life (its writes make init's copies private).
    std::thread::sleep(Duration::from_millis(200));
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> String {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "container init (pid {pid}): Private_Dirty {}, Rss {}, Pss {} (budget 32 KiB private dirty)",
        field("Private_Dirty:"),
        field("Rss:"),
        field("Pss:")
    );
    let id = console.request(Request::Stop {
        name: package,
        version: None,
        timeout_ms: None,
    })?;
    console.wait_for(Wanted::Reply(id))?;
    Ok(())
}
