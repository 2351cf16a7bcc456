//! Unit tests of the maildrop: sizes, TOP cuts, UIDLs, ordering, removal, and links that must not be followed.

use super::*;

fn naive_size(data: &[u8]) -> u64 {
    let bare = (0..data.len())
        .filter(|&i| data[i] == b'\n' && (i == 0 || data[i - 1] != b'\r'))
        .count();
    (data.len() + bare) as u64
}

/// TOP by whole lines: split after each LF, keep the header through its blank line, then `n` lines.
fn naive_top(data: &[u8], n: usize) -> Vec<u8> {
    let mut lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
    let blank = lines.iter().position(|l| *l == b"\n" || *l == b"\r\n");
    match blank {
        None => data.to_vec(),
        Some(i) => {
            lines.truncate((i + 1 + n).min(lines.len()));
            lines.concat()
        }
    }
}

fn split_feed_size(data: &[u8], at: usize) -> u64 {
    let mut c = SizeCounter::default();
    c.feed(&data[..at]);
    c.feed(&[]);
    c.feed(&data[at..]);
    c.size()
}

fn split_feed_top(data: &[u8], n: u32, at: usize) -> Vec<u8> {
    let mut f = TopFilter::new(n);
    let mut out = Vec::new();
    for part in [&data[..at], &data[at..]] {
        if f.is_done() {
            break;
        }
        let k = f.feed(part);
        out.extend_from_slice(&part[..k]);
    }
    out
}

const SAMPLES: &[&[u8]] = &[
    b"",
    b"\n",
    b"\r\n",
    b"Subject: a\r\n\r\nbody1\r\nbody2\r\n",
    b"Subject: a\n\nbody1\nbody2\nbody3",
    b"Subject: a\nX: b\r\n\r\n\r\n.\n..\r\nlast",
    b"Subject: no body at all\n",
    b"A: \r\r\nB: c\r\n\r\nx\ry\r\n",
    b"\r\n\r\nstarts blank\n",
    b"lone cr at end\r",
];

#[test]
fn size_counts_bare_lfs_at_every_split() {
    for data in SAMPLES {
        let want = naive_size(data);
        for at in 0..=data.len() {
            assert_eq!(split_feed_size(data, at), want, "{data:?} split at {at}");
        }
    }
    assert_eq!(naive_size(b"a\nb\r\n"), 6);
}

