//! The reverse of lowering: a manifest back in the shape of its TOML source, for `npk
//! inspect` (as TOML for people, as JSON for scripts). Re-parsing the TOML gives the same
//! manifest.

use nanostar_protocol::npk::manifest::{
    self as pm, Autostart, Manifest, MountKind, Network, Output, RestartMode, RestartPolicy,
    SeccompProfile,
};
use nanostar_protocol::permissions::Permissions;
use serde_json::{Map, Value, json};

/// The manifest as a JSON object with the TOML file's keys; defaults are left out.
pub fn describe(m: &Manifest) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("name".into(), json!(m.name));
    o.insert("version".into(), json!(m.version.to_string()));
    if let Some(init) = m.init {
        o.insert("init".into(), json!(init));
    }
    o.insert("uid".into(), json!(m.uid));
    o.insert("gid".into(), json!(m.gid));
    if !m.args.is_empty() {
        o.insert("args".into(), json!(m.args.as_slice()));
    }
    if !m.suppl_groups.is_empty() {
        o.insert("suppl_groups".into(), json!(m.suppl_groups.as_slice()));
    }
    if m.autostart != Autostart::None {
        let a = if m.autostart == Autostart::Relaxed {
            "relaxed"
        } else {
            "critical"
        };
        o.insert("autostart".into(), json!(a));
    }
    if m.stop_timeout_ms != pm::DEFAULT_STOP_TIMEOUT_MS {
        o.insert("stop_timeout_ms".into(), json!(m.stop_timeout_ms));
    }
    match m.network {
        Network::New => {}
        Network::Host => {
            o.insert("network".into(), json!("host"));
        }
        Network::Join(ns) => {
            o.insert("network".into(), json!({ "join": ns }));
        }
    }
    if m.capabilities.0 != 0 {
        o.insert(
            "capabilities".into(),
            json!(m.capabilities.names().collect::<Vec<_>>()),
        );
    }
    if m.console != Permissions::NONE {
        let c = if m.console == Permissions::ALL {
            json!("full")
        } else {
            json!(m.console.names().collect::<Vec<_>>())
        };
        o.insert("console".into(), c);
    }
    if !m.env.is_empty() {
        o.insert(
            "env".into(),
            Value::Object(
                m.env
                    .iter()
                    .map(|v| (v.key.to_string(), json!(v.value)))
                    .collect(),
            ),
        );
    }
    if m.restart != RestartPolicy::default() {
        o.insert("restart".into(), restart(&m.restart));
    }
    let cgroups = cgroups(m);
    if !cgroups.is_empty() {
        o.insert("cgroups".into(), Value::Object(cgroups));
    }
    if !m.rlimits.is_empty() {
        let limits = m.rlimits.iter().map(|l| {
            let mut v = Map::new();
            l.soft.map(|s| v.insert("soft".into(), json!(s)));
            l.hard.map(|h| v.insert("hard".into(), json!(h)));
            (l.resource.name().to_string(), Value::Object(v))
        });
        o.insert("rlimits".into(), Value::Object(limits.collect()));
    }
    if let Some(s) = &m.seccomp {
        o.insert("seccomp".into(), seccomp(s));
    }
    if m.io != Default::default() {
        o.insert(
            "io".into(),
            json!({ "stdout": output(m.io.stdout), "stderr": output(m.io.stderr) }),
        );
    }
    if !m.mounts.is_empty() {
        o.insert(
            "mounts".into(),
            Value::Object(
                m.mounts
                    .iter()
                    .map(|x| (x.target.to_string(), mount(&x.kind)))
                    .collect(),
            ),
        );
    }
    if let Some(custom) = m.custom {
        // Stored as TOML text by the packer; shown as a table when it parses.
        let v = toml::from_str::<toml::Table>(custom)
            .ok()
            .and_then(|t| serde_json::to_value(t).ok());
        o.insert("custom".into(), v.unwrap_or_else(|| json!(custom)));
    }
    o
}

