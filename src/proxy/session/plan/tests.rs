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

// ---------------------------------------------------------------- messages without an identity

/// A listing from real upstream answers, through the one parser the session uses.
fn parsed(list: &[u8], uidl: &[u8]) -> Listing {
    Listing {
        sizes: crate::proxy::scan::parse_list(list),
        uidls: Some(crate::proxy::scan::parse_uidl(uidl)),
    }
}

/// The key the scan gives a message without UIDL: its header digest (here made from `name`).
fn digest(name: &str) -> String {
    let m = format!("Subject: {name}\r\n\r\nbody");
    let m = m.as_bytes();
    crate::proxy::scan::digest_key(m, tag::head_end(m, 1000, true), 1000)
}

fn scored_as(u: u32, key: &str, spam: bool) -> Outcome {
    let mut o = scored(u, spam);
    if let Outcome::Scored { key: k, .. } = &mut o {
        *k = key.to_owned();
    }
    o
}

/// Every cached lookup answers spam: the worst a stale or shared cache entry can say.
fn all_spam(_: &str) -> Option<CachedVerdict> {
    Some(cached_spam(false))
}

/// Messages 1 and 2 share a UID (one ham, one spam: the bug that lost mail), 3 has an invalid one, 4 is fine.
fn broken_listing() -> Listing {
    parsed(
        b"1 100\r\n2 200\r\n3 300\r\n4 400\r\n",
        b"1 same\r\n2 same\r\n3 has space\r\n4 good\r\n",
    )
}

#[test]
fn repeated_and_invalid_uids_are_never_looked_up_nor_cached() {
    let l = broken_listing();
    assert_eq!(
        l.uidls.as_ref().unwrap().len(),
        1,
        "only `good` is an identity"
    );
    for (action, sizing) in [
        (Action::Hide, TagSizing::Exact),
        (Action::Tag, TagSizing::Exact),
        (Action::Tag, TagSizing::Fixed),
    ] {
        let scan = plan_scan(&l, &all_spam, action, sizing);
        let jobs: Vec<u32> = scan.jobs.iter().map(|j| j.upstream).collect();
        assert_eq!(
            jobs,
            vec![1, 2, 3],
            "{action:?}/{sizing:?}: scanned whatever the cache says, even with fixed sizes"
        );
        assert!(scan.jobs.iter().all(|j| j.uidl.is_none()));
        assert_eq!(scan.known.keys().copied().collect::<Vec<_>>(), vec![4]);
    }
    let scan = plan_scan(&l, &no_cache, Action::Hide, TagSizing::Exact);
    let outcomes = vec![
        scored_as(1, &digest("ham"), false),
        scored_as(2, &digest("spam"), true),
        scored_as(3, &digest("other"), false),
        scored_as(4, "good", false),
    ];
    let p = plan_mailbox(
        &l,
        scan,
        outcomes,
        &no_cache,
        Action::Hide,
        &settings(),
        NOW,
    );
    let keys: Vec<&str> = p.to_cache.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        !keys.iter().any(|k| *k == "same" || k.contains(' ')),
        "never cached by a UID that is no identity: {keys:?}"
    );
    assert_eq!(keys.iter().filter(|k| k.starts_with("digest:")).count(), 3);
    // The ham is shown, the spam scored this session hidden.
    let shown: Vec<u32> = p.mailbox.map.listing().map(|(_, m)| m.upstream).collect();
    assert_eq!(shown, vec![1, 3, 4]);
    let hidden: Vec<u32> = p
        .mailbox
        .map
        .hidden_undeleted()
        .map(|m| m.upstream)
        .collect();
    assert_eq!(hidden, vec![2]);
    assert_eq!(p.quarantine.len(), 1);
    assert_eq!(p.quarantine[0].uidl, digest("spam"));
}

