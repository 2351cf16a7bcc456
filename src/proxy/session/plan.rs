//! Mailbox planning, pure: from the upstream's listing, the cached verdicts, this session's scan outcomes, the
//! action and the tag sizing, the client's view of the maildrop (numbering, hidden messages, sizes after tagging)
//! and the writes to make (verdicts to cache, quarantine entries, the live keys that bound pruning). No I/O here:
//! the transaction fetches and scans, calls [`check_sizes`], [`plan_scan`] and [`plan_mailbox`], then applies the
//! writes.
//!
//! # Messages without an identity
//! The verdict cache, the quarantine and the client's seen-state all take a unique-id for the message's identity.
//! When the upstream has UIDL but gives a message a unique-id that another message also has, or one RFC 1939 §7
//! does not allow (1 to 70 characters in 0x21..=0x7E), [`crate::pop3::listing`] leaves that message out of the
//! UIDL map, and it is *no identity* here:
//! - its cached verdict is never looked up (not by the UID, which would give a ham another message's spam verdict,
//!   nor by its header digest): it is scored in this session, even with `tag_sizing = "fixed"`;
//! - it is hidden (and so, with `delete_hidden`, deleted) only on a verdict reached in this session; one that could
//!   not be scored is shown untagged;
//! - its verdict is cached under its header digest only, never under the UID, and that entry is read back for one
//!   thing only: the user's release from the quarantine (showing is always safe);
//! - the client gets a unique-id the proxy makes up (see [`replacement_uid`]), never the upstream's.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::filter::{Class, Verdict};
use crate::proxy::Action;
use crate::proxy::TagSizing;
use crate::proxy::mailbox_map::{MailboxMap, MessageInfo};
use crate::proxy::scan::{Listing, Outcome, ScanJob};
use crate::proxy::tag::{self, Eol, TagSettings, TagVerdict};
use crate::store::quarantine::QuarantineEntry;
use crate::store::verdicts::CachedVerdict;

/// The pseudo-rule added to a released message's `X-Spam-Status`, so the user sees why spam got through.
pub const RELEASED_RULE: &str = "USER_RELEASED";

/// The largest upstream LIST size accepted for one message: 1 TiB. No mail store accepts messages within orders of
/// magnitude of it (common limits are tens of MB), so a bigger size is a broken or hostile upstream. It keeps every
/// sum the session makes far from overflow: a listing of at most [`MAX_LISTED`] entries, each at most this plus
/// its tag (a `u32` Subject edit and a few status fields), totals under `u64::MAX` (checked below).
pub const MAX_MESSAGE_SIZE: u64 = 1 << 40;

/// Most entries a LIST answer can hold: every line is at least 4 octets (`1 1` and a line end) and the answer at
/// most [`crate::pop3::limits::MAX_LISTING_BYTES`].
pub const MAX_LISTED: u64 = (crate::pop3::limits::MAX_LISTING_BYTES / 4) as u64;

// Even with tags as big as the messages (they are a few hundred octets and a `u32` Subject edit), a whole listing
// at the cap sums without overflow.
const _: () = assert!(MAX_LISTED.checked_mul(2 * MAX_MESSAGE_SIZE).is_some());

/// How the unique-ids the proxy makes up start: printable, so valid per RFC 1939 §7, and recognisable in logs.
pub const REPLACEMENT_UID_PREFIX: &str = "popguard-";
/// Hex digits of the digest kept in a made-up unique-id: 160 bits put collisions out of reach, and with the prefix
/// the id stays within the 70 characters RFC 1939 §7 allows (checked below).
const REPLACEMENT_UID_HEX: usize = 40;
const _: () =
    assert!(REPLACEMENT_UID_PREFIX.len() + REPLACEMENT_UID_HEX <= crate::pop3::limits::MAX_UID_LEN);

/// An upstream LIST size over [`MAX_MESSAGE_SIZE`]: the session refuses the maildrop and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AbsurdSize {
    /// The upstream's message number.
    pub message: u32,
    pub size: u64,
}