fn restart(r: &RestartPolicy) -> Value {
    let mode = match r.mode {
        RestartMode::Never => "never",
        RestartMode::OnFailure => "on-failure",
        RestartMode::Always => "always",
    };
    let mut v = json!({ "mode": mode, "backoff_initial_ms": r.backoff_initial_ms, "backoff_max_ms": r.backoff_max_ms });
    if let Some(max) = r.max_restarts {
        v["max_restarts"] = json!(max);
    }
    v
}

fn cgroups(m: &Manifest) -> Map<String, Value> {
    let c = &m.cgroups;
    let mut o = Map::new();
    c.memory_max
        .map(|v| o.insert("memory_max".into(), json!(v)));
    c.memory_high
        .map(|v| o.insert("memory_high".into(), json!(v)));
    c.pids_max.map(|v| o.insert("pids_max".into(), json!(v)));
    c.cpu_max.map(|v| {
        o.insert(
            "cpu_max".into(),
            json!({ "quota_us": v.quota_us, "period_us": v.period_us }),
        )
    });
    c.cpu_weight
        .map(|v| o.insert("cpu_weight".into(), json!(v)));
    o
}

fn seccomp(s: &pm::Seccomp) -> Value {
    let mut allow: Map<String, Value> = Map::new();
    for rule in &s.allow {
        let this = match &rule.args {
            None => json!("any"),
            Some(a) => {
                let mut r = json!({ "index": a.index });
                if !a.values.is_empty() {
                    r["values"] = json!(a.values.as_slice());
                }
                if let Some(mask) = a.mask {
                    r["mask"] = json!(mask);
                }
                r
            }
        };
        // Several rules for one syscall become a list.
        match allow.remove(rule.name) {
            None => allow.insert(rule.name.to_string(), this),
            Some(Value::Array(mut list)) if this.is_object() => {
                list.push(this);
                allow.insert(rule.name.to_string(), Value::Array(list))
            }
            Some(prev) => allow.insert(rule.name.to_string(), json!([prev, this])),
        };
    }
    let profile = match s.profile {
        SeccompProfile::Default => "default",
        SeccompProfile::None => "none",
        SeccompProfile::Unconfined => "unconfined",
    };
    let mut v = json!({ "profile": profile });
    if !allow.is_empty() {
        v["allow"] = Value::Object(allow);
    }
    v
}

fn output(o: Output) -> &'static str {
    match o {
        Output::Log => "log",
        Output::Discard => "discard",
        Output::Kmsg => "kmsg",
    }
}

fn mount(kind: &MountKind) -> Value {
    let options = |f: pm::MountFlags| f.names().collect::<Vec<_>>();
    match kind {
        MountKind::Bind { host, flags } => {
            json!({ "type": "bind", "host": host, "options": options(*flags) })
        }
        MountKind::Persist => json!({ "type": "persist" }),
        MountKind::Tmpfs { size } => json!({ "type": "tmpfs", "size": size }),
        MountKind::Proc => json!({ "type": "proc" }),
        MountKind::Sysfs => json!({ "type": "sysfs" }),
        MountKind::Dev => json!({ "type": "dev" }),
        MountKind::Resource {
            name,
            version,
            dir,
            flags,
        } => json!({
            "type": "resource", "name": name, "version": version.to_string(), "dir": dir, "options": options(*flags)
        }),
    }
}

/// The manifest as TOML text, in the source's shape.
pub fn to_toml(m: &Manifest) -> Result<String, toml::ser::Error> {
    // Scalars first, then tables, as a person would write it.
    let obj = describe(m);
    let (tables, scalars): (Vec<_>, Vec<_>) = obj.into_iter().partition(|(_, v)| v.is_object());
    let mut text = toml::to_string(&scalars.into_iter().collect::<Map<_, _>>())?;
    for (key, value) in tables {
        let mut one = Map::new();
        one.insert(key, value);
        text.push('\n');
        text.push_str(&toml::to_string(&one)?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::SourceManifest;

    #[test]
    fn inspect_output_parses_back_to_the_same_manifest() {
        let source = SourceManifest::parse(crate::manifest::tests::FULL).unwrap();
        let m = source.manifest().unwrap();
        let text = to_toml(&m).unwrap();
        let again = SourceManifest::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        assert_eq!(again.manifest().unwrap(), m, "{text}");
    }
}
