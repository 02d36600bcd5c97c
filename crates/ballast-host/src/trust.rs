//! Who could have written a plugin file: checked before `dlopen` runs any of its code.
//!
//! Loading a native plugin runs its code inside the daemon, so the file must be as trustworthy as
//! the daemon's own binary. The rule is the one ssh applies to private keys (`StrictModes`): the
//! file, its directory and every directory above them must be owned by root or by the daemon's
//! user, and writable by no one but their owner. A directory above the file's own directory may
//! be world-writable if it has the sticky bit (like `/tmp`): there nobody can rename or delete
//! another user's entries. Both the path as configured and the path with every symlink resolved
//! are checked, so a symlink in a writable directory cannot redirect the load either.
//!
//! Access control lists and Linux capabilities are not looked at: the mode bits and owners are
//! what this checks, as ssh does.

use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The write bits for group and others.
const GROUP_OTHER_WRITE: u32 = 0o022;
/// The sticky bit.
const STICKY: u32 = 0o1000;

/// Which users a plugin file may come from: root and the daemon's own user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileTrust {
    daemon_uid: u32,
}

impl FileTrust {
    /// Trusts root and the effective user of this process.
    pub fn current() -> FileTrust {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        FileTrust {
            daemon_uid: unsafe { libc::geteuid() },
        }
    }

    /// Trusts root and `uid`, as a daemon running as `uid` would (for tests and tools that check
    /// on behalf of another user).
    pub fn for_uid(uid: u32) -> FileTrust {
        FileTrust { daemon_uid: uid }
    }

    /// Checks that only root or the daemon's user can have written `path` (a plugin file): see
    /// the module docs for the rule. Returns the first problem found, closest to the file first.
    pub fn check(&self, path: &Path) -> Result<(), UntrustedPath> {
        let absolute = if path.is_absolute() {
            path.to_owned()
        } else {
            std::env::current_dir()
                .map_err(|error| self.unreadable(path, &error))?
                .join(path)
        };
        let resolved =
            std::fs::canonicalize(&absolute).map_err(|error| self.unreadable(&absolute, &error))?;
        // The file itself, then its directory (strict), then every directory above it.
        self.check_one(&resolved, Role::File)?;
        let mut seen = BTreeSet::new();
        for file in [&resolved, &absolute] {
            for (depth, dir) in file.ancestors().skip(1).enumerate() {
                if !seen.insert(dir.to_owned()) {
                    continue;
                }
                let role = if depth == 0 {
                    Role::OwnDirectory
                } else {
                    Role::Ancestor
                };
                self.check_one(dir, role)?;
            }
        }
        Ok(())
    }

    fn check_one(&self, path: &Path, role: Role) -> Result<(), UntrustedPath> {
        let metadata = std::fs::metadata(path).map_err(|error| self.unreadable(path, &error))?;
        let mode = metadata.mode() & 0o7777;
        let owner = metadata.uid();
        let problem = if owner != 0 && owner != self.daemon_uid {
            Some(Problem::Owner)
        } else if mode & GROUP_OTHER_WRITE != 0
            && !(role == Role::Ancestor && metadata.is_dir() && mode & STICKY != 0)
        {
            Some(Problem::Writable)
        } else {
            None
        };
        match problem {
            None => Ok(()),
            Some(problem) => Err(UntrustedPath {
                path: path.to_owned(),
                is_dir: metadata.is_dir(),
                mode,
                owner,
                daemon_uid: self.daemon_uid,
                problem,
            }),
        }
    }

    fn unreadable(&self, path: &Path, error: &std::io::Error) -> UntrustedPath {
        UntrustedPath {
            path: path.to_owned(),
            is_dir: false,
            mode: 0,
            owner: 0,
            daemon_uid: self.daemon_uid,
            problem: Problem::Unreadable(error.to_string()),
        }
    }
}

/// Where a path sits relative to the plugin file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The plugin file.
    File,
    /// The directory holding it: never writable by others, sticky or not.
    OwnDirectory,
    /// A directory further up: writable by others only with the sticky bit.
    Ancestor,
}

/// What is wrong with a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Owned by a user who is neither root nor the daemon's user.
    Owner,
    /// Writable by its group or by others.
    Writable,
    /// Its owner and mode cannot be read.
    Unreadable(String),
}