#[test]
fn top_matches_line_reference_at_every_split() {
    for data in SAMPLES {
        for n in 0..5u32 {
            let want = naive_top(data, n as usize);
            for at in 0..=data.len() {
                assert_eq!(
                    split_feed_top(data, n, at),
                    want,
                    "{:?} n={n} split at {at}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }
}

#[test]
fn top_zero_is_header_and_blank_line() {
    let msg = b"From: a\r\nSubject: b\r\n\r\nbody\r\n";
    let mut f = TopFilter::new(0);
    let k = f.feed(msg);
    assert_eq!(&msg[..k], b"From: a\r\nSubject: b\r\n\r\n");
    assert!(f.is_done());
}

#[test]
fn uidl_is_the_unique_part_or_a_hash() {
    assert_eq!(uidl_for("1700000000.M1P2.host:2,S"), "1700000000.M1P2.host");
    assert_eq!(uidl_for("1700000000.M1P2.host"), "1700000000.M1P2.host");
    let long = "x".repeat(71);
    let h = uidl_for(&long);
    assert_eq!(h.len(), HASHED_UIDL_LEN);
    assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(h, uidl_for(&long), "stable");
    assert_eq!(uidl_for("with space").len(), HASHED_UIDL_LEN);
    assert_eq!(uidl_for(":2,S").len(), HASHED_UIDL_LEN);
}

fn make_maildrop(dir: &Path, files: &[(&str, &[u8])]) {
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for (name, data) in files {
        fs::write(dir.join(name), data).unwrap();
    }
}

#[test]
fn open_orders_by_delivery_time_and_skips_non_messages() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("alice");
    make_maildrop(
        &root,
        &[
            ("cur/200.M2.h:2,S", b"b\n"),
            ("new/100.M1.h", b"a\r\n"),
            ("new/1000.M3.h", b"c\n\n"),
            ("new/.hidden", b"x"),
            ("tmp/50.M0.h", b"in delivery"),
            ("new/zzz", b"no timestamp\n"),
        ],
    );
    fs::create_dir(root.join("new/subdir")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("new/10.link")).unwrap();
    let m = Maildrop::open(&root).unwrap();
    let got: Vec<(&str, u64)> = m
        .messages()
        .iter()
        .map(|x| (x.uidl.as_str(), x.size))
        .collect();
    assert_eq!(
        got,
        vec![
            ("100.M1.h", 3),
            ("200.M2.h", 3),
            ("1000.M3.h", 5),
            ("zzz", 14)
        ]
    );
}

#[test]
fn duplicate_unique_parts_get_distinct_stable_uidls() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("u");
    make_maildrop(&root, &[("new/5.A.h", b"1\n"), ("cur/5.A.h:2,", b"2\n")]);
    let a = Maildrop::open(&root).unwrap();
    let b = Maildrop::open(&root).unwrap();
    let ua: Vec<_> = a.messages().iter().map(|m| m.uidl.clone()).collect();
    let ub: Vec<_> = b.messages().iter().map(|m| m.uidl.clone()).collect();
    assert_eq!(ua.len(), 2);
    assert_ne!(ua[0], ua[1]);
    assert_eq!(ua, ub);
}

#[test]
fn missing_root_is_an_error_missing_subdirs_are_empty() {
    let t = tempfile::tempdir().unwrap();
    let e = Maildrop::open(&t.path().join("nobody")).unwrap_err();
    assert!(matches!(e, MaildirError::Missing { .. }));
    assert!(e.to_string().contains("mkdir -p"), "{e}");
    let root = t.path().join("bare");
    fs::create_dir(&root).unwrap();
    assert!(Maildrop::open(&root).unwrap().messages().is_empty());
}

#[test]
fn remove_handles_renamed_and_vanished_messages() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("u");
    make_maildrop(
        &root,
        &[
            ("new/1.a.h", b"1\n"),
            ("new/2.b.h", b"2\n"),
            ("new/3.c.h", b"3\n"),
            ("new/4.d.h", b"4\n"),
        ],
    );
    let m = Maildrop::open(&root).unwrap();
    // A local reader moves message 2 to cur/ and someone else expunges message 3.
    fs::rename(root.join("new/2.b.h"), root.join("cur/2.b.h:2,S")).unwrap();
    fs::remove_file(root.join("new/3.c.h")).unwrap();
    let r = m.remove(&[0, 1, 2]);
    assert_eq!(r.removed, 3);
    assert!(r.failed.is_empty());
    let left = Maildrop::open(&root).unwrap();
    assert_eq!(left.messages().len(), 1);
    assert_eq!(left.messages()[0].uidl, "4.d.h");
}

/// A local user who owns the maildrop points `cur/` at a directory of someone else's files.
#[test]
fn a_symlinked_subdirectory_is_not_listed() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("1.secret.h"), b"secret\n").unwrap();
    let root = t.path().join("u");
    make_maildrop(&root, &[("new/2.mine.h", b"mine\n")]);
    fs::remove_dir(root.join("cur")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("cur")).unwrap();
    let m = Maildrop::open(&root).unwrap();
    let uidls: Vec<&str> = m.messages().iter().map(|x| x.uidl.as_str()).collect();
    assert_eq!(uidls, vec!["2.mine.h"]);
    // Nor is `new/` when it is the link.
    fs::rename(root.join("new"), root.join("new.real")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("new")).unwrap();
    assert!(Maildrop::open(&root).unwrap().messages().is_empty());
    assert!(outside.join("1.secret.h").exists());
}