impl AbsurdSize {
    /// The client's `-ERR` text: what happened and what to do next.
    pub fn reply(&self) -> String {
        format!(
            "the mail server lists message {} at {} octets, over the {MAX_MESSAGE_SIZE} this proxy accepts; \
             nothing was changed. Ask the mail server's administrator to check this mailbox",
            self.message, self.size
        )
    }
}

/// Refuses a listing with an absurd size (the first one), before anything is scanned, cached or deleted.
pub(super) fn check_sizes(listing: &Listing) -> Result<(), AbsurdSize> {
    match listing.sizes.iter().find(|(_, s)| *s > MAX_MESSAGE_SIZE) {
        Some(&(message, size)) => Err(AbsurdSize { message, size }),
        None => Ok(()),
    }
}

/// What the proxy knows about one message it can tag.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct MsgTag {
    pub class: Class,
    pub score: f64,
    pub rules: Vec<String>,
    /// Bytes the tag adds, as promised in LIST.
    pub promised: u64,
}

/// The client's maildrop, built on the first command that needs it.
#[derive(Debug)]
pub(super) struct Mailbox {
    pub map: MailboxMap,
    /// Tags by upstream number.
    pub tags: HashMap<u32, MsgTag>,
    pub has_uidl: bool,
    /// Cache keys of every message in the maildrop: what pruning the stores keeps.
    pub live_keys: HashSet<String>,
    /// Highest client number retrieved with RETR since login or RSET, for LAST.
    pub last: u32,
    /// `tag_sizing = "fixed"` in force: every message was promised [`tag::FIXED_TAG_SIZE`] more bytes, and
    /// messages without a tag yet are scored when retrieved.
    pub fixed: bool,
    /// The unique-ids made up for messages whose upstream one is no identity (see the module docs), by upstream
    /// number.
    pub made_up_uids: HashMap<u32, String>,
}

impl Mailbox {
    /// The unique-id the client sees for `m`: the upstream's, or the one made up for it.
    pub fn uid_of<'a>(&'a self, m: &'a MessageInfo) -> Option<&'a str> {
        m.uidl
            .as_deref()
            .or_else(|| self.made_up_uids.get(&m.upstream).map(String::as_str))
    }

    /// Keeps a verdict reached after the first scan (`tag_sizing = "fixed"`) as the message's tag for the rest of
    /// the session.
    pub fn record_fixed(
        &mut self,
        upstream: u32,
        v: &CachedVerdict,
        settings: &TagSettings,
    ) -> MsgTag {
        let tg = msg_tag(v, settings, true);
        self.tags.insert(upstream, tg.clone());
        tg
    }
}

/// What the first scan must do: the messages whose verdict is cached, and the ones to scan.
#[derive(Debug, Default)]
pub(super) struct ScanPlan {
    pub known: HashMap<u32, (String, CachedVerdict)>,
    pub jobs: Vec<ScanJob>,
    /// Fixed tag sizes in force (so nothing is scanned before LIST, except messages without an identity).
    pub fixed: bool,
    /// Differs from session to session: part of the unique-id made up for a message with neither an identity nor
    /// a scanned header.
    pub nonce: u64,
}

/// True when the upstream has UIDL but `u` has no usable unique-id there (repeated, invalid or missing).
fn no_identity(listing: &Listing, u: u32) -> bool {
    listing.uidls.as_ref().is_some_and(|m| !m.contains_key(&u))
}

/// Splits the listing into cached and to-scan. Fixed tag sizes need no scan before LIST; the cache key is the
/// UIDL, so without UIDL sizing is `exact`. A message without an identity is always scanned.
pub(super) fn plan_scan(
    listing: &Listing,
    cached: &dyn Fn(&str) -> Option<CachedVerdict>,
    action: Action,
    sizing: TagSizing,
) -> ScanPlan {
    let mut plan = ScanPlan {
        fixed: action == Action::Tag && sizing == TagSizing::Fixed && listing.uidls.is_some(),
        ..ScanPlan::default()
    };
    for &(u, _) in &listing.sizes {
        let uidl = uidl_of(listing, u);
        match uidl.as_deref().and_then(cached) {
            Some(v) => {
                plan.known.insert(u, (uidl.unwrap_or_default(), v));
            }
            None if !plan.fixed || no_identity(listing, u) => {
                plan.jobs.push(ScanJob { upstream: u, uidl })
            }
            None => {}
        }
    }
    plan
}

