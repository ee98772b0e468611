//! The manifest as users write it: TOML, parsed into owned host types, then lowered into the
//! protocol's borrowed [`Manifest`] and validated by the same rules the device applies.
//!
//! Every error names the TOML key it is about and says what to change.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, bail};
use heapless::Vec as BVec;
use nanostar_protocol::limits::*;
use nanostar_protocol::npk::capabilities::{CAPABILITY_NAMES, Capabilities};
use nanostar_protocol::npk::manifest::{
    self as pm, ArgRule, Autostart, Cgroups, CpuMax, EnvVar, Field, Io, Manifest, ManifestError,
    Mount, MountFlags, MountKind, Network, Output, Problem, RestartMode, RestartPolicy, Rlimit,
    RlimitResource, Seccomp, SeccompProfile, SyscallRule,
};
use nanostar_protocol::permissions::{PERMISSION_NAMES, Permissions};
use nanostar_protocol::version::{Version, VersionReq};
use serde::Deserialize;

/// A manifest file as written, before lowering. Field names are the TOML keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    name: String,
    version: String,
    init: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    uid: u32,
    gid: u32,
    #[serde(default)]
    suppl_groups: Vec<u32>,
    #[serde(default, deserialize_with = "mounts")]
    mounts: BTreeMap<String, MountFile>,
    #[serde(default)]
    autostart: AutostartFile,
    restart: Option<RestartFile>,
    stop_timeout_ms: Option<u32>,
    #[serde(default)]
    cgroups: CgroupsFile,
    #[serde(default)]
    network: NetworkFile,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    rlimits: BTreeMap<String, RlimitFile>,
    seccomp: Option<SeccompFile>,
    #[serde(default)]
    io: IoFile,
    console: Option<ConsoleFile>,
    custom: Option<toml::Table>,
}

/// The mount types, for errors.
const MOUNT_TYPES: &str = "bind, persist, tmpfs, proc, sysfs, dev or resource";

/// The `mounts` table, each entry's errors prefixed with its key: serde's own messages for
/// an internally tagged enum name neither the mount point nor, for a `type` that is not a
/// string, the valid types.
fn mounts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, MountFile>, D::Error> {
    use serde::de::Error;
    BTreeMap::<String, toml::Value>::deserialize(d)?
        .into_iter()
        .map(|(target, value)| {
            let key = format!("mounts.\"{target}\"");
            match value.get("type") {
                None if value.is_table() => {
                    return Err(D::Error::custom(format!(
                        "{key}: no `type`; use one of {MOUNT_TYPES}"
                    )));
                }
                Some(t) if !t.is_str() => {
                    return Err(D::Error::custom(format!(
                        "{key}.type: {t} is not a mount type; use one of {MOUNT_TYPES}"
                    )));
                }
                _ => {}
            }
            MountFile::deserialize(value)
                .map(|m| (target, m))
                .map_err(|e| D::Error::custom(format!("{key}: {}", e.message().trim_end())))
        })
        .collect()
}

/// Variants without keys are written `Persist {}` so that `deny_unknown_fields` refuses
/// stray keys: serde ignores them for unit variants of internally tagged enums.
#[derive(Debug, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "lowercase",
    deny_unknown_fields,
    expecting = "a table with a `type`: bind, persist, tmpfs, proc, sysfs, dev or resource"
)]
enum MountFile {
    Bind {
        host: String,
        #[serde(default)]
        options: Vec<String>,
    },
    Persist {},
    Tmpfs {
        size: Size,
    },
    Proc {},
    Sysfs {},
    Dev {},
    Resource {
        name: String,
        version: String,
        dir: String,
        #[serde(default)]
        options: Vec<String>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AutostartFile {
    #[default]
    None,
    Relaxed,
    Critical,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table: [restart] with mode = \"never\", \"on-failure\" or \"always\""
)]
struct RestartFile {
    mode: RestartModeFile,
    max_restarts: Option<u32>,
    backoff_initial_ms: Option<u32>,
    backoff_max_ms: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RestartModeFile {
    Never,
    OnFailure,
    Always,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table: [cgroups] with memory_max, memory_high, pids_max, cpu_max, cpu_weight"
)]
struct CgroupsFile {
    memory_max: Option<Size>,
    memory_high: Option<Size>,
    pids_max: Option<u32>,
    cpu_max: Option<CpuMaxFile>,
    cpu_weight: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { quota_us = 50000, period_us = 100000 }"
)]
struct CpuMaxFile {
    quota_us: u32,
    period_us: u32,
}

