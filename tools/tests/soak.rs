//! A short soak of the real runtime on this host (as root, like the runtime's own
//! integration tests): four clients for 20 seconds of random work, then nothing may be
//! left behind (`nanostar_tools::soak`). The long runs (10 minutes on the host and on a
//! board) are `tools/soak.sh`.

use std::time::Duration;

use nanostar_tools::soak::{Options, Target, run};
use nanostar_tools::testing::{device_build, is_root};

#[test]
fn a_short_soak_passes_and_leaves_nothing_behind() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let target = "x86_64-unknown-linux-musl";
    let summary = run(&Options {
        duration: Duration::from_secs(20),
        clients: 4,
        seed: 20_260_101,
        probe: device_build("nanostar-probe", "probe", target),
        target: Target::Host {
            runtime: device_build("nanostar", "nanostar", target),
        },
        verbose: false,
        capture: None,
    })
    .unwrap();
    eprintln!("{summary}");
    assert!(summary.passed(), "{summary}");
    // Every kind of work was done at least once, not only refused.
    for op in [
        "install",
        "uninstall",
        "start",
        "stop",
        "kill",
        "logs",
        "logs-follow",
        "mount",
        "umount",
        "list",
        "inspect",
    ] {
        let done = summary.operations.get(op).map_or(0, |c| c.0);
        assert!(done > 0, "{op} never done:\n{summary}");
    }
}
