//! Clients that pipeline and do not read: the built-in server and the proxy must keep answering every complete
//! command while half of the next one waits in their read buffer, and must not hold the replies in memory — past
//! the stream's high-water mark a reply waits on TCP backpressure instead. Each flood is bounded in commands and
//! time, and the process's resident memory is checked before and after.

use std::sync::Arc;
use std::time::Duration;

use popguard::server::users::Users;
use popguard::server::{ServerConfig, run};
use popguard_test_support::fake::{Behaviour, Fake, mixed};
use popguard_test_support::with_timeout;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

/// Every test's upper bound.
const TEST_SECS: u64 = 20;

/// Commands per flood: enough that replies held in memory show (the RETR flood would queue 80 MB), few enough to
/// finish in seconds.
const COMMANDS: usize = 20_000;

/// Complete commands per write; each write also ends with half of the next command.
const PER_WRITE: usize = 50;

/// How long the client sends without reading anything.
const PAUSE: Duration = Duration::from_millis(1500);

/// Resident memory the process may grow by during a flood. Replies waiting on a peer that does not read are
/// bounded by the stream's high-water mark per connection; the rest is socket buffers and the test's own reading.
const MAX_GROWTH_KB: u64 = 64 * 1024;

/// The size of the message the RETR floods fetch.
const MESSAGE_SIZE: usize = 4096;

/// This process's resident set in kB (`VmRSS` in /proc/self/status).
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn message() -> Vec<u8> {
    let mut m = b"From: flood@example.org\r\nSubject: flood\r\n\r\n".to_vec();
    while m.len() < MESSAGE_SIZE {
        m.extend_from_slice(b"a line of the message body, with .dots. and nothing else to say\r\n");
    }
    m
}

/// The built-in server on loopback with one maildrop (alice/secret) holding [`message`]; stops when dropped.
struct Server {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("alice");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(drop.join(sub)).unwrap();
    }
    std::fs::write(drop.join("new/1700000001.A.host"), message()).unwrap();
    let users = Users::parse("alice:secret\n").unwrap();
    let mut config = ServerConfig::new(dir.path(), users);
    config.auth_failure_delay = Duration::from_millis(10);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(run(listener, Arc::new(config), async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        _dir: dir,
        _stop: stop,
    }
}

struct Conn {
    r: Reader,
    w: OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Conn {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut r = Reader(BufReader::new(r));
        let greeting = r.line().await;
        assert!(greeting.starts_with(b"+OK"), "{greeting:?}");
        Conn { r, w }
    }

    async fn ok(&mut self, command: &str) {
        self.w
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        let r = self.r.line().await;
        assert!(r.starts_with(b"+OK"), "{command}: {r:?}");
    }
}

struct Reader(BufReader<OwnedReadHalf>);

impl Reader {
    /// One line with its line end; empty when the peer closed.
    async fn line(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        // A reset when the peer closed with our commands unread is a close too.
        let _ = self.0.read_until(b'\n', &mut buf).await;
        buf
    }

    /// One whole reply as it is on the wire: the status line, and for `+OK` to a multi-line command its body
    /// up to the terminator. Empty when the peer closed first.
    async fn reply(&mut self, multiline: bool) -> Vec<u8> {
        let mut out = self.line().await;
        if multiline && out.starts_with(b"+OK") {
            loop {
                let line = self.line().await;
                assert!(!line.is_empty(), "closed inside a multi-line reply");
                out.extend_from_slice(&line);
                if line == b".\r\n" {
                    break;
                }
            }
        }
        out
    }
}

/// What a flood saw.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Every complete command got its reply, in order, and the session went on.
    Answered,
    /// The peer closed after this many replies (all in order): allowed, it is one way of refusing the flood.
    Closed(usize),
}

