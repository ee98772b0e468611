//! The `nanostar` client as people and scripts use it (the x86_64 device build): the help,
//! usage errors, unreachable runtimes, and against a real runtime (as root, in private
//! mount and PID namespaces) refusals that name what they are about, `--json` error
//! codes, `inspect` of a whole manifest, notifications, logs that end with their container,
//! `restart` and the edit-reinstall loop.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Console, Runtime, assert_json, client, is_root, npk_bytes, texts};
use nanostar_protocol::console::{Error, Message, Reply, Table, Violation};
use nanostar_protocol::npk::Arch;

/// Exit code and the two streams.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = client(args, &[]);
    let (stdout, stderr) = texts(&out);
    (out.status.code(), stdout, stderr)
}

/// A usage error: exit 2, nothing on stdout, `nanostar: MESSAGE` first on stderr.
#[track_caller]
fn usage_error(args: &[&str], message: &str) -> String {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, Some(2), "{args:?}: {stdout}{stderr}");
    assert_eq!(stdout, "", "{args:?}");
    let first = stderr.lines().next().unwrap_or_default();
    assert_eq!(first, format!("nanostar: {message}"), "{args:?}: {stderr}");
    stderr
}

#[test]
fn the_help_explains_every_command_and_option() {
    let (code, help, stderr) = run(&["help"]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    for line in [
        "  list                        installed packages and their containers",
        "  install FILE                install an NPK into a repository",
        "  restart NAME [VERSION]      stop the container if it runs, then start it",
        "  kill NAME [VERSION] SIGNAL  send a signal to a container's app",
        "  run CONFIG                  run the runtime with this configuration",
    ] {
        assert!(help.lines().any(|l| l == line), "{line:?} in\n{help}");
    }
    assert!(help.contains("NANOSTAR_SOCKET"), "{help}");
    assert!(help.contains("exit codes: 0 done, 1 refused"), "{help}");
    // One line per command: no line of it is a continuation of another's.
    assert!(help.lines().all(|l| l.len() <= 100));
    assert_eq!(run(&["--help"]).1, help);
    assert_eq!(run(&["-h"]).1, help);
    // A command's help: its usage line, what it does, one line per option.
    let (code, stop, _) = run(&["help", "stop"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = stop.lines().collect();
    assert_eq!(
        lines[0],
        "usage: nanostar [--socket PATH] [--json] stop NAME [VERSION] [--timeout MS]"
    );
    assert!(lines[1].contains("stop a container"), "{stop}");
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("--timeout MS"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("--socket PATH"))
    );
    assert!(!stop.contains("--follow"), "{stop}");
    assert_eq!(run(&["stop", "--help"]).1, stop);
    assert_eq!(run(&["--json", "stop", "x", "-h"]).1, stop);
    let (_, install, _) = run(&["install", "--help"]);
    for option in ["--repo NAME", "--replace", "--stream"] {
        assert!(install.contains(option), "{install}");
    }
    let (_, start, _) = run(&["help", "start"]);
    assert!(
        start.contains("-- ARGS...") && start.contains("--env KEY=VALUE"),
        "{start}"
    );
    assert_eq!(
        run(&["help", "run"]).1.lines().next(),
        Some("usage: nanostar run CONFIG")
    );
    let (code, version, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(version.starts_with("nanostar "), "{version}");
}

#[test]
fn usage_errors_say_exactly_what_is_wrong() {
    usage_error(&["frob"], "unknown command \"frob\"; see nanostar help");
    usage_error(
        &["strat", "hello"],
        "unknown command \"strat\" (did you mean start?); see nanostar help",
    );
    usage_error(
        &["help", "frob"],
        "unknown command \"frob\"; see nanostar help",
    );
    let stderr = usage_error(&["start"], "start needs a package NAME");
    assert!(
        stderr.contains("usage: nanostar [--socket PATH] [--json] start NAME [VERSION]"),
        "{stderr}"
    );
    usage_error(&["uninstall", "hello"], "uninstall needs a VERSION");
    usage_error(&["kill", "hello"], "kill needs a SIGNAL");
    usage_error(&["install"], "install needs a FILE");
    usage_error(&["run"], "run needs a CONFIG");
    usage_error(
        &["start", "hello", "1.0.0", "extra"],
        "unexpected \"extra\": start takes NAME [VERSION]",
    );
    usage_error(&["list", "x"], "unexpected \"x\": list takes no operands");
    usage_error(
        &["stop", "hello", "--follow"],
        "stop takes no --follow (an option of logs)",
    );
    usage_error(
        &["logs", "hello", "--timeout", "5"],
        "logs takes no --timeout (an option of stop, restart)",
    );
    usage_error(
        &["run", "x.conf", "--json"],
        "run takes no --json (an option of the client commands)",
    );
    usage_error(
        &["list", "--bogus"],
        "unknown option \"--bogus\"; see nanostar help list",
    );
    usage_error(&["stop", "hello", "--timeout"], "--timeout needs MS");
    usage_error(
        &["stop", "hello", "--timeout", "soon"],
        "--timeout needs a number MS, not \"soon\"",
    );
    usage_error(
        &["inspect", "hello", "one"],
        "\"one\" is not a VERSION (MAJOR.MINOR.PATCH, like 1.0.0)",
    );
    let stderr = usage_error(
        &["kill", "hello", "NOPE"],
        "\"NOPE\" is not a signal: a number 1..=64 or a name, with or without SIG: HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CONT STOP TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS",
    );
    assert_eq!(stderr.lines().count(), 1);
    usage_error(
        &["start", "bad/name"],
        "\"bad/name\" is not a package name (1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -)",
    );
    // Without a command: one line, not a dump of everything.
    let stderr = usage_error(&[], "no command given; see nanostar help");
    assert_eq!(stderr.lines().count(), 1);
    // With --json, the error is a JSON object on stdout with the code "usage".
    let (code, stdout, stderr) = run(&["--json", "start"]);
    assert_eq!((code, stderr.as_str()), (Some(2), ""));
    assert_eq!(
        stdout,
        "{\"ok\":false,\"code\":\"usage\",\"message\":\"start needs a package NAME\"}\n"
    );
    let (_, stdout, _) = run(&["--json", "frob"]);
    assert_json(&stdout);
    assert!(stdout.contains("\"code\":\"usage\""), "{stdout}");
}

/// A listener that answers each connection with `reply` (raw bytes), then closes it.
fn fake_runtime(dir: &Path, reply: Vec<u8>) -> std::path::PathBuf {
    static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("fake-{serial}"));
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(&reply);
            // Read the hello before closing, so the client sees the reply, not a reset.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.read(&mut [0u8; 64]);
        }
    });
    path
}