/// `"new"`, `"host"` or `{ join = "NAME" }`. Untagged enums here end in an `Other` variant
/// that takes any value, so a wrong one reaches [`lower`], which names the key and the
/// valid forms, instead of serde's "did not match any variant of untagged enum".
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum NetworkFile {
    #[default]
    #[serde(skip)]
    Default,
    Mode(NetworkMode),
    Join(JoinFile),
    Other(toml::Value),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinFile {
    join: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum NetworkMode {
    New,
    Host,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { soft = 256, hard = 1024 }"
)]
struct RlimitFile {
    soft: Option<u64>,
    hard: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table: [seccomp] with profile and [seccomp.allow]"
)]
struct SeccompFile {
    #[serde(default = "default_profile")]
    profile: ProfileFile,
    #[serde(default)]
    allow: BTreeMap<String, AllowFile>,
}

fn default_profile() -> ProfileFile {
    ProfileFile::Default
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProfileFile {
    None,
    Default,
    Unconfined,
}

/// `name = "any"`, `name = { index, values, mask }`, or a list of such tables.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AllowFile {
    Any(AnyKeyword),
    Rule(ArgRuleFile),
    Rules(Vec<ArgRuleFile>),
    Other(toml::Value),
}

/// The forms of a `seccomp.allow` entry, for errors.
const ALLOW_FORMS: &str = "use \"any\", a rule { index = N, values = [...] } or \
                           { index = N, mask = M } (or both), or a list of rules";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AnyKeyword {
    Any,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { index = 1, values = [0x5401] } or { index = 1, mask = 0xff }"
)]
struct ArgRuleFile {
    index: u8,
    #[serde(default)]
    values: Vec<u64>,
    mask: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table: [io] with stdout and stderr"
)]
struct IoFile {
    #[serde(default)]
    stdout: OutputFile,
    #[serde(default)]
    stderr: OutputFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OutputFile {
    #[default]
    Log,
    Discard,
    Kmsg,
}

/// `console = "full"` or a list of permission names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ConsoleFile {
    Full(FullKeyword),
    List(Vec<String>),
    Other(toml::Value),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FullKeyword {
    Full,
}

/// A byte size: an integer, or a string with a binary suffix (`"64K"`, `"8M"`, `"1G"`,
/// also spelled `KiB`, `MiB`, `GiB`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
    Other(toml::Value),
}

impl Size {
    fn bytes(&self, key: &str) -> Result<u64> {
        let text = match self {
            Size::Bytes(b) => return Ok(*b),
            Size::Text(t) => t.trim(),
            Size::Other(v) => bail!(
                "{key}: {v} is not a size; write bytes as a whole number, or a string with K, M or G (binary units), e.g. \"8M\""
            ),
        };
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(digits_end);
        let shift = match suffix.trim() {
            "" | "B" => 0,
            "K" | "KiB" | "k" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            _ => bail!(
                "{key}: `{text}` is not a size; write bytes as a number or with K, M or G (binary units), e.g. \"8M\""
            ),
        };
        let n: u64 = number
            .parse()
            .with_context(|| format!("{key}: `{text}` does not start with a number"))?;
        n.checked_mul(1 << shift)
            .with_context(|| format!("{key}: `{text}` is too large"))
    }
}

/// A TOML error message in the manifest's words: serde names Rust types (`expected u32`),
/// which mean nothing to someone writing a manifest.
fn plain_words(message: &str) -> String {
    const WORDS: [(&str, &str); 9] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "expected u64",
            "expected a whole number from 0 to 18446744073709551615",
        ),
        ("expected usize", "expected a whole number from 0"),
        (
            "expected i32",
            "expected a whole number from -2147483648 to 2147483647",
        ),
        ("expected i64", "expected a whole number"),
        ("expected bool", "expected true or false"),
        (
            "wanted string or table",
            "expected a string or a table (see docs/manifest.md)",
        ),
    ];
    let mut text = message.to_string();
    for (rust, plain) in WORDS {
        // Whole words only: `expected u32` is not the start of `expected u32x`.
        let mut from = 0;
        while let Some(at) = text[from..].find(rust).map(|i| i + from) {
            let end = at + rust.len();
            let whole = !text[end..].starts_with(|c: char| c.is_ascii_alphanumeric());
            if whole {
                text.replace_range(at..end, plain);
                from = at + plain.len();
            } else {
                from = end;
            }
        }
    }
    text
}

