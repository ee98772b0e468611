use super::*;

const ARCHES: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Arm];

/// The fields of `struct seccomp_data` a filter can look at.
#[derive(Debug, Clone, Copy)]
struct SeccompData {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl SeccompData {
    fn new(arch: Arch, name: &str) -> SeccompData {
        let nr = syscall_number(arch, name).unwrap_or_else(|| panic!("{name} on {arch:?}"));
        SeccompData {
            nr,
            arch: arch.audit_arch().unwrap(),
            args: [0; 6],
        }
    }

    fn arg(mut self, index: usize, value: u64) -> SeccompData {
        self.args[index] = value;
        self
    }

    /// A 32-bit load from the structure, as the kernel does it (little endian).
    fn load(&self, offset: u32) -> u32 {
        match offset {
            OFFSET_NR => self.nr,
            OFFSET_ARCH => self.arch,
            16..=60 if offset.is_multiple_of(4) => {
                let arg = self.args[(offset as usize - 16) / 8];
                if offset.is_multiple_of(8) {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("load from offset {offset}"),
        }
    }
}

/// A classic BPF interpreter for the opcodes the compiler emits. Panics on anything else,
/// and (by indexing) on a jump out of the program.
fn run(program: &[Instruction], data: &SeccompData) -> u32 {
    let mut pc = 0;
    let mut a = 0u32;
    loop {
        let ins = program[pc];
        pc += 1;
        let taken = match ins.code {
            BPF_LD_W_ABS => {
                a = data.load(ins.k);
                continue;
            }
            BPF_RET_K => return ins.k,
            BPF_JA => {
                pc += ins.k as usize;
                continue;
            }
            BPF_JEQ_K => a == ins.k,
            BPF_JGE_K => a >= ins.k,
            BPF_JSET_K => a & ins.k != 0,
            code => panic!("unexpected opcode {code:#x}"),
        };
        pc += usize::from(if taken { ins.jt } else { ins.jf });
    }
}

fn rule<'a>(name: &'a str, index: u8, values: &'a [u64], mask: Option<u64>) -> Rule<'a> {
    Rule {
        name,
        args: Some(ArgRule {
            index,
            values,
            mask,
        }),
    }
}

fn allow(name: &str) -> Rule<'_> {
    Rule { name, args: None }
}

/// Runs `data` through the policy and returns the action.
fn verdict(program: &[Instruction], data: SeccompData) -> u32 {
    run(program, &data)
}

#[test]
fn profile_default_allows_its_syscalls_and_denies_the_rest_with_enosys() {
    for arch in ARCHES {
        let program = compile(arch, Profile::Default, &[]).unwrap();
        for name in default_profile(arch) {
            let data = SeccompData::new(arch, name);
            assert_eq!(
                verdict(&program, data),
                SECCOMP_RET_ALLOW,
                "{name} on {arch:?}"
            );
        }
        for name in ["acct", "mount", "ptrace", "bpf", "personality", "unshare"] {
            let data = SeccompData::new(arch, name);
            assert_eq!(
                verdict(&program, data),
                SECCOMP_RET_ERRNO | 38,
                "{name} on {arch:?}"
            );
        }
        // A number no architecture uses.
        let unused = SeccompData {
            nr: 0x3000_0000,
            ..SeccompData::new(arch, "read")
        };
        assert_eq!(verdict(&program, unused), RET_DENY);
    }
}

#[test]
fn profile_none_allows_only_the_allow_list_and_execve() {
    for arch in ARCHES {
        let program = compile(arch, Profile::None, &[allow("getpid")]).unwrap();
        for (name, action) in [
            ("getpid", SECCOMP_RET_ALLOW),
            ("execve", SECCOMP_RET_ALLOW),
            ("read", RET_DENY),
            ("getppid", RET_DENY),
            ("execveat", RET_DENY),
        ] {
            assert_eq!(
                verdict(&program, SeccompData::new(arch, name)),
                action,
                "{name} on {arch:?}"
            );
        }
        let empty = compile(arch, Profile::None, &[]).unwrap();
        assert_eq!(
            verdict(&empty, SeccompData::new(arch, "execve")),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(
            verdict(&empty, SeccompData::new(arch, "exit_group")),
            RET_DENY
        );
    }
}

#[test]
fn threads_and_processes_are_in_the_default_profile() {
    for arch in ARCHES {
        let names: Vec<_> = default_profile(arch).collect();
        for name in ["futex", "set_robust_list", "rseq", "exit_group", "wait4"] {
            assert!(names.contains(&name), "{name} on {arch:?}");
        }
    }
    for arch in [Arch::X86_64, Arch::Arm] {
        let names: Vec<_> = default_profile(arch).collect();
        assert!(
            names.contains(&"fork") && names.contains(&"vfork"),
            "{arch:?}"
        );
    }
    assert!(default_profile(Arch::Arm).any(|name| name == "set_tls"));
    assert!(default_profile(Arch::X86_64).any(|name| name == "arch_prctl"));
    assert!(!default_profile(Arch::Aarch64).any(|name| name == "open"));
    assert_eq!(default_profile(Arch::Any).count(), 0);
}

/// `clone` flags of glibc's `pthread_create` (`CLONE_VM | CLONE_FS | CLONE_FILES |
/// CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID |
/// CLONE_CHILD_CLEARTID`).
const THREAD_FLAGS: u64 = 0x003d_0f00;
/// `clone` flags of glibc's `fork` (`CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD`).
const FORK_FLAGS: u64 = 0x0120_0011;
/// `SIGCHLD` on all three ABIs: a `clone` with only an exit signal is a plain fork.
const SIGCHLD: u64 = 17;

#[test]
fn the_namespace_flags_are_the_kernels() {
    assert_eq!(
        u64::from(CLONE_NAMESPACE_FLAGS),
        (libc::CLONE_NEWNS
            | libc::CLONE_NEWCGROUP
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET) as u64
    );
    // CLONE_NEWTIME shares its bit with clone's exit signal (CSIGNAL, 0xff).
    assert_eq!(libc::CLONE_NEWTIME as u32 & !0xff, 0);
    assert!(!default_profile(Arch::X86_64).any(|name| name == "clone" || name == "clone3"));
}

#[test]
fn default_profile_clone_refuses_namespaces_with_eperm() {
    let namespaces = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
    ];
    for arch in ARCHES {
        let program = compile(arch, Profile::Default, &[]).unwrap();
        check_jumps(&program);
        let clone = |flags: u64| verdict(&program, SeccompData::new(arch, "clone").arg(0, flags));
        for flags in [
            0,
            SIGCHLD,
            FORK_FLAGS,
            THREAD_FLAGS,
            !u64::from(CLONE_NAMESPACE_FLAGS),
        ] {
            assert_eq!(clone(flags), SECCOMP_RET_ALLOW, "{flags:#x} on {arch:?}");
        }
        // The kernel reads only the low 32 bits, so high bits change nothing.
        assert_eq!(clone(0xffff_ffff_0000_0011), SECCOMP_RET_ALLOW);
        for flag in namespaces {
            let flag = flag as u64;
            for flags in [
                flag,
                flag | SIGCHLD,
                flag | THREAD_FLAGS,
                flag | 0xffff_ffff_0000_0000,
            ] {
                assert_eq!(
                    clone(flags),
                    SECCOMP_RET_ERRNO | EPERM,
                    "{flags:#x} on {arch:?}"
                );
            }
        }
        // The other arguments are not looked at.
        let data = SeccompData::new(arch, "clone")
            .arg(0, libc::CLONE_NEWUSER as u64)
            .arg(1, 0)
            .arg(2, 0);
        assert_eq!(verdict(&program, data), SECCOMP_RET_ERRNO | EPERM);
        let data = SeccompData {
            args: [SIGCHLD, u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX],
            ..SeccompData::new(arch, "clone")
        };
        assert_eq!(verdict(&program, data), SECCOMP_RET_ALLOW);
        // clone3's flags are in memory: it is refused as not there, so libc falls back.
        let clone3 = SeccompData::new(arch, "clone3").arg(1, 88);
        assert_eq!(verdict(&program, clone3), RET_DENY, "clone3 on {arch:?}");
    }
}

#[test]
fn a_manifest_rule_for_clone_adds_to_the_default_profile() {
    let newnet = libc::CLONE_NEWNET as u64;
    let newuser = libc::CLONE_NEWUSER as u64;
    for arch in ARCHES {
        // By name: every clone, namespaces included, and clone3 too when listed.
        let program = compile(arch, Profile::Default, &[allow("clone"), allow("clone3")]).unwrap();
        for flags in [0, newuser | SIGCHLD, newnet] {
            let data = SeccompData::new(arch, "clone").arg(0, flags);
            assert_eq!(verdict(&program, data), SECCOMP_RET_ALLOW, "{flags:#x}");
        }
        let clone3 = SeccompData::new(arch, "clone3");
        assert_eq!(verdict(&program, clone3), SECCOMP_RET_ALLOW);
        // An argument rule allows what it matches on top of the profile's; the rest of
        // the namespace clones still get EPERM.
        let values = [newnet | SIGCHLD];
        let program = compile(arch, Profile::Default, &[rule("clone", 0, &values, None)]).unwrap();
        check_jumps(&program);
        let clone = |flags: u64| verdict(&program, SeccompData::new(arch, "clone").arg(0, flags));
        assert_eq!(clone(newnet | SIGCHLD), SECCOMP_RET_ALLOW);
        assert_eq!(clone(SIGCHLD), SECCOMP_RET_ALLOW);
        assert_eq!(clone(THREAD_FLAGS), SECCOMP_RET_ALLOW);
        assert_eq!(clone(newnet), SECCOMP_RET_ERRNO | EPERM);
        assert_eq!(clone(newuser | SIGCHLD), SECCOMP_RET_ERRNO | EPERM);
        // Under profile none clone is like any other syscall: only what the rules say,
        // the rest ENOSYS.
        let program = compile(arch, Profile::None, &[rule("clone", 0, &values, None)]).unwrap();
        let clone = |flags: u64| verdict(&program, SeccompData::new(arch, "clone").arg(0, flags));
        assert_eq!(clone(newnet | SIGCHLD), SECCOMP_RET_ALLOW);
        assert_eq!(clone(SIGCHLD), RET_DENY);
        assert_eq!(clone(newuser), RET_DENY);
    }
}

#[test]
fn another_architecture_is_killed() {
    for arch in ARCHES {
        let program = compile(arch, Profile::Default, &[]).unwrap();
        for other in ARCHES.into_iter().filter(|other| *other != arch) {
            let data = SeccompData {
                arch: other.audit_arch().unwrap(),
                ..SeccompData::new(arch, "read")
            };
            assert_eq!(
                verdict(&program, data),
                SECCOMP_RET_KILL_PROCESS,
                "{other:?} under {arch:?}"
            );
        }
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        let i386 = SeccompData {
            arch: AUDIT_ARCH_I386,
            ..SeccompData::new(arch, "read")
        };
        assert_eq!(verdict(&program, i386), SECCOMP_RET_KILL_PROCESS);
    }
}

#[test]
fn x32_syscalls_are_killed_on_x86_64() {
    let program = compile(Arch::X86_64, Profile::Default, &[]).unwrap();
    let read = SeccompData::new(Arch::X86_64, "read");
    assert_eq!(verdict(&program, read), SECCOMP_RET_ALLOW);
    let x32_read = SeccompData {
        nr: read.nr | X32_SYSCALL_BIT,
        ..read
    };
    assert_eq!(verdict(&program, x32_read), SECCOMP_RET_KILL_PROCESS);
}

#[test]
fn value_rules_compare_both_halves() {
    let values = [0xffff_ffff, 0x1_0000_0008];
    for arch in ARCHES {
        for profile in [Profile::None, Profile::Default] {
            let program = compile(arch, profile, &[rule("personality", 0, &values, None)]).unwrap();
            let call =
                |arg: u64| verdict(&program, SeccompData::new(arch, "personality").arg(0, arg));
            assert_eq!(call(0xffff_ffff), SECCOMP_RET_ALLOW);
            assert_eq!(call(0x1_0000_0008), SECCOMP_RET_ALLOW);
            assert_eq!(call(0x8), RET_DENY, "differs only in the high half");
            assert_eq!(
                call(0x1_ffff_ffff),
                RET_DENY,
                "low half of one value, high of another"
            );
            assert_eq!(call(0x2_0000_0008), RET_DENY);
            assert_eq!(call(0), RET_DENY);
            // The rule looks at argument 0 only.
            let other_arg = SeccompData::new(arch, "personality").arg(1, 0xffff_ffff);
            assert_eq!(verdict(&program, other_arg), RET_DENY);
        }
    }
}

#[test]
fn mask_rules_allow_only_bits_inside_the_mask() {
    for arch in ARCHES {
        let program = compile(
            arch,
            Profile::None,
            &[rule("delete_module", 1, &[], Some(0x06))],
        )
        .unwrap();
        let call = |arg: u64| {
            verdict(
                &program,
                SeccompData::new(arch, "delete_module").arg(1, arg),
            )
        };
        for allowed in [0, 2, 4, 6] {
            assert_eq!(call(allowed), SECCOMP_RET_ALLOW, "{allowed} on {arch:?}");
        }
        for denied in [1, 7, 8, 0x1_0000_0000, 0x1_0000_0004] {
            assert_eq!(call(denied), RET_DENY, "{denied:#x} on {arch:?}");
        }
        // A mask with high bits allows them.
        let high = compile(
            arch,
            Profile::None,
            &[rule("delete_module", 1, &[], Some(0x3_0000_0000))],
        )
        .unwrap();
        let call = |arg: u64| verdict(&high, SeccompData::new(arch, "delete_module").arg(1, arg));
        assert_eq!(call(0x2_0000_0000), SECCOMP_RET_ALLOW);
        assert_eq!(call(0x4_0000_0000), RET_DENY);
        assert_eq!(call(1), RET_DENY);
    }
}

#[test]
fn values_and_mask_in_one_rule_either_allows() {
    // Northstar's integration test policy: delete_module(_, 1) or any of the bits 0x06.
    for arch in ARCHES {
        let program = compile(
            arch,
            Profile::Default,
            &[rule("delete_module", 1, &[1], Some(0x06))],
        )
        .unwrap();
        let call = |arg: u64| {
            verdict(
                &program,
                SeccompData::new(arch, "delete_module").arg(1, arg),
            )
        };
        assert_eq!(call(1), SECCOMP_RET_ALLOW);
        assert_eq!(call(4), SECCOMP_RET_ALLOW);
        assert_eq!(call(7), RET_DENY);
    }
}

#[test]
fn several_rules_for_one_syscall_add_up() {
    for arch in ARCHES {
        let rules = [rule("kill", 0, &[1], None), rule("kill", 1, &[15, 9], None)];
        let program = compile(arch, Profile::None, &rules).unwrap();
        let call = |pid: u64, sig: u64| {
            verdict(
                &program,
                SeccompData::new(arch, "kill").arg(0, pid).arg(1, sig),
            )
        };
        assert_eq!(call(1, 0), SECCOMP_RET_ALLOW);
        assert_eq!(call(7, 15), SECCOMP_RET_ALLOW);
        assert_eq!(call(7, 9), SECCOMP_RET_ALLOW);
        assert_eq!(call(7, 2), RET_DENY);

        // A rule without arguments, or the profile, allows every call.
        let program = compile(arch, Profile::None, &[rules[0], allow("kill"), rules[1]]).unwrap();
        assert_eq!(
            verdict(&program, SeccompData::new(arch, "kill").arg(0, 7)),
            SECCOMP_RET_ALLOW
        );
        let program = compile(arch, Profile::Default, &rules).unwrap();
        assert_eq!(
            verdict(&program, SeccompData::new(arch, "kill").arg(0, 7)),
            SECCOMP_RET_ALLOW
        );
    }
}

#[test]
fn execve_is_allowed_even_under_an_argument_rule() {
    for arch in ARCHES {
        let program = compile(arch, Profile::None, &[rule("execve", 0, &[0], None)]).unwrap();
        let data = SeccompData::new(arch, "execve").arg(0, 0x7fff_0000_1000);
        assert_eq!(verdict(&program, data), SECCOMP_RET_ALLOW);
    }
}

#[test]
fn a_long_value_list_uses_a_far_skip() {
    let values: Vec<u64> = (0..600).map(|v| v * 3).collect();
    for arch in ARCHES {
        let rules = [
            rule("personality", 0, &values, None),
            rule("delete_module", 0, &[5], None),
        ];
        let program = compile(arch, Profile::None, &rules).unwrap();
        assert!(program.iter().any(|ins| ins.code == BPF_JA));
        check_jumps(&program);
        let call =
            |name: &str, arg: u64| verdict(&program, SeccompData::new(arch, name).arg(0, arg));
        for value in [0, 3, 747, 750, 753, 1797] {
            assert_eq!(call("personality", value), SECCOMP_RET_ALLOW, "{value}");
        }
        assert_eq!(call("personality", 1), RET_DENY);
        assert_eq!(call("personality", 1800), RET_DENY);
        assert_eq!(call("delete_module", 5), SECCOMP_RET_ALLOW);
        assert_eq!(call("delete_module", 3), RET_DENY);
        assert_eq!(call("read", 0), RET_DENY);
    }
}

#[test]
fn arm_private_syscalls_and_aliases_resolve() {
    assert_eq!(syscall_number(Arch::Arm, "set_tls"), Some(0x0f_0005));
    assert_eq!(syscall_number(Arch::Arm, "ARM_set_tls"), Some(0x0f_0005));
    assert_eq!(syscall_number(Arch::Arm, "cacheflush"), Some(0x0f_0002));
    assert_eq!(syscall_number(Arch::Arm, "_llseek"), Some(140));
    assert_eq!(syscall_number(Arch::Arm, "sync_file_range2"), Some(341));
    assert_eq!(syscall_number(Arch::Aarch64, "newfstatat"), Some(79));
    assert_eq!(syscall_number(Arch::X86_64, "newfstatat"), Some(262));
    assert_eq!(syscall_number(Arch::X86_64, "set_tls"), None);
    assert_eq!(syscall_number(Arch::Aarch64, "open"), None);
    assert_eq!(syscall_number(Arch::Aarch64, "clock_gettime64"), None);
    assert_eq!(syscall_number(Arch::Arm, "clock_gettime64"), Some(403));
    assert_eq!(syscall_number(Arch::X86_64, "getpid"), Some(39));
    assert_eq!(syscall_number(Arch::Aarch64, "getpid"), Some(172));
    assert_eq!(syscall_number(Arch::Arm, "getpid"), Some(20));
    assert_eq!(syscall_number(Arch::Any, "getpid"), None);
}

#[test]
fn default_profile_list_is_sorted_unique_and_known() {
    assert!(DEFAULT_PROFILE.windows(2).all(|pair| pair[0] < pair[1]));
    for name in DEFAULT_PROFILE {
        assert!(
            ARCHES
                .iter()
                .any(|arch| syscall_number(*arch, name).is_some()),
            "{name} exists nowhere"
        );
    }
    let excluded = [
        "mount",
        "umount2",
        "pivot_root",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "reboot",
        "swapon",
        "swapoff",
        "bpf",
        "perf_event_open",
        "ptrace",
        "keyctl",
        "add_key",
        "request_key",
        "unshare",
        "setns",
        "acct",
        "settimeofday",
        "clock_settime",
        "adjtimex",
        "open_by_handle_at",
        "userfaultfd",
        "quotactl",
        "lookup_dcookie",
        "syslog",
        "iopl",
        "ioperm",
    ];
    for name in excluded {
        assert!(!DEFAULT_PROFILE.contains(&name), "{name}");
    }
}

#[test]
fn errors_say_what_to_fix() {
    let unknown = compile(Arch::Arm, Profile::Default, &[allow("foo")]).unwrap_err();
    assert_eq!(
        unknown,
        SeccompError::UnknownSyscall {
            name: "foo".into(),
            arch: Arch::Arm
        }
    );
    assert_eq!(
        unknown.to_string(),
        "syscall `foo` does not exist on arm; check the name in the manifest's seccomp.allow"
    );
    let open = compile(Arch::Aarch64, Profile::None, &[allow("open")]).unwrap_err();
    assert_eq!(
        open,
        SeccompError::UnknownSyscall {
            name: "open".into(),
            arch: Arch::Aarch64
        }
    );

    let index = compile(
        Arch::X86_64,
        Profile::None,
        &[rule("personality", 6, &[1], None)],
    )
    .unwrap_err();
    assert_eq!(
        index,
        SeccompError::ArgIndex {
            name: "personality".into(),
            index: 6
        }
    );
    assert!(index.to_string().contains("0 to 5"));

    let empty = compile(
        Arch::X86_64,
        Profile::None,
        &[rule("personality", 0, &[], None)],
    )
    .unwrap_err();
    assert_eq!(
        empty,
        SeccompError::EmptyArgRule {
            name: "personality".into()
        }
    );
    assert!(empty.to_string().contains("`values` or `mask`"));

    assert_eq!(
        compile(Arch::Any, Profile::Default, &[]),
        Err(SeccompError::NoArch)
    );
    assert!(SeccompError::NoArch.to_string().contains("any"));

    // 1000 values with distinct high words take 5 instructions each.
    let values: Vec<u64> = (0..1000).map(|v| v << 32).collect();
    let too_long = compile(
        Arch::X86_64,
        Profile::None,
        &[rule("personality", 0, &values, None)],
    );
    assert!(matches!(too_long, Err(SeccompError::TooLong { instructions }) if instructions > 4096));
}

/// Every jump lands inside the program, every path ends in a `ret`, and the last
/// instruction is a `ret` (the kernel's checker wants all three).
fn check_jumps(program: &[Instruction]) {
    let len = program.len();
    for (pc, ins) in program.iter().enumerate() {
        let next = pc + 1;
        match ins.code {
            BPF_RET_K => {}
            BPF_LD_W_ABS => assert!(next < len, "load at {pc} falls off the end"),
            BPF_JA => assert!(next + (ins.k as usize) < len, "ja at {pc}"),
            BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                assert!(next + usize::from(ins.jt) < len, "jt at {pc}");
                assert!(next + usize::from(ins.jf) < len, "jf at {pc}");
            }
            code => panic!("unexpected opcode {code:#x} at {pc}"),
        }
    }
    assert_eq!(program.last().map(|ins| ins.code), Some(BPF_RET_K));
}

/// Names for 64 rules on syscalls outside the default profile (which also allows `clone`
/// under a condition); aarch64 has fewer than 64 of those, so names repeat (and their
/// rules merge).
fn big_policy_names(arch: Arch) -> Vec<&'static str> {
    let profile: Vec<u32> = default_profile(arch)
        .chain(["clone"])
        .filter_map(|name| syscall_number(arch, name))
        .collect();
    let names: Vec<&'static str> = match arch {
        Arch::X86_64 => syscalls::x86_64::Sysno::iter().map(|s| s.name()).collect(),
        Arch::Aarch64 => syscalls::aarch64::Sysno::iter().map(|s| s.name()).collect(),
        _ => syscalls::arm::Sysno::iter().map(|s| s.name()).collect(),
    };
    let outside = names
        .into_iter()
        .filter(|name| syscall_number(arch, name).is_some_and(|nr| !profile.contains(&nr)));
    let names: Vec<_> = outside.cycle().take(64).collect();
    assert_eq!(names.len(), 64, "{arch:?}");
    names
}

