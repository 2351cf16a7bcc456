//! The proxy between a real Dovecot and the five real clients (fetchmail, getmail6, mpop with its pipelining, curl,
//! Python poplib), over a maildrop that mixes ham and spam, in both actions:
//! - hide: each client sees exactly the messages whose verdict is not spam, each identical to Dovecot's copy apart
//!   from added `X-Spam-*` fields; after it deletes everything it saw, the hidden spam is still on Dovecot;
//! - tag: every message arrives, spam with the Subject prefix and `X-Spam-Flag: YES`, ham unchanged apart from
//!   `X-Spam-*` fields;
//! - in both, every LIST size equals the size RETR delivers;
//! - upstream implicit TLS and STLS verified against a test CA (and refused with a clear `-ERR` otherwise), and a
//!   client that drops without QUIT deletes nothing.
//!
//! The fixtures' spam is recognised by Message-ID, so these tests check the relay and not rule tuning; one test
//! runs the real filter and derives its expectation from the filter's own verdicts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use popguard::filter::{Filter, ScoreOptions};
use popguard::pop3::{Pop3Stream, Response};
use popguard::proxy;
use popguard_test_support as support;
use support::fixtures;
use support::{
    Client, Dovecot, Opts, ProxyBuilder, RunningProxy, TestCa, assert_same_message,
    assert_same_messages, header_value, require_peer, strip_tag, with_timeout,
};
use tokio::net::TcpStream;

const USER: &str = "alice";
const PASS: &str = "alicepw";
/// Messages of each kind; they alternate ham, spam, ham, ... in the maildrop.
const EACH: usize = 8;
/// Bound for one test: Dovecot start, two client runs, checks.
const TEST_TIMEOUT_SECS: u64 = 240;

/// Raw messages.
type Msgs = Vec<Vec<u8>>;

/// (ham, spam, the maildrop with both interleaved).
fn maildrop() -> (Msgs, Msgs, Msgs) {
    let ham = fixtures::ham(EACH);
    let spam = fixtures::spam(EACH);
    let all = ham
        .iter()
        .zip(&spam)
        .flat_map(|(h, s)| [h.clone(), s.clone()])
        .collect();
    (ham, spam, all)
}

/// A proxy in front of `upstream`. "tag-fixed": tag with `tag_sizing = "fixed"` (no scan before LIST; every message
/// grows by the same size).
fn proxy_builder(upstream: &str, tls: &str, ca: Option<&Path>, action: &str) -> ProxyBuilder {
    let mut b = ProxyBuilder::new(upstream).upstream_tls(tls);
    if let Some(ca) = ca {
        b = b.ca_file(ca);
    }
    match action {
        "tag-fixed" => b.action("tag").config("tag_sizing = \"fixed\"\n"),
        a => b.action(a),
    }
}

/// Starts the proxy in front of `upstream`; `real_filter` uses the configured filter instead of the fixed scorer
/// (which takes the fixtures' spam for spam by its Message-ID).
async fn start_proxy(
    upstream: &str,
    tls: &str,
    ca: Option<&Path>,
    action: &str,
    real_filter: bool,
) -> RunningProxy {
    let b = proxy_builder(upstream, tls, ca, action);
    if real_filter {
        b.start().await
    } else {
        b.fixed_scorer().start().await
    }
}

/// A raw POP3 session: logs in, then checks that every LIST size is what RETR delivers. Returns the count.
async fn list_sizes_match_retr(addr: SocketAddr, label: &str) -> usize {
    let mut s = Pop3Stream::new(TcpStream::connect(addr).await.unwrap());
    assert!(s.read_response().await.unwrap().is_ok());
    let cmd = async |s: &mut Pop3Stream<TcpStream>, line: &str| -> Response {
        s.write_raw(format!("{line}\r\n").as_bytes()).await.unwrap();
        s.read_response().await.unwrap()
    };
    assert!(cmd(&mut s, &format!("USER {USER}")).await.is_ok());
    assert!(cmd(&mut s, &format!("PASS {PASS}")).await.is_ok());
    assert!(cmd(&mut s, "LIST").await.is_ok());
    let list = s.read_multiline(1 << 20).await.unwrap();
    let sizes: Vec<(u32, usize)> = String::from_utf8_lossy(&list)
        .lines()
        .map(|l| {
            let (n, size) = l.split_once(' ').unwrap();
            (n.parse().unwrap(), size.parse().unwrap())
        })
        .collect();
    let mut total = 0;
    for &(n, size) in &sizes {
        let r = cmd(&mut s, &format!("RETR {n}")).await;
        assert!(r.is_ok(), "{label}: RETR {n}: {r}");
        let body = s.read_multiline(1 << 24).await.unwrap();
        assert_eq!(
            body.len(),
            size,
            "{label}: LIST {n} said {size}, RETR gave {}",
            body.len()
        );
        total += size;
    }
    let stat = cmd(&mut s, "STAT").await;
    assert_eq!(
        stat.text,
        format!("{} {total}", sizes.len()),
        "{label}: STAT"
    );
    assert!(cmd(&mut s, "QUIT").await.is_ok());
    sizes.len()
}