#[test]
fn an_unreachable_runtime_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    // No file at the path.
    let missing = dir.path().join("nothing/console");
    let missing = missing.to_str().unwrap();
    let (code, stdout, stderr) = run(&["--socket", missing, "list"]);
    assert_eq!((code, stdout.as_str()), (Some(3), ""));
    assert_eq!(
        stderr,
        format!(
            "nanostar: cannot connect to {missing}: no such file (is the runtime running? set \
             NANOSTAR_SOCKET or --socket)\n"
        )
    );
    // A socket file whose runtime is gone.
    let stale = dir.path().join("stale");
    drop(UnixListener::bind(&stale).unwrap());
    let stale_text = stale.to_str().unwrap();
    let message = format!(
        "nanostar: nothing listens on {stale_text} (a stale socket: the runtime that made it is gone)\n"
    );
    let (code, _, stderr) = run(&["--socket", stale_text, "list"]);
    assert_eq!((code, stderr.as_str()), (Some(3), message.as_str()));
    // NANOSTAR_SOCKET names the socket without --socket; --socket wins over it.
    let out = client(&["list"], &[("NANOSTAR_SOCKET", stale.as_os_str())]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(texts(&out).1, message);
    let out = client(
        &["--socket", missing, "list"],
        &[("NANOSTAR_SOCKET", stale.as_os_str())],
    );
    assert!(texts(&out).1.contains(missing), "{}", texts(&out).1);
    // An empty NANOSTAR_SOCKET is not set: the default socket.
    let out = client(&["list"], &[("NANOSTAR_SOCKET", OsStr::new(""))]);
    if !Path::new("/run/nanostar/console").exists() {
        assert!(
            texts(&out).1.contains("/run/nanostar/console"),
            "{}",
            texts(&out).1
        );
    }
    // With --json: a code for scripts.
    let (code, stdout, stderr) = run(&["--json", "--socket", stale_text, "inspect", "x"]);
    assert_eq!((code, stderr.as_str()), (Some(3), ""));
    assert_json(&stdout);
    assert!(
        stdout.starts_with(
            "{\"ok\":false,\"code\":\"unreachable\",\"message\":\"nothing listens on "
        ),
        "{stdout}"
    );
    // A runtime with a full client table says so and closes: not "does not understand".
    let mut full = vec![0u8; 64];
    let len = Message::Reply {
        id: 0,
        reply: Reply::Error(Error::Full(Table::Clients)),
    }
    .encode(&mut full)
    .unwrap()
    .len();
    full.truncate(len);
    let busy = fake_runtime(dir.path(), full);
    let busy = busy.to_str().unwrap();
    let (code, _, stderr) = run(&["--socket", busy, "list"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "nanostar: the runtime at {busy} serves as many clients as it may (max_clients); try again\n"
        )
    );
    let (_, stdout, _) = run(&["--json", "--socket", busy, "list"]);
    assert!(
        stdout.starts_with("{\"ok\":false,\"code\":\"full\",\"reason\":\"clients\","),
        "{stdout}"
    );
    // One whose Hello came too late (hello_timeout_ms): a closed handshake, not "does
    // not understand".
    let mut late = vec![0u8; 64];
    let len = Message::Reply {
        id: 0,
        reply: Reply::Error(Error::ProtocolViolation(Violation::NoHello)),
    }
    .encode(&mut late)
    .unwrap()
    .len();
    late.truncate(len);
    let late = fake_runtime(dir.path(), late);
    let (code, _, stderr) = run(&["--socket", late.to_str().unwrap(), "list"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("closed the connection before the handshake"),
        "{stderr}"
    );
    // One that closes without a word, and one that sends garbage.
    let silent = fake_runtime(dir.path(), Vec::new());
    let (code, _, stderr) = run(&["--socket", silent.to_str().unwrap(), "list"]);
    assert_eq!(code, Some(3));
    assert!(
        stderr.contains("closed the connection before the handshake"),
        "{stderr}"
    );
    let garbage = fake_runtime(dir.path(), b"\x05\x01\x02\x03\x04\x00".to_vec());
    let (code, stdout, _) = run(&["--json", "--socket", garbage.to_str().unwrap(), "list"]);
    assert_eq!(code, Some(3));
    assert!(stdout.contains("\"code\":\"unexpected-reply\""), "{stdout}");
}

/// `FILE` in the test directory: a package `name` `version` with `extra` manifest TOML.
fn package(
    rt: &Runtime,
    name: &str,
    version: &str,
    extra: &str,
    key: Option<&ed25519_compact::KeyPair>,
    arch: Arch,
) -> String {
    let root = rt.path(&format!("root-{name}-{version}"));
    for dir in ["bin", "data", "tmp", "proc", "host", "fonts"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("bin/x"), b"#!/bin/x\n").unwrap();
    let toml = format!(
        "name = \"{name}\"\nversion = \"{version}\"\ninit = \"/bin/x\"\nuid = 1000\ngid = 1000\n{extra}"
    );
    let file = rt.path(&format!("{name}-{version}.npk"));
    std::fs::write(&file, npk_bytes(&toml, &root, key, arch)).unwrap();
    file.to_str().unwrap().to_string()
}

/// A refusal: exit 1, nothing on stdout, `nanostar: MESSAGE` on stderr.
#[track_caller]
fn refused(rt: &Runtime, args: &[&str], message: &str) {
    let out = rt.cli(args);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
    assert_eq!(stdout, "", "{args:?}");
    assert_eq!(stderr, format!("nanostar: {message}\n"), "{args:?}");
}

/// With --json: the object on stdout, exit 1.
#[track_caller]
fn refused_json(rt: &Runtime, args: &[&str]) -> String {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = rt.cli(&all);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
    assert_eq!(stderr, "", "{args:?}");
    assert_json(&stdout);
    stdout
}

fn key_id(key: &ed25519_compact::KeyPair) -> String {
    common::key_id(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn refusals_name_the_package_the_file_and_the_repository() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let mut rt = Runtime::start();
    // NANOSTAR_SOCKET reaches the runtime without --socket.
    let out = client(&["list"], &[("NANOSTAR_SOCKET", rt.socket().as_os_str())]);
    assert!(out.status.success(), "{:?}", texts(&out));
    assert!(texts(&out).0.starts_with("NAME"));
    refused(&rt, &["inspect", "nope"], "no package nope is installed");
    refused(
        &rt,
        &["inspect", "nope", "1.0.0"],
        "no package nope 1.0.0 is installed",
    );
    refused(&rt, &["stop", "nope"], "no package nope is installed");
    assert_eq!(
        refused_json(&rt, &["start", "nope"]),
        "{\"ok\":false,\"code\":\"unknown-package\",\"message\":\"no package nope is installed\"}\n"
    );
    let hello = package(&rt, "hello", "1.0.0", "", None, Arch::X86_64);
    let out = rt.ok(&["install", &hello]);
    assert_eq!(out, "installed hello 1.0.0 into default\n");
    refused(
        &rt,
        &["install", &hello],
        "hello 1.0.0 is installed already (--replace replaces it)",
    );
    assert!(refused_json(&rt, &["install", &hello]).contains("\"code\":\"already-installed\""));
    // The same name and version again, replaced (not running).
    let out = rt.ok(&["install", &hello, "--replace"]);
    assert_eq!(out, "installed hello 1.0.0 into default\n");
    let out = rt.ok(&["install", &hello, "--replace", "--stream"]);
    assert_eq!(out, "installed hello 1.0.0 into default\n");
    assert_eq!(rt.files("repo"), ["hello-1.0.0.npk"]);
    // Repositories: the runtime says which it has.
    refused(
        &rt,
        &["install", &hello, "--repo", "nope"],
        "no such repository \"nope\"; the runtime has: default, signed",
    );
    assert!(
        refused_json(&rt, &["install", &hello, "--repo", "nope", "--stream"])
            .contains("\"code\":\"no-such-repository\"")
    );
    // Signatures and architectures.
    let key = ed25519_compact::KeyPair::from_seed(rt.key.sk.seed());
    let other = ed25519_compact::KeyPair::from_seed(rt.other_key.sk.seed());
    let good = package(&rt, "good", "1.0.0", "", Some(&key), Arch::X86_64);
    assert_eq!(
        rt.ok(&["install", &good, "--repo", "signed"]),
        "installed good 1.0.0 into signed\n"
    );
    let plain = package(&rt, "plain", "1.0.0", "", None, Arch::X86_64);
    refused(
        &rt,
        &["install", &plain, "--repo", "signed"],
        "refused plain 1.0.0: it is not signed, and repository signed takes signed packages only",
    );
    let json = refused_json(&rt, &["install", &plain, "--repo", "signed"]);
    assert!(
        json.starts_with("{\"ok\":false,\"code\":\"bad-package\",\"reason\":\"unsigned\","),
        "{json}"
    );
    let foreign = package(&rt, "foreign", "1.0.0", "", Some(&other), Arch::X86_64);
    refused(
        &rt,
        &["install", &foreign, "--repo", "signed"],
        &format!(
            "refused foreign 1.0.0: it is signed by key {}, which repository signed does not trust",
            key_id(&other)
        ),
    );
    let arm = package(&rt, "armed", "1.0.0", "", None, Arch::Aarch64);
    refused(
        &rt,
        &["install", &arm],
        "refused armed 1.0.0: the package is for aarch64, this runtime runs on x86_64",
    );
    // Not an NPK at all: said before anything is sent.
    let text = rt.path("notes.txt");
    std::fs::write(&text, "not a package\n".repeat(40)).unwrap();
    let text = text.to_str().unwrap();
    refused(
        &rt,
        &["install", text],
        &format!("{text} is not an NPK (bad magic)"),
    );
    assert!(
        refused_json(&rt, &["install", text])
            .starts_with("{\"ok\":false,\"code\":\"bad-package\",\"reason\":\"magic\",")
    );
    let empty = rt.path("empty.npk");
    std::fs::write(&empty, b"").unwrap();
    let empty = empty.to_str().unwrap();
    refused(
        &rt,
        &["install", empty],
        &format!("{empty} is not an NPK (0 bytes: shorter than a header)"),
    );
    refused(
        &rt,
        &["install", "/nonexistent.npk"],
        "/nonexistent.npk: no such file or directory",
    );
    // Mounts.
    assert_eq!(rt.ok(&["mount", "hello", "1.0.0"]), "mounted hello 1.0.0\n");
    refused(
        &rt,
        &["mount", "hello", "1.0.0"],
        "hello 1.0.0 is mounted already",
    );
    assert_eq!(
        rt.ok(&["umount", "hello", "1.0.0"]),
        "unmounted hello 1.0.0\n"
    );
    refused(
        &rt,
        &["umount", "hello", "1.0.0"],
        "hello 1.0.0 is not mounted",
    );
    assert!(refused_json(&rt, &["umount", "hello", "1.0.0"]).contains("\"code\":\"not-mounted\""));
    // Containers.
    refused(&rt, &["stop", "hello"], "hello is not running");
    refused(
        &rt,
        &["kill", "hello", "1.0.0", "TERM"],
        "hello 1.0.0 is not running",
    );
    assert!(refused_json(&rt, &["stop", "hello"]).contains("\"code\":\"not-running\""));
    assert_eq!(
        rt.ok(&["uninstall", "hello", "1.0.0"]),
        "uninstalled hello 1.0.0\n"
    );
    assert_eq!(rt.ok(&["--json", "shutdown"]), "{\"ok\":true}\n");
    let mut child = rt.child.take().unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_full_client_table_is_said_as_such() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start();
    // max_clients = 4 (and the connection that saw the runtime come up is gone).
    std::thread::sleep(Duration::from_millis(300));
    let mut four: Vec<Console> = (0..4).map(|_| rt.connect()).collect();
    for c in &mut four {
        c.hello();
    }
    let out = rt.cli(&["list"]);
    assert_eq!(out.status.code(), Some(1), "{:?}", texts(&out));
    let stderr = texts(&out).1;
    assert!(
        stderr.contains("serves as many clients as it may (max_clients)"),
        "{stderr}"
    );
    assert!(!stderr.contains("does not understand"), "{stderr}");
    let out = rt.cli(&["--json", "list"]);
    assert!(
        texts(&out)
            .0
            .starts_with("{\"ok\":false,\"code\":\"full\",\"reason\":\"clients\""),
        "{:?}",
        texts(&out)
    );
    drop(four);
    std::thread::sleep(Duration::from_millis(200));
    rt.ok(&["list"]);
    rt.stop();
}

#[test]
fn inspect_shows_the_whole_manifest() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start();
    let fonts_root = rt.path("root-fonts");
    std::fs::create_dir_all(fonts_root.join("share")).unwrap();
    let fonts = rt.path("fonts.npk");
    std::fs::write(
        &fonts,
        npk_bytes(
            "name = \"fonts\"\nversion = \"1.2.0\"\nuid = 1000\ngid = 1000\n[custom]\nblob = \"\\u0001x\"\n",
            &fonts_root,
            None,
            Arch::Any,
        ),
    )
    .unwrap();
    rt.ok(&["install", fonts.to_str().unwrap()]);
    let extra = "args = [\"print\", \"hello world\"]\nsuppl_groups = [10, 20]\nnetwork = \"host\"\n\
        autostart = \"relaxed\"\nstop_timeout_ms = 750\nconsole = [\"list\", \"inspect\"]\n\
        [env]\nMODE = \"a \\\"quoted\\\" value\"\n\
        [restart]\nmode = \"on-failure\"\nmax_restarts = 3\nbackoff_initial_ms = 50\nbackoff_max_ms = 400\n\
        [cgroups]\nmemory_max = \"16M\"\npids_max = 32\ncpu_max = { quota_us = 50000, period_us = 100000 }\n\
        [rlimits]\nnofile = { soft = 64, hard = 128 }\n\
        [io]\nstdout = \"kmsg\"\n\
        [mounts.\"/data\"]\ntype = \"persist\"\n\
        [mounts.\"/tmp\"]\ntype = \"tmpfs\"\nsize = \"1M\"\n\
        [mounts.\"/proc\"]\ntype = \"proc\"\n\
        [mounts.\"/host\"]\ntype = \"bind\"\nhost = \"/srv/shared\"\noptions = [\"rw\", \"nosuid\"]\n\
        [mounts.\"/fonts\"]\ntype = \"resource\"\nname = \"fonts\"\nversion = \">=1.0.0\"\ndir = \"/share\"\noptions = [\"noexec\"]\n\
        [custom]\nowner = \"team a\"\nlevel = 3\n";
    let key = ed25519_compact::KeyPair::from_seed(rt.key.sk.seed());
    let app = package(&rt, "app", "2.0.0", extra, Some(&key), Arch::X86_64);
    rt.ok(&["install", &app]);
    let text = rt.ok(&["inspect", "app"]);
    let id = key_id(&key);
    for line in [
        "app 2.0.0 in repository default: ".to_string(),
        format!("  mounted: no, signed by key {id}"),
        "  container: not started".to_string(),
        "  application, init /bin/x, uid 1000, gid 1000, 5 mounts".to_string(),
        "  args: \"print\", \"hello world\"".to_string(),
        "  env: MODE=\"a \\\"quoted\\\" value\"".to_string(),
        "  suppl_groups: 10, 20".to_string(),
        "  network: host".to_string(),
        "    /data persist".to_string(),
        "    /fonts resource, name fonts, version >=1.0.0, dir /share, options noexec".to_string(),
        "    /host bind, host /srv/shared, options rw, nosuid".to_string(),
        "    /proc proc".to_string(),
        "    /tmp tmpfs, size 1048576".to_string(),
        "  autostart: relaxed".to_string(),
        "  restart: mode on-failure, max_restarts 3, backoff_initial_ms 50, backoff_max_ms 400"
            .to_string(),
        "  stop_timeout_ms: 750".to_string(),
        "  cgroups: memory_max 16777216, pids_max 32, cpu_max_quota_us 50000, cpu_max_period_us 100000"
            .to_string(),
        "  rlimits: nofile, soft 64, hard 128".to_string(),
        "  io: stdout kmsg, stderr log".to_string(),
        "  console: list, inspect".to_string(),
        "  custom: ".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "{line:?} in\n{text}"
        );
    }
    assert!(text.contains("owner = \"team a\""), "{text}");
    assert!(text.contains("level = 3"), "{text}");
    let json = rt.ok(&["--json", "inspect", "app", "2.0.0"]);
    assert_eq!(json.lines().count(), 1, "{json}");
    assert_json(&json);
    for member in [
        "\"name\":\"app\",\"version\":\"2.0.0\",\"repository\":\"default\"".to_string(),
        format!("\"signed\":true,\"key\":\"{id}\""),
        "\"args\":[\"print\",\"hello world\"]".to_string(),
        "\"env\":{\"MODE\":\"a \\\"quoted\\\" value\"}".to_string(),
        "\"suppl_groups\":[10,20]".to_string(),
        "\"network\":\"host\"".to_string(),
        "{\"target\":\"/host\",\"type\":\"bind\",\"host\":\"/srv/shared\",\"options\":[\"rw\",\"nosuid\"]}"
            .to_string(),
        "{\"target\":\"/tmp\",\"type\":\"tmpfs\",\"size\":1048576}".to_string(),
        "{\"target\":\"/fonts\",\"type\":\"resource\",\"name\":\"fonts\",\"version\":\">=1.0.0\",\"dir\":\"/share\",\"options\":[\"noexec\"]}"
            .to_string(),
        "{\"target\":\"/data\",\"type\":\"persist\"}".to_string(),
        "\"autostart\":\"relaxed\"".to_string(),
        "\"restart\":{\"mode\":\"on-failure\",\"max_restarts\":3,\"backoff_initial_ms\":50,\"backoff_max_ms\":400}"
            .to_string(),
        "\"stop_timeout_ms\":750".to_string(),
        "\"cgroups\":{\"memory_max\":16777216,\"memory_high\":null,\"pids_max\":32".to_string(),
        "\"rlimits\":[{\"resource\":\"nofile\",\"soft\":64,\"hard\":128}]".to_string(),
        "\"io\":{\"stdout\":\"kmsg\",\"stderr\":\"log\"}".to_string(),
        "\"console\":[\"list\",\"inspect\"]".to_string(),
        "\"custom\":\"".to_string(),
    ] {
        assert!(json.contains(&member), "{member} in\n{json}");
    }
    // A resource package, unsigned, with a control character in its custom text.
    let text = rt.ok(&["inspect", "fonts"]);
    assert!(text.contains("  mounted: no, unsigned"), "{text}");
    assert!(
        text.contains("  resource, init -, uid 1000, gid 1000, 0 mounts"),
        "{text}"
    );
    assert!(
        text.contains("  args: none") && text.contains("  mounts: none"),
        "{text}"
    );
    assert!(!text.contains('\u{1}'), "{text}");
    let json = rt.ok(&["--json", "inspect", "fonts"]);
    assert_json(&json);
    assert!(json.contains("\"signed\":false,\"key\":null"), "{json}");
    assert!(
        json.contains("\"kind\":\"resource\",\"init\":\"\""),
        "{json}"
    );
    assert!(json.contains("\"mounts\":[]"), "{json}");
    rt.stop();
}

