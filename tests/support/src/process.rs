//! Child processes that never outlive their test (the `popguard` binary under test, mostly), and loopback ports.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a killed child gets to be reaped before we give up waiting (it was sent SIGKILL, so this is only a
/// guard against a wedged kernel).
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of a child's stderr shown when a test fails.
const STDERR_TAIL_LINES: usize = 60;

/// The binary under test, `target/<profile>/popguard`. Cargo builds it for every integration test and benchmark of
/// the popguard package, but tells only that package's own targets its path (`CARGO_BIN_EXE_popguard` at compile
/// time), not this library: the test executable runs from `target/<profile>/deps/`, so the binary is one level up.
pub fn popguard_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_popguard") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("cannot tell where the test executable is: {e}"));
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or_else(|| {
        panic!(
            "test executable {} is not in target/<profile>/deps",
            exe.display()
        )
    });
    let bin = profile_dir.join("popguard");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests and benchmarks through cargo (`cargo test`), which builds it",
        bin.display()
    );
    bin
}

/// Starts `popguard ARGS...` with stdin closed and stdout/stderr captured to files; see [`ChildGuard`].
pub fn spawn<I, S>(args: I) -> ChildGuard
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(popguard_bin());
    cmd.args(args);
    spawn_command(cmd)
}

/// Starts any prepared command the same way as [`spawn`] (stdin, stdout and stderr are replaced).
pub fn spawn_command(mut cmd: Command) -> ChildGuard {
    let dir = tempfile::Builder::new()
        .prefix("pgchild")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot make a temp dir for a child's output: {e}"));
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let open = |p: &PathBuf| {
        File::create(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()))
    };
    let name = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(open(&stdout_path))
        .stderr(open(&stderr_path))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    ChildGuard {
        child,
        name,
        stdout_path,
        stderr_path,
        _dir: dir,
    }
}

/// A running child process that is killed when dropped. Its stdout and stderr go to files; when the test is
/// failing (panicking) at drop time, the tail of stderr is printed so the failure shows what the child said.
pub struct ChildGuard {
    child: Child,
    name: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout_path).unwrap_or_default()).into_owned()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// The exit status if the child has already exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.wait_timeout(REAP_TIMEOUT);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let stderr = self.stderr();
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
            eprintln!(
                "---- stderr of {} (last {} lines) ----",
                self.name,
                tail.len()
            );
            for line in tail {
                eprintln!("{line}");
            }
            eprintln!("---- end of stderr ----");
        }
    }
}

/// A loopback port that was free a moment ago (bind port 0, read it, release it). Prefer binding port 0 and
/// passing the listener; use this only for programs that must be told a port number.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
}

/// Waits until something accepts TCP connections on `addr`; false if `timeout` passes first.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
