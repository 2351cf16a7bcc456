//! `popguard train` as a user runs it: eml directories, maildirs and mboxes in, duplicates refused, untraining,
//! two processes training the same model at once, and a process killed mid-run leaving a usable model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use popguard::filter::bayes::model_path;
use popguard::filter::bayes::store::TokenDb;

const EXE: &str = env!("CARGO_BIN_EXE_popguard");

fn msg(kind: &str, i: usize) -> String {
    if kind == "spam" {
        format!(
            "From: winner{i}@lottery.example.biz\nTo: you@example.net\nSubject: You won {i} dollars!!!\n\
             Content-Type: text/plain\n\nClaim your prize {i} now, send your bank details to claim{i}.example.biz\n"
        )
    } else {
        format!(
            "From: colleague{}@work.example.org\nTo: you@example.net\nSubject: Re: report {i}\n\
             Content-Type: text/plain\n\nHere are my notes on section {i} of the quarterly report.\n",
            i % 5
        )
    }
}

fn write_eml_dir(dir: &Path, kind: &str, range: std::ops::Range<usize>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for i in range {
        std::fs::write(dir.join(format!("{kind}{i:05}.eml")), msg(kind, i)).unwrap();
    }
    dir.to_owned()
}

fn write_maildir(dir: &Path, kind: &str, range: std::ops::Range<usize>) -> PathBuf {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for i in range {
        let sub = if i % 2 == 0 { "cur" } else { "new" };
        std::fs::write(dir.join(sub).join(format!("{i}.host:2,S")), msg(kind, i)).unwrap();
    }
    // A message still being delivered is not mail yet.
    std::fs::write(dir.join("tmp/partial"), "Subject: half").unwrap();
    dir.to_owned()
}

fn write_mbox(path: &Path, kind: &str, range: std::ops::Range<usize>) -> PathBuf {
    let mut s = String::new();
    for i in range {
        s.push_str(&format!(
            "From sender{i}@example.com Mon Sep  2 10:00:00 2002\n"
        ));
        s.push_str(&msg(kind, i));
        s.push_str(">From the archive: quoted line\n\n");
    }
    std::fs::write(path, s).unwrap();
    path.to_owned()
}

fn train(data: &Path, args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(EXE);
    cmd.arg("train").arg("--data-dir").arg(data).args(args);
    for (flag, p) in paths {
        cmd.arg(flag).arg(p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "popguard train failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn counts(data: &Path, user: Option<&str>) -> (u32, u32, usize) {
    let db = TokenDb::open(&model_path(data, user)).unwrap();
    (db.nspam(), db.nham(), db.len())
}

#[test]
fn trains_from_dirs_maildirs_and_mboxes_and_refuses_duplicates() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let spam_dir = write_eml_dir(&t.path().join("spam"), "spam", 0..10);
    let spam_mbox = write_mbox(&t.path().join("spam.mbox"), "spam", 10..25);
    let ham_md = write_maildir(&t.path().join("Maildir"), "ham", 0..30);

    let out = train(
        &data,
        &["--user", "alice"],
        &[
            ("--spam", &spam_dir),
            ("--spam", &spam_mbox),
            ("--ham", &ham_md),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("trained 25 spam and 30 ham"), "{stdout}");
    assert!(
        out.stderr.is_empty(),
        "no progress bar when stderr is not a terminal: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = counts(&data, Some("alice"));
    assert_eq!((first.0, first.1), (25, 30));

    // The same messages again (a tagged copy of one, too) change nothing.
    let again = t.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    std::fs::write(
        again.join("tagged.eml"),
        format!(
            "X-Spam-Flag: YES\r\n{}",
            msg("spam", 3).replace('\n', "\r\n")
        ),
    )
    .unwrap();
    let out = train(
        &data,
        &["--user", "alice"],
        &[("--spam", &spam_dir), ("--spam", &again)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("trained 0 spam and 0 ham; 11 already trained"),
        "{stdout}"
    );
    assert_eq!(counts(&data, Some("alice")), first);

    // Another user's model and the global one are separate.
    train(&data, &[], &[("--ham", &ham_md)]);
    assert_eq!(counts(&data, None).1, 30);
    assert_eq!(counts(&data, Some("alice")), first);

    // Untraining removes exactly what was trained.
    let out = train(
        &data,
        &["--user", "alice", "--untrain"],
        &[("--spam", &spam_mbox)],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("untrained 15 messages"));
    assert_eq!(counts(&data, Some("alice")).0, 10);
    let out = train(
        &data,
        &["--user", "alice", "--untrain"],
        &[("--spam", &spam_mbox)],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("15 were not trained"));
}

#[test]
fn bad_input_paths_are_reported() {
    let t = tempfile::tempdir().unwrap();
    let out = Command::new(EXE)
        .arg("train")
        .arg("--data-dir")
        .arg(t.path())
        .arg("--spam")
        .arg(t.path().join("does-not-exist"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist"));
    let out = Command::new(EXE)
        .arg("train")
        .arg("--data-dir")
        .arg(t.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "nothing to train is an error");
}

#[test]
fn two_processes_training_one_model_lose_nothing() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let a = write_eml_dir(&t.path().join("a"), "spam", 0..150);
    let b = write_eml_dir(&t.path().join("b"), "ham", 0..150);
    let spawn = |flag: &str, dir: &Path| {
        Command::new(EXE)
            .arg("train")
            .arg("--data-dir")
            .arg(&data)
            .args(["--user", "shared", flag])
            .arg(dir)
            .output()
    };
    let h = std::thread::scope(|s| {
        let x = s.spawn(|| spawn("--spam", &a));
        let y = s.spawn(|| spawn("--ham", &b));
        (x.join().unwrap().unwrap(), y.join().unwrap().unwrap())
    });
    assert!(h.0.status.success() && h.1.status.success());
    let (s, hm, _) = counts(&data, Some("shared"));
    assert_eq!((s, hm), (150, 150));
}

#[test]
fn a_killed_training_run_leaves_the_old_or_the_new_model() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let base = write_eml_dir(&t.path().join("base"), "ham", 0..20);
    train(&data, &["--user", "k"], &[("--ham", &base)]);
    let before = counts(&data, Some("k"));
    let big = write_mbox(&t.path().join("big.mbox"), "spam", 0..3000);
    for delay_ms in [0u64, 20, 60, 150, 400] {
        let mut child = Command::new(EXE)
            .arg("train")
            .arg("--data-dir")
            .arg(&data)
            .args(["--user", "k", "--spam"])
            .arg(&big)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL: no cleanup runs
        let _ = child.wait();
        let now =
            TokenDb::open(&model_path(&data, Some("k"))).expect("the model is always readable");
        let now = (now.nspam(), now.nham(), now.len());
        assert!(
            now == before || (now.0 == 3000 && now.1 == before.1),
            "{delay_ms} ms: {now:?} vs {before:?}"
        );
        if now.0 == 3000 {
            break; // finished before the kill; later rounds would only see duplicates
        }
    }
    // Whatever happened, training can go on (stale temp files and the lock do not get in the way).
    train(&data, &["--user", "k"], &[("--spam", &big)]);
    assert_eq!(counts(&data, Some("k")).0, 3000);
}
