//! Capabilities that break a container's containment, which `npk pack` refuses unless the
//! integrator allows each one by name (`--allow-capability`), with a warning.
//!
//! A container is namespaces, a read-only root, dropped capabilities, `no_new_privs` and
//! a seccomp filter; none of that holds against an app that keeps one of the capabilities
//! below. The device does not refuse them: whether a package may have one is the
//! integrator's decision, made when the package is signed. The list and why each is on it
//! (or, for some near misses, is not) is in `docs/manifest.md`.

use nanostar_protocol::npk::capabilities::Capabilities;
use nanostar_protocol::npk::manifest::{Manifest, MountFlags, MountKind, Network};

/// A capability that lets an app leave its container or reach the host or the runtime,
/// and what it lets the app do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaking {
    /// The capability's name (`CAP_SYS_ADMIN`).
    pub name: &'static str,
    /// What it lets the app do, for the refusal and the warning.
    pub why: &'static str,
}

/// Capabilities refused whatever else the manifest says.
const ALWAYS: &[Breaking] = &[
    Breaking {
        name: "CAP_SYS_ADMIN",
        why: "mount file systems, make and join namespaces and most else root can do: \
              remount the root, undo the container's mounts, leave the container",
    },
    Breaking {
        name: "CAP_SYS_PTRACE",
        why: "attach to the container's init, which runs as root with the runtime's memory \
              and environment, and read or change any process it can see",
    },
    Breaking {
        name: "CAP_DAC_READ_SEARCH",
        why: "open any file of a mounted file system by handle (open_by_handle_at), past the \
              container's root and mounts: it reaches the host's file system",
    },
    Breaking {
        name: "CAP_SYS_MODULE",
        why: "load kernel modules: run any code in the kernel",
    },
    Breaking {
        name: "CAP_SYS_RAWIO",
        why: "raw I/O ports, physical memory and raw block and SCSI commands: reach the \
              hardware and the kernel's memory",
    },
    Breaking {
        name: "CAP_SYS_BOOT",
        why: "load and boot another kernel (kexec_load), outside any container",
    },
    Breaking {
        name: "CAP_MAC_ADMIN",
        why: "change the LSM policy (AppArmor, SELinux, Smack) that may confine the device's \
              containers",
    },
    Breaking {
        name: "CAP_MAC_OVERRIDE",
        why: "ignore the LSM policy (AppArmor, SELinux, Smack) that may confine the device's \
              containers",
    },
    Breaking {
        name: "CAP_BPF",
        why: "load BPF programs and maps: a large kernel attack surface, and with \
              CAP_PERFMON tracing programs that read kernel memory",
    },
    Breaking {
        name: "CAP_PERFMON",
        why: "observe every process on the device and the kernel with perf_event_open, the \
              runtime included",
    },
    Breaking {
        name: "CAP_SYS_TIME",
        why: "set the system clock, which no namespace separates: it changes the time of the \
              host and every other container (certificates, timers, logs)",
    },
    Breaking {
        name: "CAP_SYSLOG",
        why: "read and clear the kernel log of the whole device, with kernel addresses that \
              defeat KASLR",
    },
];

/// `CAP_MKNOD`, refused only where a device node it makes could be opened.
const MKNOD: Breaking = Breaking {
    name: "CAP_MKNOD",
    why: "make device nodes, and this manifest has a writable bind mount without `nodev`, \
          where one can be opened: the device's disks and memory, and a node left in the \
          host's directory",
};

/// `CAP_NET_ADMIN`, refused only in the host's network namespace.
const NET_ADMIN: Breaking = Breaking {
    name: "CAP_NET_ADMIN",
    why: "configure the network, and with `network = \"host\"` that is the host's own: \
          interfaces, routes and firewall",
};

/// The capabilities of `manifest` that break containment, in capability order.
pub fn breaking(manifest: &Manifest) -> Vec<Breaking> {
    let caps = manifest.capabilities;
    let has = |name: &str| Capabilities::from_name(name).is_some_and(|c| caps.union(c) == caps);
    let mut found: Vec<Breaking> = ALWAYS.iter().copied().filter(|b| has(b.name)).collect();
    let writable_devices = manifest.mounts.iter().any(|m| {
        matches!(m.kind, MountKind::Bind { flags, .. }
            if flags.contains(MountFlags::RW) && !flags.contains(MountFlags::NODEV))
    });
    if has(MKNOD.name) && writable_devices {
        found.push(MKNOD);
    }
    if has(NET_ADMIN.name) && manifest.network == Network::Host {
        found.push(NET_ADMIN);
    }
    found.sort_by_key(|b| number(b.name));
    found
}

fn number(name: &str) -> u64 {
    Capabilities::from_name(name).map_or(u64::MAX, |c| c.0)
}

