//! The proxy over real loopback sockets and TLS: upstream implicit TLS and STLS with certificate verification
//! (and clear errors when it fails), client implicit TLS and STLS, the listener entry point and its refusal to
//! serve passwords in clear to the network.

use std::path::Path;

use popguard::tls;
use popguard_test_support::fake::*;
use popguard_test_support::{ProxyBuilder, TestCa, with_timeout};

/// Every test finishes in well under this; a deadlock fails instead of hanging.
const TEST_SECS: u64 = 20;
use tokio::io::duplex;
use tokio::net::TcpListener;

/// The test CA (certificate for "localhost") and an unrelated CA with another name, so rustls reports an unknown
/// issuer for it.
struct Pki {
    ca: TestCa,
    other: TestCa,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            ca: TestCa::new_with("popguard proxy test CA", &["localhost"]),
            other: TestCa::new_with("some other CA", &["localhost"]),
        }
    }
}

/// A proxy in front of `fake` as `upstream` (TLS by port), trusting `ca` besides the system roots.
fn tls_proxy(dir: &Path, upstream: &str, fake: Fake, ca: &Path) -> ProxyBuilder<Fake> {
    ProxyBuilder::new(upstream)
        .connector(fake)
        .upstream_tls_by_port()
        .ca_file(ca)
        .data_dir(dir)
        .fixed_scorer()
}

#[tokio::test]
async fn upstream_implicit_tls_is_verified_against_the_ca_file() {
    with_timeout(TEST_SECS, async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(
            mixed(),
            Behaviour {
                implicit_tls: Some(pki.ca.server_config()),
                ..Behaviour::default()
            },
        );
        // Port 995 defaults to implicit TLS.
        let p = tls_proxy(dir.path(), "localhost:995", fake.clone(), &pki.ca.ca_file).build();
        let mut c = connect(&p).await;
        assert!(c.greeting.is_ok(), "{}", c.greeting);
        c.login().await;
        let (_, m) = c.multi("RETR 3").await;
        assert_eq!(untag(&m), mixed()[2].data);
        assert!(c.cmd("QUIT").await.is_ok());
    })
    .await
}

#[tokio::test]
async fn upstream_stls_is_used_and_never_offered_to_the_client() {
    with_timeout(TEST_SECS, async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(
            mixed(),
            Behaviour {
                stls: Some(pki.ca.server_config()),
                ..Behaviour::default()
            },
        );
        // Any port but 995 defaults to STLS.
        let p = tls_proxy(dir.path(), "localhost:110", fake.clone(), &pki.ca.ca_file).build();
        let mut c = connect(&p).await;
        let (_, caps) = c.multi("CAPA").await;
        assert!(!lines(&caps).contains(&"STLS".to_string()));
        c.login().await;
        assert!(c.cmd("STAT").await.text.starts_with("3 "));
        assert_eq!(
            fake.log()[0],
            "STLS",
            "the proxy upgrades before anything else"
        );
    })
    .await
}

#[tokio::test]
async fn failed_certificate_verification_is_a_clear_err() {
    with_timeout(TEST_SECS, async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let behaviour = Behaviour {
            implicit_tls: Some(pki.ca.server_config()),
            ..Behaviour::default()
        };
        // Signed by a CA the proxy does not trust.
        let fake = Fake::new(mixed(), behaviour.clone());
        let p = tls_proxy(dir.path(), "localhost:995", fake, &pki.other.ca_file)
            .trust(pki.other.client_config())
            .build();
        let c = connect(&p).await;
        assert!(!c.greeting.is_ok());
        assert!(c.greeting.text.contains("unknown issuer"), "{}", c.greeting);
        // A certificate for another name.
        let fake = Fake::new(mixed(), behaviour);
        let p = tls_proxy(dir.path(), "mail.example.org:995", fake, &pki.ca.ca_file)
            .trust(pki.ca.client_config())
            .build();
        let c = connect(&p).await;
        assert!(!c.greeting.is_ok());
        assert!(c.greeting.text.contains("name mismatch"), "{}", c.greeting);
    })
    .await
}