/// A parsed and checked manifest file that can lend out a protocol [`Manifest`].
pub struct SourceManifest {
    file: ManifestFile,
    custom_text: Option<String>,
}

impl SourceManifest {
    /// Parses TOML text; syntax and type errors name the line and the key.
    pub fn parse(text: &str) -> Result<SourceManifest> {
        let file: ManifestFile = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}", plain_words(e.to_string().trim_end())))?;
        let custom_text = file
            .custom
            .as_ref()
            .map(toml::to_string)
            .transpose()
            .context("custom: cannot be written back as TOML")?;
        let source = SourceManifest { file, custom_text };
        source.manifest()?;
        Ok(source)
    }

    /// Reads and parses a manifest file.
    pub fn read(path: &std::path::Path) -> Result<SourceManifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        SourceManifest::parse(&text).with_context(|| format!("invalid manifest {}", path.display()))
    }

    /// Lowers to the protocol manifest and validates it; errors name the TOML key.
    pub fn manifest(&self) -> Result<Manifest<'_>> {
        let m = lower(&self.file, self.custom_text.as_deref())?;
        m.validate().map_err(|e| {
            anyhow::anyhow!(
                "{}",
                Explained {
                    error: e,
                    manifest: &m
                }
            )
        })?;
        Ok(m)
    }
}

/// Pushes into a bounded list, or names the key and its limit.
fn push<T, const N: usize>(list: &mut BVec<T, N>, item: T, key: &str) -> Result<()> {
    list.push(item).map_err(|_| {
        anyhow::anyhow!("{key}: more than {N} entries; the device accepts at most {N}")
    })
}

fn version(text: &str, key: &str) -> Result<Version> {
    Version::parse(text).map_err(|_| {
        anyhow::anyhow!("{key}: `{text}` is not a version; write MAJOR.MINOR.PATCH, e.g. \"1.0.0\"")
    })
}

fn flags(options: &[String], key: &str) -> Result<MountFlags> {
    options.iter().try_fold(MountFlags::default(), |acc, name| {
        let flag = MountFlags::from_name(name).with_context(|| {
            format!("{key}.options: unknown option `{name}`; use rw, nosuid, nodev, noexec or rec")
        })?;
        Ok(acc.union(flag))
    })
}

fn lower<'a>(f: &'a ManifestFile, custom: Option<&'a str>) -> Result<Manifest<'a>> {
    let mut m = Manifest {
        name: &f.name,
        version: version(&f.version, "version")?,
        init: f.init.as_deref(),
        args: BVec::new(),
        env: BVec::new(),
        uid: f.uid,
        gid: f.gid,
        suppl_groups: BVec::new(),
        mounts: BVec::new(),
        autostart: match f.autostart {
            AutostartFile::None => Autostart::None,
            AutostartFile::Relaxed => Autostart::Relaxed,
            AutostartFile::Critical => Autostart::Critical,
        },
        restart: lower_restart(f.restart.as_ref()),
        stop_timeout_ms: f.stop_timeout_ms.unwrap_or(pm::DEFAULT_STOP_TIMEOUT_MS),
        cgroups: lower_cgroups(&f.cgroups)?,
        network: match &f.network {
            NetworkFile::Default | NetworkFile::Mode(NetworkMode::New) => Network::New,
            NetworkFile::Mode(NetworkMode::Host) => Network::Host,
            NetworkFile::Join(JoinFile { join }) => Network::Join(join),
            NetworkFile::Other(v) => bail!(
                "network: {v} is not a network mode; use \"new\", \"host\" or {{ join = \"NAME\" }}"
            ),
        },
        capabilities: lower_capabilities(&f.capabilities)?,
        rlimits: BVec::new(),
        seccomp: f.seccomp.as_ref().map(lower_seccomp).transpose()?,
        io: Io {
            stdout: lower_output(&f.io.stdout),
            stderr: lower_output(&f.io.stderr),
        },
        console: lower_console(f.console.as_ref())?,
        custom,
    };
    for arg in &f.args {
        push(&mut m.args, arg.as_str(), "args")?;
    }
    for (key, value) in &f.env {
        push(&mut m.env, EnvVar { key, value }, "env")?;
    }
    for g in &f.suppl_groups {
        push(&mut m.suppl_groups, *g, "suppl_groups")?;
    }
    for (target, mount) in &f.mounts {
        let key = format!("mounts.\"{target}\"");
        push(
            &mut m.mounts,
            Mount {
                target,
                kind: lower_mount(mount, &key)?,
            },
            "mounts",
        )?;
    }
    for (name, limit) in &f.rlimits {
        let resource = RlimitResource::from_name(name).with_context(|| {
            format!(
                "rlimits.{name}: unknown resource; use one of {}",
                RlimitResource::NAMES.join(", ")
            )
        })?;
        push(
            &mut m.rlimits,
            Rlimit {
                resource,
                soft: limit.soft,
                hard: limit.hard,
            },
            "rlimits",
        )?;
    }
    Ok(m)
}