/// A plugin file, or a directory above it, that someone besides root and the daemon's user could
/// have written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct UntrustedPath {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Its permission bits (with setuid, setgid and sticky).
    pub mode: u32,
    /// Its owner's uid.
    pub owner: u32,
    /// The daemon's uid.
    pub daemon_uid: u32,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for UntrustedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.is_dir { "directory" } else { "file" };
        let path = self.path.display();
        let (mode, owner) = (self.mode, self.owner);
        match &self.problem {
            Problem::Unreadable(error) => {
                write!(f, "cannot check who may write {path}: {error}")
            }
            Problem::Owner => write!(
                f,
                "{what} {path} (mode {mode:04o}) is owned by uid {owner}, who is neither root nor the daemon's user (uid {}): that user may rewrite it; make root or uid {} its owner",
                self.daemon_uid, self.daemon_uid
            ),
            Problem::Writable => {
                let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                    (true, true) => "its group and all other users",
                    (true, false) => "its group",
                    _ => "all other users",
                };
                write!(
                    f,
                    "{what} {path} (mode {mode:04o}, owner uid {owner}) is writable by {who}, so someone other than its owner may change the plugin; run `chmod go-w {path}`"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A plugin file in a private directory (under the system's temp directory), owned by the
    /// user running the tests.
    fn plugin_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let file = dir.path().join("libplugin.so");
        std::fs::write(&file, b"\x7fELF").unwrap();
        chmod(&file, 0o644);
        (dir, file)
    }

    fn me() -> FileTrust {
        FileTrust::current()
    }

    #[test]
    fn a_file_only_its_owner_may_write_is_trusted() {
        let (_dir, file) = plugin_file();
        assert_eq!(me().check(&file), Ok(()));
        chmod(&file, 0o755);
        assert_eq!(me().check(&file), Ok(()));
    }

    #[test]
    fn a_file_writable_by_group_or_others_is_refused_with_its_mode_and_who_may_write() {
        let (_dir, file) = plugin_file();
        for (mode, who) in [
            (0o664, "writable by its group,"),
            (0o646, "writable by all other users"),
            (0o666, "writable by its group and all other users"),
        ] {
            chmod(&file, mode);
            let error = me().check(&file).unwrap_err();
            assert_eq!(error.problem, Problem::Writable);
            assert_eq!(error.path, file);
            let text = error.to_string();
            assert!(
                text.starts_with(&format!("file {}", file.display())),
                "{text}"
            );
            assert!(text.contains(&format!("(mode {mode:04o}")), "{text}");
            assert!(text.contains(who), "{text}");
            assert!(text.contains("chmod go-w"), "{text}");
        }
    }

    #[test]
    fn a_writable_directory_is_refused_even_with_the_sticky_bit() {
        let (dir, file) = plugin_file();
        for mode in [0o775, 0o757, 0o1777] {
            chmod(dir.path(), mode);
            let error = me().check(&file).unwrap_err();
            assert_eq!(error.path, dir.path());
            assert!(error.is_dir);
            let text = error.to_string();
            assert!(
                text.starts_with(&format!("directory {}", dir.path().display())),
                "{text}"
            );
            assert!(text.contains(&format!("mode {mode:04o}")), "{text}");
        }
    }

    #[test]
    fn a_writable_directory_further_up_is_refused_unless_sticky() {
        let top = tempfile::tempdir().unwrap();
        let middle = top.path().join("shared");
        let own = middle.join("plugins");
        std::fs::create_dir_all(&own).unwrap();
        chmod(top.path(), 0o755);
        chmod(&own, 0o755);
        let file = own.join("libplugin.so");
        std::fs::write(&file, b"x").unwrap();
        chmod(&file, 0o644);
        chmod(&middle, 0o777);
        let error = me().check(&file).unwrap_err();
        assert_eq!(error.path, middle);
        assert_eq!(error.problem, Problem::Writable);
        // Sticky, like /tmp: nobody can rename another user's `plugins` away.
        chmod(&middle, 0o1777);
        assert_eq!(me().check(&file), Ok(()));
    }

    #[test]
    fn a_symlink_in_a_writable_directory_is_refused_though_its_target_is_safe() {
        let (_dir, file) = plugin_file();
        let open = tempfile::tempdir().unwrap();
        let link = open.path().join("libplugin.so");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        chmod(open.path(), 0o755);
        assert_eq!(me().check(&link), Ok(()));
        chmod(open.path(), 0o777);
        let error = me().check(&link).unwrap_err();
        assert_eq!(error.path, open.path());
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused_unless_that_user_runs_the_daemon() {
        let (dir, file) = plugin_file();
        let owner = std::fs::metadata(&file).unwrap().uid();
        if owner != 0 {
            // Not root: pretend the daemon runs as someone else.
            let error = FileTrust::for_uid(owner + 1).check(&file).unwrap_err();
            assert_eq!(error.problem, Problem::Owner);
            assert!(error.to_string().contains(&format!("owned by uid {owner}")));
            return;
        }
        // As root, hand the file and its directory to another user.
        let other = 4242;
        std::os::unix::fs::chown(&file, Some(other), None).unwrap();
        let error = FileTrust::for_uid(0).check(&file).unwrap_err();
        assert_eq!(error.problem, Problem::Owner);
        assert_eq!(error.path, file);
        let text = error.to_string();
        assert!(
            text.contains("owned by uid 4242, who is neither root nor the daemon's user (uid 0)"),
            "{text}"
        );
        // A daemon running as that user trusts its own file.
        assert_eq!(FileTrust::for_uid(other).check(&file), Ok(()));
        // Root-owned directories are trusted by every daemon; another user's are not.
        std::os::unix::fs::chown(dir.path(), Some(other + 1), None).unwrap();
        let error = FileTrust::for_uid(other).check(&file).unwrap_err();
        assert_eq!(error.path, dir.path());
        assert_eq!(error.problem, Problem::Owner);
    }

    #[test]
    fn a_missing_file_cannot_be_checked() {
        let error = me()
            .check(Path::new("/nonexistent/libghost.so"))
            .unwrap_err();
        assert!(matches!(error.problem, Problem::Unreadable(_)));
        assert!(error.to_string().contains("/nonexistent/libghost.so"));
    }
}