#[tokio::test]
async fn clients_can_use_implicit_tls() {
    with_timeout(TEST_SECS, async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let p = Fake::new(mixed(), Behaviour::default())
            .proxy(dir.path(), "tag")
            .client_tls(&pki.ca, "implicit")
            .build();
        let (a, b) = duplex(1 << 16);
        tokio::spawn(popguard::proxy::session::serve_connection(
            p.clone(),
            b,
            None,
        ));
        let trust = pki.ca.client_config();
        let tls_stream = tls::connect(a, "localhost", trust).await.unwrap();
        let mut c = Client::on(tls_stream).await;
        assert!(c.greeting.is_ok());
        let (_, caps) = c.multi("CAPA").await;
        assert!(!lines(&caps).contains(&"STLS".to_string()), "already TLS");
        c.login().await;
        assert!(c.cmd("STAT").await.text.starts_with("3 "));
        assert!(c.cmd("QUIT").await.is_ok());
    })
    .await
}

#[tokio::test]
async fn clients_can_upgrade_with_stls_and_must_before_a_password() {
    with_timeout(TEST_SECS, async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let p = Fake::new(mixed(), Behaviour::default())
            .proxy(dir.path(), "tag")
            .client_tls(&pki.ca, "stls")
            .build();
        let mut c = connect(&p).await;
        let (_, caps) = c.multi("CAPA").await;
        assert!(lines(&caps).contains(&"STLS".to_string()));
        // The peer is not loopback (unknown): no password in clear.
        let r = c.cmd("USER alice").await;
        assert!(!r.is_ok() && r.text.contains("STLS"), "{r}");
        assert!(c.cmd("STLS").await.is_ok());
        let trust = pki.ca.client_config();
        let tls_stream = tls::connect(c.s.into_inner(), "localhost", trust)
            .await
            .unwrap();
        let mut c = Client {
            s: popguard::pop3::Pop3Stream::new(tls_stream),
            greeting: popguard::pop3::Response::ok(""),
        };
        let (_, caps) = c.multi("CAPA").await;
        assert!(!lines(&caps).contains(&"STLS".to_string()));
        c.login().await;
        assert!(c.cmd("STAT").await.text.starts_with("3 "));
    })
    .await
}

#[tokio::test]
async fn plaintext_pipelined_after_stls_is_refused() {
    with_timeout(TEST_SECS, async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let p = Fake::new(mixed(), Behaviour::default())
            .proxy(dir.path(), "tag")
            .client_tls(&pki.ca, "stls")
            .build();
        let mut c = connect(&p).await;
        c.s.write_raw(b"STLS\r\nUSER injected\r\n").await.unwrap();
        let r = c.s.read_response().await.unwrap();
        assert!(!r.is_ok(), "{r}");
        assert!(c.s.read_response().await.is_err(), "connection closed");
    })
    .await
}

#[tokio::test]
async fn tcp_listener_serves_clients_and_shuts_down() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = up.accept().await {
                tokio::spawn(f.clone().serve(s));
            }
        });
        let px = ProxyBuilder::new(up_addr)
            .action("hide")
            .data_dir(dir.path())
            .fixed_scorer()
            .start()
            .await;
        let addr = px.addr;
        let mut c = Client::on(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
        // A loopback client may log in without STLS.
        c.login().await;
        assert!(c.cmd("STAT").await.text.starts_with("2 "));
        assert!(c.cmd("DELE 2").await.is_ok());
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(fake.uidls(), vec!["uid-a", "uid-b"]);
        px.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn network_listener_without_tls_needs_an_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let lan: std::net::SocketAddr = "192.0.2.10:1110".parse().unwrap();
    let p = ProxyBuilder::new(FAKE_UPSTREAM)
        .data_dir(dir.path())
        .fixed_scorer()
        .build();
    let e = p.check_listen(lan).unwrap_err().to_string();
    assert!(
        e.contains("allow_non_loopback") && e.contains("tls_cert"),
        "{e}"
    );
    assert!(p.check_listen("127.0.0.1:1110".parse().unwrap()).is_ok());
    assert!(p.check_listen("[::1]:1110".parse().unwrap()).is_ok());
    let p = ProxyBuilder::new(FAKE_UPSTREAM)
        .config("allow_non_loopback = true")
        .data_dir(dir.path())
        .fixed_scorer()
        .build();
    assert!(p.check_listen(lan).is_ok());
    let pki = Pki::new();
    let p = ProxyBuilder::new(FAKE_UPSTREAM)
        .client_tls(&pki.ca, "stls")
        .data_dir(dir.path())
        .fixed_scorer()
        .build();
    assert!(p.check_listen(lan).is_ok());
}
