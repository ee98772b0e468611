use super::*;

const GOOD: &str = r#"
# Example configuration
run_dir = "/run/nanostar"
data_dir = "/data/nanostar"   # persistent data
socket = "/run/nanostar/console"
cgroup = "/sys/fs/cgroup/nanostar"

[limits]
max_clients = 4
install_timeout_ms = 0x2710

[repository.system]
dir = "/data/nanostar/repos/system"
keys = ["/etc/nanostar/release.pub", "/etc/nanostar/backup.pub",]
max_install_size = "32M"

[repository.dev]
dir = "/data/nanostar/repos/dev"

[console]
uid.0 = "full"
gid.100 = ["list", "inspect", "logs"]
uid.1000 = []
"#;

#[test]
fn parses_everything() {
    let c = parse(GOOD).unwrap();
    assert_eq!(
        (c.run_dir, c.data_dir, c.socket),
        ("/run/nanostar", "/data/nanostar", "/run/nanostar/console")
    );
    assert_eq!(c.cgroup, Some("/sys/fs/cgroup/nanostar"));
    assert_eq!(
        c.limits,
        Limits {
            max_clients: 4,
            install_timeout_ms: 10_000,
            hello_timeout_ms: DEFAULT_HELLO_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            max_stop_timeout_ms: DEFAULT_MAX_STOP_TIMEOUT_MS,
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
        }
    );
    assert_eq!(c.repositories.len(), 2);
    let sys = &c.repositories[0];
    assert_eq!(
        (sys.name, sys.dir, sys.max_install_size, sys.line),
        ("system", "/data/nanostar/repos/system", 32 << 20, 12)
    );
    assert_eq!(
        sys.keys.as_slice(),
        ["/etc/nanostar/release.pub", "/etc/nanostar/backup.pub"]
    );
    assert!(c.repositories[1].keys.is_empty());
    assert_eq!(c.repositories[1].max_install_size, DEFAULT_MAX_INSTALL_SIZE);
    assert_eq!(
        c.console[0],
        ConsoleRule {
            peer: Peer::Uid(0),
            permissions: Permissions::ALL
        }
    );
    assert_eq!(c.console[1].peer, Peer::Gid(100));
    assert_eq!(
        c.console[1]
            .permissions
            .names()
            .collect::<std::vec::Vec<_>>(),
        ["list", "inspect", "logs"]
    );
    assert_eq!(
        c.console[2],
        ConsoleRule {
            peer: Peer::Uid(1000),
            permissions: Permissions::NONE
        }
    );
}

#[test]
fn client_deadlines_are_bounded() {
    let with = |limits: &str| {
        parse(&std::format!(
            "run_dir = \"/r\"\ndata_dir = \"/d\"\nsocket = \"/s\"\n[limits]\n{limits}\n"
        ))
        .map(|c| (c.limits.hello_timeout_ms, c.limits.idle_timeout_ms))
    };
    assert_eq!(
        with("hello_timeout_ms = 250\nidle_timeout_ms = 60_000"),
        Ok((250, 60_000))
    );
    assert_eq!(
        with("hello_timeout_ms = 60000\nidle_timeout_ms = 86400000"),
        Ok((MAX_HELLO_TIMEOUT_MS, MAX_IDLE_TIMEOUT_MS))
    );
    for bad in [
        "hello_timeout_ms = 0",
        "hello_timeout_ms = 60001",
        "idle_timeout_ms = 0",
        "idle_timeout_ms = 86400001",
        "idle_timeout_ms = \"1M\"",
    ] {
        let e = with(bad).unwrap_err();
        assert_eq!((e.line, e.problem), (5, Problem::Value), "`{bad}`");
    }
    let twice = with("idle_timeout_ms = 1000\nidle_timeout_ms = 2000").unwrap_err();
    assert_eq!((twice.line, twice.problem), (6, Problem::Duplicate));
}

#[test]
fn board_keys() {
    let c = parse(
        "run_dir = \"/r\"\ndata_dir = \"/d\"\nsocket = \"/s\"\nconsole_device = \"/dev/hvc0\"\n\
         data_device = \"/dev/vda\"\ndata_mount = \"/persist\"\ndata_fstype = \"ext2\"\n\
         cgroup = \"/sys/fs/cgroup/n\"\n[limits]\nmax_clients = 2\ninstall_timeout_ms = 100\n",
    )
    .unwrap();
    assert_eq!(
        (c.console_device, c.data_device, c.data_mount, c.data_fstype),
        (Some("/dev/hvc0"), Some("/dev/vda"), "/persist", "ext2")
    );
    let bad =
        parse("run_dir = \"/r\"\ndata_dir = \"/d\"\nsocket = \"/s\"\ndata_fstype = \"ext 4\"\n");
    let bad = bad.unwrap_err();
    assert_eq!((bad.line, bad.problem), (4, Problem::Value));
    assert_eq!(bad.word.as_str(), "data_fstype");
}

