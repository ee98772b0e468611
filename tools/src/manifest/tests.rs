use super::*;

pub(crate) const FULL: &str = r#"
name = "hello"
version = "1.2.3"
init = "/bin/hello"
args = ["--verbose", "two words"]
uid = 1000
gid = 1001
suppl_groups = [20, 1002]
autostart = "critical"
stop_timeout_ms = 2000
network = { join = "blue" }
capabilities = ["CAP_NET_RAW", "CAP_KILL"]
console = ["list", "inspect"]

[env]
LANG = "C"
MODE = "demo"

[restart]
mode = "on-failure"
max_restarts = 5
backoff_initial_ms = 50
backoff_max_ms = 1000

[cgroups]
memory_max = "8M"
memory_high = 6291456
pids_max = 32
cpu_max = { quota_us = 50000, period_us = 100000 }
cpu_weight = 200

[rlimits]
nofile = { soft = 64, hard = 128 }
core = { soft = 0, hard = 0 }

[seccomp]
profile = "default"
[seccomp.allow]
getrandom = "any"
personality = { index = 0, values = [0xffffffff] }
ioctl = [{ index = 1, values = [0x5401] }, { index = 1, mask = 0xff }]

[io]
stdout = "kmsg"
stderr = "discard"

[mounts."/lib"]
type = "bind"
host = "/lib"
options = ["nosuid", "nodev"]
[mounts."/data"]
type = "persist"
[mounts."/tmp"]
type = "tmpfs"
size = "4M"
[mounts."/proc"]
type = "proc"
[mounts."/dev"]
type = "dev"
[mounts."/fonts"]
type = "resource"
name = "fonts"
version = ">=1.0.0, <2.0.0"
dir = "/share"
options = ["noexec"]

[custom]
owner = "team-a"
tags = ["x", "y"]
"#;

#[test]
fn full_manifest_lowers() {
    let source = SourceManifest::parse(FULL).unwrap();
    let m = source.manifest().unwrap();
    assert_eq!(m.name, "hello");
    assert_eq!(m.version, Version::new(1, 2, 3));
    assert_eq!(m.args.as_slice(), ["--verbose", "two words"]);
    assert_eq!(
        m.env.iter().map(|v| (v.key, v.value)).collect::<Vec<_>>(),
        [("LANG", "C"), ("MODE", "demo")]
    );
    assert_eq!(m.autostart, Autostart::Critical);
    assert_eq!(m.stop_timeout_ms, 2000);
    assert_eq!(m.network, Network::Join("blue"));
    assert_eq!(
        m.capabilities.names().collect::<Vec<_>>(),
        ["CAP_KILL", "CAP_NET_RAW"]
    );
    assert_eq!(m.console.names().collect::<Vec<_>>(), ["list", "inspect"]);
    assert_eq!(m.restart.mode, RestartMode::OnFailure);
    assert_eq!(m.cgroups.memory_max, Some(8 << 20));
    assert_eq!(m.cgroups.memory_high, Some(6 << 20));
    assert_eq!(
        m.cgroups.cpu_max,
        Some(CpuMax {
            quota_us: 50_000,
            period_us: 100_000
        })
    );
    assert_eq!(m.rlimits.len(), 2);
    let seccomp = m.seccomp.as_ref().unwrap();
    assert_eq!(seccomp.allow.len(), 4);
    assert_eq!(seccomp.allow[0].name, "getrandom");
    assert_eq!(seccomp.allow[1].args.as_ref().unwrap().mask, None);
    assert_eq!(seccomp.allow[2].args.as_ref().unwrap().mask, Some(0xff));
    assert_eq!(
        m.io,
        Io {
            stdout: Output::Kmsg,
            stderr: Output::Discard
        }
    );
    assert_eq!(m.mounts.len(), 6);
    let bind = m.mounts.iter().find(|x| x.target == "/lib").unwrap();
    assert_eq!(
        bind.kind,
        MountKind::Bind {
            host: "/lib",
            flags: MountFlags::NOSUID.union(MountFlags::NODEV)
        }
    );
    let tmp = m.mounts.iter().find(|x| x.target == "/tmp").unwrap();
    assert_eq!(tmp.kind, MountKind::Tmpfs { size: 4 << 20 });
    let custom: toml::Table = toml::from_str(m.custom.unwrap()).unwrap();
    assert_eq!(custom["owner"].as_str(), Some("team-a"));
    let mut buf = vec![0u8; MAX_MANIFEST_LEN];
    let bytes = m.encode(&mut buf).unwrap().to_vec();
    assert_eq!(Manifest::decode(&bytes).unwrap(), m);
}

