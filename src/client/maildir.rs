//! Safe delivery into a maildir (the qmail convention): write tmp/UNIQUE, fsync it, link it into new/, fsync new/.
//! A message is in new/ complete or not at all, whatever crashes in between.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncWriteExt, BufWriter};

/// Write buffer per message file: big enough that a long message costs few syscalls.
const WRITE_BUFFER: usize = 64 * 1024;

/// How many names we try when a unique name is unexpectedly taken (another deliverer with our pid after a restart,
/// or a clock step backwards) before giving up.
const NAME_ATTEMPTS: u32 = 100;

/// Deliveries by this process, part of every unique name (the maildir spec's "Q" field).
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// A maildir: `root/{tmp,new,cur}`.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// Opens a maildir, creating it and its three subdirectories (mode 0700) when missing.
    pub fn open_or_create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for sub in ["tmp", "new", "cur"] {
            create_private_dir(&root.join(sub))?;
        }
        Ok(Maildir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts a delivery: a new file in tmp/ with a name no other delivery uses.
    pub async fn begin(&self) -> io::Result<Delivery> {
        let mut last_err = None;
        for _ in 0..NAME_ATTEMPTS {
            let name = unique_name();
            let tmp_path = self.root.join("tmp").join(&name);
            let mut options = tokio::fs::OpenOptions::new();
            options.write(true).create_new(true);
            // Mail is private: owner-only, like the directories.
            #[cfg(unix)]
            options.mode(0o600);
            match options.open(&tmp_path).await {
                Ok(file) => {
                    return Ok(Delivery {
                        file: BufWriter::with_capacity(WRITE_BUFFER, file),
                        tmp_path: Some(tmp_path),
                        new_path: self.root.join("new").join(&name),
                        new_dir: self.root.join("new"),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no unique file name found")))
    }
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path)
}

/// `SECONDS.MmicrosPpidQcount.host`, the unique-name form of the maildir specification; the host part has `/` and
/// `:` escaped as the spec asks, because `/` splits paths and `:` starts the info suffix.
fn unique_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let q = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        q,
        host_name()
    )
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let raw = raw.trim();
    let raw = if raw.is_empty() { "localhost" } else { raw };
    raw.replace('/', "\\057").replace(':', "\\072")
}

/// One message being written; dropped without [`Delivery::commit`] it removes its tmp file.
pub struct Delivery {
    file: BufWriter<tokio::fs::File>,
    tmp_path: Option<PathBuf>,
    new_path: PathBuf,
    new_dir: PathBuf,
}

impl Delivery {
    /// Where the message bytes go.
    pub fn writer(&mut self) -> &mut BufWriter<tokio::fs::File> {
        &mut self.file
    }

    /// Makes the message durable and visible: fsync the file, link it into new/, remove the tmp name, fsync new/.
    pub async fn commit(mut self) -> io::Result<PathBuf> {
        self.file.flush().await?;
        self.file.get_mut().sync_all().await?;
        let Some(tmp) = self.tmp_path.clone() else {
            return Err(io::Error::other("delivery already finished"));
        };
        // link() refuses to replace an existing file, where rename() would silently overwrite a message.
        match tokio::fs::hard_link(&tmp, &self.new_path).await {
            Ok(()) => {
                self.tmp_path = None;
                tokio::fs::remove_file(&tmp).await?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            // Filesystems without hard links: rename, after checking nothing is there.
            Err(_) => {
                if tokio::fs::try_exists(&self.new_path).await? {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "maildir name already in new/",
                    ));
                }
                tokio::fs::rename(&tmp, &self.new_path).await?;
                self.tmp_path = None;
            }
        }
        sync_dir(&self.new_dir).await?;
        Ok(self.new_path.clone())
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp_path.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// fsync a directory so a new entry in it survives a crash.
pub(crate) async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commit_moves_a_complete_file_into_new_and_drop_cleans_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open_or_create(dir.path().join("Mail")).unwrap();
        let mut d = md.begin().await.unwrap();
        d.writer().write_all(b"Subject: x\n\nbody\n").await.unwrap();
        let path = d.commit().await.unwrap();
        assert_eq!(path.parent().unwrap(), md.root().join("new"));
        assert_eq!(std::fs::read(&path).unwrap(), b"Subject: x\n\nbody\n");
        assert_eq!(std::fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);

        let mut d = md.begin().await.unwrap();
        d.writer().write_all(b"half a message").await.unwrap();
        drop(d);
        assert_eq!(std::fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(md.root().join("new")).unwrap().count(), 1);
    }

    #[test]
    fn unique_names_differ_and_have_no_separators() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(!a.contains('/') && !a.contains(':'), "{a}");
    }
}
