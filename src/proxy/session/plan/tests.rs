//! The mailbox plan against every case a session meets: numbering, hiding, sizing, the scan budget, releases.

use super::*;
use crate::filter::Hit;
use crate::proxy::mailbox_map::MapError;
use crate::proxy::scan::Summary;

const NOW: u64 = 1_700_000_000;

fn settings() -> TagSettings {
    TagSettings {
        prefix: "[SPAM]".into(),
        mark_ham: true,
        required: 5.0,
    }
}

/// Upstream messages 1..=n of 1000·u bytes, with UIDLs `u1`.. when `uidl`.
fn listing(n: u32, uidl: bool) -> Listing {
    Listing {
        sizes: (1..=n).map(|u| (u, 1000 * u64::from(u))).collect(),
        uidls: uidl.then(|| (1..=n).map(|u| (u, format!("u{u}"))).collect()),
    }
}

fn verdict(spam: bool) -> Verdict {
    let hit = Hit {
        name: if spam { "TEST_SPAM" } else { "TEST_HAM" }.into(),
        score: if spam { 10.0 } else { 0.5 },
        description: String::new(),
    };
    Verdict::from_hits(vec![hit], 5.0, 3.0)
}

fn scored(u: u32, spam: bool) -> Outcome {
    Outcome::Scored {
        upstream: u,
        key: format!("u{u}"),
        verdict: verdict(spam),
        subject_delta: 7,
        summary: spam.then(|| Summary {
            from: "x@example.org".into(),
            subject: format!("offer {u}"),
        }),
    }
}

fn cached_spam(released: bool) -> CachedVerdict {
    CachedVerdict {
        released,
        ..cached_verdict(&verdict(true), 7, "[SPAM]", NOW)
    }
}

fn no_cache(_: &str) -> Option<CachedVerdict> {
    None
}

/// Plans `n` messages with UIDL: the scan as planned, then `outcomes` as the scan's answer.
fn plan(n: u32, action: Action, sizing: TagSizing, outcomes: Vec<Outcome>) -> MailboxPlan {
    let l = listing(n, true);
    let scan = plan_scan(&l, &no_cache, action, sizing);
    plan_mailbox(&l, scan, outcomes, &no_cache, action, &settings(), NOW)
}

fn promised(spam: bool, fixed: bool) -> u64 {
    msg_tag(
        &cached_verdict(&verdict(spam), 7, "[SPAM]", NOW),
        &settings(),
        fixed,
    )
    .promised
}

#[test]
fn exact_sizes_grow_by_each_message_own_tag() {
    let outcomes = vec![scored(1, false), scored(2, true), scored(3, false)];
    let p = plan(3, Action::Tag, TagSizing::Exact, outcomes);
    let mb = &p.mailbox;
    assert!(!mb.fixed);
    assert_eq!(mb.map.len(), 3);
    assert_eq!(
        mb.map.get(1).unwrap().client_size,
        1000 + promised(false, false)
    );
    assert_eq!(
        mb.map.get(2).unwrap().client_size,
        2000 + promised(true, false)
    );
    // The spam tag is its status fields plus the Subject edit; ham's is the fields alone.
    let fields = |class, score, rule: &str| {
        let rules = vec![rule.to_owned()];
        let v = TagVerdict {
            class,
            score,
            rules: &rules,
        };
        tag::status_fields(v, &settings(), Eol::Crlf).len() as u64
    };
    assert_eq!(
        promised(true, false),
        fields(Class::Spam, 10.0, "TEST_SPAM") + 7
    );
    assert_eq!(promised(false, false), fields(Class::Ham, 0.5, "TEST_HAM"));
    assert_eq!(mb.tags[&2].class, Class::Spam);
    assert_eq!(p.to_cache.len(), 3);
    assert!(p.quarantine.is_empty(), "tag mode quarantines nothing");
    assert_eq!(mb.map.hidden_undeleted().count(), 0);
    assert_eq!(mb.live_keys.len(), 3);
}

#[test]
fn numbers_zero_past_the_end_and_hidden_are_no_such_message() {
    let outcomes = vec![scored(1, false), scored(2, true), scored(3, false)];
    let p = plan(3, Action::Hide, TagSizing::Exact, outcomes);
    let map = &p.mailbox.map;
    assert_eq!(map.len(), 2);
    assert_eq!(map.upstream(1), Ok(1));
    assert_eq!(
        map.upstream(2),
        Ok(3),
        "the hidden message is renumbered away"
    );
    for n in [0, 3, 4, u32::MAX] {
        assert_eq!(map.get(n), Err(MapError::NoSuchMessage), "n={n}");
    }
    assert_eq!(map.stat(), (2, 1000 + 3000 + 2 * promised(false, false)));
    let hidden: Vec<u32> = map.hidden_undeleted().map(|m| m.upstream).collect();
    assert_eq!(hidden, vec![2]);
    assert_eq!(p.quarantine.len(), 1);
    assert_eq!(p.quarantine[0].uidl, "u2");
    assert_eq!(p.quarantine[0].subject, "offer 2");
    assert!(
        p.mailbox.live_keys.contains("u2"),
        "hidden mail is still live"
    );
}

#[test]
fn deleted_messages_keep_their_numbers_until_rset() {
    let outcomes = vec![scored(1, false), scored(2, true), scored(3, false)];
    let mut p = plan(3, Action::Hide, TagSizing::Exact, outcomes);
    let map = &mut p.mailbox.map;
    assert_eq!(map.mark_deleted(1), Ok(1));
    assert_eq!(map.get(1), Err(MapError::Deleted));
    assert_eq!(map.upstream(2), Ok(3));
    assert_eq!(map.stat().0, 1);
    map.rset();
    assert_eq!(map.upstream(1), Ok(1));
    assert_eq!(map.stat().0, 2);
    assert_eq!(
        map.hidden_undeleted().count(),
        1,
        "RSET never shows hidden mail"
    );
}