#[test]
fn minimal_manifest_defaults() {
    let m = SourceManifest::parse(
        "name = \"a\"\nversion = \"0.1.0\"\ninit = \"/a\"\nuid = 1\ngid = 1\n",
    )
    .unwrap();
    let m = m.manifest().unwrap();
    assert_eq!(m.autostart, Autostart::None);
    assert_eq!(m.network, Network::New);
    assert_eq!(m.io, Io::default());
    assert_eq!(m.restart, RestartPolicy::default());
    assert_eq!(m.stop_timeout_ms, pm::DEFAULT_STOP_TIMEOUT_MS);
    assert!(m.seccomp.is_none() && m.custom.is_none() && !m.is_resource());
}

/// Replaces the line starting with `key` in FULL (or appends `replacement`), parses, and
/// returns the error text.
fn error_with(key: &str, replacement: &str) -> String {
    let mut found = false;
    let mut text: Vec<String> = FULL
        .lines()
        .map(|l| {
            if !found && l.starts_with(key) {
                found = true;
                replacement.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        text.push(replacement.to_string());
    }
    match SourceManifest::parse(&text.join("\n")) {
        Ok(_) => panic!("`{replacement}` was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

#[track_caller]
fn assert_error(key: &str, replacement: &str, expected: &[&str]) {
    let e = error_with(key, replacement);
    for part in expected {
        assert!(
            e.contains(part),
            "error for `{replacement}` is `{e}`, which lacks `{part}`"
        );
    }
}

#[test]
fn errors_name_the_key_and_the_fix() {
    assert_error("name =", "name = \"a/b\"", &["name:", "letters, digits"]);
    assert_error(
        "version =",
        "version = \"1.2\"",
        &["version:", "MAJOR.MINOR.PATCH"],
    );
    assert_error("init =", "init = \"bin/hello\"", &["init:", "absolute"]);
    assert_error("uid =", "uid = 0", &["uid:", "root"]);
    assert_error("gid =", "gid = -1", &["gid"]);
    assert_error(
        "suppl_groups =",
        "suppl_groups = [20, 20]",
        &["suppl_groups[1]", "twice"],
    );
    assert_error(
        "MODE =",
        "NANOSTAR_NAME = \"x\"",
        &["env.NANOSTAR_NAME", "set by the runtime"],
    );
    assert_error("MODE =", "1MODE = \"x\"", &["env.1MODE", "letters"]);
    assert_error(
        "autostart =",
        "autostart = \"sometimes\"",
        &["autostart", "sometimes"],
    );
    assert_error(
        "stop_timeout_ms =",
        "stop_timeout_ms = 0",
        &["stop_timeout_ms:", "between 1 and"],
    );
    assert_error("network =", "network = { join = \"../x\" }", &["network:"]);
    assert_error(
        "capabilities =",
        "capabilities = [\"CAP_FLY\"]",
        &["capabilities:", "CAP_FLY", "CAP_NET_RAW"],
    );
    assert_error(
        "capabilities =",
        "capabilities = [\"CAP_KILL\", \"CAP_KILL\"]",
        &["capabilities:", "twice"],
    );
    assert_error(
        "console =",
        "console = [\"root\"]",
        &["console:", "root", "full"],
    );
    assert_error(
        "backoff_initial_ms =",
        "backoff_initial_ms = 5000",
        &["restart:", "backoff_max_ms"],
    );
    assert_error(
        "memory_max =",
        "memory_max = \"8 parsecs\"",
        &["cgroups.memory_max", "K, M or G"],
    );
    assert_error(
        "memory_high =",
        "memory_high = 9999999999",
        &["cgroups:", "memory_high <= memory_max"],
    );
    assert_error(
        "cpu_weight =",
        "cpu_weight = 0",
        &["cgroups:", "cpu_weight"],
    );
    assert_error(
        "nofile =",
        "nofile = { soft = 200, hard = 100 }",
        &["rlimits.nofile", "not above hard"],
    );
    assert_error(
        "nofile =",
        "files = { soft = 1 }",
        &["rlimits.files", "unknown resource", "nofile"],
    );
    assert_error(
        "personality =",
        "personality = { index = 6, values = [1] }",
        &["seccomp.allow.personality", "0..=5"],
    );
    assert_error(
        "personality =",
        "personality = { index = 0 }",
        &["seccomp.allow.personality", "values, a mask"],
    );
    assert_error(
        "options = [\"nosuid\"",
        "options = [\"nosuid\", \"fast\"]",
        &["mounts.\"/lib\".options", "fast"],
    );
    assert_error("host =", "host = \"lib\"", &["mounts.\"/lib\"", "absolute"]);
    assert_error("size =", "size = 0", &["mounts.\"/tmp\"", "size above 0"]);
    assert_error(
        "version = \">=",
        "version = \"newest\"",
        &["mounts.\"/fonts\".version", "requirement"],
    );
    assert_error(
        "options = [\"noexec\"]",
        "options = [\"rw\"]",
        &["mounts.\"/fonts\"", "rw and rec"],
    );
    assert_error(
        "[mounts.\"/data\"]",
        "[mounts.\"/lib/data\"]",
        &["mounts.\"/lib/data\"", "inside one another"],
    );
    assert_error("stderr =", "color = \"red\"", &["unknown field", "color"]);
}

#[test]
fn bounds_are_the_devices() {
    let args: Vec<String> = (0..=MAX_ARGS).map(|i| format!("\"a{i}\"")).collect();
    assert_error(
        "args =",
        &format!("args = [{}]", args.join(", ")),
        &["args:", &format!("at most {MAX_ARGS}")],
    );
    let long = "x".repeat(MAX_ENV_VALUE_LEN + 1);
    assert_error(
        "MODE =",
        &format!("MODE = \"{long}\""),
        &["env.MODE", "value over"],
    );
    let big = "y".repeat(MAX_CUSTOM_LEN);
    assert_error(
        "owner =",
        &format!("owner = \"{big}\""),
        &["custom:", "over"],
    );
}

#[test]
fn resource_packages_carry_only_files() {
    let base = "name = \"fonts\"\nversion = \"1.0.0\"\nuid = 1\ngid = 1\n";
    assert!(
        SourceManifest::parse(base)
            .unwrap()
            .manifest()
            .unwrap()
            .is_resource()
    );
    for extra in [
        "autostart = \"relaxed\"",
        "args = [\"x\"]",
        "network = \"host\"",
        "[env]\nA = \"b\"",
        "[io]\nstdout = \"discard\"",
    ] {
        let e = SourceManifest::parse(&format!("{base}{extra}\n"))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("resource (files only)"), "`{extra}` gave `{e}`");
    }
}

/// Values of the wrong form never show serde's wording ("untagged enum", "struct
/// RlimitFile", "variant identifier"): the message names the key and the valid forms.
#[test]
fn wrong_forms_name_the_key_and_the_valid_forms() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "network =",
            "network = \"bridge\"",
            &[
                "network: \"bridge\" is not a network mode; use \"new\", \"host\" or { join = \"NAME\" }",
            ],
        ),
        (
            "network =",
            "network = { join = 5 }",
            &["network: { join = 5 } is not a network mode"],
        ),
        (
            "network =",
            "network = { join = \"blue\", via = \"x\" }",
            &["network: { join = \"blue\", via = \"x\" } is not a network mode"],
        ),
        (
            "getrandom =",
            "getrandom = \"all\"",
            &[
                "seccomp.allow.getrandom: \"all\" is not a rule; use \"any\", a rule \
                 { index = N, values = [...] } or { index = N, mask = M } (or both), or a list \
                 of rules",
            ],
        ),
        (
            "personality =",
            "personality = { index = 0, value = [1] }",
            &[
                "seccomp.allow.personality: unknown field `value`, expected one of `index`, `values`, `mask`; use \"any\"",
            ],
        ),
        (
            "personality =",
            "personality = { values = [1] }",
            &["seccomp.allow.personality: missing field `index`"],
        ),
        (
            "ioctl =",
            "ioctl = [{ index = 1, values = [1] }, \"x\"]",
            &["seccomp.allow.ioctl: rule [1]: \"x\" is not a rule table; use \"any\""],
        ),
        (
            "console =",
            "console = \"all\"",
            &[
                "console: \"all\" is not a console setting; use \"full\" or a list of some of list, inspect",
            ],
        ),
        (
            "console =",
            "console = [\"list\", 3]",
            &["console: [\"list\", 3] is not a console setting"],
        ),
        (
            "memory_max =",
            "memory_max = -1",
            &[
                "cgroups.memory_max: -1 is not a size; write bytes as a whole number, or a string with K, M or G",
            ],
        ),
        (
            "memory_high =",
            "memory_high = 1.5",
            &["cgroups.memory_high: 1.5 is not a size"],
        ),
        (
            "size =",
            "size = true",
            &["mounts.\"/tmp\".size: true is not a size"],
        ),
        (
            "nofile =",
            "nofile = 5",
            &[
                "nofile",
                "expected a table like { soft = 256, hard = 1024 }",
            ],
        ),
        (
            "cpu_max =",
            "cpu_max = 5",
            &[
                "cpu_max",
                "expected a table like { quota_us = 50000, period_us = 100000 }",
            ],
        ),
        (
            "type = \"proc\"",
            "type = \"proc\"\nhost = \"/proc\"",
            &["mounts.\"/proc\": unknown field `host`"],
        ),
        (
            "type = \"persist\"",
            "type = \"persist\"\nsize = \"4M\"",
            &["mounts.\"/data\": unknown field `size`"],
        ),
        (
            "type = \"tmpfs\"",
            "type = \"nfs\"",
            &["mounts.\"/tmp\": unknown variant `nfs`, expected one of `bind`, `persist`"],
        ),
        (
            "type = \"tmpfs\"",
            "type = 5",
            &["mounts.\"/tmp\".type: 5 is not a mount type; use one of bind, persist, tmpfs"],
        ),
        (
            "type = \"tmpfs\"",
            "kind = \"tmpfs\"",
            &["mounts.\"/tmp\": no `type`; use one of bind, persist"],
        ),
        (
            "size =",
            "size = \"4M\"\nhost = \"/x\"",
            &["mounts.\"/tmp\": unknown field `host`, expected `size`"],
        ),
    ];
    for (key, replacement, expected) in cases {
        let e = error_with(key, replacement);
        for part in *expected {
            assert!(
                e.contains(part),
                "error for `{replacement}` is `{e}`, which lacks `{part}`"
            );
        }
        for internal in ["untagged enum", "struct ", "File", "variant identifier"] {
            assert!(
                !e.contains(internal),
                "error for `{replacement}` shows `{internal}`: {e}"
            );
        }
    }
    // Whole tables of the wrong type.
    for (text, expected) in [
        ("restart = 5", "a table: [restart] with mode"),
        ("io = \"log\"", "a table: [io] with stdout and stderr"),
        ("seccomp = true", "a table: [seccomp]"),
        ("cgroups = 1", "a table: [cgroups]"),
        (
            "mounts.\"/x\" = 1",
            "mounts.\"/x\": invalid type: integer `1`, expected a table with a `type`",
        ),
    ] {
        let e = SourceManifest::parse(&format!(
            "name = \"a\"\nversion = \"0.1.0\"\ninit = \"/a\"\nuid = 1\ngid = 1\n{text}\n"
        ))
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(e.contains(expected), "`{text}` gave `{e}`");
        assert!(
            !e.contains("struct") && !e.contains("File"),
            "`{text}` gave `{e}`"
        );
    }
}

#[test]
fn type_errors_speak_of_numbers_not_rust_types() {
    let base = "name = \"x\"\nversion = \"1.0.0\"\n";
    for (extra, want) in [
        (
            "uid = \"x\"\ngid = 1\n",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "uid = 1\ngid = -1\n",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "uid = 1\ngid = 1\nautostart = true\n",
            "expected a string or a table",
        ),
    ] {
        let Err(e) = SourceManifest::parse(&format!("{base}{extra}")) else {
            panic!("{extra}: accepted");
        };
        let e = format!("{e:#}");
        assert!(e.contains(want), "{extra}: {e}");
        assert!(!e.contains(" u32") && !e.contains("wanted"), "{extra}: {e}");
    }
}