#[test]
fn defaults() {
    let c = parse("run_dir = \"/r\"\ndata_dir = \"/d\"\nsocket = \"/s\"\n").unwrap();
    assert_eq!(
        c.limits,
        Limits {
            max_clients: DEFAULT_MAX_CLIENTS,
            install_timeout_ms: DEFAULT_INSTALL_TIMEOUT_MS,
            hello_timeout_ms: DEFAULT_HELLO_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            max_stop_timeout_ms: DEFAULT_MAX_STOP_TIMEOUT_MS,
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
        }
    );
    assert!(c.repositories.is_empty() && c.console.is_empty());
    assert_eq!(c.cgroup, None);
    assert_eq!((c.console_device, c.data_device), (None, None));
    assert_eq!((c.data_mount, c.data_fstype), ("/data", "ext4"));
}

#[test]
fn stop_and_shutdown_timeouts_are_bounded_by_the_manifests_longest_stop() {
    let with = |limits: &str| {
        parse(&std::format!(
            "run_dir = \"/r\"\ndata_dir = \"/d\"\nsocket = \"/s\"\n[limits]\n{limits}"
        ))
        .map(|c| c.limits)
    };
    let limits = with("max_stop_timeout_ms = 600_000\nshutdown_timeout_ms = 1\n").unwrap();
    assert_eq!(
        (limits.max_stop_timeout_ms, limits.shutdown_timeout_ms),
        (MAX_STOP_TIMEOUT_MS, 1)
    );
    for (text, line) in [
        ("max_stop_timeout_ms = 0\n", 5),
        ("max_stop_timeout_ms = 600001\n", 5),
        ("shutdown_timeout_ms = 4294967295\n", 5),
        ("shutdown_timeout_ms = \"10s\"\n", 5),
        ("shutdown_timeout_ms = 5\nshutdown_timeout_ms = 6\n", 6),
    ] {
        let e = with(text).unwrap_err();
        assert_eq!(e.line, line, "`{text}`");
        assert!(
            matches!(e.problem, Problem::Value | Problem::Duplicate),
            "`{text}`: {e}"
        );
        assert!(e.word.as_str().ends_with("timeout_ms"), "`{text}`: {e}");
    }
}

/// Replaces line `n` (1-based) of GOOD and returns the error.
fn error_at(n: usize, replacement: &str) -> ConfigError {
    let text: std::vec::Vec<&str> = GOOD
        .lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == n { replacement } else { l })
        .collect();
    match parse(&text.join("\n")) {
        Ok(_) => panic!("`{replacement}` was accepted"),
        Err(e) => e,
    }
}

#[test]
fn errors_name_the_line() {
    let cases: &[(usize, &str, Problem)] = &[
        (3, "run_dir = /run", Problem::Value),
        (3, "run_dir = \"run\"", Problem::Path),
        (3, "run_dir = \"/run/../x\"", Problem::Path),
        (3, "run_dir = \"/run", Problem::String),
        (3, "run_dir = \"/r\\n\"", Problem::String),
        (3, "run_dir = \"/r\" x", Problem::String),
        (3, "run_dir", Problem::Syntax),
        (3, "colour = \"red\"", Problem::UnknownKey(TOP_KEYS)),
        (4, "run_dir = \"/again\"", Problem::Duplicate),
        (6, "cgroup = \"sys/fs/cgroup\"", Problem::Path),
        (6, "socket = \"/s\"", Problem::Duplicate),
        (8, "[limitz]", Problem::UnknownSection),
        (8, "[limits", Problem::Syntax),
        (9, "max_clients = 0", Problem::Value),
        (9, "max_clients = 70000", Problem::Value),
        (9, "max_clients = 17", Problem::Value),
        (9, "max_clients = \"4\"", Problem::Value),
        (9, "max_clients = 99999999999999999999999", Problem::Value),
        (12, "[repository.sys tem]", Problem::Name),
        (17, "[repository.system]", Problem::Duplicate),
        (14, "keys = [\"relative.pub\"]", Problem::Path),
        (14, "keys = \"/one.pub\"", Problem::Value),
        (15, "max_install_size = \"32X\"", Problem::Value),
        (15, "max_install_size = 0", Problem::Value),
        (15, "dir = \"/other\"", Problem::Duplicate),
        (21, "uid.0 = \"most\"", Problem::Permission),
        (22, "gid.100 = [\"list\", \"fly\"]", Problem::Permission),
        (22, "uid.0 = [\"list\"]", Problem::Duplicate),
        (22, "user.5 = \"full\"", Problem::UnknownKey(CONSOLE_KEYS)),
        (22, "uid.x = \"full\"", Problem::UnknownKey(CONSOLE_KEYS)),
    ];
    for (line, text, problem) in cases {
        let e = error_at(*line, text);
        assert_eq!((e.line, e.problem), (*line as u32, *problem), "`{text}`");
    }
}