#[test]
fn a_full_policy_fits_deterministically_with_short_jumps() {
    // The manifest's limits: 64 rules of 16 values. A quarter of the values have a high word
    // of their own, which costs more instructions.
    let values: Vec<Vec<u64>> = (0..64u64)
        .map(|i| {
            (0..16u64)
                .map(|j| {
                    if j % 4 == 0 {
                        (j << 32) | i
                    } else {
                        i * 100 + j
                    }
                })
                .collect()
        })
        .collect();
    for arch in ARCHES {
        let names = big_policy_names(arch);
        let rules: Vec<Rule> = names
            .iter()
            .zip(&values)
            .map(|(name, values)| rule(name, (values[1] % 6) as u8, values, None))
            .collect();
        let program = compile(arch, Profile::Default, &rules).unwrap();
        assert!(
            program.len() <= MAX_SECCOMP_INSTRUCTIONS,
            "{} on {arch:?}",
            program.len()
        );
        check_jumps(&program);

        let reversed: Vec<Rule> = rules.iter().rev().copied().collect();
        assert_eq!(compile(arch, Profile::Default, &reversed).unwrap(), program);
        assert_eq!(compile(arch, Profile::Default, &rules).unwrap(), program);

        for (rule, values) in rules.iter().zip(&values) {
            let index = usize::from(rule.args.unwrap().index);
            for value in values {
                let data = SeccompData::new(arch, rule.name).arg(index, *value);
                assert_eq!(
                    verdict(&program, data),
                    SECCOMP_RET_ALLOW,
                    "{} {value:#x}",
                    rule.name
                );
            }
            let data = SeccompData {
                args: [0xdead; 6],
                ..SeccompData::new(arch, rule.name)
            };
            assert_eq!(verdict(&program, data), RET_DENY, "{}", rule.name);
        }
        println!("{arch:?}: full policy is {} instructions", program.len());
    }
}

