//! Reading training mail from disk: a single `.eml` file, a directory of them (recursively), a maildir
//! (`cur/` and `new/`), or an mbox file (mboxrd `>From ` unquoting). Every message and line is size-capped.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Bytes kept of one message; the rest is skipped (training only looks at the scanned prefix anyway).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of one mbox line read at a time: longer lines are read in pieces (only line starts matter).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Directory levels descended below a given directory.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    // The cause is part of the message (not a `source`), so `{e:#}` chains do not print it twice.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: not a file, directory, maildir or mbox")]
    Unsupported { path: PathBuf },
}

fn io_err(path: &Path, error: io::Error) -> SourceError {
    SourceError::Io {
        path: path.to_owned(),
        error,
    }
}

/// One input file and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// One message per file.
    Eml(PathBuf),
    /// Many messages separated by `From ` lines.
    Mbox(PathBuf),
}

impl Input {
    pub fn path(&self) -> &Path {
        match self {
            Input::Eml(p) | Input::Mbox(p) => p,
        }
    }
}

/// A message read from an input.
#[derive(Debug)]
pub struct SourceMessage {
    /// Where it came from: the file, or `file#N` for the Nth message of an mbox.
    pub origin: String,
    pub bytes: Vec<u8>,
    /// Bytes of the input consumed for this message (for progress bars).
    pub consumed: u64,
}

/// Expands paths into inputs: directories are walked (a maildir contributes `cur/` and `new/`), files are
/// sniffed (`From ` first line = mbox). Hidden files and maildir `tmp/` are skipped.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<Input>, SourceError> {
    let mut out = Vec::new();
    for p in paths {
        for file in files(p)? {
            out.push(sniff(&file)?);
        }
    }
    Ok(out)
}

/// The files under `path` in name order (a maildir contributes `cur/` and `new/`; hidden files and maildir
/// `tmp/` are skipped), or `path` itself when it is a file. Files are not opened: `popguard score` reads
/// each one on a worker anyway.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut out = Vec::new();
    expand_one(path, 0, &mut out)?;
    Ok(out)
}

fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir() || dir.join("new").is_dir()
}

fn expand_one(path: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.is_file() {
        out.push(path.to_owned());
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(SourceError::Unsupported {
            path: path.to_owned(),
        });
    }
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let dirs: Vec<PathBuf> = if is_maildir(path) {
        ["cur", "new"]
            .iter()
            .map(|d| path.join(d))
            .filter(|d| d.is_dir())
            .collect()
    } else {
        vec![path.to_owned()]
    };
    for dir in dirs {
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| io_err(&dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            let is_tmp = e.file_name().is_some_and(|n| n == "tmp") && is_maildir(&dir);
            if !is_tmp {
                expand_one(&e, depth + 1, out)?;
            }
        }
    }
    Ok(())
}