#[test]
fn errors_name_what_they_are_about() {
    let said = |line, text| std::format!("{}", error_at(line, text));
    assert_eq!(
        said(3, "colour = \"red\""),
        "line 3: unknown key `colour` here; the keys are: run_dir, data_dir, socket, cgroup, \
         console_device, data_device, data_mount, data_fstype (docs/config.md)"
    );
    assert!(said(8, "[limitz]").contains("unknown section [limitz]"));
    assert!(said(9, "max_clients = 0").contains("out of range for `max_clients`"));
    assert!(said(9, "max_rate = 1").contains(
        "the keys are: max_clients, install_timeout_ms, hello_timeout_ms, idle_timeout_ms"
    ));
    assert!(said(15, "color = 1").contains("the keys are: dir, keys, max_install_size"));
    assert!(said(4, "run_dir = \"/again\"").contains("`run_dir` is set twice"));
    assert!(said(3, "run_dir = \"run\"").contains("`run_dir` must be an absolute path"));
    let p = said(22, "gid.100 = [\"list\", \"fly\"]");
    assert!(
        p.contains("unknown permission `fly`; use \"full\" or a list of: list, inspect"),
        "{p}"
    );
    assert!(said(12, "[repository.sys tem]").contains("`sys tem` is not a name"));
}

#[test]
fn missing_keys_and_tables_full() {
    assert_eq!(
        error_at(3, ""),
        ConfigError::new(0, Problem::Missing("run_dir"))
    );
    assert_eq!(
        error_at(13, ""),
        ConfigError::new(12, Problem::Missing("dir"))
    );
    let mut many =
        std::string::String::from("run_dir = \"/r\"\ndata_dir = \"/d\"\nsocket = \"/s\"\n");
    for i in 0..=MAX_REPOSITORIES {
        many.push_str(&std::format!("[repository.r{i}]\ndir = \"/r{i}\"\n"));
    }
    assert_eq!(parse(&many).unwrap_err().problem, Problem::TooMany);
    let keys: std::vec::Vec<std::string::String> = (0..=MAX_REPOSITORY_KEYS)
        .map(|i| std::format!("\"/k{i}\""))
        .collect();
    let text = std::format!(
        "run_dir = \"/r\"\ndata_dir = \"/d\"\nsocket = \"/s\"\n[repository.a]\ndir = \"/a\"\nkeys = [{}]\n",
        keys.join(", ")
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(
        (e.line, e.problem, e.word.as_str()),
        (6, Problem::TooMany, "keys")
    );
}

#[test]
fn messages_say_what_to_do() {
    let e = std::format!("{}", ConfigError::new(7, Problem::UnknownSection));
    assert!(
        e.starts_with("line 7: ") && e.contains("[repository.NAME]"),
        "{e}"
    );
    let e = std::format!("{}", ConfigError::new(0, Problem::Missing("socket")));
    assert_eq!(e, "required key `socket` is missing");
}

#[test]
fn random_input_never_panics() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let alphabet = b"[]=\"#,._ \n/abcdefgimnorstuxyz0123456789";
    for _ in 0..20_000 {
        let len = (state % 120) as usize;
        let text: std::string::String = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                alphabet[(state % alphabet.len() as u64) as usize] as char
            })
            .collect();
        let _ = parse(&text);
    }
}

#[test]
fn the_example_config_is_valid() {
    let c = parse(include_str!("../../../examples/nanostar.conf")).unwrap();
    assert_eq!(c.repositories[0].name, "dev");
}
