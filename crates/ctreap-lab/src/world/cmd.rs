//! Running the tools users know (`ip`, `nft`, `iptables-restore`, `sysctl`, `conntrack`), so
//! every step the lab takes can be repeated by hand from its error message.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use super::Error;

/// The command line as a user would type it, for messages.
pub(crate) fn display(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(a);
        }
    }
    s
}

/// Runs `program args`, feeding `stdin` if given, and returns its output whatever its status.
pub(crate) fn output(program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, Error> {
    let command = display(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes())
            .map_err(|source| Error::Io {
                context: format!("writing the input of `{command}`"),
                source,
            })?;
    }
    child.wait_with_output().map_err(|source| Error::Io {
        context: format!("waiting for `{command}`"),
        source,
    })
}

/// Runs `program args` and returns its stdout; a non-zero exit is [`Error::Command`].
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_with_input(program, args, None)
}

/// [`run`] with `stdin`.
pub(crate) fn run_with_input(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Error> {
    let out = output(program, args, stdin)?;
    if !out.status.success() {
        return Err(Error::Command {
            command: display(program, args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip netns exec NS program args...`.
pub(crate) fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String, Error> {
    in_ns_with_input(ns, program, args, None)
}

/// `ip netns exec NS program args...` with `stdin`.
pub(crate) fn in_ns_with_input(
    ns: &str,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Error> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run_with_input("ip", &full, stdin)
}

/// `ip -n NS args...` (or `ip args...` for the calling namespace with `ns` `None`).
pub(crate) fn ip(ns: Option<&str>, args: &[&str]) -> Result<String, Error> {
    match ns {
        Some(ns) => {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            run("ip", &full)
        }
        None => run("ip", args),
    }
}
