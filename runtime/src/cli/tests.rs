//! Tests of the command line: the command table and help (`mod.rs`), the parsing of a
//! client command's words (`args`), what the client says when the runtime cannot be
//! reached (`commands`), and the JSON and text rendering (`render`).

use core::fmt;

use nanostar_protocol::console::{ContainerInfo, ExitStatus, PackageId, PackageInfo};
use nanostar_protocol::limits::{MAX_ARG_LEN, MAX_ARGS};
use nanostar_protocol::npk::manifest::EnvVar;
use nanostar_protocol::version::Version;
use rustix::io::Errno;

use super::args::{Command, DEFAULT_REPOSITORY, Options, parse};
use super::commands::Unreachable;
use super::connection::ClientError;
use super::render::{
    ContainerJson, ContainerText, ExitJson, InfoJson, Json, JsonBytes, Utf8Carry, cell,
};
use super::*;
use crate::cli;
// `super::*` brings `heapless::Vec`; the tests' vectors are std's.
use std::vec::Vec;

#[test]
fn the_help_text_is_the_table() {
    let names: std::vec::Vec<&str> = specs().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "list",
            "inspect",
            "install",
            "uninstall",
            "mount",
            "umount",
            "start",
            "stop",
            "restart",
            "kill",
            "logs",
            "notifications",
            "shutdown",
            "run",
            "init",
            "check-config",
            "help"
        ]
    );
    let counts = |name| {
        let s = command(name).unwrap();
        (s.min, s.max, s.client)
    };
    assert_eq!(counts("list"), (0, 0, true));
    assert_eq!(counts("inspect"), (1, 2, true));
    assert_eq!(counts("uninstall"), (2, 2, true));
    assert_eq!(counts("kill"), (2, 3, true));
    assert_eq!(counts("run"), (1, 1, false));
    assert_eq!(counts("init"), (0, 1, false));
    assert_eq!(counts("help"), (0, 1, false));
    assert_eq!(command("inspect").unwrap().operands, "NAME [VERSION]");
    assert!(command("frob").is_none());
    // Every option names commands that exist; the global ones name none.
    for o in options() {
        for c in o.commands.split(',').filter(|c| !c.is_empty()) {
            assert!(command(c.trim()).is_some(), "{}: {c}", o.name);
        }
    }
    let owners = |name| option(name).unwrap().commands;
    assert_eq!(owners("--socket"), "");
    assert_eq!(owners("--json"), "");
    assert_eq!(owners("--help"), "");
    assert_eq!(owners("--timeout"), "stop, restart");
    assert_eq!(owners("--"), "start, restart");
    assert_eq!(option("--timeout").unwrap().value, "MS");
    assert_eq!(option("--follow").unwrap().value, "");
    assert_eq!(option("-h").unwrap().name, "--help");
    assert!(option("--bogus").is_none());
    let stop = command("stop").unwrap();
    let applies = |name| option(name).unwrap().applies(&stop);
    assert!(applies("--timeout") && applies("--json") && applies("--help"));
    assert!(!applies("--follow") && !applies("--env"));
    let run = command("run").unwrap();
    assert!(!option("--json").unwrap().applies(&run));
    assert!(option("--help").unwrap().applies(&run));
    // Help lines fit a terminal.
    for line in COMMANDS.lines().chain(OPTIONS.lines()) {
        assert!(line.len() <= 100, "{line}");
    }
}

#[test]
fn usage_lines_list_a_commands_own_options() {
    let usage = |name| std::format!("{}", UsageLine(&command(name).unwrap()));
    assert_eq!(
        usage("stop"),
        "nanostar [--socket PATH] [--json] stop NAME [VERSION] [--timeout MS]"
    );
    assert_eq!(
        usage("start"),
        "nanostar [--socket PATH] [--json] start NAME [VERSION] [--env KEY=VALUE] [-- ARGS...]"
    );
    assert_eq!(
        usage("install"),
        "nanostar [--socket PATH] [--json] install FILE [--repo NAME] [--replace] [--stream]"
    );
    assert_eq!(usage("run"), "nanostar run CONFIG");
}

#[test]
fn the_command_is_found_among_options() {
    assert_eq!(find_command(&["list"]), Some(0));
    assert_eq!(find_command(&["--socket", "/s", "--json", "list"]), Some(3));
    assert_eq!(find_command(&["--json", "--bogus", "stop", "x"]), Some(2));
    assert_eq!(find_command(&["--socket"]), None);
    assert_eq!(find_command(&[]), None);
}

