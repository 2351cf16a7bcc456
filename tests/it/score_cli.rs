//! `popguard score` and `popguard rules` as a user runs them: the real binary on fixture files in a temp dir.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SPAM: &str = "From: deals4u2983@bulk.example
To: undisclosed-recipients:;
Subject: FREE CASH NOW!!!                          48213
Date: Mon, 05 Aug 2002 08:51:39 -1700
Message-ID: <0000047b4e66$00005044$0000547b@bulk.example>
X-Mailer: Microsoft Outlook Express 6.00.2600.0000
MIME-Version: 1.0
Content-Type: text/html; charset=\"iso-8859-1\"

<html><body><center><font size=\"+4\" color=\"#ff0000\"><b>MAKE MONEY FROM HOME!!!</b></font></center>
<p>Dear Friend, this is not spam. Earn $5,000 per week. 100% guaranteed, risk-free! Act now!</p>
<p><a href=\"http://198.51.100.23/join\">Click here</a>. To be removed reply with REMOVE in the subject.</p>
</body></html>
";

const HAM: &str = "From: Alice Example <alice@example.org>
To: Bob <bob@example.net>
Subject: Re: lunch on Friday
Date: Tue, 3 Sep 2024 10:02:00 +0200
Message-ID: <20240903080200.GA1234@example.org>
In-Reply-To: <87zfq1x2y3.fsf@example.net>

> Are we still on for Friday?

Yes, see you at noon at the usual place.
Alice
";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write("spam.eml", SPAM);
        f.write("ham.eml", HAM);
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `popguard ARGS` with the shipped rules, a private data dir and no ambient config.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let rules = shipped_rules();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_popguard"));
        cmd.args(args)
            .env_remove("POPGUARD_CONFIG")
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if args.first() == Some(&"score") {
            if !args.contains(&"--rules") {
                cmd.arg("--rules").arg(&rules);
            }
            cmd.arg("--data-dir").arg(self.path("data"));
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }
}

