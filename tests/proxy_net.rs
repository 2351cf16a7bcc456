//! The proxy over real loopback sockets and TLS: upstream implicit TLS and STLS with certificate verification
//! (and clear errors when it fails), client implicit TLS and STLS, the listener entry point and its refusal to
//! serve passwords in clear to the network.

mod proxy_fake;

use std::path::PathBuf;
use std::sync::Arc;

use popguard::proxy::upstream::TcpConnect;
use popguard::tls::{self, client_config_with};
use proxy_fake::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::duplex;
use tokio::net::TcpListener;

/// A test CA, a "localhost" certificate it signed, and an unrelated CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_for = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let ca = ca_for("popguard proxy test CA");
        let other = ca_for("some other CA");
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.pem()).unwrap();
        std::fs::write(dir.path().join("leaf.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("leaf.key"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn server(&self) -> Arc<rustls::ServerConfig> {
        tls::server_config(&self.path("leaf.pem"), &self.path("leaf.key")).unwrap()
    }

    /// TOML lines for the proxy's client-side certificate.
    fn client_tls_toml(&self, mode: &str) -> String {
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\nclient_tls = \"{mode}\"\n",
            self.path("leaf.pem").to_str().unwrap(),
            self.path("leaf.key").to_str().unwrap()
        )
    }
}

/// A config whose upstream is `upstream` with the proxy trusting `ca`.
fn tls_config(
    dir: &std::path::Path,
    upstream: &str,
    tls_mode: Option<&str>,
    ca: &std::path::Path,
    extra: &str,
) -> Arc<popguard::config::Config> {
    let mode = tls_mode
        .map(|m| format!("upstream_tls = \"{m}\"\n"))
        .unwrap_or_default();
    let text = format!(
        "data_dir = {:?}\n[proxy]\nupstream = \"{upstream}\"\n{mode}ca_file = {:?}\naction = \"tag\"\n{extra}",
        dir.to_str().unwrap(),
        ca.to_str().unwrap()
    );
    Arc::new(popguard::config::Config::parse(&text).unwrap())
}

#[tokio::test]
async fn upstream_implicit_tls_is_verified_against_the_ca_file() {
    within(async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(
            mixed(),
            Behaviour {
                implicit_tls: Some(pki.server()),
                ..Behaviour::default()
            },
        );
        // Port 995 defaults to implicit TLS.
        let cfg = tls_config(dir.path(), "localhost:995", None, &pki.path("ca.pem"), "");
        let p = Arc::new(proxy_unshared(cfg, fake.clone(), Default::default()));
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
    within(async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(
            mixed(),
            Behaviour {
                stls: Some(pki.server()),
                ..Behaviour::default()
            },
        );
        // Any port but 995 defaults to STLS.
        let cfg = tls_config(dir.path(), "localhost:110", None, &pki.path("ca.pem"), "");
        let p = Arc::new(proxy_unshared(cfg, fake.clone(), Default::default()));
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
    within(async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let behaviour = Behaviour {
            implicit_tls: Some(pki.server()),
            ..Behaviour::default()
        };
        // Signed by a CA the proxy does not trust.
        let cfg = tls_config(
            dir.path(),
            "localhost:995",
            None,
            &pki.path("other-ca.pem"),
            "",
        );
        let p = proxy_unshared(
            cfg,
            Fake::new(mixed(), behaviour.clone()),
            Default::default(),
        )
        .with_upstream_tls(client_config_with(Some(&pki.path("other-ca.pem")), false).unwrap());
        let c = connect(&Arc::new(p)).await;
        assert!(!c.greeting.is_ok());
        assert!(c.greeting.text.contains("unknown issuer"), "{}", c.greeting);
        // A certificate for another name.
        let cfg = tls_config(
            dir.path(),
            "mail.example.org:995",
            None,
            &pki.path("ca.pem"),
            "",
        );
        let p = proxy_unshared(cfg, Fake::new(mixed(), behaviour), Default::default())
            .with_upstream_tls(client_config_with(Some(&pki.path("ca.pem")), false).unwrap());
        let c = connect(&Arc::new(p)).await;
        assert!(!c.greeting.is_ok());
        assert!(c.greeting.text.contains("name mismatch"), "{}", c.greeting);
    })
    .await
}

#[tokio::test]
async fn clients_can_use_implicit_tls() {
    within(async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "tag", &pki.client_tls_toml("implicit"));
        let p = proxy(
            cfg,
            Fake::new(mixed(), Behaviour::default()),
            Default::default(),
        );
        let (a, b) = duplex(1 << 16);
        tokio::spawn(popguard::proxy::session::serve_connection(
            p.clone(),
            b,
            None,
        ));
        let trust = client_config_with(Some(&pki.path("ca.pem")), false).unwrap();
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
    within(async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "tag", &pki.client_tls_toml("stls"));
        let p = proxy(
            cfg,
            Fake::new(mixed(), Behaviour::default()),
            Default::default(),
        );
        let mut c = connect(&p).await;
        let (_, caps) = c.multi("CAPA").await;
        assert!(lines(&caps).contains(&"STLS".to_string()));
        // The peer is not loopback (unknown): no password in clear.
        let r = c.cmd("USER alice").await;
        assert!(!r.is_ok() && r.text.contains("STLS"), "{r}");
        assert!(c.cmd("STLS").await.is_ok());
        let trust = client_config_with(Some(&pki.path("ca.pem")), false).unwrap();
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
    within(async {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "tag", &pki.client_tls_toml("stls"));
        let p = proxy(
            cfg,
            Fake::new(mixed(), Behaviour::default()),
            Default::default(),
        );
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
    within(async {
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
        let text = format!(
            "data_dir = {:?}\n[proxy]\nupstream = \"{up_addr}\"\nupstream_tls = \"none\"\naction = \"hide\"\n",
            dir.path().to_str().unwrap()
        );
        let cfg = Arc::new(popguard::config::Config::parse(&text).unwrap());
        let p = Arc::new(proxy_unshared(cfg, TcpConnect, Default::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(popguard::proxy::serve(listener, p, async {
            let _ = stopped.await;
        }));
        let mut c = Client::on(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
        // A loopback client may log in without STLS.
        c.login().await;
        assert!(c.cmd("STAT").await.text.starts_with("2 "));
        assert!(c.cmd("DELE 2").await.is_ok());
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(fake.uidls(), vec!["uid-a", "uid-b"]);
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    })
    .await
}

#[tokio::test]
async fn network_listener_without_tls_needs_an_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let lan: std::net::SocketAddr = "192.0.2.10:1110".parse().unwrap();
    let p = proxy_unshared(
        config(dir.path(), "tag", ""),
        TcpConnect,
        Default::default(),
    );
    let e = p.check_listen(lan).unwrap_err().to_string();
    assert!(
        e.contains("allow_non_loopback") && e.contains("tls_cert"),
        "{e}"
    );
    assert!(p.check_listen("127.0.0.1:1110".parse().unwrap()).is_ok());
    assert!(p.check_listen("[::1]:1110".parse().unwrap()).is_ok());
    let p = proxy_unshared(
        config(dir.path(), "tag", "allow_non_loopback = true"),
        TcpConnect,
        Default::default(),
    );
    assert!(p.check_listen(lan).is_ok());
    let pki = Pki::new();
    let p = proxy_unshared(
        config(dir.path(), "tag", &pki.client_tls_toml("stls")),
        TcpConnect,
        Default::default(),
    );
    assert!(p.check_listen(lan).is_ok());
}