/// Checks `manifest`'s capabilities against those the integrator allowed (`allowed`, as
/// given to `--allow-capability`). Returns the warnings to print for the allowed ones; an
/// error names every breaking capability that is not allowed and what it lets an app do.
pub fn check(manifest: &Manifest, allowed: &[String]) -> anyhow::Result<Vec<String>> {
    for name in allowed {
        if Capabilities::from_name(name).is_none() {
            anyhow::bail!(
                "--allow-capability {name}: unknown capability; names are spelled like CAP_SYS_PTRACE"
            );
        }
    }
    let (ok, refused): (Vec<Breaking>, Vec<Breaking>) = breaking(manifest)
        .into_iter()
        .partition(|b| allowed.iter().any(|a| a == b.name));
    if !refused.is_empty() {
        let lines: Vec<String> = refused
            .iter()
            .map(|b| format!("  {} lets the app {}", b.name, b.why))
            .collect();
        anyhow::bail!(
            "capabilities: the manifest keeps {} that let the app leave its container or reach \
             the host:\n{}\nremove {} from `capabilities`, or, if this app must have {} and \
             you accept what it can do, pack with {}",
            if refused.len() == 1 {
                "a capability"
            } else {
                "capabilities"
            },
            lines.join("\n"),
            if refused.len() == 1 { "it" } else { "them" },
            if refused.len() == 1 { "it" } else { "them" },
            refused
                .iter()
                .map(|b| format!("--allow-capability {}", b.name))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(ok
        .iter()
        .map(|b| {
            format!(
                "WARNING: --allow-capability {}: this package's app can {}; it is not contained",
                b.name, b.why
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::SourceManifest;

    fn manifest_with(extra: &str) -> SourceManifest {
        SourceManifest::parse(&format!(
            "name = \"app\"\nversion = \"1.0.0\"\ninit = \"/bin/app\"\nuid = 1000\ngid = 1000\n{extra}"
        ))
        .unwrap()
    }

    fn names(extra: &str) -> Vec<&'static str> {
        breaking(&manifest_with(extra).manifest().unwrap())
            .iter()
            .map(|b| b.name)
            .collect()
    }

    #[test]
    fn every_always_refused_capability_is_known_and_named() {
        for b in ALWAYS.iter().chain([&MKNOD, &NET_ADMIN]) {
            assert!(Capabilities::from_name(b.name).is_some(), "{}", b.name);
        }
        let all: Vec<String> = ALWAYS.iter().map(|b| format!("\"{}\"", b.name)).collect();
        let found = names(&format!("capabilities = [{}]\n", all.join(", ")));
        assert_eq!(found.len(), ALWAYS.len());
        // In capability order: CAP_DAC_READ_SEARCH (2) first, CAP_BPF (39) last.
        assert_eq!(
            (found[0], found[found.len() - 1]),
            ("CAP_DAC_READ_SEARCH", "CAP_BPF")
        );
    }

    #[test]
    fn harmless_capabilities_pass() {
        assert!(
            names("capabilities = [\"CAP_NET_BIND_SERVICE\", \"CAP_KILL\", \"CAP_NET_RAW\"]\n")
                .is_empty()
        );
        // CAP_MKNOD where every writable place is nodev, CAP_NET_ADMIN in its own namespace.
        assert!(
            names(
                "capabilities = [\"CAP_MKNOD\", \"CAP_NET_ADMIN\"]\n\
             [mounts.\"/x\"]\ntype = \"bind\"\nhost = \"/x\"\noptions = [\"rw\", \"nodev\"]\n\
             [mounts.\"/tmp\"]\ntype = \"tmpfs\"\nsize = \"1M\"\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn mknod_and_net_admin_are_refused_where_they_reach_the_host() {
        assert_eq!(
            names(
                "capabilities = [\"CAP_MKNOD\"]\n\
                 [mounts.\"/x\"]\ntype = \"bind\"\nhost = \"/x\"\noptions = [\"rw\"]\n"
            ),
            ["CAP_MKNOD"]
        );
        assert_eq!(
            names("network = \"host\"\ncapabilities = [\"CAP_NET_ADMIN\"]\n"),
            ["CAP_NET_ADMIN"]
        );
    }

    #[test]
    fn a_refusal_names_each_capability_and_what_it_does_unless_allowed() {
        let source =
            manifest_with("capabilities = [\"CAP_SYS_PTRACE\", \"CAP_SYS_ADMIN\", \"CAP_KILL\"]\n");
        let m = source.manifest().unwrap();
        let e = check(&m, &[]).unwrap_err().to_string();
        assert!(
            e.contains("CAP_SYS_PTRACE lets the app attach to the container's init"),
            "{e}"
        );
        assert!(
            e.contains("CAP_SYS_ADMIN lets the app mount file systems"),
            "{e}"
        );
        assert!(
            e.ends_with("--allow-capability CAP_SYS_PTRACE --allow-capability CAP_SYS_ADMIN"),
            "{e}"
        );
        assert!(!e.contains("CAP_KILL"), "{e}");
        // One allowed, the other still refused.
        let e = check(&m, &["CAP_SYS_ADMIN".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CAP_SYS_PTRACE") && !e.contains("CAP_SYS_ADMIN lets"),
            "{e}"
        );
        let warnings = check(&m, &["CAP_SYS_ADMIN".into(), "CAP_SYS_PTRACE".into()]).unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings[0].starts_with(
                "WARNING: --allow-capability CAP_SYS_PTRACE: this package's app can attach"
            ),
            "{warnings:?}"
        );
        assert!(
            check(&m, &["CAP_FLY".into()])
                .unwrap_err()
                .to_string()
                .contains("unknown capability")
        );
    }
}
