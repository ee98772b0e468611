//! How long the runtime's loop is held during an install: a second client sends `list`
//! every millisecond while `nanostar install` runs, and the latencies of its answers are
//! reported (the longest is the longest loop turn it met, give or take a `list`). Driven
//! by `tools/bench-install-stall.sh`, which sets up the runtime and the package.
//!
//! Usage: bench-stall SOCKET CLIENT NPK [CLIENT ARGS...]
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nanostar_protocol::console::{FrameDecoder, Hello, Message, PROTOCOL_VERSION, Request};

/// A blocking protocol connection.
struct Console {
    stream: UnixStream,
    decoder: FrameDecoder<Vec<u8>>,
    pending: Vec<u8>,
}

impl Console {
    fn open(socket: &str) -> Result<Console> {
        let stream = UnixStream::connect(socket).with_context(|| format!("connect {socket}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut console = Console {
            stream,
            decoder: FrameDecoder::new(vec![0; 16 * 1024]),
            pending: Vec::new(),
        };
        console.send(&Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "bench-stall",
        }))?;
        console.wait(|m| matches!(m, Message::Welcome(_)))?;
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

    /// Reads messages until `wanted` holds for one.
    fn wait(&mut self, wanted: impl Fn(&Message) -> bool) -> Result<()> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let mut input = &self.pending[..];
            while let Some(frame) = self.decoder.decode(&mut input) {
                let frame = frame.map_err(|e| anyhow::anyhow!("frame: {e:?}"))?;
                let message = Message::decode(frame).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                if wanted(&message) {
                    let used = self.pending.len() - input.len();
                    self.pending.drain(..used);
                    return Ok(());
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
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, client, npk, client_args @ ..] = &args[..] else {
        bail!("usage: bench-stall SOCKET CLIENT NPK [CLIENT ARGS...]");
    };
    let mut console = Console::open(socket)?;
    let started = Instant::now();
    let mut install = Command::new(client)
        .args(["--socket", socket, "install", npk])
        .args(client_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("run {client}"))?;
    let mut latencies = Vec::new();
    let mut id = 0u32;
    let status = loop {
        if let Some(status) = install.try_wait()? {
            break status;
        }
        id += 1;
        let t0 = Instant::now();
        console.send(&Message::Request {
            id,
            request: Request::List { after: None },
        })?;
        console.wait(|m| matches!(m, Message::Reply { id: got, .. } if *got == id))?;
        latencies.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(1));
    };
    let total = started.elapsed();
    if !status.success() {
        bail!("the install failed: {status}");
    }
    if latencies.is_empty() {
        bail!("the install ended before a list was answered");
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "install {}: {} lists, latency median {}, p99 {}, max {}",
        ms(total),
        latencies.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    );
    Ok(())
}