/// The planned maildrop and the writes that go with it.
#[derive(Debug)]
pub(super) struct MailboxPlan {
    pub mailbox: Mailbox,
    /// New verdicts for the per-user cache.
    pub to_cache: Vec<(String, CachedVerdict)>,
    /// Spam hidden this session, for the quarantine listing.
    pub quarantine: Vec<QuarantineEntry>,
    /// Messages the scan budget left for the next session.
    pub deferred: usize,
    /// Messages the upstream refused to send for scanning (shown untagged), with its answer.
    pub failed: Vec<(u32, String)>,
}

/// Builds the client's view from the listing, the scan plan, and the scan's outcomes (`now`: the verdicts' time).
pub(super) fn plan_mailbox(
    listing: &Listing,
    scan: ScanPlan,
    outcomes: Vec<Outcome>,
    cached: &dyn Fn(&str) -> Option<CachedVerdict>,
    action: Action,
    settings: &TagSettings,
    now: u64,
) -> MailboxPlan {
    let ScanPlan {
        known: mut verdicts,
        fixed,
        nonce,
        ..
    } = scan;
    // Header digests of the messages without an identity, for their made-up unique-ids.
    let mut digests = HashMap::new();
    let mut to_cache = Vec::new();
    let mut quarantine = Vec::new();
    let mut deferred = HashSet::new();
    let mut failed = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Deferred { upstream } => {
                deferred.insert(upstream);
            }
            Outcome::Scored {
                upstream,
                key,
                verdict,
                subject_delta,
                summary,
            } => {
                let mut cv = cached_verdict(&verdict, subject_delta, &settings.prefix, now);
                // A release the user made stands over a new verdict (it can only show the message). Only a message
                // without an identity, which is scored every session, can meet one here.
                cv.released = cached(&key).is_some_and(|c| c.released);
                if no_identity(listing, upstream) {
                    digests.insert(upstream, key.clone());
                }
                if action == Action::Hide && cv.effective_class() == Class::Spam {
                    let s = summary.unwrap_or_default();
                    quarantine.push(QuarantineEntry::new(
                        &key,
                        &s.from,
                        &s.subject,
                        verdict.score,
                        cv.rules.clone(),
                    ));
                }
                to_cache.push((key.clone(), cv.clone()));
                verdicts.insert(upstream, (key, cv));
            }
            // A cached verdict never decides for a message without an identity: it is shown unscored.
            Outcome::Known { upstream, key } if no_identity(listing, upstream) => {
                digests.insert(upstream, key);
            }
            Outcome::Known { upstream, key } => {
                if let Some(v) = cached(&key) {
                    verdicts.insert(upstream, (key, v));
                }
            }
            Outcome::Failed { upstream, reason } => failed.push((upstream, reason)),
        }
    }

    let mut infos = Vec::with_capacity(listing.sizes.len());
    let mut tags = HashMap::new();
    let mut live_keys = HashSet::new();
    for &(u, size) in &listing.sizes {
        let uidl = uidl_of(listing, u);
        if deferred.contains(&u) {
            // Not scored in time: out of this session's view (not hidden, so never deleted as spam), and
            // scanned first thing next time.
            live_keys.extend(uidl);
            continue;
        }
        let mut info = MessageInfo {
            upstream: u,
            upstream_size: size,
            client_size: size,
            uidl,
            hidden: false,
        };
        if let Some((key, v)) = verdicts.get(&u) {
            live_keys.insert(key.clone());
            let tg = msg_tag(v, settings, fixed);
            // `check_sizes` bounds `size`; saturating all the same, so no listing can panic a session.
            info.client_size = size.saturating_add(tg.promised);
            info.hidden = action == Action::Hide && tg.class == Class::Spam;
            tags.insert(u, tg);
        } else {
            live_keys.extend(info.uidl.clone());
            live_keys.extend(digests.get(&u).cloned());
            if fixed {
                info.client_size = size.saturating_add(tag::FIXED_TAG_SIZE as u64);
            }
        }
        infos.push(info);
    }
    let made_up_uids = made_up_uids(listing, &infos, &digests, nonce);
    MailboxPlan {
        mailbox: Mailbox {
            map: MailboxMap::new(infos),
            tags,
            has_uidl: listing.uidls.is_some(),
            live_keys,
            last: 0,
            fixed,
            made_up_uids,
        },
        to_cache,
        quarantine,
        deferred: deferred.len(),
        failed,
    }
}