/// The message file is swapped for a link (or another file, or a FIFO) between LIST and RETR.
#[test]
fn a_message_replaced_after_listing_is_not_opened() {
    let t = tempfile::tempdir().unwrap();
    let secret = t.path().join("secret");
    fs::write(&secret, b"not yours\n").unwrap();
    let root = t.path().join("u");
    make_maildrop(
        &root,
        &[
            ("new/1.a.h", b"one\n"),
            ("new/2.b.h", b"two\n"),
            ("new/3.c.h", b"three\n"),
        ],
    );
    let m = Maildrop::open(&root).unwrap();
    let msgs = m.messages();
    let mut buf = Vec::new();
    let mut f = msgs[0].source.open().unwrap();
    f.read_chunk(&mut buf).unwrap();
    assert_eq!(buf, b"one\n");

    fs::remove_file(root.join("new/1.a.h")).unwrap();
    std::os::unix::fs::symlink(&secret, root.join("new/1.a.h")).unwrap();
    let e = msgs[0].source.open().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(Errno::LOOP.raw_os_error()), "{e}");

    fs::remove_file(root.join("new/2.b.h")).unwrap();
    fs::write(root.join("new/2.b.h"), b"a different file\n").unwrap();
    let e = msgs[1].source.open().unwrap_err();
    assert!(e.to_string().contains("replaced"), "{e}");

    // A FIFO must neither block the open nor be read.
    fs::remove_file(root.join("new/3.c.h")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("new/3.c.h"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert!(msgs[2].source.open().is_err());

    // QUIT removes none of the impostors, and never the link's target.
    let r = m.remove(&[0, 1, 2]);
    assert_eq!(r.removed, 0);
    assert_eq!(r.failed.len(), 3);
    assert!(secret.exists());
    assert!(fs::symlink_metadata(root.join("new/1.a.h")).is_ok());
    assert!(root.join("new/2.b.h").exists());
}

/// `cur/` is swapped for a link to another directory holding a file of the same name after LIST.
#[test]
fn a_directory_swapped_after_listing_reaches_nothing_outside() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("1.a.h:2,S"), b"victim\n").unwrap();
    let root = t.path().join("u");
    make_maildrop(&root, &[("cur/1.a.h:2,S", b"mine\n")]);
    let m = Maildrop::open(&root).unwrap();
    fs::rename(root.join("cur"), root.join("cur.old")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("cur")).unwrap();
    // RETR still reads the listed message, from where it really is.
    let mut buf = Vec::new();
    m.messages()[0]
        .source
        .open()
        .unwrap()
        .read_chunk(&mut buf)
        .unwrap();
    assert_eq!(buf, b"mine\n");
    // And QUIT deletes that one, not the file of the same name behind the link.
    let r = m.remove(&[0]);
    assert_eq!((r.removed, r.failed.len()), (1, 0));
    assert!(outside.join("1.a.h:2,S").exists());
    assert!(!root.join("cur.old/1.a.h:2,S").exists());
}

#[test]
fn size_cache_is_used_and_notices_changed_files() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("u");
    make_maildrop(&root, &[("new/1.a.h", b"a\nb\n"), ("new/2.b.h", b"c\r\n")]);
    let cache = SizeCache::default();
    let first = Maildrop::open_cached(&root, &cache).unwrap();
    assert_eq!(cache.len(), 2);
    assert_eq!(first.messages()[0].size, 6);
    // Rewritten with a different length: the cached size must not be used.
    fs::write(root.join("new/1.a.h"), b"a\nb\nc\n").unwrap();
    let second = Maildrop::open_cached(&root, &cache).unwrap();
    assert_eq!(second.messages()[0].size, 9);
    assert_eq!(second.messages()[1].size, 3);
}

#[test]
fn message_file_reads_in_bounded_chunks() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("big");
    let data: Vec<u8> = (0..READ_CHUNK * 2 + 17).map(|i| (i % 251) as u8).collect();
    fs::write(&p, &data).unwrap();
    let mut f = MessageFile::open(&p).unwrap();
    let mut buf = Vec::new();
    let mut all = Vec::new();
    while !f.is_at_end() {
        f.read_chunk(&mut buf).unwrap();
        assert!(!buf.is_empty());
        assert!(buf.len() <= READ_CHUNK);
        all.extend_from_slice(&buf);
    }
    assert_eq!(all, data);
    f.read_chunk(&mut buf).unwrap();
    assert!(buf.is_empty());
    assert_eq!(pop3_size(&p).unwrap(), naive_size(&data));
}