#[test]
fn no_identity_is_hidden_only_on_this_sessions_verdict() {
    let l = broken_listing();
    let scan = plan_scan(&l, &all_spam, Action::Hide, TagSizing::Exact);
    // 1: the cache claims its digest is spam (no verdict this session); 2: could not be fetched; 3: left by the
    // scan budget; 4 has an identity, and its cached spam verdict stands.
    let outcomes = vec![
        Outcome::Known {
            upstream: 1,
            key: digest("ham"),
        },
        Outcome::Failed {
            upstream: 2,
            reason: "-ERR busy".into(),
        },
        Outcome::Deferred { upstream: 3 },
    ];
    let p = plan_mailbox(
        &l,
        scan,
        outcomes,
        &all_spam,
        Action::Hide,
        &settings(),
        NOW,
    );
    let shown: Vec<u32> = p.mailbox.map.listing().map(|(_, m)| m.upstream).collect();
    assert_eq!(
        shown,
        vec![1, 2],
        "shown untagged, never hidden without a verdict"
    );
    assert!(!p.mailbox.tags.contains_key(&1) && !p.mailbox.tags.contains_key(&2));
    // What QUIT with `delete_hidden = true` deletes is exactly the hidden, undeleted mail.
    let deletes: Vec<u32> = p
        .mailbox
        .map
        .hidden_undeleted()
        .map(|m| m.upstream)
        .collect();
    assert_eq!(deletes, vec![4], "delete_hidden never reaches 1, 2 or 3");
    assert!(p.to_cache.is_empty() && p.quarantine.is_empty());
    assert!(p.mailbox.live_keys.contains(&digest("ham")));
}

#[test]
fn a_release_of_a_no_identity_message_is_honoured() {
    let l = broken_listing();
    let released = |k: &str| (k == digest("spam")).then(|| cached_spam(true));
    let scan = plan_scan(&l, &released, Action::Hide, TagSizing::Exact);
    let outcomes = vec![scored_as(2, &digest("spam"), true)];
    let p = plan_mailbox(
        &l,
        scan,
        outcomes,
        &released,
        Action::Hide,
        &settings(),
        NOW,
    );
    assert_eq!(
        p.mailbox.map.hidden_undeleted().count(),
        0,
        "released: shown"
    );
    assert!(p.quarantine.is_empty());
    assert_eq!(p.mailbox.tags[&2].class, Class::Ham);
    assert!(p.mailbox.tags[&2].rules.iter().any(|r| r == RELEASED_RULE));
}

/// What the client's UIDL shows, by client number.
fn client_uids(p: &MailboxPlan) -> Vec<String> {
    p.mailbox
        .map
        .listing()
        .map(|(_, m)| {
            p.mailbox
                .uid_of(m)
                .expect("every message has a UID")
                .to_owned()
        })
        .collect()
}

#[test]
fn the_client_sees_unique_valid_uids() {
    // Two scanned messages with the very same header, one that could not be fetched, and a real UID.
    let l = broken_listing();
    let same = digest("twin");
    let outcomes = |nonce| {
        let scan = ScanPlan {
            nonce,
            ..plan_scan(&l, &no_cache, Action::Tag, TagSizing::Exact)
        };
        let o = vec![
            scored_as(1, &same, false),
            scored_as(2, &same, false),
            Outcome::Failed {
                upstream: 3,
                reason: "-ERR".into(),
            },
            scored_as(4, "good", false),
        ];
        plan_mailbox(&l, scan, o, &no_cache, Action::Tag, &settings(), NOW)
    };
    let first = client_uids(&outcomes(1));
    assert_eq!(first.len(), 4);
    let unique: HashSet<&String> = first.iter().collect();
    assert_eq!(unique.len(), 4, "{first:?}");
    assert_eq!(first[3], "good");
    for u in &first[..3] {
        assert!(u.starts_with(REPLACEMENT_UID_PREFIX), "{u}");
        assert!(crate::pop3::listing::check_uid(u.as_bytes()).is_ok(), "{u}");
        assert_ne!(u, "same");
    }
    // Scanned messages keep their id across sessions; an unscanned one gets a new one each session, so it can
    // never be taken for another message the client already has.
    let second = client_uids(&outcomes(2));
    assert_eq!(first[..2], second[..2]);
    assert_ne!(first[2], second[2]);
}

