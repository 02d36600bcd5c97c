//! Reading one small file into a reused buffer, with errors that name the file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::parse::ParseError;

/// Why a sampler could not produce its reading.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// A file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but is malformed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The reading needs an earlier one to compare with (CPU use); the next sample will have it.
    #[error("{0}")]
    NotReady(&'static str),
}

impl SampleError {
    /// Whether the error is a file that does not exist (e.g. a kernel without PSI).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SampleError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A file the monitor reads on every sample: its path, its name for messages, and (once opened)
/// the open file and a buffer for its text.
///
/// The file stays open between samples and is read with `pread` at offset 0: proc, sys and PSI
/// files regenerate their content on each read from the start, and this saves an open and a
/// close per file per sample. After a failed read the file is closed and opened again next time
/// (a cgroup may have been removed and re-created).
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) name: String,
    file: Option<File>,
    buf: Vec<u8>,
}

/// Files larger than this are not read whole (no file the monitor reads comes close).
const MAX_FILE: usize = 1 << 20;

impl Source {
    pub(crate) fn new(path: PathBuf) -> Self {
        let name = path.display().to_string();
        Source {
            path,
            name,
            file: None,
            buf: Vec::new(),
        }
    }

    pub(crate) fn under(root: &Path, relative: &str) -> Self {
        Source::new(root.join(relative))
    }

    /// Reads the whole file, from its start.
    pub(crate) fn read(&mut self) -> Result<&str, SampleError> {
        match self.read_bytes() {
            Ok(len) => match std::str::from_utf8(&self.buf[..len]) {
                Ok(text) => Ok(text),
                Err(_) => Err(SampleError::Read {
                    file: self.name.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the file is not valid UTF-8",
                    ),
                }),
            },
            Err(source) => {
                self.file = None;
                Err(SampleError::Read {
                    file: self.name.clone(),
                    source,
                })
            }
        }
    }

    fn read_bytes(&mut self) -> std::io::Result<usize> {
        let file = match &mut self.file {
            Some(file) => file,
            empty => empty.insert(File::open(&self.path)?),
        };
        if self.buf.is_empty() {
            self.buf.resize(4096, 0);
        }
        // proc, sys and PSI files produce their whole text in one read when it fits (seq_file
        // fills the buffer until it is full or the text ends), so a read that returns less than
        // the buffer holds is the whole file: one system call per file in the common case.
        let mut len = 0;
        loop {
            if len == self.buf.len() {
                if len >= MAX_FILE {
                    return Ok(len);
                }
                self.buf.resize(len * 2, 0);
            }
            let n = file.read_at(&mut self.buf[len..], len as u64)?;
            len += n;
            if n == 0 || len < self.buf.len() {
                return Ok(len);
            }
        }
    }

    /// Reads the file and parses it with `parse`.
    pub(crate) fn parse<T>(
        &mut self,
        parse: impl FnOnce(&str, &str) -> Result<T, ParseError>,
    ) -> Result<T, SampleError> {
        let text = self.read()?;
        // The name is cloned out only on error; `text` borrows the buffer, not the name.
        match parse("", text) {
            Ok(value) => Ok(value),
            Err(error) => Err(SampleError::Parse(ParseError {
                file: self.name.clone(),
                problem: error.problem,
            })),
        }
    }
}
