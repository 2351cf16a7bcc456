//! Accept loops with a connection limit and graceful shutdown, shared by the server and the proxy.
//!
//! The loop only accepts: each connection runs in its own task, TLS handshake included, so one slow client
//! cannot delay the next `accept`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// First pause after a failed `accept` (EMFILE, ENOBUFS...): retrying at once would spin on the same error.
/// Connections the kernel queues before `accept`. tokio's `TcpListener::bind` asks for 128 (as std does); a burst
/// of a few hundred clients overflows that, the kernel drops their handshakes, and each such client waits for a
/// greeting that never comes (the load benchmark saw this at 500 concurrent sessions).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds a listening socket like `TcpListener::bind` (host names resolved, every address tried in turn,
/// `SO_REUSEADDR` set as std does on Unix), but with [`LISTEN_BACKLOG`].
pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        let attempt = socket
            .set_reuseaddr(true)
            .and_then(|()| socket.bind(a))
            .and_then(|()| socket.listen(LISTEN_BACKLOG));
        match attempt {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// The pause doubles per consecutive failure up to this.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// After shutdown, connections in progress get this long to finish (a RETR in flight, a QUIT's UPDATE state)
/// before their tasks are aborted. An aborted POP3 session deletes nothing (RFC 1939 §6: only QUIT updates).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` completes, running `handler` for each in its own task, with at most
/// `max_connections` at once (further clients wait in the kernel's backlog). Returns once every connection task
/// has ended, or after [`SHUTDOWN_GRACE`] with the remaining ones aborted.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve_with_grace(listener, max_connections, shutdown, SHUTDOWN_GRACE, handler).await
}

/// [`serve`] with a chosen grace period for connections still open at shutdown.
pub async fn serve_with_grace<H, Fut>(
    listener: TcpListener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut tasks = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set does not grow with the server's lifetime.
        while let Some(done) = tasks.try_join_next() {
            log_join(done);
        }
        // The permit is taken before accepting: at the limit we stop accepting instead of accepting and closing.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                // POP3 is request/response with one flush per reply: Nagle would only add delay.
                let _ = stream.set_nodelay(true);
                let connection = handler(stream, peer);
                tasks.spawn(async move {
                    connection.await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64, "accept failed; pausing");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    drop(listener);
    let drain = async {
        while let Some(done) = tasks.join_next().await {
            log_join(done);
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::info!(
            remaining = tasks.len(),
            "shutdown grace period over; closing remaining connections"
        );
        tasks.shutdown().await;
    }
}

fn log_join(result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result
        && e.is_panic()
    {
        tracing::error!("a connection task panicked: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn bind_resolves_names_and_accepts() {
        let listener = bind("localhost:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let connect = tokio::net::TcpStream::connect(addr);
        let (accepted, connected) = tokio::join!(listener.accept(), connect);
        assert!(accepted.is_ok() && connected.is_ok());
        // A second bind to the same port is refused, as with std.
        assert!(bind(addr).await.is_err());
    }

    const T: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn limits_connections_and_shuts_down() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let active = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (a, p) = (active.clone(), peak.clone());
        let server = tokio::spawn(serve(
            listener,
            2,
            async {
                let _ = stop_rx.await;
            },
            move |mut stream, _peer| {
                let (active, peak) = (a.clone(), p.clone());
                async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let _ = stream.write_all(b"+OK hi\r\n").await;
                    // Hold the slot until the client closes.
                    let mut buf = [0u8; 16];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            },
        ));
        let test = async {
            let mut c1 = TcpStream::connect(addr).await.unwrap();
            let mut c2 = TcpStream::connect(addr).await.unwrap();
            let mut c3 = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 8];
            c1.read_exact(&mut buf).await.unwrap();
            c2.read_exact(&mut buf).await.unwrap();
            // The third waits: no greeting while two are connected.
            assert!(
                tokio::time::timeout(Duration::from_millis(300), c3.read_exact(&mut buf))
                    .await
                    .is_err()
            );
            drop(c1);
            c3.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"+OK hi\r\n");
            assert_eq!(peak.load(Ordering::SeqCst), 2);
            drop(c2);
            drop(c3);
            stop_tx.send(()).unwrap();
            server.await.unwrap();
            // Stopped: the port no longer accepts.
            assert!(TcpStream::connect(addr).await.is_err());
        };
        tokio::time::timeout(T, test).await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_aborts_stuck_connections_after_grace() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (conn_tx, conn_rx) = oneshot::channel::<()>();
        let conn_tx = std::sync::Mutex::new(Some(conn_tx));
        let grace = Duration::from_millis(200);
        let server = tokio::spawn(serve_with_grace(
            listener,
            10,
            async {
                let _ = stop_rx.await;
            },
            grace,
            move |_stream, _peer| {
                if let Some(tx) = conn_tx.lock().ok().and_then(|mut g| g.take()) {
                    let _ = tx.send(());
                }
                std::future::pending::<()>()
            },
        ));
        let _client = TcpStream::connect(addr).await.unwrap();
        conn_rx.await.unwrap();
        stop_tx.send(()).unwrap();
        // The stuck connection is aborted once the grace period is over, and serve returns.
        tokio::time::timeout(T, server).await.unwrap().unwrap();
    }
}
