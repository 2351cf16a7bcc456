//! Tests of the token database: format, writer, pruning, crash safety.

use super::*;

fn digest(n: u8) -> Digest {
    [n; DIGEST_LEN]
}

fn spread(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 7)
}

#[test]
fn missing_file_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let db = TokenDb::open(&dir.path().join(TOKENS_FILE)).unwrap();
    assert_eq!((db.nspam(), db.nham(), db.len()), (0, 0, 0));
    assert_eq!(db.get(42), None);
    assert_eq!(db.trained_as(&digest(1)), None);
}

#[test]
fn train_untrain_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u").join(TOKENS_FILE);
    let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
    w.apply(&[1, 2, 3], Label::Spam, &digest(1), false);
    w.apply(&[2, 3, 4], Label::Ham, &digest(2), false);
    w.commit().unwrap();
    drop(w);

    let db = TokenDb::open(&path).unwrap();
    assert_eq!((db.nspam(), db.nham(), db.len()), (1, 1, 4));
    assert_eq!(db.get(2).map(|c| (c.spam, c.ham)), Some((1, 1)));
    assert_eq!(db.get(4).map(|c| (c.spam, c.ham)), Some((0, 1)));
    assert_eq!(db.get(5), None);
    assert_eq!(db.trained_as(&digest(1)), Some(Label::Spam));
    assert_eq!(db.trained_as(&digest(2)), Some(Label::Ham));
    assert_eq!((db.sum_spam(), db.sum_ham()), (3, 3));
    assert_eq!(db.generation(), 1);

    let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
    w.apply(&[1, 2, 3], Label::Spam, &digest(1), true);
    w.commit().unwrap();
    drop(w);
    let db = TokenDb::open(&path).unwrap();
    assert_eq!((db.nspam(), db.nham(), db.len()), (0, 1, 3));
    assert_eq!(db.get(1), None, "a token with no counts left is removed");
    assert_eq!(db.trained_as(&digest(1)), None);
    assert_eq!(db.generation(), 2);
}

#[test]
fn many_tokens_are_all_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKENS_FILE);
    let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
    let toks: Vec<u64> = (0..50_000u64).map(spread).collect();
    w.apply(&toks, Label::Ham, &digest(9), false);
    w.commit().unwrap();
    let db = TokenDb::open(&path).unwrap();
    assert_eq!(db.len(), 50_000);
    for &t in &toks {
        assert_eq!(db.get(t).map(|c| c.ham), Some(1), "{t}");
    }
    assert_eq!(db.get(spread(50_001)), None);
    assert!(db.iter().zip(db.iter().skip(1)).all(|(a, b)| a.0 < b.0));
}

#[test]
fn crash_mid_write_leaves_the_old_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKENS_FILE);
    let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
    w.apply(&[10, 20], Label::Spam, &digest(1), false);
    w.commit().unwrap();
    w.apply(&[30, 40], Label::Spam, &digest(2), false);
    w.fail_after = Some(100);
    assert!(w.commit().is_err());
    drop(w);
    let db = TokenDb::open(&path).unwrap();
    assert_eq!((db.nspam(), db.len()), (1, 2));
    assert_eq!(db.get(30), None);
    remove_stale_temps(&path);
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.iter().all(|n| !n.to_string_lossy().contains(".tmp-")),
        "{left:?}"
    );
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKENS_FILE);
    let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
    w.apply(
        &(0..1000).map(spread).collect::<Vec<_>>(),
        Label::Spam,
        &digest(1),
        false,
    );
    w.commit().unwrap();
    drop(w);
    let good = fs::read(&path).unwrap();
    for cut in [0, 7, 64, HEADER_LEN, good.len() / 2, good.len() - 1] {
        let e = TokenDb::from_bytes(&path, good[..cut].to_vec()).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{cut}: {e}");
    }
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    assert!(TokenDb::from_bytes(&path, flipped).is_err());
    assert!(TokenDb::from_bytes(&path, good).is_ok());
}

#[test]
fn prune_drops_only_stale_rare_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKENS_FILE);
    let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
    w.set_today(1000);
    w.apply(&[1, 2], Label::Spam, &digest(1), false);
    w.apply(&[2], Label::Spam, &digest(2), false);
    w.commit().unwrap();
    w.set_today(1000 + DEFAULT_PRUNE_AFTER_DAYS + 1);
    w.apply(&[3], Label::Ham, &digest(3), false);
    w.prune_on_commit();
    let stats = w.commit().unwrap();
    assert_eq!(stats.pruned, 1);
    let db = w.base();
    assert_eq!(db.get(1), None, "stale and rare");
    assert_eq!(db.get(2).map(|c| c.spam), Some(2), "stale but common");
    assert_eq!(db.get(3).map(|c| c.ham), Some(1), "rare but fresh");
    assert_eq!(db.last_prune_day(), 1000 + DEFAULT_PRUNE_AFTER_DAYS + 1);
}

#[test]
fn token_cap_drops_the_rarest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKENS_FILE);
    let policy = PrunePolicy {
        max_tokens: 10,
        ..PrunePolicy::default()
    };
    let mut w = TokenWriter::open(&path, policy).unwrap();
    let common: Vec<u64> = (0..10).map(spread).collect();
    for d in 0..3 {
        w.apply(&common, Label::Spam, &digest(d), false);
    }
    w.apply(
        &(100..120).map(spread).collect::<Vec<_>>(),
        Label::Ham,
        &digest(9),
        false,
    );
    let stats = w.commit().unwrap();
    assert_eq!((stats.tokens, stats.pruned), (10, 20));
    assert!(common.iter().all(|t| w.base().get(*t).is_some()));
}

#[test]
fn concurrent_writers_do_not_lose_updates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKENS_FILE);
    let threads: Vec<_> = (0..2u8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..20u8 {
                    let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
                    let d = digest(t * 100 + i);
                    assert_eq!(w.trained_as(&d), None);
                    w.apply(
                        &[7, 1_000_000 + u64::from(t) * 1000 + u64::from(i)],
                        Label::Spam,
                        &d,
                        false,
                    );
                    w.commit().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let db = TokenDb::open(&path).unwrap();
    assert_eq!(db.nspam(), 40);
    assert_eq!(db.get(7).map(|c| c.spam), Some(40));
    assert_eq!(db.digest_count(), 40);
}

#[test]
fn a_replaced_file_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKENS_FILE);
    let empty = TokenDb::open(&path).unwrap();
    assert!(!empty.changed_on_disk());
    let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
    w.apply(&[1], Label::Spam, &digest(1), false);
    w.commit().unwrap();
    assert!(empty.changed_on_disk());
    let db = TokenDb::open(&path).unwrap();
    assert!(!db.changed_on_disk());
    w.apply(&[2], Label::Spam, &digest(2), false);
    w.commit().unwrap();
    assert!(db.changed_on_disk());
}
