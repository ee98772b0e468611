//! How the client commands show the runtime's answers: JSON for scripts (escaped strings,
//! the objects of packages, containers and exits, failures with their codes) and text for
//! people (the `list` table, `inspect`'s fields), from one description where both show the
//! same thing ([`Emit`]). Apart from the commands, so that those read as what they ask and
//! what they do with the answer, not how it is formatted.

use core::fmt::{self, Write as _};

use nanostar_protocol::console::{ContainerInfo, ExitStatus, PackageInfo};
use nanostar_protocol::npk::Manifest;
use nanostar_protocol::npk::manifest::{
    Autostart, MountFlags, MountKind, Network, Output, RestartMode,
};

use crate::out::{Writer, say, warn};
use crate::text::{ExitText, Uptime, state_name};

/// Prints a failure: with `json` `{"ok":false,"code":…,"reason":…,"message":…}` on
/// stdout, else `nanostar: MESSAGE` on stderr.
pub(crate) fn report(json: bool, code: &str, reason: Option<&str>, message: &dyn fmt::Display) {
    if !json {
        warn(format_args!("nanostar: {message}"));
        return;
    }
    let mut w = Writer::stdout();
    let _ = write!(w, "{{\"ok\":false,\"code\":\"{code}\"");
    if let Some(reason) = reason {
        let _ = write!(w, ",\"reason\":\"{reason}\"");
    }
    let _ = writeln!(w, ",\"message\":\"{}\"}}", Json(message));
}

/// One line of `list`.
pub(super) fn print_row(p: &PackageInfo) {
    let version = cell(&p.package.version);
    let mounted = if p.mounted { "yes" } else { "no" };
    let (state, pid, uptime, last) = match &p.container {
        None => ("-", cell(&"-"), cell(&"-"), cell(&"-")),
        Some(info) => (
            state_name(info.state),
            if info.pid == 0 {
                cell(&"-")
            } else {
                cell(&info.pid)
            },
            if info.pid == 0 {
                cell(&"-")
            } else {
                cell(&Uptime(info.uptime_ms))
            },
            match info.last_exit {
                Some(status) => cell(&ExitText(status)),
                None => cell(&"-"),
            },
        ),
    };
    say(format_args!(
        "{:<20} {:<9} {:<10} {:<7} {:<10} {:<7} {:<7} {}",
        p.package.name,
        version.as_str(),
        p.repository,
        mounted,
        state,
        pid.as_str(),
        uptime.as_str(),
        last.as_str()
    ));
}

/// `value` as text, so that width and alignment apply (and `Version` ignores them).
pub(super) fn cell(value: &dyn fmt::Display) -> heapless::String<40> {
    let mut s = heapless::String::new();
    // Every cell fits its size; a longer one would be cut, never overflow.
    let _ = write!(s, "{value}");
    s
}

/// A package's fields as JSON members, without braces: `"name":…,"container":…`.
pub(super) struct InfoJson<'a>(pub(super) &'a PackageInfo<'a>);

impl fmt::Display for InfoJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        write!(
            f,
            "\"name\":\"{}\",\"version\":\"{}\",\"repository\":\"{}\",\"mounted\":{},\"container\":",
            p.package.name, p.package.version, p.repository, p.mounted
        )?;
        match &p.container {
            None => f.write_str("null"),
            Some(info) => ContainerJson(info).fmt(f),
        }
    }
}

/// `{"state":"running","pid":…,"uptime_ms":…,"last_exit":…,"restarts":…}`.
pub(super) struct ContainerJson<'a>(pub(super) &'a ContainerInfo);

impl fmt::Display for ContainerJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        write!(
            f,
            "{{\"state\":\"{}\",\"pid\":{},\"uptime_ms\":{},\"last_exit\":",
            state_name(c.state),
            c.pid,
            c.uptime_ms
        )?;
        match c.last_exit {
            None => f.write_str("null")?,
            Some(status) => ExitJson(status).fmt(f)?,
        }
        write!(f, ",\"restarts\":{}}}", c.restarts)
    }
}

/// `{"code":N}` or `{"signal":N}`.
pub(super) struct ExitJson(pub(super) ExitStatus);

impl fmt::Display for ExitJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ExitStatus::Code(code) => write!(f, "{{\"code\":{code}}}"),
            ExitStatus::Signal(n) => write!(f, "{{\"signal\":{n}}}"),
        }
    }
}