#[test]
fn made_up_uids_never_take_a_real_one() {
    // A hostile upstream names message 4 with exactly the id the proxy would make up for message 1.
    let would_be = replacement_uid(&format!("header {} 1", digest("x")), 0);
    let uidl = format!("1 dup\r\n2 dup\r\n4 {would_be}\r\n");
    let l = parsed(b"1 1\r\n2 2\r\n4 4\r\n", uidl.as_bytes());
    let scan = plan_scan(&l, &no_cache, Action::Tag, TagSizing::Exact);
    let o = vec![
        scored_as(1, &digest("x"), false),
        scored_as(2, &digest("y"), false),
    ];
    let p = plan_mailbox(&l, scan, o, &no_cache, Action::Tag, &settings(), NOW);
    let uids = client_uids(&p);
    assert_eq!(uids[2], would_be);
    assert_ne!(uids[0], would_be);
    assert_eq!(uids.iter().collect::<HashSet<_>>().len(), 3, "{uids:?}");
    // Without UIDL nothing is made up: the client is told UIDL is not supported.
    let none = listing(2, false);
    let scan = plan_scan(&none, &no_cache, Action::Tag, TagSizing::Exact);
    let p = plan_mailbox(
        &none,
        scan,
        Vec::new(),
        &no_cache,
        Action::Tag,
        &settings(),
        NOW,
    );
    assert!(p.mailbox.made_up_uids.is_empty() && !p.mailbox.has_uidl);
}

// ---------------------------------------------------------------- absurd sizes

#[test]
fn absurd_list_sizes_are_refused_before_anything_is_planned() {
    let huge = format!("1 10\r\n2 {}\r\n3 {}\r\n", u64::MAX - 3, u64::MAX);
    let l = Listing {
        sizes: crate::proxy::scan::parse_list(huge.as_bytes()),
        uidls: None,
    };
    let refused = check_sizes(&l).unwrap_err();
    assert_eq!(
        refused,
        AbsurdSize {
            message: 2,
            size: u64::MAX - 3
        }
    );
    let why = refused.reply();
    assert!(
        why.contains("message 2") && why.contains("nothing was changed"),
        "{why}"
    );
    assert!(check_sizes(&listing(3, true)).is_ok());
    let at_cap = Listing {
        sizes: vec![(1, MAX_MESSAGE_SIZE)],
        uidls: None,
    };
    assert!(check_sizes(&at_cap).is_ok());
    let over = Listing {
        sizes: vec![(1, MAX_MESSAGE_SIZE + 1)],
        uidls: None,
    };
    assert!(check_sizes(&over).is_err());
}

#[test]
fn sizes_at_the_cap_sum_without_overflow() {
    // Many messages at the cap, each with a tag: STAT adds them all without panicking or wrapping.
    let n = 10_000u32;
    let l = Listing {
        sizes: (1..=n).map(|u| (u, MAX_MESSAGE_SIZE)).collect(),
        uidls: None,
    };
    assert!(check_sizes(&l).is_ok());
    let scan = plan_scan(&l, &all_spam, Action::Tag, TagSizing::Exact);
    let outcomes = (1..=n)
        .map(|u| scored_as(u, &format!("digest:{u}"), u % 2 == 0))
        .collect();
    let p = plan_mailbox(&l, scan, outcomes, &no_cache, Action::Tag, &settings(), NOW);
    let (count, total) = p.mailbox.map.stat();
    assert_eq!(count, n as usize);
    assert!(total > u64::from(n) * MAX_MESSAGE_SIZE);
    // The same with any value the arithmetic could meet: client sizes saturate instead of wrapping.
    let l = Listing {
        sizes: vec![(1, u64::MAX)],
        uidls: None,
    };
    let scan = plan_scan(&l, &no_cache, Action::Tag, TagSizing::Exact);
    let p = plan_mailbox(
        &l,
        scan,
        vec![scored_as(1, "digest:x", true)],
        &no_cache,
        Action::Tag,
        &settings(),
        NOW,
    );
    assert_eq!(p.mailbox.map.get(1).unwrap().client_size, u64::MAX);
}