/// Packs the probe as `name` 1.0.0 with `extra` manifest TOML and installs it.
fn install_probe(rt: &Runtime, name: &str, extra: &str) {
    let root = rt.path(&format!("probe-{name}"));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(&common::probe_binaries()[0], root.join("bin/probe")).unwrap();
    let toml = format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\ninit = \"/bin/probe\"\nuid = 1000\ngid = 1000\n{extra}"
    );
    let file = rt.path(&format!("{name}.npk"));
    std::fs::write(&file, npk_bytes(&toml, &root, None, Arch::X86_64)).unwrap();
    rt.ok(&["install", file.to_str().unwrap()]);
}

/// A client command running in the background.
fn spawn(rt: &Runtime, args: &[&str]) -> std::process::Child {
    Command::new(common::x86_64_binary())
        .arg("--socket")
        .arg(rt.socket())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a background client to end; its exit code and streams.
fn finish(child: std::process::Child) -> (Option<i32>, String, String) {
    let out: Output = child.wait_with_output().unwrap();
    let (stdout, stderr) = texts(&out);
    (out.status.code(), stdout, stderr)
}

#[test]
fn notifications_say_how_containers_end() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    install_probe(&rt, "crash", "args = [\"exit\", \"1\"]\n");
    install_probe(&rt, "killed", "args = [\"kill-self\", \"9\"]\n");
    install_probe(
        &rt,
        "flaky",
        "args = [\"exit\", \"3\"]\n[restart]\nmode = \"on-failure\"\nmax_restarts = 2\nbackoff_initial_ms = 50\nbackoff_max_ms = 100\n",
    );
    let text = spawn(&rt, &["notifications"]);
    let json = spawn(&rt, &["--json", "notifications"]);
    // Time to subscribe.
    std::thread::sleep(Duration::from_millis(500));
    for name in ["crash", "killed", "flaky"] {
        rt.ok(&["start", name]);
    }
    wait_until("flaky to give up", || {
        rt.ok(&["--json", "list"]).contains("\"restarts\":2")
    });
    std::thread::sleep(Duration::from_millis(300));
    rt.ok(&["shutdown"]);
    let (code, out, _) = finish(text);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    let started = lines
        .iter()
        .find(|l| l.starts_with("started crash 1.0.0: pid "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        started["started crash 1.0.0: pid ".len()..]
            .parse::<u32>()
            .is_ok()
    );
    for line in [
        "exited crash 1.0.0: code 1",
        "exited killed 1.0.0: killed by signal 9 (SIGKILL)",
        "exited flaky 1.0.0: code 3",
        "gave-up flaky 1.0.0 after 2 restarts: code 3",
        "shutting-down",
    ] {
        assert!(lines.contains(&line), "{line:?} in\n{out}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("installed ") || l.starts_with("started "))
    );
    let (code, out, _) = finish(json);
    assert_eq!(code, Some(0));
    for line in out.lines() {
        assert_json(line);
    }
    for line in [
        "{\"event\":\"exited\",\"name\":\"crash\",\"version\":\"1.0.0\",\"exit\":{\"code\":1}}",
        "{\"event\":\"exited\",\"name\":\"killed\",\"version\":\"1.0.0\",\"exit\":{\"signal\":9}}",
        "{\"event\":\"gave-up\",\"name\":\"flaky\",\"version\":\"1.0.0\",\"restarts\":2,\"exit\":{\"code\":3}}",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
    }
    assert!(
        out.lines().any(|l| l.starts_with(
            "{\"event\":\"started\",\"name\":\"crash\",\"version\":\"1.0.0\",\"pid\":"
        )),
        "{out}"
    );
}

#[test]
fn logs_follow_until_the_container_ends_and_tail_the_last_lines() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let mut rt = Runtime::start();
    install_probe(
        &rt,
        "ticker",
        "args = [\"print\", \"one\", \"print\", \"two\", \"print\", \"three\", \"sleep\", \"1500\", \"print\", \"four\", \"exit\", \"0\"]\n",
    );
    install_probe(&rt, "sleeper", "args = [\"print\", \"up\", \"pause\"]\n");
    rt.ok(&["start", "ticker"]);
    let follower = spawn(&rt, &["logs", "ticker", "--follow"]);
    let (code, out, err) = finish(follower);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "one\ntwo\nthree\nfour\n");
    assert_eq!(err, "nanostar: ticker ended: exit code 0\n");
    // The last lines only, of a container that ended.
    assert_eq!(rt.ok(&["logs", "ticker", "--tail", "2"]), "three\nfour\n");
    assert_eq!(rt.ok(&["logs", "ticker", "1.0.0", "--tail", "0"]), "");
    assert_eq!(rt.ok(&["logs", "ticker"]), "one\ntwo\nthree\nfour\n");
    let json = rt.ok(&["--json", "logs", "ticker", "--tail", "1"]);
    assert_eq!(json, "{\"dropped\":0,\"data\":\"four\\n\"}\n");
    // Following a container that is not running ends at once.
    let out = rt.cli(&["logs", "ticker", "--follow", "--tail", "1"]);
    assert!(out.status.success());
    assert_eq!(texts(&out).0, "four\n");
    // A stop ends the follower with the signal; --json says it as an object.
    rt.ok(&["start", "sleeper"]);
    let text = spawn(&rt, &["logs", "sleeper", "--follow"]);
    let json = spawn(
        &rt,
        &["--json", "logs", "sleeper", "--follow", "--tail", "5"],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        rt.ok(&["stop", "sleeper", "--timeout", "2000"]),
        "stopped sleeper: killed by signal 15 (SIGTERM)\n"
    );
    let (code, out, err) = finish(text);
    assert_eq!((code, out.as_str()), (Some(0), "up\n"));
    assert_eq!(
        err,
        "nanostar: sleeper ended: killed by signal 15 (SIGTERM)\n"
    );
    let (code, out, _) = finish(json);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "{\"dropped\":0,\"data\":\"up\\n\"}\n{\"ended\":{\"signal\":15}}\n"
    );
    rt.stop();
}

