//! `logs` and `notifications`: the commands that follow what the runtime streams (a
//! container's output, the runtime's events), printing each piece as it comes until the
//! stream ends. Apart from the commands that ask one thing and print one answer.

use core::fmt::Write as _;

use nanostar_protocol::console::{Message, Notification, Reply, Request};
use nanostar_protocol::version::Version;
use rustix::io::Errno;

use super::args::Options;
use super::commands::{REFUSED, otherwise};
use super::connection::{ClientError, Connection};
use super::render::{ExitJson, JsonBytes, Utf8Carry};
use crate::out::{Writer, say, warn};
use crate::text::ExitSentence;

/// `logs`: the log pieces as they come, raw on stdout (or as JSON objects), until
/// `LogEnd`; with `--follow` until the container ends (`Ended`, said on stderr) or the
/// connection closes.
pub(super) fn logs(
    c: &mut Connection,
    o: &Options,
    name: &str,
    version: Option<Version>,
) -> Result<u8, ClientError> {
    let follow = o.follow;
    let request = match o.tail {
        Some(lines) => Request::TailLogs {
            name,
            version,
            follow,
            lines: Some(lines),
        },
        None => Request::Logs {
            name,
            version,
            follow,
        },
    };
    let id = c.request(request)?;
    let mut carry = Utf8Carry::default();
    loop {
        match c.reply(id)? {
            Reply::Log { dropped, data } if o.json => {
                let (head, body) = carry.split(data, dropped > 0);
                if dropped > 0 || !head.is_empty() || !body.is_empty() {
                    say(format_args!(
                        "{{\"dropped\":{dropped},\"data\":\"{}{}\"}}",
                        JsonBytes(&head),
                        JsonBytes(body)
                    ));
                }
            }
            Reply::Log { dropped, data } => {
                if dropped > 0 {
                    warn(format_args!(
                        "nanostar: {dropped} bytes of {name}'s log were overwritten before they \
                         could be read"
                    ));
                }
                match crate::sys::write_all(crate::sys::StdFd::Out, data) {
                    Ok(()) => {}
                    // The reader is gone (`| head`): nothing left to do.
                    Err(Errno::PIPE) => return Ok(0),
                    Err(_) => return Ok(REFUSED),
                }
            }
            reply @ (Reply::LogEnd | Reply::Ended(_)) => {
                let held = carry.take();
                if o.json && !held.is_empty() {
                    say(format_args!(
                        "{{\"dropped\":0,\"data\":\"{}\"}}",
                        JsonBytes(&held)
                    ));
                }
                match reply {
                    Reply::Ended(status) if o.json => {
                        say(format_args!("{{\"ended\":{}}}", ExitJson(status)))
                    }
                    Reply::Ended(status) => warn(format_args!(
                        "nanostar: {name} ended: {}",
                        ExitSentence(status, "exit code ")
                    )),
                    _ if follow && !o.json => warn(format_args!(
                        "nanostar: {name} is not running: nothing to follow"
                    )),
                    _ => {}
                }
                return Ok(0);
            }
            reply => return Ok(otherwise(o, &o.subject, &reply)),
        }
    }
}

pub(super) fn notifications(c: &mut Connection, o: &Options) -> Result<u8, ClientError> {
    let id = c.request(Request::Subscribe)?;
    let refused = match c.reply(id)? {
        Reply::Ok => None,
        reply => Some(otherwise(o, &o.subject, &reply)),
    };
    if let Some(code) = refused {
        return Ok(code);
    }
    loop {
        let Message::Notification(n) = c.receive()? else {
            continue;
        };
        let (what, p) = match n {
            Notification::Installed { package, .. } => ("installed", Some(package)),
            Notification::Uninstalled(p) => ("uninstalled", Some(p)),
            Notification::Mounted(p) => ("mounted", Some(p)),
            Notification::Umounted(p) => ("umounted", Some(p)),
            Notification::ShuttingDown => ("shutting-down", None),
            Notification::Started { package, .. } => ("started", Some(package)),
            Notification::Exited { package, .. } => ("exited", Some(package)),
            Notification::OutOfMemory(p) => ("out-of-memory", Some(p)),
            Notification::GaveUp { package, .. } => ("gave-up", Some(package)),
        };
        let mut w = Writer::stdout();
        let _ = match (o.json, p) {
            (true, Some(p)) => write!(
                w,
                "{{\"event\":\"{what}\",\"name\":\"{}\",\"version\":\"{}\"",
                p.name, p.version
            ),
            (true, None) => write!(w, "{{\"event\":\"{what}\""),
            (false, Some(p)) => write!(w, "{what} {} {}", p.name, p.version),
            (false, None) => w.write_str(what),
        };
        // The event's other fields.
        let _ = match (o.json, n) {
            (true, Notification::Started { pid, .. }) => write!(w, ",\"pid\":{pid}"),
            (false, Notification::Started { pid, .. }) => write!(w, ": pid {pid}"),
            (true, Notification::Exited { status, .. }) => {
                write!(w, ",\"exit\":{}", ExitJson(status))
            }
            (false, Notification::Exited { status, .. }) => {
                write!(w, ": {}", ExitSentence(status, "code "))
            }
            (
                true,
                Notification::GaveUp {
                    restarts, status, ..
                },
            ) => write!(w, ",\"restarts\":{restarts},\"exit\":{}", ExitJson(status)),
            (
                false,
                Notification::GaveUp {
                    restarts, status, ..
                },
            ) => write!(
                w,
                " after {restarts} restarts: {}",
                ExitSentence(status, "code ")
            ),
            (false, Notification::Installed { repository, .. }) => {
                write!(w, " into {repository}")
            }
            _ => Ok(()),
        };
        let _ = w.write_str(if o.json { "}\n" } else { "\n" });
        drop(w);
        if matches!(n, Notification::ShuttingDown) {
            return Ok(0);
        }
    }
}
