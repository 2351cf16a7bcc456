//! One load-test POP3 session (a full mail check, or a login that then sits idle), and why a session failed.

use std::net::SocketAddr;
use std::time::Duration;

use popguard::pop3::{Command, Pop3Error, Pop3Stream, Response};
use popguard::secret::Secret;
use tokio::net::TcpStream;

/// Bound on every single step (connect, one command and its reply): a stalled target turns into a counted
/// "timeout" error instead of a hung benchmark. Long enough for a 500-session burst on a busy 2-core machine.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest LIST/UIDL body we accept; one line per message is far below this for any test mailbox.
const LISTING_LIMIT: usize = 1 << 20;

/// What one session does, besides login and QUIT.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Messages each mailbox holds; STAT, LIST and UIDL must agree with it. `None` for an external target.
    pub expect_messages: Option<u32>,
    /// How many messages to RETR (the first ones); `None` = all of them.
    pub retr: Option<u32>,
}

/// The figures of one successful session.
#[derive(Clone, Copy, Debug, Default)]
pub struct Done {
    /// Octets of message bodies received (after un-stuffing).
    pub bytes: u64,
}

/// Why a session failed. [`Failure::kind`] is the label errors are counted under.
#[derive(Debug)]
pub enum Failure {
    Connect(std::io::Error),
    Timeout(&'static str),
    /// `-ERR` to a command.
    Refused {
        stage: &'static str,
        text: String,
    },
    /// The connection broke or spoke something that is not POP3.
    Wire {
        stage: &'static str,
        error: Pop3Error,
    },
    /// A well-formed reply with the wrong content (message count, listing length).
    Mismatch {
        stage: &'static str,
        detail: String,
    },
}

impl Failure {
    /// A short label that groups failures of the same kind ("-ERR to PASS", "closed during RETR", ...).
    pub fn kind(&self) -> String {
        match self {
            Failure::Connect(e) => format!("connect: {:?}", e.kind()),
            Failure::Timeout(stage) => format!("timeout in {stage}"),
            Failure::Refused { stage, .. } => format!("-ERR to {stage}"),
            Failure::Wire { stage, error } => match error {
                Pop3Error::Closed | Pop3Error::UnexpectedEof => format!("closed during {stage}"),
                Pop3Error::Io(e) => format!("I/O error ({:?}) during {stage}", e.kind()),
                _ => format!("malformed reply to {stage}"),
            },
            Failure::Mismatch { stage, .. } => format!("wrong {stage} result"),
        }
    }

    /// The details of this one failure (shown once per kind, as an example).
    pub fn detail(&self) -> String {
        match self {
            Failure::Connect(e) => e.to_string(),
            Failure::Timeout(stage) => format!("no reply to {stage} within {STEP_TIMEOUT:?}"),
            Failure::Refused { text, .. } => format!("-ERR {text}"),
            Failure::Wire { error, .. } => error.to_string(),
            Failure::Mismatch { detail, .. } => detail.clone(),
        }
    }
}

/// Runs `fut` under [`STEP_TIMEOUT`], labelling a timeout or a wire error with `stage`.
async fn step<T>(
    stage: &'static str,
    fut: impl Future<Output = Result<T, Pop3Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => Err(Failure::Wire { stage, error }),
        Err(_) => Err(Failure::Timeout(stage)),
    }
}

/// A connected POP3 session.
pub type Conn = Pop3Stream<TcpStream>;

/// Sends `command` and reads its status line; `-ERR` is a [`Failure::Refused`].
async fn command(conn: &mut Conn, stage: &'static str, cmd: Command) -> Result<Response, Failure> {
    step(stage, async {
        conn.write_command(&cmd).await?;
        conn.read_response().await
    })
    .await
    .and_then(|r| {
        if r.is_ok() {
            Ok(r)
        } else {
            Err(Failure::Refused {
                stage,
                text: r.text,
            })
        }
    })
}

/// Connects, reads the greeting and logs in with USER/PASS.
pub async fn login(addr: SocketAddr, user: &str, pass: &str) -> Result<Conn, Failure> {
    let tcp = match tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(Failure::Connect(e)),
        Err(_) => return Err(Failure::Timeout("connect")),
    };
    // Small request/response exchanges: without this every command waits for the peer's delayed ACK.
    let _ = tcp.set_nodelay(true);
    let mut conn = Pop3Stream::new(tcp);
    let greeting = step("greeting", conn.read_response()).await?;
    if !greeting.is_ok() {
        return Err(Failure::Refused {
            stage: "greeting",
            text: greeting.text,
        });
    }
    command(&mut conn, "USER", Command::User(user.to_string())).await?;
    command(&mut conn, "PASS", Command::Pass(Secret::new(pass))).await?;
    Ok(conn)
}

/// Reads a LIST or UIDL listing and checks it has one line per message.
async fn listing(
    conn: &mut Conn,
    stage: &'static str,
    cmd: Command,
    count: u32,
) -> Result<(), Failure> {
    command(conn, stage, cmd).await?;
    let body = step(stage, conn.read_multiline(LISTING_LIMIT)).await?;
    let lines = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    if lines != count as usize {
        return Err(Failure::Mismatch {
            stage,
            detail: format!("{lines} lines, but STAT said {count} messages"),
        });
    }
    Ok(())
}

/// A complete mail check: login, STAT, LIST, UIDL, RETR of the planned messages, QUIT.
pub async fn full(addr: SocketAddr, user: &str, pass: &str, plan: Plan) -> Result<Done, Failure> {
    let mut conn = login(addr, user, pass).await?;
    let stat = command(&mut conn, "STAT", Command::Stat).await?;
    let count: u32 = stat
        .text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Failure::Mismatch {
            stage: "STAT",
            detail: format!("unparseable +OK {:?}", stat.text),
        })?;
    if let Some(expected) = plan.expect_messages
        && count != expected
    {
        return Err(Failure::Mismatch {
            stage: "STAT",
            detail: format!("{count} messages, expected {expected}"),
        });
    }
    listing(&mut conn, "LIST", Command::List(None), count).await?;
    listing(&mut conn, "UIDL", Command::Uidl(None), count).await?;
    let mut done = Done::default();
    // One reusable buffer, emptied after every chunk: memory stays at one chunk whatever the message size.
    let mut chunk = Vec::new();
    for msg in 1..=plan.retr.map_or(count, |r| r.min(count)) {
        command(&mut conn, "RETR", Command::Retr(msg)).await?;
        loop {
            chunk.clear();
            let finished = step("RETR", conn.read_multiline_chunk(&mut chunk)).await?;
            done.bytes += chunk.len() as u64;
            if finished {
                break;
            }
        }
    }
    quit(&mut conn).await?;
    Ok(done)
}

/// Ends a session politely.
pub async fn quit(conn: &mut Conn) -> Result<(), Failure> {
    command(conn, "QUIT", Command::Quit).await.map(drop)
}
