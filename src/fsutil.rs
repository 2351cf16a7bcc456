//! Owner-only files and directories, per-user directory names, and the one crash-safe atomic file replace.
//!
//! Imports nothing of ours, so every layer that keeps state on disk (filter, store, client) can use it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Per-user state (scanned mail in the quarantine, verdicts, word statistics) is private to its owner: directories
/// are created `0700` and files `0600`, whatever the umask.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// See [`PRIVATE_DIR_MODE`].
const PRIVATE_FILE_MODE: u32 = 0o600;

/// `create_dir_all` with owner-only permissions on every directory it creates (existing ones are left alone).
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut b = DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, PRIVATE_DIR_MODE);
    b.create(dir)
}

/// `OpenOptions` whose newly created files are owner-only (existing files keep their mode).
pub fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, PRIVATE_FILE_MODE);
    o
}

/// The directory holding one user's state: `DATA_DIR/users/NAME`, with the name reduced to a safe file name so a
/// login such as `../x` or `a/b@host` cannot escape the data directory.
pub fn user_dir(data_dir: &Path, user: &str) -> PathBuf {
    data_dir.join("users").join(safe_name(user))
}

/// Maps a login name to a file-name-safe form: ASCII alphanumerics and `._-@+` kept, everything else `%XX`,
/// and a leading dot escaped so names like `..` are harmless.
pub fn safe_name(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for (i, b) in user.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'-' | b'@' | b'+')
            || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// The directory a file lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Start of the name of every temporary file [`write_atomic`] makes for `path` (`.NAME.tmp-`), so a writer that
/// crashed can be cleaned up after with [`remove_stale_temps`].
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp-")
}

/// Crash-safe replace of `path` with `bytes`: see [`write_atomic_with`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Crash-safe replace: `write` fills a new owner-only temporary file in the same directory (a rename never crosses
/// file systems), which is fsynced, renamed over `path`, and the directory fsynced so the rename itself is durable.
/// A reader sees the old file or the new one, never a mix; a crash leaves the old file and at most a stray
/// temporary file. On error the temporary file is removed and `path` is untouched.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent_dir(path);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // pid and time make the name unique among concurrent writers; `create_new` refuses to reuse one anyway.
    let tmp = dir.join(format!(
        "{}{}-{nanos}",
        temp_prefix(path),
        std::process::id()
    ));
    let result = (|| -> io::Result<()> {
        let mut f = private_file().write(true).create_new(true).open(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Not every platform can open or sync a directory; the data itself is already safe, hence no error.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes temporary files left beside `path` by [`write_atomic`] calls that crashed. Call it only while no other
/// writer of `path` can be running (with the writers' lock held), or a live writer's file disappears.
pub fn remove_stale_temps(path: &Path) {
    let dir = parent_dir(path);
    if path.file_name().is_none() {
        return;
    }
    let prefix = temp_prefix(path);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_cannot_escape_the_data_dir() {
        assert_eq!(safe_name("alice"), "alice");
        assert_eq!(safe_name("bob@example.org"), "bob@example.org");
        assert_eq!(safe_name(".."), "%2E.");
        assert_eq!(safe_name("a/b"), "a%2Fb");
        assert_eq!(safe_name(""), "%00");
        let d = user_dir(Path::new("/data"), "../../etc");
        assert!(d.starts_with("/data/users"));
        assert_eq!(
            d.components().count(),
            Path::new("/data/users/x").components().count()
        );
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["state"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, PRIVATE_FILE_MODE);
        }
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_removes_its_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("simulated failure mid-write"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("simulated"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["state"]);
    }

    #[test]
    fn stale_temps_of_crashed_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        std::fs::write(&path, b"x").unwrap();
        std::fs::write(dir.path().join(".tokens.db.tmp-1-2"), b"torn").unwrap();
        std::fs::write(dir.path().join(".other.tmp-1-2"), b"keep").unwrap();
        remove_stale_temps(&path);
        assert_eq!(names(dir.path()), [".other.tmp-1-2", "tokens.db"]);
    }
}