#[test]
fn restart_stops_then_starts_and_the_edit_loop_replaces() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let mut rt = Runtime::start();
    install_probe(&rt, "svc", "args = [\"print\", \"first\", \"pause\"]\n");
    assert_eq!(
        rt.ok(&["restart", "svc"]),
        "svc was not running\nstarted svc\n"
    );
    assert_eq!(
        rt.ok(&["restart", "svc", "1.0.0", "--timeout", "2000"]),
        "stopped svc: killed by signal 15 (SIGTERM)\nstarted svc 1.0.0\n"
    );
    let json = rt.ok(&[
        "--json", "restart", "svc", "--", "print", "override", "pause",
    ]);
    assert_eq!(
        json,
        "{\"ok\":true,\"exit\":{\"signal\":15}}\n{\"ok\":true}\n"
    );
    wait_until("the override's output", || {
        rt.ok(&["logs", "svc"]).contains("override")
    });
    refused(&rt, &["start", "svc"], "svc is running already");
    // Edit, reinstall the same version, start: the new manifest runs.
    rt.ok(&["stop", "svc"]);
    let root = rt.path("probe-svc");
    let toml = "name = \"svc\"\nversion = \"1.0.0\"\ninit = \"/bin/probe\"\nuid = 1000\ngid = 1000\nargs = [\"print\", \"second\", \"pause\"]\n";
    let file = rt.path("svc-edited.npk");
    std::fs::write(&file, npk_bytes(toml, &root, None, Arch::X86_64)).unwrap();
    let file = file.to_str().unwrap();
    assert_eq!(
        rt.ok(&["install", file, "--replace"]),
        "installed svc 1.0.0 into default\n"
    );
    assert_eq!(rt.ok(&["start", "svc"]), "started svc\n");
    wait_until("the edited package's output", || {
        rt.ok(&["logs", "svc"]).contains("second")
    });
    rt.ok(&["stop", "svc"]);
    rt.stop();
}
