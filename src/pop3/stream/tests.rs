//! Unit tests of `Pop3Stream`: framing at every chunk size, limits, stuffing, STLS, and the flush policy.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::ReadBuf;

use super::*;
use crate::pop3::response::Status;
use crate::secret::Secret;

/// Serves `input` in pieces of `chunk` octets and records writes and flushes.
struct Scripted {
    input: Vec<u8>,
    pos: usize,
    chunk: usize,
    written: Vec<u8>,
    flushes: usize,
}

impl Scripted {
    fn new(input: &[u8], chunk: usize) -> Self {
        Scripted {
            input: input.to_vec(),
            pos: 0,
            chunk: chunk.max(1),
            written: Vec::new(),
            flushes: 0,
        }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self
            .chunk
            .min(buf.remaining())
            .min(self.input.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.input[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flushes += 1;
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn stream(input: &[u8], chunk: usize) -> Pop3Stream<Scripted> {
    Pop3Stream::new(Scripted::new(input, chunk))
}

#[tokio::test]
async fn commands_at_every_chunk_size() {
    let wire =
        b"USER alice\r\nPASS se cret\r\nSTAT\nLIST 2\r\nRETR 0\r\nTOP 1 0\r\nXYZZY\r\n\r\nQUIT\r\n";
    for chunk in 1..=wire.len() {
        let mut s = stream(wire, chunk);
        let mut got = Vec::new();
        while let Some(c) = s.read_command().await.unwrap() {
            got.push(c);
        }
        assert_eq!(
            got,
            vec![
                Ok(Command::User("alice".into())),
                Ok(Command::Pass(Secret::new("se cret"))),
                Ok(Command::Stat),
                Ok(Command::List(Some(2))),
                Err(CommandError::ZeroMessageNumber { verb: "RETR" }),
                Ok(Command::Top(1, 0)),
                Ok(Command::Unknown("XYZZY".into())),
                Err(CommandError::Empty),
                Ok(Command::Quit),
            ],
            "chunk size {chunk}"
        );
    }
}

#[tokio::test]
async fn responses_and_bodies_at_every_chunk_size() {
    let wire: &[u8] =
        b"+OK POP3 ready\r\n+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n+OK 17 octets\r\n\
        Subject: x\r\n\r\n..dot\nbare lf\r\n.\r\n+OK\r\n.\r\n-ERR [SYS/TEMP] busy\r\n";
    for chunk in 1..=wire.len() {
        let mut s = stream(wire, chunk);
        assert_eq!(s.read_response().await.unwrap(), Response::ok("POP3 ready"));
        assert!(s.read_response().await.unwrap().is_ok());
        assert_eq!(s.read_multiline(1000).await.unwrap(), b"1 120\r\n2 200\r\n");
        assert!(s.read_response().await.unwrap().is_ok());
        let mut body = Vec::new();
        while !s.read_multiline_chunk(&mut body).await.unwrap() {}
        assert_eq!(
            body, b"Subject: x\r\n\r\n.dot\r\nbare lf\r\n",
            "chunk size {chunk}"
        );
        assert!(s.read_response().await.unwrap().is_ok());
        assert_eq!(
            s.read_multiline(1000).await.unwrap(),
            b"",
            "empty body, chunk size {chunk}"
        );
        let r = s.read_response().await.unwrap();
        assert_eq!(
            (r.status, r.code.clone()),
            (Status::Err, Some(crate::pop3::RespCode::SysTemp))
        );
        assert!(matches!(s.read_response().await, Err(Pop3Error::Closed)));
    }
}

#[tokio::test]
async fn ten_thousand_pipelined_commands() {
    let mut wire = Vec::new();
    for i in 1..=10_000u32 {
        wire.extend_from_slice(format!("RETR {i}\r\n").as_bytes());
    }
    let mut s = stream(&wire, wire.len());
    for i in 1..=10_000u32 {
        assert_eq!(s.read_command().await.unwrap(), Some(Ok(Command::Retr(i))));
    }
    assert_eq!(s.read_command().await.unwrap(), None);
}

#[tokio::test]
async fn megabyte_line_is_an_error_then_the_session_goes_on() {
    let mut wire = vec![b'A'; 1_000_000];
    wire.extend_from_slice(b"\r\nNOOP\r\n");
    let mut s = stream(&wire, 64 * 1024);
    assert_eq!(
        s.read_command().await.unwrap(),
        Some(Err(CommandError::TooLong {
            limit: COMMAND_LINE_READ_LIMIT
        }))
    );
    assert_eq!(s.read_command().await.unwrap(), Some(Ok(Command::Noop)));
    assert_eq!(s.rbuf.len(), READ_BUFFER, "the read buffer never grows");

    // No LF at all: past MAX_DISCARD the caller is told to close.
    let wire = vec![b'A'; MAX_DISCARD + 2 * READ_BUFFER];
    let mut s = stream(&wire, READ_BUFFER);
    assert!(matches!(
        s.read_command().await,
        Err(Pop3Error::LineTooLong {
            resynced: false,
            ..
        })
    ));

    let mut long = vec![b'+'; RESPONSE_LINE_READ_LIMIT + 10];
    long.extend_from_slice(b"\r\n+OK\r\n");
    let mut s = stream(&long, 100);
    assert!(matches!(
        s.read_response().await,
        Err(Pop3Error::LineTooLong { resynced: true, .. })
    ));
    assert!(s.read_response().await.unwrap().is_ok());
}

#[tokio::test]
async fn line_limit_is_exact() {
    let mut ok = vec![b'x'; 10];
    ok.extend_from_slice(b"\r\n");
    assert_eq!(
        stream(&ok, 3).read_line(10).await.unwrap(),
        Some(vec![b'x'; 10])
    );
    let mut long = vec![b'x'; 11];
    long.extend_from_slice(b"\r\n");
    assert!(matches!(
        stream(&long, 3).read_line(10).await,
        Err(Pop3Error::LineTooLong { .. })
    ));
    let mut long_lf = vec![b'x'; 11];
    long_lf.push(b'\n');
    assert!(matches!(
        stream(&long_lf, 3).read_line(10).await,
        Err(Pop3Error::LineTooLong { .. })
    ));
}

#[tokio::test]
async fn nul_and_invalid_utf8_do_not_panic() {
    let wire = b"\x00\xff\xfe\r\nUSER \xff\xfe\r\nPASS \x00\r\n\xc3\x28 1\r\n+OK \xff\r\n";
    let mut s = stream(wire, 2);
    assert!(matches!(
        s.read_command().await.unwrap(),
        Some(Ok(Command::Unknown(_)))
    ));
    assert!(matches!(
        s.read_command().await.unwrap(),
        Some(Err(CommandError::InvalidUtf8 { .. }))
    ));
    assert!(matches!(
        s.read_command().await.unwrap(),
        Some(Err(CommandError::ControlCharacter { .. }))
    ));
    assert!(matches!(
        s.read_command().await.unwrap(),
        Some(Ok(Command::Unknown(_)))
    ));
    assert!(s.read_response().await.unwrap().is_ok());
}

#[tokio::test]
async fn eof_clean_versus_mid_line() {
    assert_eq!(stream(b"", 1).read_command().await.unwrap(), None);
    assert!(matches!(
        stream(b"NOOP", 1).read_command().await,
        Err(Pop3Error::UnexpectedEof)
    ));
    assert!(matches!(
        stream(b"", 1).read_response().await,
        Err(Pop3Error::Closed)
    ));
    let mut s = stream(b"line one\r\nline tw", 4);
    let mut out = Vec::new();
    let mut result = Ok(false);
    while let Ok(false) = result {
        result = s.read_multiline_chunk(&mut out).await;
    }
    assert!(matches!(result, Err(Pop3Error::UnexpectedEof)));
}

#[tokio::test]
async fn multiline_limit_keeps_the_stream_in_step() {
    let mut s = stream(b"0123456789\r\n0123456789\r\n.\r\n+OK next\r\n", 5);
    assert!(matches!(
        s.read_multiline(15).await,
        Err(Pop3Error::TooLarge { limit: 15 })
    ));
    assert_eq!(s.read_response().await.unwrap(), Response::ok("next"));
}

#[tokio::test]
async fn writes_stuff_and_flush_once_per_reply() {
    let body = b"From: a\n.hidden\r\n\r\n..two\nlast line without end";
    for split in 0..=body.len() {
        let mut s = stream(b"", 1);
        s.queue_response(&Response::ok("message follows"));
        s.write_multiline_chunk(&body[..split]).await.unwrap();
        s.write_multiline_chunk(&body[split..]).await.unwrap();
        s.finish_multiline().await.unwrap();
        let inner = s.into_inner();
        let mut want = b"+OK message follows\r\n".to_vec();
        want.extend_from_slice(&Stuffer::stuff_all(body));
        assert_eq!(inner.written, want);
        assert_eq!(inner.flushes, 1, "one flush per reply");
    }
    let mut s = stream(b"", 1);
    s.write_response(&Response::err("no such message"))
        .await
        .unwrap();
    s.write_command(&Command::Retr(3)).await.unwrap();
    s.finish_multiline().await.unwrap();
    let inner = s.into_inner();
    assert_eq!(inner.written, b"-ERR no such message\r\nRETR 3\r\n.\r\n");
    assert_eq!(inner.flushes, 3);
}

/// The reply loop of a server or proxy, reduced to the stream's policy: each command gets `reply`, queued and
/// then `flush_if_needed`. Returns the most output ever held after queueing a reply, and the commands seen.
async fn answer_all<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Pop3Stream<S>,
    reply: &Response,
) -> (usize, usize) {
    let mut most = 0;
    let mut seen = 0;
    while let Ok(Some(_)) = s.read_command().await {
        seen += 1;
        s.queue_response(reply);
        most = most.max(s.queued_output());
        s.flush_if_needed().await.unwrap();
    }
    (most, seen)
}

#[tokio::test]
async fn queued_output_stays_under_the_high_water_mark_plus_one_reply() {
    let reply = Response::ok("x".repeat(200));
    let one = reply.to_wire().len();
    let n = 20_000;
    let wire = b"CAPA\r\n".repeat(n);
    // Whole reads (all commands complete, batched) and reads that end in half a command.
    for chunk in [wire.len(), 1000, 7] {
        let mut s = stream(&wire, chunk);
        let (most, seen) = answer_all(&mut s, &reply).await;
        assert_eq!(seen, n);
        assert!(
            most <= WRITE_HIGH_WATER + one,
            "chunk {chunk}: {most} octets queued"
        );
        let inner = s.into_inner();
        assert_eq!(inner.written.len(), n * one, "chunk {chunk}: every reply");
        if chunk == wire.len() {
            // Pipelined replies still leave together: a write per high-water mark and per read that ends in
            // half a command, not one per reply.
            assert!(
                inner.flushes <= n * one / WRITE_HIGH_WATER + wire.len() / READ_BUFFER + 3,
                "{} flushes",
                inner.flushes
            );
        }
    }
}

#[tokio::test]
async fn half_command_pipelining_gets_every_reply_for_each_complete_command() {
    const ROUNDS: usize = 50;
    let (a, b) = tokio::io::duplex(1 << 20);
    let srv = tokio::spawn(async move {
        let mut s = Pop3Stream::new(b);
        answer_all(&mut s, &Response::ok("capability list follows")).await
    });
    let test = async {
        let mut c = Pop3Stream::new(a);
        // Each write: the rest of the previous command, complete commands, and half of the next one.
        for round in 0..ROUNDS {
            let mut piece = if round == 0 {
                Vec::new()
            } else {
                b"PA\r\n".to_vec()
            };
            piece.extend_from_slice(&b"CAPA\r\n".repeat(round % 7 + 1));
            piece.extend_from_slice(b"CA");
            c.write_raw(&piece).await.unwrap();
            // Everything complete so far is answered while the half command waits for its rest.
            for _ in 0..round % 7 + 1 + usize::from(round > 0) {
                assert!(c.read_response().await.unwrap().is_ok());
            }
        }
        c.write_raw(b"PA\r\n").await.unwrap();
        assert!(c.read_response().await.unwrap().is_ok());
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), test)
        .await
        .expect("replies held back while half a command was buffered");
    let (_, seen) = srv.await.unwrap();
    assert_eq!(seen, ROUNDS + (0..ROUNDS).map(|r| r % 7 + 1).sum::<usize>());
}

#[tokio::test]
async fn a_read_never_waits_while_output_is_queued() {
    let (a, b) = tokio::io::duplex(1024);
    let srv = tokio::spawn(async move {
        let mut s = Pop3Stream::new(b);
        s.queue_response(&Response::ok("ready"));
        // Nobody flushed: the read sends the greeting before it waits for the client.
        s.read_command().await.unwrap()
    });
    let test = async {
        let mut c = Pop3Stream::new(a);
        assert_eq!(c.read_response().await.unwrap(), Response::ok("ready"));
        c.write_raw(b"NOOP\r\n").await.unwrap();
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), test)
        .await
        .expect("the queued greeting was never sent");
    assert_eq!(srv.await.unwrap(), Some(Ok(Command::Noop)));
}

#[tokio::test]
async fn stls_refuses_pipelined_plaintext() {
    let mut s = stream(b"STLS\r\nUSER injected\r\n", 100);
    assert_eq!(s.read_command().await.unwrap(), Some(Ok(Command::Stls)));
    assert!(s.has_buffered_input());
    assert!(matches!(
        s.into_inner_checked(),
        Err(Pop3Error::BufferedInputAfterStls)
    ));
    let mut s = stream(b"STLS\r\n", 100);
    assert_eq!(s.read_command().await.unwrap(), Some(Ok(Command::Stls)));
    assert!(s.into_inner_checked().is_ok());
}

#[tokio::test]
async fn sasl_exchange_lines() {
    let mut s = stream(
        b"AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nAUTH PLAIN\r\n*\r\n",
        3,
    );
    assert!(matches!(
        s.read_command().await.unwrap(),
        Some(Ok(Command::Auth { .. }))
    ));
    s.write_response(&Response::cont("")).await.unwrap();
    assert_eq!(
        s.read_sasl_response().await.unwrap(),
        Ok(SaslResponse::Data(Secret::new("AGFsaWNlAHNlY3JldA==")))
    );
    assert!(matches!(
        s.read_command().await.unwrap(),
        Some(Ok(Command::Auth { .. }))
    ));
    assert_eq!(
        s.read_sasl_response().await.unwrap(),
        Ok(SaslResponse::Cancel)
    );
    assert!(matches!(
        s.read_sasl_response().await,
        Err(Pop3Error::Closed)
    ));
    assert_eq!(s.into_inner().written, b"+ \r\n");
}

#[tokio::test]
async fn works_over_a_duplex_pipe() {
    let (a, b) = tokio::io::duplex(64);
    let mut client = Pop3Stream::new(a);
    let mut server = Pop3Stream::new(b);
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| if i % 77 == 0 { b'\n' } else { b'.' })
        .collect();
    let big2 = big.clone();
    let srv = tokio::spawn(async move {
        let cmd = server.read_command().await.unwrap();
        assert_eq!(cmd, Some(Ok(Command::Retr(1))));
        server.queue_response(&Response::ok("follows"));
        for piece in big2.chunks(1000) {
            server.write_multiline_chunk(piece).await.unwrap();
        }
        server.finish_multiline().await.unwrap();
    });
    let test = async {
        client.write_command(&Command::Retr(1)).await.unwrap();
        assert!(client.read_response().await.unwrap().is_ok());
        let body = client.read_multiline(1 << 20).await.unwrap();
        assert_eq!(body, crate::pop3::multiline::normalize(&big));
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), test)
        .await
        .unwrap();
    srv.await.unwrap();
}
