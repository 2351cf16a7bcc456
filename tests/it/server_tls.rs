//! `popguard server` with a certificate: STLS (RFC 2595) with a fresh parser after the upgrade, the plaintext
//! injection guard, and implicit TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use popguard::pop3::{Command, Pop3Stream, Response};
use popguard::secret::Secret;
use popguard::server::users::Users;
use popguard::server::{ServerConfig, run};
use popguard::tls::{self, MaybeTls};
use popguard_test_support::{TestCa, with_timeout};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const TEST_SECS: u64 = 30;

const MESSAGE: &[u8] = b"From: a@example.org\nSubject: over TLS\n\n.dot line\nbody\n";

struct TlsServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl TlsServer {
    /// A test CA and a `localhost` certificate it signed (in the temp dir), and a server using them.
    async fn start(implicit: bool) -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::create(dir.path());

        let drop = dir.path().join("mail/alice");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(drop.join(sub)).unwrap();
        }
        std::fs::write(drop.join("new/1.a.host"), MESSAGE).unwrap();
        let mut config = ServerConfig::new(
            dir.path().join("mail"),
            Users::parse("alice:secret\n").unwrap(),
        );
        config.tls = Some(ca.server_config());
        config.implicit_tls = implicit;
        config.auth_failure_delay = Duration::from_millis(10);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(run(listener, Arc::new(config), async {
            let _ = stopped.await;
        }));
        TlsServer {
            addr,
            dir,
            _stop: stop,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

async fn cmd<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut Pop3Stream<S>,
    c: Command,
) -> Response {
    s.write_command(&c).await.unwrap();
    s.read_response().await.unwrap()
}

async fn capa<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut Pop3Stream<S>,
) -> Vec<String> {
    assert!(cmd(s, Command::Capa).await.is_ok());
    let body = s.read_multiline(64 * 1024).await.unwrap();
    String::from_utf8(body)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn stls_upgrades_and_forgets_what_came_before() {
    with_timeout(TEST_SECS, async {
        let srv = TlsServer::start(false).await;
        let tcp = TcpStream::connect(srv.addr).await.unwrap();
        let mut s = Pop3Stream::new(tcp);
        assert!(s.read_response().await.unwrap().is_ok());
        assert!(capa(&mut s).await.iter().any(|l| l == "STLS"));
        // A USER given in plaintext must not survive the upgrade.
        assert!(cmd(&mut s, Command::User("alice".into())).await.is_ok());
        assert!(cmd(&mut s, Command::Stls).await.is_ok());
        let tcp = s.into_inner_checked().unwrap();
        let client = tls::client_config_with(Some(&srv.ca()), false).unwrap();
        let tls = tls::connect(tcp, "localhost", client).await.unwrap();
        assert!(matches!(tls, MaybeTls::Client(_)));
        let mut s = Pop3Stream::new(tls);
        let caps = capa(&mut s).await;
        assert!(
            !caps.iter().any(|l| l == "STLS"),
            "no STLS inside TLS: {caps:?}"
        );
        assert!(cmd(&mut s, Command::Stls).await.is_err());
        let r = cmd(&mut s, Command::Pass(Secret::new("secret"))).await;
        assert!(r.is_err() && r.text.contains("USER first"), "{r}");
        assert!(cmd(&mut s, Command::User("alice".into())).await.is_ok());
        assert!(
            cmd(&mut s, Command::Pass(Secret::new("secret")))
                .await
                .is_ok()
        );
        assert!(cmd(&mut s, Command::Retr(1)).await.is_ok());
        let body = s.read_multiline(1 << 20).await.unwrap();
        assert_eq!(
            body,
            b"From: a@example.org\r\nSubject: over TLS\r\n\r\n.dot line\r\nbody\r\n"
        );
        assert!(cmd(&mut s, Command::Quit).await.is_ok());
    })
    .await
}

#[tokio::test]
async fn plaintext_pipelined_after_stls_closes_the_connection() {
    with_timeout(TEST_SECS, async {
        let srv = TlsServer::start(false).await;
        let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
        let mut greeting = [0u8; 256];
        let _ = tcp.read(&mut greeting).await.unwrap();
        // The injection attack of CVE-2011-0411: a command sent in the clear right behind STLS.
        tcp.write_all(b"STLS\r\nUSER alice\r\n").await.unwrap();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        let text = String::from_utf8_lossy(&rest);
        assert!(text.starts_with("+OK"), "{text}");
        assert_eq!(
            text.lines().count(),
            1,
            "nothing answered the injected command: {text}"
        );
    })
    .await
}

#[tokio::test]
async fn implicit_tls_greets_inside_tls() {
    with_timeout(TEST_SECS, async {
        let srv = TlsServer::start(true).await;
        let tcp = TcpStream::connect(srv.addr).await.unwrap();
        let client = tls::client_config_with(Some(&srv.ca()), false).unwrap();
        let tls = tls::connect(tcp, "localhost", client).await.unwrap();
        let mut s = Pop3Stream::new(tls);
        assert!(s.read_response().await.unwrap().is_ok());
        assert!(!capa(&mut s).await.iter().any(|l| l == "STLS"));
        assert!(cmd(&mut s, Command::User("alice".into())).await.is_ok());
        assert!(
            cmd(&mut s, Command::Pass(Secret::new("secret")))
                .await
                .is_ok()
        );
        assert_eq!(
            cmd(&mut s, Command::Stat).await.text,
            format!("1 {}", MESSAGE.len() + 5)
        );
        assert!(cmd(&mut s, Command::Quit).await.is_ok());

        // A plaintext client on the implicit-TLS port gets no POP3 greeting.
        let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
        tcp.write_all(b"CAPA\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
        assert!(!String::from_utf8_lossy(&rest).contains("+OK"));
    })
    .await
}