/// A container's state for `inspect`: `running, pid 12, up 3m04s, last exit code 0,
/// 0 restarts`.
pub(super) struct ContainerText<'a>(pub(super) &'a Option<ContainerInfo>);

impl fmt::Display for ContainerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(c) = self.0 else {
            return f.write_str("not started");
        };
        f.write_str(state_name(c.state))?;
        if c.pid != 0 {
            write!(f, ", pid {}, up {}", c.pid, Uptime(c.uptime_ms))?;
        }
        if let Some(status) = c.last_exit {
            write!(f, ", last exit {}", ExitText(status))?;
        }
        write!(f, ", {} restarts", c.restarts)
    }
}

/// Writes what a manifest says, as `inspect` shows it: in text `\n  key: value` lines, in
/// JSON `,"key":value` members. The keys are the manifest's.
#[inline(never)]
pub(super) fn manifest_fields(e: &mut Emit, m: &Manifest) {
    let kind = if m.is_resource() {
        "resource"
    } else {
        "application"
    };
    if e.json {
        e.show(format_args!(
            ",\"kind\":\"{kind}\",\"init\":\"{}\",\"uid\":{},\"gid\":{}",
            Json(m.init.unwrap_or("")),
            m.uid,
            m.gid
        ));
    } else {
        e.show(format_args!(
            "\n  {kind}, init {}, uid {}, gid {}, {} mounts",
            m.init.unwrap_or("-"),
            m.uid,
            m.gid,
            m.mounts.len()
        ));
    }
    e.key("args");
    e.open(b'[');
    for a in &m.args {
        e.item();
        e.quoted(a);
    }
    e.close();
    e.key("env");
    e.open(b'{');
    for v in &m.env {
        if e.json {
            e.key(v.key);
        } else {
            e.item();
            e.show(format_args!("{}=", v.key));
        }
        e.quoted(v.value);
    }
    e.close();
    e.key("suppl_groups");
    e.open(b'[');
    for g in &m.suppl_groups {
        e.item();
        e.show(format_args!("{g}"));
    }
    e.close();
    e.key("network");
    match m.network {
        Network::New => e.str(&"new"),
        Network::Host => e.str(&"host"),
        Network::Join(name) => {
            e.open(b'{');
            e.text("join", &name);
            e.close();
        }
    }
    e.key("mounts");
    // In text one mount a line.
    e.open(b'\n');
    for mount in &m.mounts {
        e.item();
        e.open(b'{');
        e.bare("target");
        e.str(&mount.target);
        e.bare("type");
        let (kind, flags) = match &mount.kind {
            MountKind::Bind { host, flags } => {
                e.str(&"bind");
                e.key("host");
                (*host, Some(*flags))
            }
            MountKind::Persist => ("persist", None),
            MountKind::Tmpfs { size } => {
                e.str(&"tmpfs");
                e.number("size", Some(*size));
                ("", None)
            }
            MountKind::Proc => ("proc", None),
            MountKind::Sysfs => ("sysfs", None),
            MountKind::Dev => ("dev", None),
            MountKind::Resource {
                name,
                version,
                dir,
                flags,
            } => {
                e.str(&"resource");
                e.text("name", name);
                e.text("version", version);
                e.key("dir");
                (*dir, Some(*flags))
            }
        };
        if !kind.is_empty() {
            e.str(&kind);
        }
        if let Some(flags) = flags {
            e.key("options");
            e.names(flags.names(), MountFlags::NAMES.len());
        }
        e.close();
    }
    e.close();
    e.text(
        "autostart",
        &match m.autostart {
            Autostart::None => "none",
            Autostart::Relaxed => "relaxed",
            Autostart::Critical => "critical",
        },
    );
    let r = &m.restart;
    e.key("restart");
    e.open(b'{');
    e.text(
        "mode",
        &match r.mode {
            RestartMode::Never => "never",
            RestartMode::OnFailure => "on-failure",
            RestartMode::Always => "always",
        },
    );
    e.number("max_restarts", r.max_restarts.map(u64::from));
    e.number("backoff_initial_ms", Some(u64::from(r.backoff_initial_ms)));
    e.number("backoff_max_ms", Some(u64::from(r.backoff_max_ms)));
    e.close();
    e.number("stop_timeout_ms", Some(u64::from(m.stop_timeout_ms)));
    let cg = &m.cgroups;
    e.key("cgroups");
    e.open(b'{');
    e.number("memory_max", cg.memory_max);
    e.number("memory_high", cg.memory_high);
    e.number("pids_max", cg.pids_max.map(u64::from));
    e.number(
        "cpu_max_quota_us",
        cg.cpu_max.map(|c| u64::from(c.quota_us)),
    );
    e.number(
        "cpu_max_period_us",
        cg.cpu_max.map(|c| u64::from(c.period_us)),
    );
    e.number("cpu_weight", cg.cpu_weight.map(u64::from));
    e.close();
    e.key("rlimits");
    e.open(b'[');
    for r in &m.rlimits {
        e.item();
        e.open(b'{');
        e.bare("resource");
        e.str(&r.resource.name());
        e.number("soft", r.soft);
        e.number("hard", r.hard);
        e.close();
    }
    e.close();
    e.key("io");
    e.open(b'{');
    e.text("stdout", &output_name(m.io.stdout));
    e.text("stderr", &output_name(m.io.stderr));
    e.close();
    e.key("console");
    e.names(m.console.names(), usize::MAX);
    e.key("custom");
    match m.custom {
        None => e.none(),
        Some(text) if e.json => e.str(&text),
        // A line each, indented, control characters (but tabs) shown as `?`. The
        // manifest bounds the text (`MAX_CUSTOM_LEN`).
        Some(text) => {
            e.raw("\n    ");
            for ch in text.trim_end().chars() {
                match ch {
                    '\n' => e.raw("\n    "),
                    '\t' => e.raw("\t"),
                    c if c.is_control() => e.raw("?"),
                    c => e.show(format_args!("{c}")),
                }
            }
        }
    }
}