fn shipped_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn json_has_one_object_per_file_with_the_documented_fields() {
    let f = Fixture::new();
    let out = f.run(
        &["score", "--json", "--no-network", "spam.eml", "ham.eml"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);

    let spam = &lines[0];
    assert_eq!(spam["file"], "spam.eml");
    assert_eq!(spam["verdict"], "spam");
    assert!(spam["score"].as_f64().unwrap() >= 5.0, "{spam}");
    let rules: Vec<&str> = spam["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(rules.contains(&"DATE_ABSURD_TIMEZONE"), "{rules:?}");
    let hits = spam["hits"].as_array().unwrap();
    assert_eq!(hits.len(), rules.len());
    assert!(
        hits.iter().all(|h| h["name"].is_string()
            && h["score"].is_number()
            && h["description"].is_string())
    );
    let sum: f64 = hits.iter().map(|h| h["score"].as_f64().unwrap()).sum();
    assert!((sum - spam["score"].as_f64().unwrap()).abs() < 0.01);
    assert!(spam["bayes"].is_null(), "no training yet: {spam}");
    assert!(spam["skipped"].is_array());

    let ham = &lines[1];
    assert_eq!(ham["file"], "ham.eml");
    assert_eq!(ham["verdict"], "ham");
    assert!(ham["score"].as_f64().unwrap() < 3.0, "{ham}");
}

#[test]
fn text_output_and_explain() {
    let f = Fixture::new();
    let out = f.run(&["score", "--no-network", "spam.eml", "ham.eml"], None);
    assert!(out.status.success());
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("spam.eml: spam "), "{text}");
    assert!(lines[0].contains("DATE_ABSURD_TIMEZONE=2"), "{text}");
    assert!(lines[1].starts_with("ham.eml: ham "), "{text}");

    let out = f.run(&["score", "--no-network", "--explain", "spam.eml"], None);
    let text = stdout(&out);
    assert!(
        text.contains("DATE_ABSURD_TIMEZONE") && text.contains("time-zone offset"),
        "{text}"
    );
    assert!(text.contains("bayes:"), "{text}");
}

#[test]
fn unreadable_files_are_reported_and_the_rest_still_scored() {
    let f = Fixture::new();
    let out = f.run(&["score", "--no-network", "missing.eml", "ham.eml"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("ham.eml: ham"), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.eml: cannot read"), "{err}");

    let out = f.run(
        &["score", "--json", "--no-network", "ham.eml", "missing.eml"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["verdict"], "ham");
    assert_eq!(lines[1]["file"], "missing.eml");
    assert!(lines[1]["error"].as_str().unwrap().contains("cannot read"));
}

#[test]
fn stdin_is_scored_with_a_dash() {
    let f = Fixture::new();
    let out = f.run(&["score", "--json", "--no-network", "-"], Some(SPAM));
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    assert_eq!(lines[0]["file"], "-");
    assert_eq!(lines[0]["verdict"], "spam");
}

#[test]
fn the_configured_scan_limit_applies_as_in_the_proxy() {
    let f = Fixture::new();
    // The only spam sign sits past the first 300 bytes.
    let msg = format!(
        "From: a@example.org\nDate: Tue, 3 Sep 2024 10:02:00 +0200\nSubject: hello\n\n{}\nThis is not spam.\n",
        "ordinary words ".repeat(30)
    );
    f.write("late.eml", &msg);
    f.write("small.toml", "[filter]\nscan_limit = 300\n");
    let full = json_lines(&f.run(&["score", "--json", "--no-network", "late.eml"], None));
    assert!(
        full[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "BODY_NOT_SPAM_CLAIM"),
        "{full:?}"
    );
    let cut = json_lines(&f.run(
        &[
            "score",
            "--json",
            "--no-network",
            "--config",
            "small.toml",
            "late.eml",
        ],
        None,
    ));
    assert!(
        !cut[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "BODY_NOT_SPAM_CLAIM"),
        "{cut:?}"
    );
}

#[test]
fn user_rules_apply_with_user() {
    let f = Fixture::new();
    let rules = f.path("myrules");
    std::fs::create_dir_all(&rules).unwrap();
    for entry in std::fs::read_dir(shipped_rules()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, rules.join(p.file_name().unwrap())).unwrap();
        }
    }
    f.write(
        "myrules/users/bob.toml",
        "whitelist_from = [\"deals4u2983@bulk.example\"]\n",
    );
    let rules_arg = rules.to_str().unwrap();
    let bob = f.run(
        &[
            "score",
            "--json",
            "--no-network",
            "--rules",
            rules_arg,
            "--user",
            "bob",
            "spam.eml",
        ],
        None,
    );
    let bob = json_lines(&bob);
    assert_eq!(bob[0]["verdict"], "ham", "{bob:?}");
    assert!(
        bob[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "USER_WHITELIST")
    );
    let anon = json_lines(&f.run(
        &[
            "score",
            "--json",
            "--no-network",
            "--rules",
            rules_arg,
            "spam.eml",
        ],
        None,
    ));
    assert_eq!(anon[0]["verdict"], "spam");
}

#[test]
fn rules_check_reports_file_line_and_reason() {
    let f = Fixture::new();
    let ok = f.run(&["rules", "check", shipped_rules().to_str().unwrap()], None);
    assert!(ok.status.success(), "{ok:?}");
    assert!(stdout(&ok).starts_with("OK: "), "{ok:?}");

    f.write(
        "bad/10-x.toml",
        "[[rule]]\nname = \"X\"\ntarget = \"body\"\npattern = '(?:a{1000}){1000}'\nscore = 1\ndescription = \"d\"\n",
    );
    f.write("bad/users/zed.toml", "\n\ndisable = [\"NOPE\"]\n");
    let bad = f.run(&["rules", "check", "bad"], None);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let text = stdout(&bad);
    let x = Path::new("bad").join("10-x.toml");
    assert!(
        text.contains(&format!(
            "{}:4: X: pattern compiles to more than",
            x.display()
        )),
        "{text}"
    );
    let zed = Path::new("bad").join("users").join("zed.toml");
    assert!(
        text.contains(&format!("{}:3: disable: unknown rule NOPE", zed.display())),
        "{text}"
    );
}

#[test]
fn rules_list_shows_the_set() {
    let f = Fixture::new();
    let out = f.run(
        &[
            "rules",
            "list",
            "--rules",
            shipped_rules().to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("DATE_ABSURD_TIMEZONE "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("header:date") && line.contains("10-headers.toml:"),
        "{line}"
    );
}

#[tokio::test]
async fn nameserver_flag_points_blocklist_lookups_at_a_local_resolver() {
    // A blocklist zone served on 127.0.0.1 that lists the domain the message links to.
    let dns = popguard_test_support::dns::TestDns::start(vec![
        popguard_test_support::dns::TestZone::new("dbl.test")
            .with("listed.example", std::net::Ipv4Addr::new(127, 0, 1, 2)),
    ])
    .await;
    let f = Fixture::new();
    f.write(
        "dnsbl.toml",
        "[dnsbl]\nenabled = true\n[[dnsbl.zones]]\nname = \"TESTDBL\"\nzone = \"dbl.test\"\nkind = \"domain\"\nscore = 3.0\n",
    );
    f.write(
        "link.eml",
        "From: a@example.org\nDate: Tue, 3 Sep 2024 10:02:00 +0200\nSubject: hi\n\nsee http://www.listed.example/page\n",
    );
    let ns = dns.addr.to_string();
    let args = [
        "score",
        "--json",
        "--config",
        "dnsbl.toml",
        "--nameserver",
        &ns,
        "link.eml",
    ];
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = f.run(&args, None);
            drop(f);
            out
        }),
    )
    .await
    .expect("score timed out")
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    let rules = lines[0]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r == "DNSBL_TESTDBL"), "{lines:?}");
    assert!(dns.queries() > 0);
}

#[test]
fn directories_maildirs_and_mbox_files_are_scored_per_message() {
    let f = Fixture::new();
    f.write("dir/b-ham.eml", HAM);
    f.write("dir/a-spam.eml", SPAM);
    f.write("dir/.hidden", SPAM);
    f.write("Maildir/cur/1:2,S", HAM);
    f.write("Maildir/new/2", SPAM);
    f.write("Maildir/tmp/3", SPAM);
    let mbox = format!(
        "From a@b Mon Aug  5 08:51:39 2002\n{SPAM}\nFrom c@d Tue Sep  3 10:02:00 2024\n{HAM}"
    );
    f.write("box.mbox", &mbox);
    let out = f.run(
        &[
            "score",
            "--json",
            "--no-network",
            "dir",
            "Maildir",
            "box.mbox",
            "ham.eml",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let got: Vec<(String, String)> = json_lines(&out)
        .iter()
        .map(|l| {
            (
                l["file"].as_str().unwrap().replace('\\', "/"),
                l["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("dir/a-spam.eml", "spam"),
        ("dir/b-ham.eml", "ham"),
        ("Maildir/cur/1:2,S", "ham"),
        ("Maildir/new/2", "spam"),
        ("box.mbox#1", "spam"),
        ("box.mbox#2", "ham"),
        ("ham.eml", "ham"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(got, want);

    // A directory that cannot be walked is reported like an unreadable file; the rest is still scored.
    let out = f.run(&["score", "--no-network", "ham.eml", "nowhere/"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("ham.eml: ham"), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere/: cannot read"));
}