/// Sends [`COMMANDS`] copies of `command` in writes of [`PER_WRITE`] complete commands plus half of the next one,
/// reading nothing for [`PAUSE`]; then reads the replies, each of which must equal the first. With every reply
/// in, the half command is completed and QUIT sent: the last command and QUIT must be answered too. Asserts the
/// process's resident memory grew by less than [`MAX_GROWTH_KB`].
async fn flood(c: Conn, command: &str, multiline: bool) -> Outcome {
    let wire = format!("{command}\r\n").into_bytes();
    let (head, tail) = wire.split_at(wire.len() / 2);
    let (head, tail) = (head.to_vec(), tail.to_vec());
    let before = rss_kb();

    let Conn { mut r, mut w } = c;
    let writer = {
        let (head, tail, wire) = (head.clone(), tail.clone(), wire.clone());
        tokio::spawn(async move {
            let mut left = COMMANDS;
            let mut first = true;
            while left > 0 {
                let n = left.min(PER_WRITE);
                let mut piece = Vec::with_capacity((n + 1) * wire.len());
                if !first {
                    piece.extend_from_slice(&tail);
                }
                // The previous write's half command counts as one of this write's complete commands.
                let whole = if first { n } else { n - 1 };
                for _ in 0..whole {
                    piece.extend_from_slice(&wire);
                }
                piece.extend_from_slice(&head);
                if w.write_all(&piece).await.is_err() {
                    return (w, false);
                }
                first = false;
                left -= n;
            }
            (w, true)
        })
    };

    // A client that does not read. A server that holds replies in memory has them all queued by now.
    tokio::time::sleep(PAUSE).await;
    let paused = rss_kb();

    let mut peak = paused;
    let first = r.reply(multiline).await;
    if first.is_empty() {
        return Outcome::Closed(0);
    }
    for i in 1..COMMANDS {
        let mut next = vec![0; first.len()];
        if r.0.read_exact(&mut next).await.is_err() {
            return Outcome::Closed(i);
        }
        assert_eq!(next, first, "reply {} differs from the first", i + 1);
        if i % 1000 == 0 {
            peak = peak.max(rss_kb());
        }
    }
    let (mut w, all_sent) = writer.await.unwrap();
    assert!(
        all_sent,
        "the peer stopped reading but answered every command"
    );

    // Every reply is in while half a command waits; the rest of it, and QUIT, are answered too.
    let mut rest = tail.clone();
    rest.extend_from_slice(b"QUIT\r\n");
    w.write_all(&rest).await.unwrap();
    assert_eq!(r.reply(multiline).await, first, "the completed command");
    let bye = r.line().await;
    assert!(bye.starts_with(b"+OK"), "QUIT: {bye:?}");

    let growth = peak.saturating_sub(before);
    eprintln!(
        "{command} flood: VmRSS {before} kB before, {paused} kB after the pause, peak {peak} kB while reading"
    );
    assert!(
        growth < MAX_GROWTH_KB,
        "{command} flood: resident memory grew by {growth} kB (limit {MAX_GROWTH_KB} kB)"
    );
    Outcome::Answered
}

#[tokio::test]
async fn server_before_login_answers_a_half_command_capa_flood() {
    with_timeout(TEST_SECS, async {
        let s = server().await;
        let c = Conn::open(s.addr).await;
        assert_eq!(flood(c, "CAPA", true).await, Outcome::Answered);
    })
    .await
}

#[tokio::test]
async fn server_after_login_answers_a_half_command_retr_flood() {
    with_timeout(TEST_SECS, async {
        let s = server().await;
        let mut c = Conn::open(s.addr).await;
        c.ok("USER alice").await;
        c.ok("PASS secret").await;
        assert_eq!(flood(c, "RETR 1", true).await, Outcome::Answered);
    })
    .await
}

#[tokio::test]
async fn proxy_before_login_answers_a_half_command_list_flood() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let proxy = fake.proxy(dir.path(), "tag").start().await;
        let c = Conn::open(proxy.addr).await;
        // LIST is refused before login: one `-ERR` line per command.
        assert_eq!(flood(c, "LIST", false).await, Outcome::Answered);
    })
    .await
}

#[tokio::test]
async fn proxy_before_login_answers_a_list_flood_with_the_built_in_server_upstream() {
    with_timeout(TEST_SECS, async {
        let s = server().await;
        let proxy = popguard_test_support::ProxyBuilder::new(s.addr)
            .upstream_tls("none")
            .fixed_scorer()
            .start()
            .await;
        let c = Conn::open(proxy.addr).await;
        assert_eq!(flood(c, "LIST", false).await, Outcome::Answered);
    })
    .await
}