fn uidl_of(listing: &Listing, u: u32) -> Option<String> {
    listing.uidls.as_ref().and_then(|m| m.get(&u)).cloned()
}

/// Unique-ids for the messages in view that have no identity (none without UIDL: the client is told there is no
/// UIDL then). RFC 1939 §7 wants unique-ids unique in the maildrop and kept across sessions, so:
/// - a scanned message gets one from its header digest and its rank among the messages with the same header
///   digest in this listing (not its message number, which changes whenever an earlier message is deleted, and
///   would make the client download it again): it is kept from session to session while the header is;
/// - a message that could not be scanned has no header to go by; it gets one from this session's nonce and its
///   number, new every session. A made-up id that might name another message in a later session could make the
///   client skip that message as already downloaded; a new one only makes it download this one again;
/// - none equals a unique-id the upstream gave another message, nor another made-up one.
fn made_up_uids(
    listing: &Listing,
    infos: &[MessageInfo],
    digests: &HashMap<u32, String>,
    nonce: u64,
) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    let Some(real) = listing.uidls.as_ref() else {
        return out;
    };
    let mut taken: HashSet<String> = real.values().cloned().collect();
    let mut rank: HashMap<&str, u32> = HashMap::new();
    for info in infos.iter().filter(|i| i.uidl.is_none()) {
        let seed = match digests.get(&info.upstream) {
            Some(d) => {
                let r = rank.entry(d.as_str()).or_default();
                *r += 1;
                format!("header {d} {r}")
            }
            None => format!("unscanned {nonce} {}", info.upstream),
        };
        let uid = (0..)
            .map(|salt| replacement_uid(&seed, salt))
            .find(|u| !taken.contains(u))
            .unwrap_or_default();
        taken.insert(uid.clone());
        out.insert(info.upstream, uid);
    }
    out
}

/// `popguard-` and 40 hex digits of SHA-256 over the seed (and the salt, when a first choice was taken).
pub(super) fn replacement_uid(seed: &str, salt: u32) -> String {
    let mut h = Sha256::new();
    h.update(b"popguard made-up unique-id\n");
    h.update(seed.as_bytes());
    if salt > 0 {
        h.update(format!("\nsalt {salt}").as_bytes());
    }
    let mut uid = String::from(REPLACEMENT_UID_PREFIX);
    for b in h.finalize().iter() {
        uid.push_str(&format!("{b:02x}"));
    }
    uid.truncate(REPLACEMENT_UID_PREFIX.len() + REPLACEMENT_UID_HEX);
    uid
}

/// A verdict as the per-user cache keeps it.
pub(super) fn cached_verdict(
    verdict: &Verdict,
    subject_delta: u32,
    prefix: &str,
    now: u64,
) -> CachedVerdict {
    CachedVerdict {
        class: verdict.class,
        score: verdict.score,
        rules: verdict
            .rule_names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        subject_delta,
        prefix: prefix.to_owned(),
        released: false,
        at: now,
    }
}

/// The tag for a cached verdict and the bytes it adds: its own size, or the fixed size.
pub(super) fn msg_tag(v: &CachedVerdict, settings: &TagSettings, fixed: bool) -> MsgTag {
    let class = v.effective_class();
    let mut rules = v.rules.clone();
    if v.released {
        rules.push(RELEASED_RULE.to_owned());
    }
    let promised = if fixed {
        tag::FIXED_TAG_SIZE as u64
    } else {
        let fields = tag::status_fields(
            TagVerdict {
                class,
                score: v.score,
                rules: &rules,
            },
            settings,
            Eol::Crlf,
        );
        fields.len() as u64
            + if class == Class::Spam {
                u64::from(v.subject_delta)
            } else {
                0
            }
    };
    MsgTag {
        class,
        score: v.score,
        rules,
        promised,
    }
}

#[cfg(test)]
mod tests;