/// Checks what a client received against the maildrop, for `action`.
fn check_received(
    label: &str,
    action: &str,
    got: &[Vec<u8>],
    ham: &[Vec<u8>],
    spam: &[Vec<u8>],
    all: &[Vec<u8>],
) {
    if action == "hide" {
        let plain: Vec<Vec<u8>> = got.iter().map(|m| strip_tag(m)).collect();
        assert_same_messages(label, &plain, ham);
        for m in got {
            assert!(
                header_value(m, "X-Spam-Flag").is_none(),
                "{label}: no spam may get through"
            );
        }
        return;
    }
    assert_eq!(
        got.len(),
        all.len(),
        "{label}: tag mode delivers everything"
    );
    for (i, (g, src)) in got.iter().zip(all).enumerate() {
        assert_same_message(&format!("{label} #{i}"), &strip_tag(g), src);
        let is_spam = spam.contains(src);
        let subject = header_value(g, "Subject").unwrap_or_default();
        if is_spam {
            assert_eq!(
                header_value(g, "X-Spam-Flag").as_deref(),
                Some("YES"),
                "{label} #{i}"
            );
            assert!(subject.starts_with("[SPAM] "), "{label} #{i}: {subject}");
        } else {
            assert!(header_value(g, "X-Spam-Flag").is_none(), "{label} #{i}");
            assert!(!subject.starts_with("[SPAM]"), "{label} #{i}");
            let status = header_value(g, "X-Spam-Status").unwrap_or_default();
            assert!(status.starts_with("No, "), "{label} #{i}: {status}");
        }
    }
}

/// One client through the proxy to Dovecot: a keeping run (first scan), the LIST/RETR size check, then a deleting
/// run (cached verdicts); afterwards Dovecot holds exactly the hidden spam (hide) or nothing (tag).
async fn through_proxy(client: Client, action: &'static str) {
    if !require_peer("dovecot") || !require_peer(client.name()) {
        return;
    }
    let label = format!("{} {action}", client.name());
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let (ham, spam, all) = maildrop();
        dv.deliver(USER, &all);
        let px = start_proxy(&dv.addr().to_string(), "none", None, action, false).await;

        let keep = Opts {
            keep: true,
            ..Opts::default()
        };
        let got = client
            .fetch(px.addr, USER, PASS, &keep)
            .await
            .unwrap_or_else(|e| panic!("{label} (keep): {e}"));
        check_received(&format!("{label} keep"), action, &got, &ham, &spam, &all);
        assert!(
            dv.maildrop(USER) == all,
            "{label}: keep changed the maildrop"
        );

        let visible = list_sizes_match_retr(px.addr, &label).await;
        assert_eq!(
            visible,
            if action == "hide" {
                ham.len()
            } else {
                all.len()
            }
        );

        let got = client
            .fetch(px.addr, USER, PASS, &Opts::default())
            .await
            .unwrap_or_else(|e| panic!("{label} (delete): {e}"));
        check_received(&format!("{label} delete"), action, &got, &ham, &spam, &all);
        let left = dv.maildrop(USER);
        if action == "hide" {
            assert_same_messages(
                &format!("{label}: hidden spam still upstream"),
                &left,
                &spam,
            );
        } else {
            assert!(left.is_empty(), "{label}: {} messages left", left.len());
        }
    })
    .await;
}

macro_rules! peer_tests {
    ($($name:ident: $client:ident, $action:literal;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                through_proxy(Client::$client, $action).await;
            }
        )*
    };
}