#[test]
fn default_profile_sizes() {
    for arch in ARCHES {
        let program = compile(arch, Profile::Default, &[]).unwrap();
        check_jumps(&program);
        println!(
            "{arch:?}: default profile has {} syscalls, {} instructions",
            default_profile(arch).count(),
            program.len()
        );
    }
}

/// Installs real filters in forked children and checks what the kernel does with them.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod kernel {
    use super::*;

    // Bits of the child's exit code, one per failed check.
    const ALLOWED_FAILED: i32 = 1;
    const DENIED_NOT_ENOSYS: i32 = 2;
    const ARG_ALLOWED_FAILED: i32 = 4;
    const ARG_DENIED_NOT_ENOSYS: i32 = 8;
    const HIGH_HALF_NOT_ENOSYS: i32 = 16;
    const THREAD_FAILED: i32 = 1;
    const FORK_FAILED: i32 = 2;
    const PLAIN_CLONE_FAILED: i32 = 4;
    const NAMESPACE_CLONE_NOT_EPERM: i32 = 8;
    const CLONE3_NOT_ENOSYS: i32 = 16;
    const INSTALL_FAILED: i32 = 64;

    /// Forks; the child installs `program` and exits with `check()`; returns that code.
    fn run_filtered(program: &[Instruction], check: fn() -> i32) -> i32 {
        let mut filter: Vec<libc::sock_filter> = program
            .iter()
            .map(|ins| libc::sock_filter {
                code: ins.code,
                jt: ins.jt,
                jf: ins.jf,
                k: ins.k,
            })
            .collect();
        let fprog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: after fork the child only makes raw syscalls and `_exit`s; everything it
        // reads was set up before the fork.
        unsafe {
            match libc::fork() {
                -1 => panic!("fork failed"),
                0 => {
                    let installed = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                        && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog)
                            == 0;
                    libc::_exit(if installed { check() } else { INSTALL_FAILED })
                }
                child => {
                    let mut status = 0;
                    assert_eq!(libc::waitpid(child, &mut status, 0), child);
                    assert!(
                        libc::WIFEXITED(status),
                        "child did not exit: status {status:#x}"
                    );
                    libc::WEXITSTATUS(status)
                }
            }
        }
    }

    /// `-errno` of a failed raw syscall, or its result.
    unsafe fn syscall1(nr: libc::c_long, arg: u64) -> i64 {
        // SAFETY: the callers pass syscalls that take one integer argument.
        let result = unsafe { libc::syscall(nr, arg as libc::c_long) };
        if result == -1 {
            -i64::from(unsafe { *libc::__errno_location() })
        } else {
            result
        }
    }

    const ENOSYS: i64 = -(libc::ENOSYS as i64);

    fn getpid_works_and_personality_is_denied() -> i32 {
        let mut code = 0;
        // SAFETY: getpid and personality(0xffffffff) (a query) have no side effects.
        unsafe {
            if syscall1(libc::SYS_getpid, 0) <= 0 {
                code |= ALLOWED_FAILED;
            }
            if syscall1(libc::SYS_personality, 0xffff_ffff) != ENOSYS {
                code |= DENIED_NOT_ENOSYS;
            }
        }
        code
    }

    fn getpid_works_and_getppid_is_denied() -> i32 {
        let mut code = 0;
        // SAFETY: no side effects.
        unsafe {
            if syscall1(libc::SYS_getpid, 0) <= 0 {
                code |= ALLOWED_FAILED;
            }
            if syscall1(libc::SYS_getppid, 0) != ENOSYS {
                code |= DENIED_NOT_ENOSYS;
            }
        }
        code
    }

    fn personality_only_queries() -> i32 {
        let mut code = 0;
        // SAFETY: personality in a throwaway child; 0 is PER_LINUX, the usual value.
        unsafe {
            if syscall1(libc::SYS_personality, 0xffff_ffff) < 0 {
                code |= ARG_ALLOWED_FAILED;
            }
            if syscall1(libc::SYS_personality, 0) != ENOSYS {
                code |= ARG_DENIED_NOT_ENOSYS;
            }
            if syscall1(libc::SYS_personality, 0x1_ffff_ffff) != ENOSYS {
                code |= HIGH_HALF_NOT_ENOSYS;
            }
        }
        code
    }

    /// Waits for `pid` and tells whether it exited 0.
    fn reaped_cleanly(pid: libc::pid_t) -> bool {
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) == pid && status == 0 }
    }

    /// `-errno` of a raw `clone(flags, 0, 0, 0, 0)` (fork semantics: no new stack), or
    /// the child's pid after reaping it; the child `_exit`s at once.
    fn raw_clone(flags: u64) -> i64 {
        // SAFETY: without CLONE_VM the child has its own copy of the memory and only
        // `_exit`s.
        match unsafe { syscall1(libc::SYS_clone, flags) } {
            0 => unsafe { libc::_exit(0) },
            pid if pid > 0 => {
                if reaped_cleanly(pid as libc::pid_t) {
                    pid
                } else {
                    -1
                }
            }
            errno => errno,
        }
    }

    extern "C" fn thread_body(_: *mut libc::c_void) -> *mut libc::c_void {
        core::ptr::null_mut()
    }

    fn threads_and_forks_work_namespaces_do_not() -> i32 {
        let mut code = 0;
        // SAFETY: glibc resets its locks in a forked child, so creating and joining a
        // thread there is sound; the thread does nothing.
        unsafe {
            let mut thread: libc::pthread_t = 0;
            let created = libc::pthread_create(
                &mut thread,
                core::ptr::null(),
                thread_body,
                core::ptr::null_mut(),
            ) == 0;
            if !created || libc::pthread_join(thread, core::ptr::null_mut()) != 0 {
                code |= THREAD_FAILED;
            }
            match libc::fork() {
                0 => libc::_exit(0),
                pid if pid < 0 || !reaped_cleanly(pid) => code |= FORK_FAILED,
                _ => {}
            }
            // clone3 with a NULL argument struct: EFAULT if the filter let it through.
            if syscall1(libc::SYS_clone3, 0) != ENOSYS {
                code |= CLONE3_NOT_ENOSYS;
            }
        }
        if raw_clone(super::SIGCHLD) <= 0 {
            code |= PLAIN_CLONE_FAILED;
        }
        let newuser = libc::CLONE_NEWUSER as u64 | super::SIGCHLD;
        if raw_clone(newuser) != -i64::from(libc::EPERM) {
            code |= NAMESPACE_CLONE_NOT_EPERM;
        }
        code
    }

    #[test]
    fn the_kernel_runs_the_default_profiles_clone_rules() {
        let program = compile(Arch::X86_64, Profile::Default, &[]).unwrap();
        assert_eq!(
            run_filtered(&program, threads_and_forks_work_namespaces_do_not),
            0
        );
    }

    #[test]
    fn the_kernel_runs_the_default_profile() {
        let program = compile(Arch::X86_64, Profile::Default, &[]).unwrap();
        assert_eq!(
            run_filtered(&program, getpid_works_and_personality_is_denied),
            0
        );
    }

    #[test]
    fn the_kernel_runs_profile_none() {
        let rules = [allow("getpid"), allow("exit_group"), allow("write")];
        let program = compile(Arch::X86_64, Profile::None, &rules).unwrap();
        assert_eq!(
            run_filtered(&program, getpid_works_and_getppid_is_denied),
            0
        );
    }

    #[test]
    fn the_kernel_checks_argument_rules() {
        let rules = [rule("personality", 0, &[0xffff_ffff], None)];
        let program = compile(Arch::X86_64, Profile::Default, &rules).unwrap();
        assert_eq!(run_filtered(&program, personality_only_queries), 0);
    }
}