#[test]
fn fixed_sizing_scans_nothing_and_pads_every_message() {
    let l = listing(3, true);
    let cache = |k: &str| (k == "u1").then(|| cached_verdict(&verdict(true), 7, "[SPAM]", NOW));
    let scan = plan_scan(&l, &cache, Action::Tag, TagSizing::Fixed);
    assert!(scan.fixed && scan.jobs.is_empty());
    assert_eq!(scan.known.len(), 1);
    let p = plan_mailbox(&l, scan, Vec::new(), &cache, Action::Tag, &settings(), NOW);
    for n in 1..=3 {
        let m = p.mailbox.map.get(n).unwrap();
        assert_eq!(
            m.client_size,
            m.upstream_size + tag::FIXED_TAG_SIZE as u64,
            "n={n}"
        );
    }
    assert_eq!(
        p.mailbox.tags.len(),
        1,
        "only the cached verdict has a tag yet"
    );
    assert_eq!(promised(true, true), tag::FIXED_TAG_SIZE as u64);
    assert!(p.to_cache.is_empty());

    // Without UIDL (no cache key before the scan), or when hiding, sizing is exact and everything is scanned.
    let no_uidl = plan_scan(&listing(3, false), &no_cache, Action::Tag, TagSizing::Fixed);
    assert!(!no_uidl.fixed && no_uidl.jobs.len() == 3);
    let hide = plan_scan(&l, &no_cache, Action::Hide, TagSizing::Fixed);
    assert!(!hide.fixed && hide.jobs.len() == 3);
}

#[test]
fn cached_verdicts_are_not_scanned_again_nor_rewritten() {
    let l = listing(2, true);
    let cache = |k: &str| (k == "u2").then(|| cached_spam(false));
    let scan = plan_scan(&l, &cache, Action::Tag, TagSizing::Exact);
    let jobs: Vec<u32> = scan.jobs.iter().map(|j| j.upstream).collect();
    assert_eq!(jobs, vec![1]);
    let p = plan_mailbox(
        &l,
        scan,
        vec![scored(1, false)],
        &cache,
        Action::Tag,
        &settings(),
        NOW,
    );
    assert_eq!(p.to_cache.len(), 1);
    assert_eq!(p.to_cache[0].0, "u1");
    assert_eq!(p.mailbox.tags[&2].class, Class::Spam);
    assert_eq!(p.to_cache[0].1.at, NOW);
}

#[test]
fn scan_budget_leftovers_are_out_of_view_but_stay_live() {
    let outcomes = vec![
        scored(1, false),
        Outcome::Deferred { upstream: 2 },
        scored(3, true),
    ];
    let p = plan(3, Action::Hide, TagSizing::Exact, outcomes);
    assert_eq!(p.deferred, 1);
    let all: Vec<u32> = p.mailbox.map.all().map(|m| m.upstream).collect();
    assert_eq!(
        all,
        vec![1, 3],
        "deferred: neither shown nor hidden, so never deleted as spam"
    );
    assert_eq!(p.mailbox.map.len(), 1);
    assert!(
        p.mailbox.live_keys.contains("u2"),
        "its state survives pruning"
    );
    assert!(p.to_cache.iter().all(|(k, _)| k != "u2"));
}

#[test]
fn released_messages_are_shown_as_ham_with_the_released_rule() {
    let l = listing(1, true);
    let cache = |_: &str| Some(cached_spam(true));
    let scan = plan_scan(&l, &cache, Action::Hide, TagSizing::Exact);
    assert!(scan.jobs.is_empty());
    let p = plan_mailbox(&l, scan, Vec::new(), &cache, Action::Hide, &settings(), NOW);
    assert_eq!(p.mailbox.map.len(), 1, "released spam is not hidden");
    let tg = &p.mailbox.tags[&1];
    assert_eq!(tg.class, Class::Ham);
    assert!(tg.rules.iter().any(|r| r == RELEASED_RULE));
    // Ham: no Subject edit in the promised size.
    let ham = msg_tag(&cached_spam(true), &settings(), false);
    assert_eq!(
        p.mailbox.map.get(1).unwrap().client_size,
        1000 + ham.promised
    );
}

#[test]
fn failed_scans_are_shown_untagged_and_known_digests_reuse_the_cache() {
    let l = listing(2, false);
    let cache = |k: &str| (k == "digest:abc").then(|| cached_spam(false));
    let scan = plan_scan(&l, &cache, Action::Hide, TagSizing::Exact);
    assert_eq!(scan.jobs.len(), 2);
    let outcomes = vec![
        Outcome::Failed {
            upstream: 1,
            reason: "-ERR busy".into(),
        },
        Outcome::Known {
            upstream: 2,
            key: "digest:abc".into(),
        },
    ];
    let p = plan_mailbox(&l, scan, outcomes, &cache, Action::Hide, &settings(), NOW);
    assert_eq!(p.failed, vec![(1, "-ERR busy".to_owned())]);
    let m = p.mailbox.map.get(1).unwrap();
    assert_eq!((m.upstream, m.client_size), (1, 1000));
    assert_eq!(p.mailbox.map.len(), 1, "the known spam digest is hidden");
    assert!(!p.mailbox.has_uidl);
    assert!(p.mailbox.live_keys.contains("digest:abc"));
    assert!(p.to_cache.is_empty() && p.quarantine.is_empty());
}
