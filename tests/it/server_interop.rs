//! The five real POP3 clients (fetchmail, getmail6, mpop, curl, Python's poplib) against `popguard server`: each
//! downloads a maildrop of 120 varied messages byte-identically (modulo CRLF), deleting (maildrop empty after) or
//! keeping (maildrop untouched after: same files, same names, same bytes), plaintext and over TLS; and the clients
//! that remember UIDLs fetch only new mail on a second run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use popguard::server::users::Users;
use popguard::server::{ServerConfig, run};
use popguard_test_support as support;
use support::fixtures;
use support::{Client, Opts, TestCa, Tls, assert_same_messages, require_peer, with_timeout};
use tokio::sync::oneshot;

/// Messages in each download test's maildrop (the issue asks for at least 100).
const MAILDROP_SIZE: usize = 120;
/// Bound for one test (server start, one or two client runs, checks).
const TEST_TIMEOUT_SECS: u64 = 180;

const USER: &str = "alice";
const PASS: &str = "alice pw:1";

/// `popguard server` in this process on a loopback port, with a test CA's certificate (STLS offered, or implicit
/// TLS); stops when dropped.
struct Server {
    addr: SocketAddr,
    ca: TestCa,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Server {
    async fn start(implicit_tls: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::create(dir.path());
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.path().join("mail").join(USER).join(sub)).unwrap();
        }
        let users = Users::parse(&format!("{USER}:{PASS}\n")).unwrap();
        let mut config = ServerConfig::new(dir.path().join("mail"), users);
        config.tls = Some(popguard::tls::server_config(&ca.cert_file, &ca.key_file).unwrap());
        config.implicit_tls = implicit_tls;
        config.idle_timeout = Duration::from_secs(120);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(run(listener, Arc::new(config), async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            ca,
            dir,
            _stop: stop,
        }
    }

    fn maildrop(&self) -> PathBuf {
        self.dir.path().join("mail").join(USER)
    }

    /// Delivers `msgs` into `new/`, named so that their order is the delivery order.
    fn deliver(&self, msgs: &[Vec<u8>], first: usize) {
        for (i, m) in msgs.iter().enumerate() {
            let name = format!("1700000000.M{:06}P1.popguard-test", first + i);
            std::fs::write(self.maildrop().join("new").join(name), m).unwrap();
        }
    }

    /// Every file in the maildrop with its bytes, sorted by path.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        snapshot(&self.maildrop())
    }
}

fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["new", "cur", "tmp"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            out.push((p, data));
        }
    }
    out.sort();
    out
}

async fn download(client: Client, tls: Tls, keep: bool) {
    if !require_peer(client.name()) {
        return;
    }
    let label = format!(
        "{} from popguard server, tls={tls:?} keep={keep}",
        client.name()
    );
    with_timeout(TEST_TIMEOUT_SECS, async {
        let srv = Server::start(tls == Tls::Implicit).await;
        let msgs = fixtures::mailbox(MAILDROP_SIZE);
        srv.deliver(&msgs, 0);
        let before = srv.snapshot();
        let opts = Opts {
            keep,
            tls,
            ca_file: Some(srv.ca.ca_file.clone()),
            ..Opts::default()
        };
        assert!(
            client.supports(&opts),
            "{label}: not supported by the client"
        );
        let t0 = Instant::now();
        let got = client
            .fetch(srv.addr, USER, PASS, &opts)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        eprintln!("{label}: {} messages in {:?}", got.len(), t0.elapsed());
        assert_same_messages(&label, &got, &msgs);
        let after = srv.snapshot();
        if keep {
            assert!(
                after == before,
                "{label}: keep mode changed the maildrop ({} files before, {} after)",
                before.len(),
                after.len()
            );
        } else {
            assert!(
                after.is_empty(),
                "{label}: {} of {} messages left after delete",
                after.len(),
                msgs.len()
            );
        }
    })
    .await;
}

/// A second run fetches nothing, and after new mail exactly the new messages: UIDLs are stable across sessions.
async fn new_only(client: Client) {
    if !require_peer(client.name()) {
        return;
    }
    let label = format!("{} new_only from popguard server", client.name());
    with_timeout(TEST_TIMEOUT_SECS, async {
        let srv = Server::start(false).await;
        let state = tempfile::tempdir().unwrap();
        let opts = Opts {
            keep: true,
            new_only: true,
            state_dir: Some(state.path().to_path_buf()),
            ..Opts::default()
        };
        let msgs = fixtures::mailbox(30);
        let (first, later) = msgs.split_at(20);
        srv.deliver(first, 0);
        let fetch = || async {
            client
                .fetch(srv.addr, USER, PASS, &opts)
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"))
        };
        assert_same_messages(&format!("{label} first run"), &fetch().await, first);
        assert_same_messages(&format!("{label} second run"), &fetch().await, &[]);
        srv.deliver(later, first.len());
        assert_same_messages(&format!("{label} after new mail"), &fetch().await, later);
        assert_eq!(
            srv.snapshot().len(),
            msgs.len(),
            "{label}: keep mode removed mail"
        );
    })
    .await;
}

macro_rules! download_tests {
    ($($name:ident: $client:ident, $tls:ident, $keep:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                download(Client::$client, Tls::$tls, $keep).await;
            }
        )*
    };
}

download_tests! {
    fetchmail_delete: Fetchmail, None, false;
    fetchmail_keep: Fetchmail, None, true;
    fetchmail_stls_delete: Fetchmail, Stls, false;
    getmail_delete: Getmail, None, false;
    getmail_keep: Getmail, None, true;
    getmail_implicit_tls_delete: Getmail, Implicit, false;
    mpop_delete: Mpop, None, false;
    mpop_keep: Mpop, None, true;
    mpop_stls_delete: Mpop, Stls, false;
    mpop_implicit_tls_keep: Mpop, Implicit, true;
    curl_delete: Curl, None, false;
    curl_keep: Curl, None, true;
    curl_stls_delete: Curl, Stls, false;
    poplib_delete: Poplib, None, false;
    poplib_keep: Poplib, None, true;
    poplib_stls_delete: Poplib, Stls, false;
    poplib_implicit_tls_keep: Poplib, Implicit, true;
}

macro_rules! new_only_tests {
    ($($name:ident: $client:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                new_only(Client::$client).await;
            }
        )*
    };
}

new_only_tests! {
    fetchmail_new_only: Fetchmail;
    getmail_new_only: Getmail;
    mpop_new_only: Mpop;
    poplib_new_only: Poplib;
}