fn lower_mount<'a>(mount: &'a MountFile, key: &str) -> Result<MountKind<'a>> {
    Ok(match mount {
        MountFile::Bind { host, options } => MountKind::Bind { host, flags: flags(options, key)? },
        MountFile::Persist {} => MountKind::Persist,
        MountFile::Tmpfs { size } => MountKind::Tmpfs { size: size.bytes(&format!("{key}.size"))? },
        MountFile::Proc {} => MountKind::Proc,
        MountFile::Sysfs {} => MountKind::Sysfs,
        MountFile::Dev {} => MountKind::Dev,
        MountFile::Resource { name, version, dir, options } => MountKind::Resource {
            name,
            version: VersionReq::parse(version).map_err(|_| {
                anyhow::anyhow!("{key}.version: `{version}` is not a version requirement; write e.g. \">=1.0.0\" or \">=1.0.0, <2.0.0\"")
            })?,
            dir,
            flags: flags(options, key)?,
        },
    })
}

fn lower_restart(r: Option<&RestartFile>) -> RestartPolicy {
    let default = RestartPolicy::default();
    let Some(r) = r else { return default };
    RestartPolicy {
        mode: match r.mode {
            RestartModeFile::Never => RestartMode::Never,
            RestartModeFile::OnFailure => RestartMode::OnFailure,
            RestartModeFile::Always => RestartMode::Always,
        },
        max_restarts: r.max_restarts,
        backoff_initial_ms: r.backoff_initial_ms.unwrap_or(default.backoff_initial_ms),
        backoff_max_ms: r.backoff_max_ms.unwrap_or(default.backoff_max_ms),
    }
}

fn lower_cgroups(c: &CgroupsFile) -> Result<Cgroups> {
    Ok(Cgroups {
        memory_max: c
            .memory_max
            .as_ref()
            .map(|s| s.bytes("cgroups.memory_max"))
            .transpose()?,
        memory_high: c
            .memory_high
            .as_ref()
            .map(|s| s.bytes("cgroups.memory_high"))
            .transpose()?,
        pids_max: c.pids_max,
        cpu_max: c.cpu_max.as_ref().map(|c| CpuMax {
            quota_us: c.quota_us,
            period_us: c.period_us,
        }),
        cpu_weight: c.cpu_weight,
    })
}

fn lower_capabilities(names: &[String]) -> Result<Capabilities> {
    let mut caps = Capabilities::NONE;
    for name in names {
        let cap = Capabilities::from_name(name).with_context(|| {
            format!("capabilities: unknown capability `{name}`; names are spelled like CAP_NET_RAW ({} known)", CAPABILITY_NAMES.len())
        })?;
        if caps.union(cap) == caps {
            bail!("capabilities: `{name}` is listed twice");
        }
        caps = caps.union(cap);
    }
    Ok(caps)
}

fn lower_seccomp(s: &SeccompFile) -> Result<Seccomp<'_>> {
    let profile = match s.profile {
        ProfileFile::None => SeccompProfile::None,
        ProfileFile::Default => SeccompProfile::Default,
        ProfileFile::Unconfined => SeccompProfile::Unconfined,
    };
    let mut allow = BVec::new();
    for (name, rule) in &s.allow {
        let key = format!("seccomp.allow.{name}");
        let rules: Vec<Option<&ArgRuleFile>> = match rule {
            AllowFile::Any(AnyKeyword::Any) => vec![None],
            AllowFile::Rule(r) => vec![Some(r)],
            AllowFile::Rules(rs) => rs.iter().map(Some).collect(),
            AllowFile::Other(v) => bail!("{key}: {}", allow_problem(v)),
        };
        for r in rules {
            let args = r.map(|r| lower_arg_rule(r, &key)).transpose()?;
            push(&mut allow, SyscallRule { name, args }, "seccomp.allow")?;
        }
    }
    Ok(Seccomp { profile, allow })
}

