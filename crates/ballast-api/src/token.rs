//! The API's bearer token file, read the same way by the daemon and by its clients.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a token file cannot be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be read.
    #[error("cannot read the API token file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is a directory, a device, ...
    #[error("the API token file {} is not a regular file", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// Group or others may read or write it.
    #[error(
        "the API token file {} has mode {mode:04o}: it must not be readable or writable by group or others (run `chmod 600 {}`)",
        path.display(),
        path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It holds nothing but whitespace.
    #[error("the API token file {} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The token has whitespace or control characters inside it.
    #[error(
        "the API token in {} contains whitespace or control characters; write the token alone on one line",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

/// Reads the bearer token from `path`. Like ssh with a private key, refuses a file that group or
/// others may read or write, and refuses an empty one. Surrounding whitespace is trimmed.
pub fn load_token(path: &Path) -> Result<String, TokenError> {
    let read = |source| TokenError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read)?;
    if !metadata.is_file() {
        return Err(TokenError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_owned(),
        });
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenError::Malformed {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn token_files_readable_by_others_or_empty_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_token(&path).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("mode 0644"), "{error}");
        assert!(error.contains("chmod 600"), "{error}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_token(&path).unwrap(), "s3cret");

        std::fs::write(&path, " \n").unwrap();
        let error = load_token(&path).unwrap_err().to_string();
        assert!(error.contains("is empty"), "{error}");

        let error = load_token(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{error:#}").contains("cannot read the API token file"));
    }

    #[test]
    fn a_private_file_gives_its_trimmed_token() {
        let (_dir, path) = file("  s3cret\n", 0o600);
        assert_eq!(load_token(&path).unwrap(), "s3cret");
    }

    #[test]
    fn every_bad_file_is_refused_naming_it() {
        let (_dir, path) = file("s3cret", 0o640);
        let error = load_token(&path).unwrap_err().to_string();
        assert!(error.contains("has mode 0640"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");

        let (_dir, path) = file(" \n", 0o600);
        assert!(matches!(load_token(&path), Err(TokenError::Empty { .. })));

        let (_dir, path) = file("two words", 0o600);
        assert!(matches!(
            load_token(&path),
            Err(TokenError::Malformed { .. })
        ));

        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_token(&dir.path().join("missing")),
            Err(TokenError::Read { .. })
        ));
        assert!(matches!(
            load_token(dir.path()),
            Err(TokenError::NotAFile { .. })
        ));
    }
}