peer_tests! {
    fetchmail_hide: Fetchmail, "hide";
    fetchmail_tag: Fetchmail, "tag";
    getmail_hide: Getmail, "hide";
    getmail_tag: Getmail, "tag";
    mpop_hide: Mpop, "hide";
    mpop_tag: Mpop, "tag";
    curl_hide: Curl, "hide";
    curl_tag: Curl, "tag";
    poplib_hide: Poplib, "hide";
    poplib_tag: Poplib, "tag";
    fetchmail_tag_fixed_size: Fetchmail, "tag-fixed";
    getmail_tag_fixed_size: Getmail, "tag-fixed";
    mpop_tag_fixed_size: Mpop, "tag-fixed";
    curl_tag_fixed_size: Curl, "tag-fixed";
    poplib_tag_fixed_size: Poplib, "tag-fixed";
}

/// Clients that remember UIDLs fetch the visible mail once; new ham later arrives alone; hidden spam never does.
async fn new_only_hide(client: Client) {
    if !require_peer("dovecot") || !require_peer(client.name()) {
        return;
    }
    let label = format!("{} new_only hide", client.name());
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let (ham, _spam, all) = maildrop();
        let (first, later) = all.split_at(all.len() / 2);
        dv.deliver(USER, first);
        let px = start_proxy(&dv.addr().to_string(), "none", None, "hide", false).await;
        let state = tempfile::tempdir().unwrap();
        let opts = Opts {
            keep: true,
            new_only: true,
            state_dir: Some(state.path().to_path_buf()),
            ..Opts::default()
        };
        let run = async |round: &str| {
            let got = client
                .fetch(px.addr, USER, PASS, &opts)
                .await
                .unwrap_or_else(|e| panic!("{label} ({round}): {e}"));
            got.iter().map(|m| strip_tag(m)).collect::<Vec<_>>()
        };
        let hams_in = |part: &[Vec<u8>]| -> Vec<Vec<u8>> {
            part.iter().filter(|m| ham.contains(m)).cloned().collect()
        };
        assert_same_messages(
            &format!("{label} first"),
            &run("first").await,
            &hams_in(first),
        );
        assert_same_messages(&format!("{label} second"), &run("second").await, &[]);
        dv.deliver(USER, later);
        assert_same_messages(
            &format!("{label} new mail"),
            &run("new mail").await,
            &hams_in(later),
        );
        assert!(
            dv.maildrop(USER) == all,
            "{label}: keep changed the maildrop"
        );
    })
    .await;
}

#[tokio::test]
async fn fetchmail_new_only_hide() {
    new_only_hide(Client::Fetchmail).await;
}

#[tokio::test]
async fn getmail_new_only_hide() {
    new_only_hide(Client::Getmail).await;
}

#[tokio::test]
async fn mpop_new_only_hide() {
    new_only_hide(Client::Mpop).await;
}

#[tokio::test]
async fn poplib_new_only_hide() {
    new_only_hide(Client::Poplib).await;
}

/// Every client through the proxy to Dovecot's implicit-TLS port, verified against the test CA.
#[tokio::test]
async fn all_clients_through_upstream_implicit_tls() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_TIMEOUT_SECS * 2, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let (ham, spam, all) = maildrop();
        dv.deliver(USER, &all);
        let upstream = format!("localhost:{}", dv.tls_addr().port());
        let px = start_proxy(&upstream, "implicit", Some(dv.ca_file()), "hide", false).await;
        let keep = Opts {
            keep: true,
            ..Opts::default()
        };
        for client in Client::ALL {
            if !require_peer(client.name()) {
                continue;
            }
            let label = format!("{} via upstream TLS", client.name());
            let got = client
                .fetch(px.addr, USER, PASS, &keep)
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            check_received(&label, "hide", &got, &ham, &spam, &all);
        }
        list_sizes_match_retr(px.addr, "upstream TLS").await;
    })
    .await;
}

/// STLS towards Dovecot's plain port: the proxy upgrades, and the client never sees STLS from the upstream.
#[tokio::test]
async fn upstream_stls_to_dovecot() {
    if !require_peer("dovecot") || !require_peer("mpop") {
        return;
    }
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let (ham, spam, all) = maildrop();
        dv.deliver(USER, &all);
        let upstream = format!("localhost:{}", dv.addr().port());
        let px = start_proxy(&upstream, "starttls", Some(dv.ca_file()), "tag", false).await;
        let got = Client::Mpop
            .fetch(px.addr, USER, PASS, &Opts::default())
            .await
            .unwrap_or_else(|e| panic!("mpop via upstream STLS: {e}"));
        check_received("mpop via upstream STLS", "tag", &got, &ham, &spam, &all);
        assert!(dv.maildrop(USER).is_empty());
        assert!(dv.log().contains("TLS"), "Dovecot saw a TLS session");
    })
    .await;
}

