//! A raw POP3 client session over loopback TCP, for tests that drive a server or the proxy line by line.

use std::net::SocketAddr;

use popguard::pop3::{Pop3Stream, Response};
use tokio::net::TcpStream;

/// A connected session; read multi-line bodies with `read_multiline`.
pub type RawSession = Pop3Stream<TcpStream>;

/// Connects to `addr` and reads the greeting, which must be `+OK`.
pub async fn connect(addr: SocketAddr) -> RawSession {
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let mut s = Pop3Stream::new(tcp);
    let greeting = s
        .read_response()
        .await
        .unwrap_or_else(|e| panic!("no greeting from {addr}: {e}"));
    assert!(greeting.is_ok(), "greeting: {greeting}");
    s
}

/// Sends one command line; the reply, or `None` when the connection is gone.
pub async fn try_command(s: &mut RawSession, line: &str) -> Option<Response> {
    s.write_raw(format!("{line}\r\n").as_bytes()).await.ok()?;
    s.read_response().await.ok()
}

/// Sends one command line; the reply (panics when the connection is gone).
pub async fn command(s: &mut RawSession, line: &str) -> Response {
    try_command(s, line)
        .await
        .unwrap_or_else(|| panic!("{line}: the connection is gone"))
}
