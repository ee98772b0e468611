//! Containers (docs/design.md, decision 10): the runtime forks a small init into new PID, mount,
//! IPC, UTS and (usually) network namespaces; init sets up the container's file system,
//! forks the app, which drops its privileges and execs the package's `init`, and then
//! reaps, forwards signals and reports how the app ended.
//!
//! - [`table`]: the containers the runtime knows, their logs, stops, restarts and timers.
//! - [`app`]: a running container's app found from the runtime's side, for SIGSTOP,
//!   which init cannot forward.
//! - [`launch`]: the runtime's side of a start, up to the fork.
//! - [`init`]: everything that runs on the container's side of the fork.
//! - [`mounts`]: the manifest's mounts, made by init through descriptors.
//! - [`logs`]: each container's output ring.
//! - [`cgroup`]: the container's cgroup v2 directory and limits.
//!
//! Init talks to the runtime through a pipe of fixed 8-byte [`Report`]s, so the runtime's
//! loop never blocks on a container and needs no parsing; the app, before its `execve`,
//! through a second one that simply ends when the `execve` succeeds.

pub mod app;
pub mod cgroup;
pub mod init;
pub mod launch;
pub mod logs;
pub mod mounts;
pub mod table;

use nanostar_protocol::console::{ExitStatus, SetupStep};
use rustix::fd::OwnedFd;

use crate::limits::SCRATCH_LEN;

/// The containers' part of the runtime's state, one owner for each piece: the table, the
/// launcher, the buffer a starting container's manifest is kept in while the store's is
/// reused for its resources, and `/dev/kmsg` for outputs copied there.
pub struct Containers<'c> {
    /// The containers and their logs.
    pub table: &'c mut table::Table,
    /// argv, envp and `/dev/null` of the next start.
    pub launcher: launch::Launcher<'c>,
    /// A starting container's manifest and seccomp program.
    pub buffer: &'c mut [u8; SCRATCH_LEN],
    /// `/dev/kmsg`, opened at the first start that copies output there.
    pub kmsg: Option<OwnedFd>,
}

/// Bytes of one [`Report`] on the status pipe (below `PIPE_BUF`: written atomically).
pub const REPORT_LEN: usize = 8;

/// What a container's init (on the status pipe) or its app before `execve` (on the exec
/// pipe) tells the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Setup failed at this step with this errno; init, or the app, exits.
    Failed(SetupStep, u16),
    /// The app ended; init exits.
    Exited(ExitStatus),
}

const FAILED: u8 = 2;
const EXITED: u8 = 3;
const SIGNALED: u8 = 4;

impl Report {
    /// The 8 bytes on the pipe: kind, two step bytes, a pad byte, a little-endian value.
    pub fn encode(&self) -> [u8; REPORT_LEN] {
        let (kind, step, value) = match *self {
            Report::Failed(step, errno) => (FAILED, encode_step(step), u32::from(errno)),
            Report::Exited(ExitStatus::Code(code)) => (EXITED, [0, 0], code as u32),
            Report::Exited(ExitStatus::Signal(signal)) => (SIGNALED, [0, 0], u32::from(signal)),
        };
        let v = value.to_le_bytes();
        [kind, step[0], step[1], 0, v[0], v[1], v[2], v[3]]
    }

    /// The report in `bytes`; `None` for anything init does not write.
    pub fn decode(bytes: &[u8; REPORT_LEN]) -> Option<Report> {
        let value = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        match bytes[0] {
            FAILED => Some(Report::Failed(
                decode_step(bytes[1], bytes[2])?,
                u16::try_from(value).ok()?,
            )),
            EXITED => Some(Report::Exited(ExitStatus::Code(value as i32))),
            SIGNALED => Some(Report::Exited(ExitStatus::Signal(
                u8::try_from(value).ok()?,
            ))),
            _ => None,
        }
    }
}

fn encode_step(step: SetupStep) -> [u8; 2] {
    match step {
        SetupStep::Prepare => [0, 0],
        SetupStep::Clone => [1, 0],
        SetupStep::Network => [2, 0],
        SetupStep::Hostname => [3, 0],
        SetupStep::Mount(i) => [4, i],
        SetupStep::PivotRoot => [5, 0],
        SetupStep::Fork => [6, 0],
        SetupStep::Stdio => [7, 0],
        SetupStep::Rlimit(i) => [8, i],
        SetupStep::Capabilities => [9, 0],
        SetupStep::Groups => [10, 0],
        SetupStep::Gid => [11, 0],
        SetupStep::Uid => [12, 0],
        SetupStep::NoNewPrivs => [13, 0],
        SetupStep::Seccomp => [14, 0],
        SetupStep::Exec => [15, 0],
    }
}

fn decode_step(tag: u8, index: u8) -> Option<SetupStep> {
    Some(match tag {
        0 => SetupStep::Prepare,
        1 => SetupStep::Clone,
        2 => SetupStep::Network,
        3 => SetupStep::Hostname,
        4 => SetupStep::Mount(index),
        5 => SetupStep::PivotRoot,
        6 => SetupStep::Fork,
        7 => SetupStep::Stdio,
        8 => SetupStep::Rlimit(index),
        9 => SetupStep::Capabilities,
        10 => SetupStep::Groups,
        11 => SetupStep::Gid,
        12 => SetupStep::Uid,
        13 => SetupStep::NoNewPrivs,
        14 => SetupStep::Seccomp,
        15 => SetupStep::Exec,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_survive_the_pipe() {
        let steps = [
            SetupStep::Prepare,
            SetupStep::Clone,
            SetupStep::Network,
            SetupStep::Hostname,
            SetupStep::Mount(23),
            SetupStep::PivotRoot,
            SetupStep::Fork,
            SetupStep::Stdio,
            SetupStep::Rlimit(15),
            SetupStep::Capabilities,
            SetupStep::Groups,
            SetupStep::Gid,
            SetupStep::Uid,
            SetupStep::NoNewPrivs,
            SetupStep::Seccomp,
            SetupStep::Exec,
        ];
        let mut reports = std::vec![
            Report::Exited(ExitStatus::Code(0)),
            Report::Exited(ExitStatus::Code(255)),
            Report::Exited(ExitStatus::Code(-1)),
            Report::Exited(ExitStatus::Signal(9)),
        ];
        reports.extend(steps.iter().map(|s| Report::Failed(*s, 13)));
        for report in reports {
            assert_eq!(Report::decode(&report.encode()), Some(report));
        }
        assert_eq!(Report::decode(&[0; REPORT_LEN]), None);
        assert_eq!(Report::decode(&[2, 99, 0, 0, 1, 0, 0, 0]), None);
    }
}