fn output_name(o: Output) -> &'static str {
    match o {
        Output::Log => "log",
        Output::Discard => "discard",
        Output::Kmsg => "kmsg",
    }
}

/// Writes nested values as JSON or as text from one description (`inspect`). In text a
/// member at the top is `\n  key: value`, deeper ones `key value` after `, ` (in lists,
/// objects) or a new line (`\n` lists); an empty list or object is `none`.
pub(super) struct Emit {
    w: Writer,
    json: bool,
    /// Nothing is written yet in the current list or object.
    first: bool,
    /// The open lists and objects, innermost last: `[`, `{` or `\n` (a list shown a line
    /// each in text).
    open: heapless::Vec<u8, 4>,
}

impl Emit {
    pub(super) fn new(json: bool) -> Emit {
        Emit {
            w: Writer::stdout(),
            json,
            first: false,
            open: heapless::Vec::new(),
        }
    }

    pub(super) fn raw(&mut self, s: &str) {
        let _ = self.w.write_str(s);
    }

    pub(super) fn show(&mut self, v: fmt::Arguments) {
        let _ = self.w.write_fmt(v);
    }

    fn sep(&mut self) {
        let first = core::mem::replace(&mut self.first, false);
        match self.open.last() {
            Some(b'\n') if !self.json => self.raw("\n    "),
            _ if first => {}
            _ => self.raw(if self.json { "," } else { ", " }),
        }
    }

    /// Starts a member.
    fn key(&mut self, k: &str) {
        if self.open.is_empty() {
            self.first = false;
            if self.json {
                self.show(format_args!(",\"{k}\":"));
            } else {
                self.show(format_args!("\n  {k}: "));
            }
            return;
        }
        self.sep();
        if self.json {
            self.show(format_args!("\"{k}\":"));
        } else {
            self.show(format_args!("{k} "));
        }
    }

    /// Starts a member whose key text leaves out (the value says it): the target and
    /// type of a mount, the resource of an rlimit.
    fn bare(&mut self, k: &str) {
        if self.json {
            self.key(k);
        } else if !self.first {
            self.raw(" ");
        }
        self.first = false;
    }

    /// Starts a list item.
    fn item(&mut self) {
        self.sep();
    }

    /// A string member.
    fn text(&mut self, k: &str, v: &dyn fmt::Display) {
        self.key(k);
        self.str(v);
    }

    /// A number member; `None` is `null` in JSON and left out in text.
    fn number(&mut self, k: &str, v: Option<u64>) {
        match v {
            Some(v) => {
                self.key(k);
                self.show(format_args!("{v}"));
            }
            None if self.json => {
                self.key(k);
                self.raw("null");
            }
            None => {}
        }
    }