fn sniff(path: &Path) -> Result<Input, SourceError> {
    let mut head = [0u8; 5];
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let n = read_up_to(&mut f, &mut head).map_err(|e| io_err(path, e))?;
    Ok(if &head[..n] == b"From " {
        Input::Mbox(path.to_owned())
    } else {
        Input::Eml(path.to_owned())
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Total bytes of the inputs (the length of a progress bar).
pub fn total_bytes(inputs: &[Input]) -> u64 {
    inputs
        .iter()
        .filter_map(|i| fs::metadata(i.path()).ok())
        .map(|m| m.len())
        .sum()
}

/// Reads every message of one input, calling `each` per message; stops at the first error `each` returns.
pub fn for_each_message<E: From<SourceError>>(
    input: &Input,
    mut each: impl FnMut(SourceMessage) -> Result<(), E>,
) -> Result<(), E> {
    match input {
        Input::Eml(p) => {
            let f = File::open(p).map_err(|e| io_err(p, e))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let mut bytes = Vec::with_capacity(len.min(MAX_MESSAGE_BYTES as u64) as usize);
            f.take(MAX_MESSAGE_BYTES as u64)
                .read_to_end(&mut bytes)
                .map_err(|e| io_err(p, e))?;
            each(SourceMessage {
                origin: p.display().to_string(),
                bytes,
                consumed: len,
            })
        }
        Input::Mbox(p) => {
            let f = File::open(p).map_err(|e| io_err(p, e))?;
            let mut reader = MboxReader::new(BufReader::new(f));
            let mut n = 0usize;
            while let Some(m) = reader.next_message().map_err(|e| io_err(p, e))? {
                n += 1;
                each(SourceMessage {
                    origin: format!("{}#{n}", p.display()),
                    bytes: m.0,
                    consumed: m.1,
                })?;
            }
            Ok(())
        }
    }
}

/// Splits an mbox stream into messages (the `From ` separator lines dropped, `>From ` unquoted). A stream that
/// does not start with `From ` is one message.
pub struct MboxReader<R> {
    reader: R,
    line: Vec<u8>,
    at_line_start: bool,
    /// Bytes of a separator line already read that opens the next message.
    pending_from: Option<u64>,
    done: bool,
}

impl<R: BufRead> MboxReader<R> {
    pub fn new(reader: R) -> MboxReader<R> {
        MboxReader {
            reader,
            line: Vec::new(),
            at_line_start: true,
            pending_from: None,
            done: false,
        }
    }

    /// Reads one line, or a `MAX_LINE_BYTES` piece of a longer one, into `self.line`; false at EOF.
    fn read_piece(&mut self) -> io::Result<bool> {
        self.line.clear();
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(!self.line.is_empty());
            }
            let room = MAX_LINE_BYTES - self.line.len();
            let window = &buf[..buf.len().min(room)];
            let (n, complete) = match window.iter().position(|&b| b == b'\n') {
                Some(p) => (p + 1, true),
                None => (
                    window.len(),
                    self.line.len() + window.len() >= MAX_LINE_BYTES,
                ),
            };
            self.line.extend_from_slice(&buf[..n]);
            self.reader.consume(n);
            if complete {
                return Ok(true);
            }
        }
    }

    /// The next message and the input bytes it took, or None at the end.
    pub fn next_message(&mut self) -> io::Result<Option<(Vec<u8>, u64)>> {
        if self.done {
            return Ok(None);
        }
        let mut msg = Vec::new();
        let mut consumed = 0u64;
        let mut have = false;
        if let Some(len) = self.pending_from.take() {
            consumed += len;
            have = true;
        }
        loop {
            let starts_line = self.at_line_start;
            if !self.read_piece()? {
                self.done = true;
                break;
            }
            let len = self.line.len() as u64;
            self.at_line_start = self.line.ends_with(b"\n");
            if starts_line && self.line.starts_with(b"From ") {
                if have {
                    self.pending_from = Some(len);
                    return Ok(Some((msg, consumed)));
                }
                have = true;
                consumed += len;
                continue;
            }
            have = true;
            consumed += len;
            let quoted_from = starts_line
                && self.line.first() == Some(&b'>')
                && self
                    .line
                    .iter()
                    .skip_while(|&&b| b == b'>')
                    .take(5)
                    .eq(b"From ".iter());
            let line = if quoted_from {
                &self.line[1..]
            } else {
                &self.line[..]
            };
            if msg.len() + line.len() <= MAX_MESSAGE_BYTES {
                msg.extend_from_slice(line);
            }
        }
        Ok(have.then_some((msg, consumed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(mbox: &str) -> Vec<String> {
        let mut r = MboxReader::new(io::Cursor::new(mbox.as_bytes().to_vec()));
        let mut out = Vec::new();
        while let Some((m, _)) = r.next_message().unwrap() {
            out.push(String::from_utf8(m).unwrap());
        }
        out
    }

    #[test]
    fn mbox_splits_and_unquotes() {
        let m = "From a@b Thu Jan  1 00:00:00 2002\nSubject: one\n\n>From the start\nbody\n\n\
                 From c@d Thu Jan  1 00:00:00 2002\nSubject: two\n\nx\n";
        let msgs = split(m);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert_eq!(msgs[0], "Subject: one\n\nFrom the start\nbody\n\n");
        assert_eq!(msgs[1], "Subject: two\n\nx\n");
    }

    #[test]
    fn mbox_edge_cases() {
        assert!(split("").is_empty());
        assert_eq!(split("From x\n").len(), 1);
        let long = format!(
            "From x\nSubject: y\n\n{}\nFrom z\n\nb\n",
            "a".repeat(3 * MAX_LINE_BYTES)
        );
        let msgs = split(&long);
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].len() > 3 * MAX_LINE_BYTES);
    }

    #[test]
    fn consumed_bytes_add_up() {
        let m = "From a\nS: 1\n\nx\nFrom b\nS: 2\n\ny\n";
        let mut r = MboxReader::new(io::Cursor::new(m.as_bytes().to_vec()));
        let mut total = 0;
        while let Some((_, c)) = r.next_message().unwrap() {
            total += c;
        }
        assert_eq!(total, m.len() as u64);
    }

    #[test]
    fn expand_walks_dirs_maildirs_and_sniffs_mbox() {
        let d = tempfile::tempdir().unwrap();
        let md = d.path().join("Maildir");
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(md.join(sub)).unwrap();
        }
        fs::write(md.join("cur/1:2,S"), "Subject: a\n\nx\n").unwrap();
        fs::write(md.join("new/2"), "Subject: b\n\nx\n").unwrap();
        fs::write(md.join("tmp/3"), "Subject: partial\n").unwrap();
        let plain = d.path().join("plain");
        fs::create_dir_all(plain.join("sub")).unwrap();
        fs::write(plain.join("a.eml"), "Subject: c\n\nx\n").unwrap();
        fs::write(plain.join("sub/b.mbox"), "From x\nSubject: d\n\nx\n").unwrap();
        fs::write(plain.join(".hidden"), "junk").unwrap();
        let inputs = expand(&[md.clone(), plain.clone()]).unwrap();
        assert_eq!(
            inputs,
            vec![
                Input::Eml(md.join("cur/1:2,S")),
                Input::Eml(md.join("new/2")),
                Input::Eml(plain.join("a.eml")),
                Input::Mbox(plain.join("sub/b.mbox")),
            ]
        );
        assert!(expand(&[d.path().join("missing")]).is_err());
    }
}