/// What is wrong with a `seccomp.allow` value that is none of its forms: for a table, or
/// a list of them, what the rule table's own parser says about the first bad one.
fn allow_problem(v: &toml::Value) -> String {
    let rule_error = |item: &toml::Value| -> Option<String> {
        match item {
            toml::Value::Table(_) => ArgRuleFile::deserialize(item.clone())
                .err()
                .map(|e| e.message().trim_end().to_string()),
            other => Some(format!("{other} is not a rule table")),
        }
    };
    let detail = match v {
        toml::Value::Table(_) => rule_error(v),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| rule_error(item).map(|e| format!("rule [{i}]: {e}"))),
        _ => None,
    };
    match detail {
        Some(detail) => format!("{detail}; {ALLOW_FORMS}"),
        None => format!("{v} is not a rule; {ALLOW_FORMS}"),
    }
}

fn lower_arg_rule(r: &ArgRuleFile, key: &str) -> Result<ArgRule> {
    let mut values = BVec::new();
    for v in &r.values {
        push(&mut values, *v, &format!("{key}.values"))?;
    }
    Ok(ArgRule {
        index: r.index,
        values,
        mask: r.mask,
    })
}

fn lower_output(o: &OutputFile) -> Output {
    match o {
        OutputFile::Log => Output::Log,
        OutputFile::Discard => Output::Discard,
        OutputFile::Kmsg => Output::Kmsg,
    }
}

fn lower_console(c: Option<&ConsoleFile>) -> Result<Permissions> {
    match c {
        None => Ok(Permissions::NONE),
        Some(ConsoleFile::Full(FullKeyword::Full)) => Ok(Permissions::ALL),
        Some(ConsoleFile::Other(v)) => bail!(
            "console: {v} is not a console setting; use \"full\" or a list of some of {}",
            PERMISSION_NAMES.join(", ")
        ),
        Some(ConsoleFile::List(names)) => names.iter().try_fold(Permissions::NONE, |acc, name| {
            let p = Permissions::from_name(name).with_context(|| {
                format!(
                    "console: unknown permission `{name}`; use \"full\" or some of {}",
                    PERMISSION_NAMES.join(", ")
                )
            })?;
            Ok(acc.union(p))
        }),
    }
}

/// A validation error with the TOML key it is about and what to do.
pub struct Explained<'m> {
    /// The error.
    pub error: ManifestError,
    /// The manifest it was found in, to name list entries by their key.
    pub manifest: &'m Manifest<'m>,
}

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.manifest;
        let ManifestError { field, problem } = self.error;
        match field {
            Field::Encoding => f.write_str("manifest")?,
            Field::Name => f.write_str("name")?,
            Field::Version => f.write_str("version")?,
            Field::Init => f.write_str("init")?,
            Field::Arg(i) => write!(f, "args[{i}]")?,
            Field::Env(i) => match m.env.get(i) {
                Some(var) => write!(f, "env.{}", var.key)?,
                None => f.write_str("env")?,
            },
            Field::Uid => f.write_str("uid")?,
            Field::Gid => f.write_str("gid")?,
            Field::SupplGroup(i) => write!(f, "suppl_groups[{i}]")?,
            Field::Mount(i) => match m.mounts.get(i) {
                Some(mount) => write!(f, "mounts.\"{}\"", mount.target)?,
                None => f.write_str("mounts")?,
            },
            Field::Autostart => f.write_str("autostart")?,
            Field::Restart => f.write_str("restart")?,
            Field::StopTimeout => f.write_str("stop_timeout_ms")?,
            Field::Cgroups => f.write_str("cgroups")?,
            Field::Network => f.write_str("network")?,
            Field::Capabilities => f.write_str("capabilities")?,
            Field::Rlimit(i) => match m.rlimits.get(i) {
                Some(l) => write!(f, "rlimits.{}", l.resource.name())?,
                None => f.write_str("rlimits")?,
            },
            Field::Seccomp(Some(i)) => match m.seccomp.as_ref().and_then(|s| s.allow.get(i)) {
                Some(rule) => write!(f, "seccomp.allow.{}", rule.name)?,
                None => f.write_str("seccomp.allow")?,
            },
            Field::Seccomp(None) => f.write_str("seccomp")?,
            Field::Io => f.write_str("io")?,
            Field::Console => f.write_str("console")?,
            Field::Custom => f.write_str("custom")?,
        }
        f.write_str(": ")?;
        f.write_str(&problem_text(field, problem))
    }
}

