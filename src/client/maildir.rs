//! Safe delivery into a maildir (the qmail convention): write tmp/UNIQUE, fsync it, link it into new/, fsync new/.
//! A message is in new/ complete or not at all, whatever crashes in between.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncWriteExt, BufWriter};

/// Messages up to this size are assembled in memory and written, fsynced and linked in one trip to the blocking
/// pool; larger ones are spooled to tmp/ as they arrive, so memory stays bounded whatever the message size.
pub const IN_MEMORY_MAX: usize = 1024 * 1024;

/// Write buffer of a spooled message file: big enough that a long message costs few system calls.
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

    /// Starts a delivery; nothing touches the disk until it outgrows [`IN_MEMORY_MAX`] or is committed.
    pub fn begin(&self) -> Delivery {
        Delivery {
            root: self.root.clone(),
            spool: Spool::Memory(Vec::new()),
            written: 0,
        }
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

/// Creates tmp/UNIQUE (owner-only: mail is private), retrying if the name is somehow taken.
fn create_tmp(root: &Path) -> io::Result<(std::fs::File, String)> {
    let mut last_err = None;
    for _ in 0..NAME_ATTEMPTS {
        let name = unique_name();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(root.join("tmp").join(&name)) {
            Ok(file) => return Ok((file, name)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no unique file name found")))
}

enum Spool {
    Memory(Vec<u8>),
    File {
        file: BufWriter<tokio::fs::File>,
        name: String,
    },
    Done,
}

/// One message being delivered. Dropped without [`Delivery::commit`], it leaves nothing behind.
pub struct Delivery {
    root: PathBuf,
    spool: Spool,
    written: u64,
}

impl Delivery {
    /// Appends message bytes.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.written += data.len() as u64;
        match &mut self.spool {
            Spool::Memory(buf) if buf.len() + data.len() <= IN_MEMORY_MAX => {
                buf.extend_from_slice(data);
                Ok(())
            }
            Spool::Memory(buf) => {
                let held = std::mem::take(buf);
                let root = self.root.clone();
                let (file, name) = blocking(move || create_tmp(&root)).await?;
                let file = BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file));
                // From here on Drop removes the file, even if the writes below fail.
                self.spool = Spool::File { file, name };
                if let Spool::File { file, .. } = &mut self.spool {
                    file.write_all(&held).await?;
                    file.write_all(data).await?;
                }
                Ok(())
            }
            Spool::File { file, .. } => file.write_all(data).await,
            Spool::Done => Err(io::Error::other("delivery already finished")),
        }
    }

    /// Octets written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Makes the message durable and visible: fsync the file, link it into new/, remove the tmp name, fsync new/.
    pub async fn commit(mut self) -> io::Result<PathBuf> {
        let root = self.root.clone();
        match std::mem::replace(&mut self.spool, Spool::Done) {
            Spool::Memory(buf) => {
                blocking(move || {
                    let (mut file, name) = create_tmp(&root)?;
                    if let Err(e) = file.write_all(&buf) {
                        let _ = std::fs::remove_file(root.join("tmp").join(&name));
                        return Err(e);
                    }
                    finish(file, &root, &name)
                })
                .await
            }
            Spool::File { mut file, name } => {
                let flushed = file.flush().await;
                let std_file = match flushed {
                    Ok(()) => file.into_inner().into_std().await,
                    Err(e) => {
                        let _ = tokio::fs::remove_file(root.join("tmp").join(&name)).await;
                        return Err(e);
                    }
                };
                blocking(move || finish(std_file, &root, &name)).await
            }
            Spool::Done => Err(io::Error::other("delivery already finished")),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Spool::File { name, .. } = &self.spool {
            let _ = std::fs::remove_file(self.root.join("tmp").join(name));
        }
    }
}

/// Runs file-system work on the blocking pool: one trip per call, which matters on a busy machine.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)))
}

/// fsync tmp/NAME, link it as new/NAME (or rename it where the filesystem has no hard links), fsync new/. On
/// failure before the message reached new/, the tmp file is removed, so nothing half-delivered stays behind.
fn finish(file: std::fs::File, root: &Path, name: &str) -> io::Result<PathBuf> {
    let tmp = root.join("tmp").join(name);
    let new_dir = root.join("new");
    let new_path = new_dir.join(name);
    let result = (|| {
        file.sync_all()?;
        // link() refuses to replace an existing file, where rename() would silently overwrite a message.
        match std::fs::hard_link(&tmp, &new_path) {
            Ok(()) => std::fs::remove_file(&tmp)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            Err(_) => {
                if std::fs::exists(&new_path)? {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "maildir name already in new/",
                    ));
                }
                std::fs::rename(&tmp, &new_path)?;
            }
        }
        std::fs::File::open(&new_dir)?.sync_all()
    })();
    match result {
        Ok(()) => Ok(new_path),
        Err(e) => {
            if !std::fs::exists(&new_path).unwrap_or(false) {
                let _ = std::fs::remove_file(&tmp);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn small_and_spooled_messages_land_whole_in_new_and_drop_cleans_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open_or_create(dir.path().join("Mail")).unwrap();
        let mut d = md.begin();
        d.write(b"Subject: x\n\nbody\n").await.unwrap();
        let path = d.commit().await.unwrap();
        assert_eq!(path.parent().unwrap(), md.root().join("new"));
        assert_eq!(std::fs::read(&path).unwrap(), b"Subject: x\n\nbody\n");

        // Past the in-memory cap the message goes to tmp/ while it arrives.
        let big: Vec<u8> = (0..IN_MEMORY_MAX + 5000)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let mut d = md.begin();
        for piece in big.chunks(7000) {
            d.write(piece).await.unwrap();
        }
        assert_eq!(count(&md.root().join("tmp")), 1, "spooled to tmp/");
        assert_eq!(d.len(), big.len() as u64);
        let path = d.commit().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), big);
        assert_eq!(count(&md.root().join("tmp")), 0);

        // Abandoned deliveries leave nothing, spooled or not.
        let mut d = md.begin();
        d.write(b"half a message").await.unwrap();
        drop(d);
        let mut d = md.begin();
        d.write(&big).await.unwrap();
        drop(d);
        assert_eq!(count(&md.root().join("tmp")), 0);
        assert_eq!(count(&md.root().join("new")), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "mail files are owner-only: {mode:o}");
        }
    }

    #[test]
    fn unique_names_differ_and_have_no_separators() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(!a.contains('/') && !a.contains(':'), "{a}");
    }
}