#[test]
fn the_closest_command_is_suggested() {
    assert_eq!(closest("strat"), Some("start"));
    assert_eq!(closest("lst"), Some("list"));
    assert_eq!(closest("notification"), Some("notifications"));
    assert_eq!(closest("unistall"), Some("uninstall"));
    assert_eq!(closest("frob"), None);
    assert_eq!(closest(""), None);
    assert_eq!(closest(&"x".repeat(40)), None);
    assert_eq!(distance(b"kitten", b"sitting"), 3);
    assert_eq!(distance(b"", b"abc"), 3);
    assert_eq!(distance(b"stop", b"stop"), 0);
}

/// The words parsed as `cli::run` hands them over.
fn parse_words<'a>(words: &[&'a str]) -> Result<(Command<'a>, Options<'a>), u8> {
    let own = words.iter().position(|w| *w == "--").unwrap_or(words.len());
    let at = cli::find_command(&words[..own]).expect("a command");
    let spec = cli::command(words[at]).expect("a known command");
    parse(words, at, &spec)
}

fn parsed<'a>(words: &[&'a str]) -> (Command<'a>, Options<'a>) {
    match parse_words(words) {
        Ok(p) => p,
        Err(code) => panic!("{words:?}: {code:?}"),
    }
}

fn usage(words: &[&str]) {
    assert_eq!(parse_words(words).err(), Some(USAGE), "{words:?}");
}

#[test]
fn start_takes_everything_after_the_separator_verbatim() {
    let (command, o) = parsed(&["start", "hello", "--", "--json", "--socket", "x", "--"]);
    assert_eq!(command, Command::Start("hello", None));
    assert_eq!(
        o.args.as_deref(),
        Some(&["--json", "--socket", "x", "--"][..])
    );
    assert!(!o.json);
    // `--` with nothing after it: no arguments, not the manifest's.
    let (_, o) = parsed(&["--json", "start", "hello", "0.1.0", "--"]);
    assert_eq!(o.args.as_deref(), Some(&[][..]));
    assert!(o.json);
    // Without `--`: the manifest's arguments.
    let (command, o) = parsed(&[
        "start", "--env", "A=1", "hello", "1.2.3", "--env", "B=x=y", "--socket", "/s",
    ]);
    assert_eq!(
        command,
        Command::Start("hello", Some(Version::new(1, 2, 3)))
    );
    assert_eq!(o.args, None);
    assert_eq!(
        o.env.as_slice(),
        [
            EnvVar {
                key: "A",
                value: "1"
            },
            EnvVar {
                key: "B",
                value: "x=y"
            }
        ]
    );
    assert_eq!(o.socket, "/s");
    // All MAX_ARGS container arguments fit; one more is a usage error.
    let mut words = vec!["start", "hello", "--"];
    words.extend(std::iter::repeat_n("a", MAX_ARGS));
    assert_eq!(parsed(&words).1.args.unwrap().len(), MAX_ARGS);
    words.push("a");
    usage(&words);
    usage(&["start", "hello", "--env", "A"]);
    usage(&["start", "hello", "--env"]);
    // restart takes the same.
    let (command, o) = parsed(&["restart", "hello", "--timeout", "5", "--", "x"]);
    assert_eq!(command, Command::Restart("hello", None));
    assert_eq!(
        (o.timeout_ms, o.args.as_deref()),
        (Some(5), Some(&["x"][..]))
    );
}

