//! Reading one small file into a reused buffer, with errors that name the file.

use std::fs::File;
use std::io::Read;
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

/// A file the monitor reads on every sample: its path and its name for messages.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) name: String,
}

impl Source {
    pub(crate) fn new(path: PathBuf) -> Self {
        let name = path.display().to_string();
        Source { path, name }
    }

    pub(crate) fn under(root: &Path, relative: &str) -> Self {
        Source::new(root.join(relative))
    }

    /// Reads the whole file into `buf`, replacing what was there.
    pub(crate) fn read<'b>(&self, buf: &'b mut String) -> Result<&'b str, SampleError> {
        buf.clear();
        let result = File::open(&self.path).and_then(|mut f| f.read_to_string(buf));
        match result {
            Ok(_) => Ok(buf.as_str()),
            Err(source) => Err(SampleError::Read {
                file: self.name.clone(),
                source,
            }),
        }
    }

    /// Reads the file and parses it with `parse`.
    pub(crate) fn parse<T>(
        &self,
        buf: &mut String,
        parse: impl FnOnce(&str, &str) -> Result<T, ParseError>,
    ) -> Result<T, SampleError> {
        let text = self.read(buf)?;
        Ok(parse(&self.name, text)?)
    }
}
