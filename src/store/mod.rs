//! Per-user state under the data directory: token DB, verdict cache keyed by UIDL, quarantine.

pub mod quarantine;
pub mod tokens;
pub mod verdicts;

use std::fs::{DirBuilder, OpenOptions};
use std::path::{Path, PathBuf};

/// Per-user state (scanned mail in the quarantine, verdicts, word statistics) is private to its owner: directories
/// are created `0700` and files `0600`, whatever the umask.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// See [`PRIVATE_DIR_MODE`].
const PRIVATE_FILE_MODE: u32 = 0o600;

/// `create_dir_all` with owner-only permissions on every directory it creates (existing ones are left alone).
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
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
}