#[test]
fn stop_kill_logs_and_their_options() {
    let (command, o) = parsed(&["stop", "hello", "--timeout", "500"]);
    assert_eq!(command, Command::Stop("hello", None));
    assert_eq!(o.timeout_ms, Some(500));
    assert_eq!(
        parsed(&["stop", "hello", "1.0.0"]).0,
        Command::Stop("hello", Some(Version::new(1, 0, 0)))
    );
    assert_eq!(parsed(&["stop", "hello"]).1.timeout_ms, None);
    usage(&["stop", "hello", "--timeout", "-1"]);
    usage(&["stop", "hello", "--timeout"]);
    assert_eq!(
        parsed(&["kill", "hello", "TERM"]).0,
        Command::Kill("hello", None, 15)
    );
    assert_eq!(
        parsed(&["kill", "hello", "SIGKILL"]).0,
        Command::Kill("hello", None, 9)
    );
    assert_eq!(
        parsed(&["kill", "hello", "2.0.0", "9"]).0,
        Command::Kill("hello", Some(Version::new(2, 0, 0)), 9)
    );
    usage(&["kill", "hello", "NOPE"]);
    usage(&["kill", "hello"]);
    usage(&["kill", "hello", "x.y", "9"]);
    let (command, o) = parsed(&["logs", "--follow", "hello", "--tail", "10"]);
    assert_eq!(command, Command::Logs("hello", None));
    assert!(o.follow);
    assert_eq!(o.tail, Some(10));
    assert!(!parsed(&["logs", "hello"]).1.follow);
    usage(&["logs", "hello", "--tail", "ten"]);
    // Options of one command are refused on the others, and unknown ones.
    for words in [
        &["stop", "hello", "--follow"][..],
        &["logs", "hello", "--timeout", "1"],
        &["stop", "hello", "--", "x"],
        &["kill", "hello", "9", "--env", "A=1"],
        &["list", "--wipe"],
        &["logs", "hello", "--bogus"],
        &["list", "-x"],
    ] {
        usage(words);
    }
    assert_eq!(parsed(&["list", "--json"]).0, Command::List);
    let (command, o) = parsed(&["install", "f.npk", "--repo", "r", "--stream", "--replace"]);
    assert_eq!(command, Command::Install("f.npk"));
    assert!(o.stream && o.replace && o.repo_given && o.repository == "r");
    let (_, o) = parsed(&["install", "f.npk"]);
    assert!(!o.repo_given && o.repository == DEFAULT_REPOSITORY);
}

#[test]
fn operands_are_counted_and_checked_before_connecting() {
    usage(&["start"]);
    usage(&["start", "a", "1.0.0", "extra"]);
    usage(&["uninstall", "a"]);
    usage(&["list", "extra"]);
    usage(&["inspect", "hello", "1.x"]);
    usage(&["start", "bad name"]);
    usage(&["stop", ".hidden"]);
    usage(&["install", "f", "--repo", "a/b"]);
    usage(&["start", "hello", "--env", "NANOSTAR_X=1"]);
    usage(&["start", "hello", "--env", "1A=1"]);
    usage(&["start", "hello", "--env", "=1"]);
    usage(&["start", "hello", "--env", "A=1", "--env", "A=2"]);
    let long = "x".repeat(MAX_ARG_LEN + 1);
    usage(&["start", "hello", "--", &long]);
    let (command, o) = parsed(&["uninstall", "hello", "1.2.3", "--wipe"]);
    let p = PackageId {
        name: "hello",
        version: Version::new(1, 2, 3),
    };
    assert_eq!(command, Command::Uninstall(p));
    assert!(o.wipe);
    // The subject of the refusals is what was asked.
    assert_eq!(o.subject.name, Some("hello"));
    assert_eq!(o.subject.version, Some(Version::new(1, 2, 3)));
    assert_eq!(o.subject.command, "uninstall");
    let (_, o) = parsed(&["install", "x.npk", "--repo", "dev"]);
    assert_eq!(
        (o.subject.file, o.subject.repository),
        (Some("x.npk"), "dev")
    );
}

#[test]
fn unreachable_says_why() {
    let text = |e| format!("{}", Unreachable(e, "/run/x"));
    assert_eq!(
        text(ClientError::Connect(Errno::NOENT)),
        "cannot connect to /run/x: no such file (is the runtime running? set \
         NANOSTAR_SOCKET or --socket)"
    );
    assert_eq!(
        text(ClientError::Connect(Errno::CONNREFUSED)),
        "nothing listens on /run/x (a stale socket: the runtime that made it is gone)"
    );
    assert_eq!(
        text(ClientError::Connect(Errno::ACCESS)),
        "cannot connect to /run/x: permission denied"
    );
    assert!(text(ClientError::Full).contains("max_clients"));
    assert!(!text(ClientError::Connect(Errno::PROTO)).contains("system error"));
}

fn json(d: impl fmt::Display) -> String {
    format!("{}", Json(d))
}

fn bytes(b: &[u8]) -> String {
    format!("{}", JsonBytes(b))
}

