//! The `popguard server` command as a user runs it: flags, start-up errors that say what to
//! fix, the printed address, serving, and a clean exit on SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use popguard_test_support as support;
use support::{ChildGuard, spawn, with_timeout};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TEST_TIMEOUT_SECS: u64 = 60;

/// Waits until the child prints `... on ADDR` on stdout and returns ADDR.
fn printed_addr(child: &mut ChildGuard, marker: &str) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = child.stdout();
        if let Some(rest) = out.split(marker).nth(1) {
            let addr: String = rest
                .trim_start()
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            if let Ok(a) = addr.parse() {
                return a;
            }
        }
        if let Some(status) = child.try_wait() {
            panic!(
                "popguard exited ({status}) before listening:\n{}",
                child.stderr()
            );
        }
        assert!(Instant::now() < deadline, "no address printed: {out}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Logs in and runs `commands`, returning every reply line (multi-line bodies included).
async fn session(addr: SocketAddr, user: &str, pass: &str, commands: &[&str]) -> Vec<String> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut lines = Vec::new();
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("+OK"), "{line}");
    let login = [format!("USER {user}"), format!("PASS {pass}")];
    for c in login
        .iter()
        .map(String::as_str)
        .chain(commands.iter().copied())
    {
        w.write_all(format!("{c}\r\n").as_bytes()).await.unwrap();
        line.clear();
        r.read_line(&mut line).await.unwrap();
        lines.push(line.trim_end().to_owned());
        let multi =
            line.starts_with("+OK") && (c == "LIST" || c == "UIDL" || c.starts_with("RETR"));
        if multi {
            loop {
                line.clear();
                r.read_line(&mut line).await.unwrap();
                if line == ".\r\n" || line.is_empty() {
                    break;
                }
                lines.push(line.trim_end().to_owned());
            }
        }
    }
    lines
}

fn maildrop(root: &Path, user: &str, msgs: &[&str]) {
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(root.join(user).join(sub)).unwrap();
    }
    for (i, m) in msgs.iter().enumerate() {
        std::fs::write(
            root.join(user)
                .join("new")
                .join(format!("{}.M{i}.h", 1700000000 + i)),
            m,
        )
        .unwrap();
    }
}

#[tokio::test]
async fn server_serves_hashed_logins_and_stops_on_sigterm() {
    with_timeout(TEST_TIMEOUT_SECS, async {
        let t = tempfile::tempdir().unwrap();
        maildrop(&t.path().join("mail"), "carol", &["Subject: a\n\nA\n", "Subject: b\n\nB\n"]);
        // `openssl passwd -6 -salt saltsalt secret`
        std::fs::write(
            t.path().join("users"),
            "# test users\ncarol:{SHA512-CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\n",
        )
        .unwrap();
        let mail = t.path().join("mail");
        let users = t.path().join("users");
        let mut child = spawn([
            "server".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--maildirs".as_ref(),
            mail.as_os_str(),
            "--users".as_ref(),
            users.as_os_str(),
            "--timeout".as_ref(),
            "30".as_ref(),
        ]);
        let addr = printed_addr(&mut child, "listening on");
        let lines = session(addr, "carol", "secret", &["STAT", "DELE 1", "QUIT"]).await;
        assert_eq!(lines[2], "+OK 2 34", "{lines:?}");
        assert!(lines.last().unwrap().starts_with("+OK"), "{lines:?}");
        assert_eq!(std::fs::read_dir(mail.join("carol/new")).unwrap().count(), 1);
        let wrong = session(addr, "carol", "Secret", &[]).await;
        assert!(wrong[1].starts_with("-ERR [AUTH]"), "{wrong:?}");

        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child
            .wait_timeout(Duration::from_secs(15))
            .expect("server did not stop on SIGTERM");
        assert!(exit.success(), "{exit}: {}", child.stderr());
    })
    .await
}

#[test]
fn start_up_errors_say_what_to_fix() {
    let t = tempfile::tempdir().unwrap();
    let mail = t.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    let users = t.path().join("users");
    let run = |users: &Path, mail: &Path| {
        let mut child = spawn([
            "server".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--maildirs".as_ref(),
            mail.as_os_str(),
            "--users".as_ref(),
            users.as_os_str(),
        ]);
        let status = child
            .wait_timeout(Duration::from_secs(20))
            .expect("popguard server should exit on a bad start");
        assert!(!status.success());
        child.stderr()
    };
    let e = run(&users, &mail);
    assert!(
        e.contains("cannot read users file") && e.contains("users"),
        "{e}"
    );
    std::fs::write(&users, "alice:pw\nbroken line\n").unwrap();
    let e = run(&users, &mail);
    assert!(e.contains("line 2"), "{e}");
    std::fs::write(&users, "alice:pw\n").unwrap();
    let e = run(&users, &t.path().join("nope"));
    assert!(e.contains("is not a directory"), "{e}");
}
