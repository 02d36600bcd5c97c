//! Parsers for the /proc, PSI and cgroup files the samplers read: pure functions over strings.
//!
//! Each parser takes the file's name (for error messages only) and its text, and returns plain
//! values or a [`ParseError`] naming the file and what is wrong with it. None of them panics,
//! whatever the text: a property test feeds them arbitrary strings.

mod cgroup;
mod proc;
mod psi;

pub use cgroup::{
    CgroupEntry, parse_cfs_quota, parse_cgroup_limit, parse_cgroup_u64, parse_cpu_max,
    parse_memory_stat_key, parse_proc_cgroup, with_v2_path,
};
pub use proc::{
    CAP_SYS_RESOURCE, CpuTimes, Meminfo, ProcessTimes, StatIds, has_capability, parse_cap_eff,
    parse_loadavg, parse_meminfo, parse_proc_stat, parse_self_stat, parse_stat_ids,
};
pub use psi::parse_psi;

use std::fmt;

/// A file that could not be parsed: which file, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct ParseError {
    /// The file, as the caller named it (e.g. "/proc/pressure/memory").
    pub file: String,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file has no content.
    #[error("the file is empty")]
    Empty,
    /// Something required is not in the file.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A line is not of the expected shape.
    #[error("line {line}: expected {expected}, found `{found}`")]
    Unexpected {
        /// 1-based line number.
        line: usize,
        /// What was expected there.
        expected: &'static str,
        /// What was found (shortened).
        found: Excerpt,
    },
    /// A field is not a valid number.
    #[error("line {line}: `{field}` is not a valid number: `{value}`")]
    BadNumber {
        /// 1-based line number.
        line: usize,
        /// The field's name.
        field: &'static str,
        /// The text found (shortened).
        value: Excerpt,
    },
    /// A line or field appears twice.
    #[error("line {line}: `{what}` appears twice")]
    Duplicate {
        /// 1-based line number.
        line: usize,
        /// What is repeated.
        what: &'static str,
    },
}

/// A piece of a malformed file, cut to at most 40 characters so that errors stay short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excerpt(pub String);

impl Excerpt {
    fn new(text: &str) -> Self {
        const MAX: usize = 40;
        match text.char_indices().nth(MAX) {
            Some((end, _)) => Excerpt(format!("{}...", &text[..end])),
            None => Excerpt(text.to_owned()),
        }
    }
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn error(file: &str, problem: Problem) -> ParseError {
    ParseError {
        file: file.to_owned(),
        problem,
    }
}

fn unexpected(file: &str, line: usize, expected: &'static str, found: &str) -> ParseError {
    error(
        file,
        Problem::Unexpected {
            line,
            expected,
            found: Excerpt::new(found),
        },
    )
}

fn bad_number(file: &str, line: usize, field: &'static str, value: &str) -> ParseError {
    error(
        file,
        Problem::BadNumber {
            line,
            field,
            value: Excerpt::new(value),
        },
    )
}

fn parse_u64(file: &str, line: usize, field: &'static str, value: &str) -> Result<u64, ParseError> {
    value
        .parse::<u64>()
        .map_err(|_| bad_number(file, line, field, value))
}

/// A finite, non-negative decimal number.
fn parse_f64(file: &str, line: usize, field: &'static str, value: &str) -> Result<f64, ParseError> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(bad_number(file, line, field, value)),
    }
}