#[test]
fn json_strings_are_escaped() {
    assert_eq!(json("plain text"), "plain text");
    assert_eq!(json("a \"b\" \\c"), "a \\\"b\\\" \\\\c");
    assert_eq!(json("l1\nl2\r\n\tx"), "l1\\nl2\\r\\n\\tx");
    assert_eq!(json("\u{0}\u{1b}[0m\u{7f}"), "\\u0000\\u001b[0m\\u007f");
    assert_eq!(json("grüße €"), "grüße €");
    // Escaping goes through Display values, not just strings.
    assert_eq!(json(format_args!("path {}", "/a\"b")), "path /a\\\"b");
}

#[test]
fn json_bytes_replace_invalid_utf8() {
    assert_eq!(bytes(b"hello\n"), "hello\\n");
    assert_eq!(bytes(b""), "");
    assert_eq!(bytes(b"a\xffb"), "a\\ufffdb");
    assert_eq!(bytes(b"\xc3\x28"), "\\ufffd(");
    assert_eq!(bytes(b"\xe2\x82"), "\\ufffd");
    assert_eq!(bytes("é\"".as_bytes()), "é\\\"");
    // Every byte string gives valid JSON text: printable, no raw control characters.
    let all: Vec<u8> = (0..=255).collect();
    let out = bytes(&all);
    assert!(out.chars().all(|c| c >= ' '), "{out}");
    assert!(out.starts_with("\\u0000\\u0001"));
}

/// Feeds pieces through a carry and returns what each one shows.
fn pieces(parts: &[(&[u8], bool)]) -> Vec<String> {
    let mut carry = Utf8Carry::default();
    let mut shown: Vec<String> = parts
        .iter()
        .map(|(data, gap)| {
            let (head, body) = carry.split(data, *gap);
            format!("{}{}", JsonBytes(&head), JsonBytes(body))
        })
        .collect();
    shown.push(bytes(&carry.take()));
    shown
}

#[test]
fn a_character_cut_between_pieces_stays_whole() {
    // é = C3 A9, € = E2 82 AC.
    assert_eq!(
        pieces(&[(b"caf\xc3", false), (b"\xa9!", false)]),
        ["caf", "é!", ""]
    );
    assert_eq!(
        pieces(&[(b"\xe2", false), (b"\x82", false), (b"\xac", false)]),
        ["", "", "€", ""]
    );
    assert_eq!(
        pieces(&[(b"x\xe2\x82", false), (b"\xacy\xe2", false)]),
        ["x", "€y", "\\ufffd"]
    );
    // Bytes were lost between the pieces: the cut character is not glued to them.
    assert_eq!(
        pieces(&[(b"a\xc3", false), (b"\xa9b", true)]),
        ["a", "\\ufffd\\ufffdb", ""]
    );
    // A byte that cannot start a character is not held back.
    assert_eq!(
        pieces(&[(b"a\xff", false), (b"b", false)]),
        ["a\\ufffd", "b", ""]
    );
    // Plain text passes through.
    assert_eq!(
        pieces(&[(b"one\n", false), (b"two\n", false)]),
        ["one\\n", "two\\n", ""]
    );
}

#[test]
fn container_state_as_json_and_text() {
    let info = ContainerInfo {
        state: nanostar_protocol::console::ContainerState::Running,
        pid: 42,
        uptime_ms: 184_000,
        last_exit: Some(ExitStatus::Signal(15)),
        restarts: 2,
    };
    assert_eq!(
        format!("{}", ContainerJson(&info)),
        "{\"state\":\"running\",\"pid\":42,\"uptime_ms\":184000,\"last_exit\":{\"signal\":15},\"restarts\":2}"
    );
    assert_eq!(
        format!("{}", ContainerText(&Some(info))),
        "running, pid 42, up 3m04s, last exit signal 15 (SIGTERM), 2 restarts"
    );
    assert_eq!(format!("{}", ContainerText(&None)), "not started");
    let p = PackageInfo {
        package: PackageId {
            name: "hello",
            version: Version::new(0, 1, 0),
        },
        repository: "dev",
        mounted: true,
        container: None,
    };
    assert_eq!(
        format!("{}", InfoJson(&p)),
        "\"name\":\"hello\",\"version\":\"0.1.0\",\"repository\":\"dev\",\"mounted\":true,\"container\":null"
    );
    assert_eq!(
        format!("{}", ExitJson(ExitStatus::Code(-1))),
        "{\"code\":-1}"
    );
    assert_eq!(cell(&Version::new(1, 2, 3)).as_str(), "1.2.3");
}
