//! The probe's commands and their arguments.

/// The usage line printed for a bad command line.
pub const USAGE: &[u8] =
    b"usage: probe [COMMAND [ARG]...]... with COMMAND one of: print TEXT | eprint TEXT | \
exit N | crash | kill-self SIG | sleep MS | pause | block-term | cat PATH | read PATH | \
write PATH TEXT | touch PATH | mkdir PATH | ls PATH | stat PATH | flood BYTES | spawn | \
clone none|user | clone3 none|user | report";

/// One command with its arguments (which live as long as the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `print TEXT`: a line on stdout.
    Print(&'static [u8]),
    /// `eprint TEXT`: a line on stderr.
    Eprint(&'static [u8]),
    /// `exit N`: exit now with code N.
    Exit(u8),
    /// `crash`: panic (exit 101 through the panic handler).
    Crash,
    /// `kill-self SIG`: send signal SIG to this process, then sleep forever.
    KillSelf(i32),
    /// `sleep MS`.
    Sleep(u64),
    /// `pause`: sleep forever.
    Pause,
    /// `block-term`: block SIGTERM.
    BlockTerm,
    /// `cat PATH`: the file's contents to stdout.
    Cat(&'static [u8]),
    /// `read PATH`: read the whole file, print `read PATH BYTES`.
    Read(&'static [u8]),
    /// `write PATH TEXT`: create or truncate (mode 0644), write TEXT and a newline.
    Write(&'static [u8], &'static [u8]),
    /// `touch PATH`: create if missing (mode 0644), set the times to now.
    Touch(&'static [u8]),
    /// `mkdir PATH` (mode 0755).
    Mkdir(&'static [u8]),
    /// `ls PATH`: `entry NAME` per entry, sorted bytewise, without `.` and `..`.
    Ls(&'static [u8]),
    /// `stat PATH`: `stat PATH uid=U gid=G mode=OCTAL`.
    Stat(&'static [u8]),
    /// `flood BYTES`: that many bytes to stdout, in 4 KiB writes.
    Flood(u64),
    /// `spawn`: fork a child that sleeps forever; print `spawned PID`.
    Spawn,
    /// `clone NS`: a raw `clone` (fork semantics) into namespace NS; the child exits at
    /// once and is reaped. Prints `clone NS ok` or `clone NS errno N`, and carries on
    /// either way: the errno is the result (what a seccomp filter answered).
    Clone(Namespace),
    /// `clone3 NS`: the same through `clone3`; prints `clone3 NS ok` or `clone3 NS errno N`.
    Clone3(Namespace),
    /// `report`: what the process sees, one `key value` per line, then `end`.
    Report,
}

/// The namespace `clone`/`clone3` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// `none`: a plain fork.
    None,
    /// `user`: `CLONE_NEWUSER`.
    User,
}

impl Namespace {
    /// The word for it on the command line and in the output.
    pub fn word(self) -> &'static [u8] {
        match self {
            Namespace::None => b"none",
            Namespace::User => b"user",
        }
    }
}

/// A word of the command line that is not a command or not a valid argument, or the
/// command whose argument is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadWord {
    /// The offending word.
    pub word: &'static [u8],
    /// True if `word` is a command whose argument is missing.
    pub missing_argument: bool,
}

impl Command {
    /// The command's name, as written on the command line.
    pub fn name(&self) -> &'static [u8] {
        match self {
            Command::Print(_) => b"print",
            Command::Eprint(_) => b"eprint",
            Command::Exit(_) => b"exit",
            Command::Crash => b"crash",
            Command::KillSelf(_) => b"kill-self",
            Command::Sleep(_) => b"sleep",
            Command::Pause => b"pause",
            Command::BlockTerm => b"block-term",
            Command::Cat(_) => b"cat",
            Command::Read(_) => b"read",
            Command::Write(..) => b"write",
            Command::Touch(_) => b"touch",
            Command::Mkdir(_) => b"mkdir",
            Command::Ls(_) => b"ls",
            Command::Stat(_) => b"stat",
            Command::Flood(_) => b"flood",
            Command::Spawn => b"spawn",
            Command::Clone(_) => b"clone",
            Command::Clone3(_) => b"clone3",
            Command::Report => b"report",
        }
    }
}

/// A command and the word an error line names: its first argument (`-` if it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The command.
    pub command: Command,
    /// Its first argument as written, or `-`.
    pub arg: &'static [u8],
}

/// The next command from `args`: `None` at the end, `Err` for a bad word.
pub fn next(args: &mut impl Iterator<Item = &'static [u8]>) -> Option<Result<Step, BadWord>> {
    let word = args.next()?;
    let missing = BadWord {
        word,
        missing_argument: true,
    };
    let mut first = None;
    let mut arg = || {
        let a = args.next().ok_or(missing)?;
        first.get_or_insert(a);
        Ok(a)
    };
    let command = (|| {
        Ok(match word {
            b"print" => Command::Print(arg()?),
            b"eprint" => Command::Eprint(arg()?),
            b"exit" => Command::Exit(parse(arg()?)?),
            b"crash" => Command::Crash,
            b"kill-self" => {
                let word = arg()?;
                let signal = parse(word)?;
                if !(1..=64).contains(&signal) {
                    return Err(BadWord {
                        word,
                        missing_argument: false,
                    });
                }
                Command::KillSelf(signal)
            }
            b"sleep" => Command::Sleep(parse(arg()?)?),
            b"pause" => Command::Pause,
            b"block-term" => Command::BlockTerm,
            b"cat" => Command::Cat(arg()?),
            b"read" => Command::Read(arg()?),
            b"write" => {
                let path = arg()?;
                Command::Write(path, arg()?)
            }
            b"touch" => Command::Touch(arg()?),
            b"mkdir" => Command::Mkdir(arg()?),
            b"ls" => Command::Ls(arg()?),
            b"stat" => Command::Stat(arg()?),
            b"flood" => Command::Flood(parse(arg()?)?),
            b"spawn" => Command::Spawn,
            b"clone" => Command::Clone(namespace(arg()?)?),
            b"clone3" => Command::Clone3(namespace(arg()?)?),
            b"report" => Command::Report,
            _ => {
                return Err(BadWord {
                    word,
                    missing_argument: false,
                });
            }
        })
    })();
    Some(command.map(|command| Step {
        command,
        arg: first.unwrap_or(b"-"),
    }))
}

/// `none` or `user`.
fn namespace(word: &'static [u8]) -> Result<Namespace, BadWord> {
    [Namespace::None, Namespace::User]
        .into_iter()
        .find(|ns| ns.word() == word)
        .ok_or(BadWord {
            word,
            missing_argument: false,
        })
}

/// A decimal number without sign that fits `T`.
fn parse<T: TryFrom<u64>>(word: &'static [u8]) -> Result<T, BadWord> {
    number(word)
        .and_then(|n| T::try_from(n).ok())
        .ok_or(BadWord {
            word,
            missing_argument: false,
        })
}

/// A decimal number without sign; `None` if empty, not decimal or over `u64::MAX`.
fn number(word: &[u8]) -> Option<u64> {
    if word.is_empty() {
        return None;
    }
    word.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(words: &[&'static str]) -> Result<Vec<Step>, BadWord> {
        let mut args = words.iter().map(|w| w.as_bytes());
        core::iter::from_fn(|| next(&mut args)).collect()
    }

    #[test]
    fn commands_take_their_arguments() {
        let steps = parse_all(&[
            "print",
            "a b",
            "write",
            "/p",
            "text",
            "exit",
            "255",
            "spawn",
            "kill-self",
            "15",
            "clone",
            "user",
            "clone3",
            "none",
        ])
        .unwrap();
        let commands: Vec<Command> = steps.iter().map(|s| s.command).collect();
        assert_eq!(
            commands,
            [
                Command::Print(b"a b"),
                Command::Write(b"/p", b"text"),
                Command::Exit(255),
                Command::Spawn,
                Command::KillSelf(15),
                Command::Clone(Namespace::User),
                Command::Clone3(Namespace::None),
            ]
        );
        let args: Vec<&[u8]> = steps.iter().map(|s| s.arg).collect();
        assert_eq!(
            args,
            [&b"a b"[..], b"/p", b"255", b"-", b"15", b"user", b"none"]
        );
        assert_eq!(parse_all(&[]), Ok(vec![]));
    }

    #[test]
    fn bad_words_are_named() {
        let bad = |word: &'static str, missing_argument| {
            Err(BadWord {
                word: word.as_bytes(),
                missing_argument,
            })
        };
        assert_eq!(parse_all(&["print", "x", "bogus"]), bad("bogus", false));
        assert_eq!(parse_all(&["print"]), bad("print", true));
        assert_eq!(parse_all(&["write", "/p"]), bad("write", true));
        assert_eq!(parse_all(&["exit", "256"]), bad("256", false));
        assert_eq!(parse_all(&["exit", "-1"]), bad("-1", false));
        assert_eq!(parse_all(&["exit", ""]), bad("", false));
        assert_eq!(parse_all(&["kill-self", "0"]), bad("0", false));
        assert_eq!(parse_all(&["kill-self", "65"]), bad("65", false));
        assert_eq!(parse_all(&["clone", "net"]), bad("net", false));
        assert_eq!(parse_all(&["clone3"]), bad("clone3", true));
        assert_eq!(
            parse_all(&["flood", "18446744073709551616"]),
            bad("18446744073709551616", false)
        );
        assert_eq!(
            parse_all(&["flood", "18446744073709551615"]).map(|s| s[0].command),
            Ok(Command::Flood(u64::MAX))
        );
    }
}