    fn open(&mut self, kind: u8) {
        if self.json {
            self.raw(if kind == b'{' { "{" } else { "[" });
        }
        let _ = self.open.push(kind);
        self.first = true;
    }

    fn close(&mut self) {
        let kind = self.open.pop();
        if self.json {
            self.raw(if kind == Some(b'{') { "}" } else { "]" });
        } else if self.first {
            self.raw("none");
        }
        self.first = false;
    }

    /// A string: quoted and escaped in JSON, as it is in text.
    pub(super) fn str(&mut self, v: &dyn fmt::Display) {
        if self.json {
            self.show(format_args!("\"{}\"", Json(v)));
        } else {
            self.show(format_args!("{v}"));
        }
    }

    /// A string quoted in text too (arguments and values, which may hold spaces).
    fn quoted(&mut self, s: &str) {
        self.show(format_args!("\"{}\"", Json(s)));
    }

    pub(super) fn none(&mut self) {
        self.raw(if self.json { "null" } else { "none" });
    }

    /// A list of names (at most `most`).
    fn names<'n>(&mut self, names: impl Iterator<Item = &'n str>, most: usize) {
        self.open(b'[');
        for n in names.take(most) {
            self.item();
            self.str(&n);
        }
        self.close();
    }
}

/// Text as the inside of a JSON string: `"` and `\` escaped, control characters as
/// `\n`, `\r`, `\t` or `\u00XX`.
pub(crate) struct Json<T>(pub T);

impl<T: fmt::Display> fmt::Display for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escape(f), "{}", self.0)
    }
}

/// Bytes as the inside of a JSON string: UTF-8 escaped as [`Json`] does, each invalid
/// sequence as `\ufffd` (as `String::from_utf8_lossy` would).
pub(super) struct JsonBytes<'a>(pub(super) &'a [u8]);

impl fmt::Display for JsonBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            Escape(f).write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\\ufffd")?;
            }
        }
        Ok(())
    }
}

/// Writes text JSON-escaped to a formatter.
struct Escape<'a, 'f>(&'a mut fmt::Formatter<'f>);

impl fmt::Write for Escape<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, ch) in s.char_indices() {
            let escaped = match ch {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if c < ' ' || c == '\u{7f}' => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{:04x}", u32::from(ch))?;
            } else {
                self.0.write_str(escaped)?;
            }
            plain = i + ch.len_utf8();
        }
        self.0.write_str(&s[plain..])
    }
}

/// Keeps a UTF-8 character that the end of a log piece cuts in two until the next piece,
/// so that JSON output shows the character rather than two `\ufffd`.
#[derive(Default)]
pub(super) struct Utf8Carry {
    held: heapless::Vec<u8, 4>,
}

impl Utf8Carry {
    /// Splits the next piece into what to show now, `head` (the held bytes, completed
    /// from the piece's start) then `body`, and holds back a character cut off at its
    /// end. After a `gap` (bytes were dropped) the held bytes are shown as they are.
    pub(super) fn split<'d>(
        &mut self,
        data: &'d [u8],
        gap: bool,
    ) -> (heapless::Vec<u8, 4>, &'d [u8]) {
        let mut head = self.take();
        let mut rest = data;
        if !gap {
            while incomplete(&head) {
                match rest.split_first() {
                    Some((&b, tail)) if b & 0xC0 == 0x80 => {
                        // Cannot overflow: an incomplete character has at most 3 bytes.
                        let _ = head.push(b);
                        rest = tail;
                    }
                    _ => break,
                }
            }
            if incomplete(&head) && rest.is_empty() {
                // Still cut: wait for more.
                self.held = head;
                return (heapless::Vec::new(), rest);
            }
        }
        let cut = (1..=rest.len().min(3))
            .find(|&k| incomplete(&rest[rest.len() - k..]))
            .unwrap_or(0);
        let (body, tail) = rest.split_at(rest.len() - cut);
        // Cannot overflow: at most 3 bytes.
        let _ = self.held.extend_from_slice(tail);
        (head, body)
    }

    /// The held bytes, emptying the carry.
    pub(super) fn take(&mut self) -> heapless::Vec<u8, 4> {
        core::mem::take(&mut self.held)
    }
}

/// Whether `bytes` are the start of one UTF-8 character, not all of it.
fn incomplete(bytes: &[u8]) -> bool {
    matches!(
        core::str::from_utf8(bytes),
        Err(e) if e.valid_up_to() == 0 && e.error_len().is_none()
    )
}
