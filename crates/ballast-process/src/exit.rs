//! How a process ended, in words: "exited with status 3", "killed by signal 11 (SIGSEGV)".

use std::fmt;
use std::os::unix::process::ExitStatusExt as _;

use serde::{Deserialize, Serialize};

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Exit {
    /// It called exit with this status.
    Status {
        /// The exit status.
        code: i32,
    },
    /// A signal ended it.
    Signal {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl Exit {
    /// From the status `wait` returned.
    pub fn from_status(status: std::process::ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Status { code },
            (None, Some(signal)) => Exit::Signal {
                signal,
                core_dumped: status.core_dumped(),
            },
            // Neither: stopped or continued, which `wait` does not report; call it status -1.
            (None, None) => Exit::Status { code: -1 },
        }
    }

    /// How it ended as the end of a sentence about the process: "exited with status 3", "was
    /// killed by signal 11 (SIGSEGV)".
    pub fn sentence(self) -> String {
        match self {
            Exit::Status { .. } => self.to_string(),
            Exit::Signal { .. } => format!("was {self}"),
        }
    }

    /// Whether it ended well (status 0).
    pub fn success(self) -> bool {
        self == Exit::Status { code: 0 }
    }
}

/// The name of signal `signal`, e.g. "SIGSEGV", or "signal 70" for one without a name.
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Status { code } => write!(f, "exited with status {code}"),
            Exit::Signal {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by signal {signal} ({})", signal_name(signal))?;
                if core_dumped {
                    f.write_str(", core dumped")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_like_a_shell_reports_them() {
        assert_eq!(Exit::Status { code: 3 }.to_string(), "exited with status 3");
        assert_eq!(
            Exit::Signal {
                signal: 11,
                core_dumped: true
            }
            .to_string(),
            "killed by signal 11 (SIGSEGV), core dumped"
        );
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(
            Exit::Signal {
                signal: 9,
                core_dumped: false
            }
            .sentence(),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(signal_name(200), "signal 200");
        assert!(Exit::Status { code: 0 }.success());
    }
}