/// An upstream certificate from an unknown CA: the client gets `-ERR` saying why, and nothing is relayed.
#[tokio::test]
async fn untrusted_upstream_certificate_is_refused_with_the_reason() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(60, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let other = tempfile::tempdir().unwrap();
        let other_ca = TestCa::create(other.path());
        let upstream = format!("localhost:{}", dv.tls_addr().port());
        let px = start_proxy(&upstream, "implicit", Some(&other_ca.ca_file), "tag", false).await;
        let mut s = Pop3Stream::new(TcpStream::connect(px.addr).await.unwrap());
        let greeting = s.read_response().await.unwrap();
        assert!(!greeting.is_ok(), "{greeting}");
        // The reason is spelled out (the test CAs share a name, so rustls reports a bad signature).
        assert!(
            greeting.text.contains("certificate of localhost rejected"),
            "{greeting}"
        );
    })
    .await;
}

/// A client that deletes and then drops the connection without QUIT: nothing is deleted on Dovecot.
#[tokio::test]
async fn client_dropping_without_quit_deletes_nothing_upstream() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(60, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let (_, _, all) = maildrop();
        dv.deliver(USER, &all);
        let px = start_proxy(&dv.addr().to_string(), "none", None, "hide", false).await;
        let mut s = Pop3Stream::new(TcpStream::connect(px.addr).await.unwrap());
        assert!(s.read_response().await.unwrap().is_ok());
        for line in [
            format!("USER {USER}"),
            format!("PASS {PASS}"),
            "DELE 1".into(),
            "DELE 2".into(),
        ] {
            s.write_raw(format!("{line}\r\n").as_bytes()).await.unwrap();
            let r = s.read_response().await.unwrap();
            assert!(r.is_ok(), "{line}: {r}");
        }
        drop(s);
        // Dovecot logs the disconnect once the proxy has dropped its upstream connection.
        for _ in 0..200 {
            if dv.log().contains("Disconnected") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(dv.log().contains("Disconnected"), "{}", dv.log());
        assert!(
            dv.maildrop(USER) == all,
            "nothing may be deleted without QUIT"
        );
    })
    .await;
}

/// The real filter end to end (rules as configured): the client sees exactly the messages whose verdict, computed
/// here on the bytes the proxy scans, is not spam.
#[tokio::test]
async fn real_filter_hides_exactly_what_it_calls_spam() {
    if !require_peer("dovecot") || !require_peer("poplib") {
        return;
    }
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let (_, _, all) = maildrop();
        dv.deliver(USER, &all);
        let px = start_proxy(&dv.addr().to_string(), "none", None, "hide", true).await;
        let data = tempfile::tempdir().unwrap();
        let config = proxy_builder("127.0.0.1:1", "none", None, "hide").parse_config(data.path());
        let filter = Filter::new(&config.filter_settings()).unwrap();
        let mut visible = Vec::new();
        for m in &all {
            // What Dovecot sends: CRLF line ends and a final line end.
            let wire = support::compare::normalize(m)
                .split(|&b| b == b'\n')
                .collect::<Vec<_>>()
                .join(&b"\r\n"[..]);
            let scanned = proxy::scanned_prefix(&wire, &config.proxy, config.filter.scan_limit);
            let v = filter
                .score(
                    Some(USER),
                    scanned,
                    &ScoreOptions {
                        network: false,
                        explain: false,
                    },
                )
                .await;
            if !v.is_spam() {
                visible.push(m.clone());
            }
        }
        let got = Client::Poplib
            .fetch(
                px.addr,
                USER,
                PASS,
                &Opts {
                    keep: true,
                    ..Opts::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("poplib: {e}"));
        let plain: Vec<Vec<u8>> = got.iter().map(|m| strip_tag(m)).collect();
        eprintln!("real filter: {} of {} visible", visible.len(), all.len());
        assert_same_messages("real filter", &plain, &visible);
    })
    .await;
}
