//! Mailbox planning, pure: from the upstream's listing, the cached verdicts, this session's scan outcomes, the
//! action and the tag sizing, the client's view of the maildrop (numbering, hidden messages, sizes after tagging)
//! and the writes to make (verdicts to cache, quarantine entries, the live keys that bound pruning). No I/O here:
//! the transaction fetches and scans, calls [`plan_scan`] and [`plan_mailbox`], then applies the writes.

use std::collections::{HashMap, HashSet};

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
}

impl Mailbox {
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
    /// Fixed tag sizes in force (so nothing is scanned before LIST).
    pub fixed: bool,
}

/// Splits the listing into cached and to-scan. Fixed tag sizes need no scan before LIST; the cache key is the
/// UIDL, so without UIDL sizing is `exact`.
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
            None if !plan.fixed => plan.jobs.push(ScanJob { upstream: u, uidl }),
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
        ..
    } = scan;
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
                let cv = cached_verdict(&verdict, subject_delta, &settings.prefix, now);
                if action == Action::Hide && verdict.is_spam() {
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
            info.client_size = size + tg.promised;
            info.hidden = action == Action::Hide && tg.class == Class::Spam;
            tags.insert(u, tg);
        } else {
            live_keys.extend(info.uidl.clone());
            if fixed {
                info.client_size = size + tag::FIXED_TAG_SIZE as u64;
            }
        }
        infos.push(info);
    }
    MailboxPlan {
        mailbox: Mailbox {
            map: MailboxMap::new(infos),
            tags,
            has_uidl: listing.uidls.is_some(),
            live_keys,
            last: 0,
            fixed,
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