fn problem_text(field: Field, problem: Problem) -> String {
    match (field, problem) {
        (Field::Name, Problem::Character) => {
            "use only letters, digits, '.', '_' and '-', and do not start with '.' or '-'".into()
        }
        (Field::Name, Problem::TooLong) => format!("longer than {MAX_NAME_LEN} bytes"),
        (Field::Env(_), Problem::Character) => "names are letters, digits and '_', not starting with a digit; values contain no NUL".into(),
        (Field::Env(_), Problem::TooLong) => {
            format!("name over {MAX_ENV_KEY_LEN} or value over {MAX_ENV_VALUE_LEN} bytes")
        }
        (Field::Env(_), Problem::Reserved) => {
            format!("variables starting with {} are set by the runtime; rename it", pm::RESERVED_ENV_PREFIX)
        }
        (Field::Arg(_), Problem::TooLong) => format!("longer than {MAX_ARG_LEN} bytes"),
        (Field::Init | Field::Mount(_), Problem::TooLong) => format!("a path is longer than {MAX_PATH_LEN} bytes"),
        (Field::Uid | Field::Gid | Field::SupplGroup(_), Problem::Root) => {
            "containers never run as root (0); pick an unprivileged id".into()
        }
        (Field::Mount(_), Problem::Nested) => "mount points must not lie inside one another".into(),
        (Field::Mount(_), Problem::Duplicate) => "the same mount point, or a second persist/proc/sysfs/dev mount".into(),
        (Field::Mount(_), Problem::Flag) => "resource mounts are read-only and flat: rw and rec are not allowed".into(),
        (Field::Mount(_), Problem::Range) => "a tmpfs needs a size above 0".into(),
        (Field::Mount(_), Problem::Malformed) => "the version requirement is empty".into(),
        (Field::Mount(_), Problem::NotNormalized) => {
            "paths are absolute without '.', '..', '//' or a trailing '/'; the root itself cannot be a mount point".into()
        }
        (Field::Restart, Problem::Range) => "backoff_initial_ms must be at least 1 and at most backoff_max_ms".into(),
        (Field::StopTimeout, Problem::Range) => format!("must be between 1 and {} ms", pm::MAX_STOP_TIMEOUT_MS),
        (Field::Cgroups, Problem::Range) => "memory limits are at least 4096 bytes with memory_high <= memory_max; pids_max >= 1; \
             cpu_max.period_us is 1000..=1000000 and quota_us >= 1000; cpu_weight is 1..=10000"
            .into(),
        (Field::Rlimit(_), Problem::Range) => "soft must be set and not above hard".into(),
        (Field::Seccomp(None), Problem::Flag) => {
            "profile \"unconfined\" means no filter at all, so it takes no allow list; remove \
             [seccomp.allow] or use profile \"default\" or \"none\""
                .into()
        }
        (Field::Seccomp(_), Problem::Range) => "argument index must be 0..=5".into(),
        (Field::Seccomp(_), Problem::Empty) => "an argument rule needs values, a mask, or both".into(),
        (Field::Seccomp(_), Problem::Duplicate) => "the same rule is listed twice".into(),
        (Field::Seccomp(_), Problem::Character) => "syscall names are letters, digits and '_'".into(),
        (Field::Seccomp(_), Problem::TooLong) => format!("syscall names are at most {MAX_SYSCALL_NAME_LEN} bytes"),
        (Field::Custom, Problem::TooLong) => format!("the custom section is over {MAX_CUSTOM_LEN} bytes as TOML"),
        (_, Problem::NotForResource) => {
            "a package without `init` is a resource (files only); remove this key or add `init`".into()
        }
        (_, p) => generic_problem(p).into(),
    }
}

fn generic_problem(p: Problem) -> &'static str {
    match p {
        Problem::Malformed => "malformed",
        Problem::TrailingBytes => "unexpected bytes after the manifest",
        Problem::Empty => "must not be empty",
        Problem::TooLong => "too long",
        Problem::Character => "contains a character that is not allowed here (or NUL)",
        Problem::NotAbsolute => "must be an absolute path (starting with '/')",
        Problem::NotNormalized => "paths are absolute without '.', '..', '//' or a trailing '/'",
        Problem::Root => "root (0) is not allowed",
        Problem::Duplicate => "listed twice",
        Problem::Reserved => "reserved name",
        Problem::Nested => "nested",
        Problem::Range => "out of range",
        Problem::Flag => "unknown flag",
        Problem::NotForResource => "not allowed in a resource package",
    }
}

mod describe;
pub use describe::{describe, to_toml};

#[cfg(test)]
pub(crate) mod tests;
