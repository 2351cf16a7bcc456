//! TRANSACTION: STAT, LIST, UIDL, DELE, RSET, NOOP, LAST and QUIT answered from the renumbered mailbox (RETR and TOP
//! are in [`super::relay`]); the mailbox is learned, scanned and planned on the first command that needs it.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use super::authorization::capa;
use super::plan::{self, Mailbox, MailboxPlan};
use super::{Client, Flow, SessionError, Shared};
use crate::filter::Class;
use crate::pop3::{Command, Response};
use crate::proxy::capa::CapaContext;
use crate::proxy::mailbox_map::{MapError, MessageInfo};
use crate::proxy::read_ahead::ReadAhead;
use crate::proxy::scan::{self, ScanSettings};
use crate::proxy::tag::{self, TagSettings};
use crate::proxy::upstream::{Connect, Upstream};
use crate::proxy::{Action, Proxy};
use crate::store::quarantine::Quarantine;
use crate::store::verdicts::{CachedVerdict, VerdictStore, now_secs};

/// Verdicts reached during a session (`tag_sizing = "fixed"`) are written to the cache in batches of this many,
/// and at the end: a crash loses at most a batch, which is only scored again.
pub(super) const PENDING_BATCH: usize = 64;

/// What TRANSACTION holds: the logged-in user and their upstream (always there: the login went through it).
pub(super) struct Transaction<C: Connect> {
    pub(super) up: Upstream<C::Stream>,
    pub(super) user: String,
    pub(super) action: Action,
    /// The per-user verdict cache (`None` when it cannot be opened: every message is then scored).
    pub(super) store: Option<VerdictStore>,
    pub(super) mailbox: Option<Mailbox>,
    /// Client number of the previous RETR (0: none), to spot a sequential download.
    pub(super) prev_retr: u32,
    pub(super) ahead: ReadAhead,
    /// Verdicts reached after the first scan (`tag_sizing = "fixed"`), not yet in the verdict cache.
    pub(super) pending: Vec<(String, CachedVerdict)>,
    /// Why the maildrop was refused (an absurd LIST size): every command that needs it gets this `-ERR`, and
    /// nothing is scanned, cached or deleted in this session.
    refused: Option<String>,
}

/// How a scan runs, from the settings (no time limit: the first scan sets one).
pub(super) fn scan_settings<C: Connect>(
    proxy: &Proxy<C>,
    quarantine: Option<Quarantine>,
) -> ScanSettings {
    let s = &proxy.settings;
    ScanSettings {
        method: s.scan,
        top_lines: s.top_lines,
        scan_limit: s.scan_limit,
        head_cap: head_cap(proxy),
        subject_prefix: s.subject_prefix.clone(),
        quarantine,
        parallel: std::thread::available_parallelism().map_or(1, |n| n.get()),
        deadline: None,
    }
}

pub(super) fn tag_settings<C: Connect>(proxy: &Proxy<C>) -> TagSettings {
    let s = &proxy.settings;
    TagSettings {
        prefix: s.subject_prefix.clone(),
        mark_ham: s.mark_ham,
        required: s.spam_threshold,
    }
}

/// Header bytes the tag reads: never more than is scanned, so the scan and RETR see the same header.
pub(super) fn head_cap<C: Connect>(proxy: &Proxy<C>) -> usize {
    tag::MAX_TAG_HEADER.min(proxy.settings.scan_limit.max(1))
}

impl<C: Connect> Transaction<C> {
    /// Enters TRANSACTION for `login`: its action, and its verdict cache opened off the async workers.
    pub(super) async fn open(
        proxy: &Proxy<C>,
        login: String,
        mut up: Upstream<C::Stream>,
    ) -> Transaction<C> {
        tracing::Span::current().record("user", login.as_str());
        info!("logged in");
        // Capabilities may change after login (RFC 2449 §5).
        up.forget_capabilities();
        let data_dir = proxy.settings.data_dir.clone();
        let l = login.clone();
        let store =
            match tokio::task::spawn_blocking(move || VerdictStore::open(&data_dir, &l)).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    warn!("verdict cache unavailable, every message will be scored: {e}");
                    None
                }
                Err(e) => {
                    warn!("verdict cache unavailable: {e}");
                    None
                }
            };
        Transaction {
            up,
            action: proxy.action_for(&login),
            user: login,
            store,
            mailbox: None,
            prev_retr: 0,
            ahead: ReadAhead::default(),
            pending: Vec::new(),
            refused: None,
        }
    }

    pub(super) async fn command<S>(
        &mut self,
        cmd: Command,
        client: &mut Client<S>,
        shared: &Shared<C>,
    ) -> Result<Flow, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if !matches!(cmd, Command::Retr(_)) {
            // The upstream answers in order: a read-ahead still on the wire is read before anything else is asked.
            self.ahead.settle(&mut self.up).await?;
        }
        if matches!(
            cmd,
            Command::Stat
                | Command::List(_)
                | Command::Uidl(_)
                | Command::Retr(_)
                | Command::Top(..)
                | Command::Dele(_)
                | Command::Last
        ) {
            self.ensure_mailbox(&shared.proxy).await?;
            if let Some(why) = &self.refused {
                client.reply(Response::err(why.clone()));
                return Ok(Flow::Continue);
            }
        }
        let Some(mb) = self.mailbox.as_ref() else {
            return self.command_without_mailbox(cmd, client, shared).await;
        };
        match cmd {
            Command::Stat => {
                let (count, size) = mb.map.stat();
                client.reply(Response::ok(format!("{count} {size}")));
            }
            Command::List(None) => {
                let (count, size) = mb.map.stat();
                let mut body = Vec::new();
                for (n, m) in mb.map.listing() {
                    body.extend_from_slice(format!("{n} {}\r\n", m.client_size).as_bytes());
                }
                client
                    .multiline(
                        Response::ok(format!("{count} messages ({size} octets)")),
                        &body,
                    )
                    .await?;
            }
            Command::List(Some(n)) => client.reply(match lookup(mb, n) {
                Ok(m) => Response::ok(format!("{n} {}", m.client_size)),
                Err(e) => e,
            }),
            Command::Uidl(_) if !mb.has_uidl => {
                client.reply(Response::err("UIDL is not supported by the mail server"));
            }
            // A message whose upstream unique-id is no identity is listed with the one the plan made up for it:
            // RFC 1939 §7 has no way to list a message without one, and the upstream's would not be unique.
            Command::Uidl(None) => {
                let mut body = Vec::new();
                for (n, m) in mb.map.listing() {
                    if let Some(u) = mb.uid_of(m) {
                        body.extend_from_slice(format!("{n} {u}\r\n").as_bytes());
                    }
                }
                client
                    .multiline(Response::ok("unique-id listing follows"), &body)
                    .await?;
            }
            Command::Uidl(Some(n)) => client.reply(match lookup(mb, n) {
                Ok(m) => Response::ok(format!("{n} {}", mb.uid_of(&m).unwrap_or("-"))),
                Err(e) => e,
            }),
            Command::Retr(n) => self.relay_message(n, None, client, shared).await?,
            Command::Top(n, lines) => self.relay_message(n, Some(lines), client, shared).await?,
            Command::Dele(n) => self.dele(n, client).await?,
            // LAST (RFC 1725 §5): the highest message number retrieved in this session, counted by the proxy.
            // The upstream's own answer would count the scan's TOP commands as accesses and make new mail look
            // read.
            Command::Last => client.reply(Response::ok(mb.last.to_string())),
            other => return self.command_without_mailbox(other, client, shared).await,
        }
        Ok(Flow::Continue)
    }

    /// The commands that do not need the maildrop's listing.
    async fn command_without_mailbox<S>(
        &mut self,
        cmd: Command,
        client: &mut Client<S>,
        shared: &Shared<C>,
    ) -> Result<Flow, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match cmd {
            Command::Noop => {
                let r = self.up.command(&Command::Noop).await?;
                client.reply(r);
            }
            Command::Rset => {
                let r = self.up.command(&Command::Rset).await?;
                if r.is_ok()
                    && let Some(mb) = self.mailbox.as_mut()
                {
                    mb.map.rset();
                    mb.last = 0;
                    let (count, size) = mb.map.stat();
                    client.reply(Response::ok(format!(
                        "maildrop has {count} messages ({size} octets)"
                    )));
                } else {
                    client.reply(r);
                }
            }
            Command::Quit => return self.quit(client, shared).await,
            Command::Capa => {
                let ctx = CapaContext {
                    authorization: false,
                    offer_stls: false,
                };
                capa(Some(&mut self.up), ctx, client).await?;
            }
            Command::Unknown(v) => client.reply(Response::err(format!("unknown command {v}"))),
            other => client.reply(Response::err(format!(
                "{} is not valid after login",
                other.verb()
            ))),
        }
        Ok(Flow::Continue)
    }

    async fn dele<S>(&mut self, n: u32, client: &mut Client<S>) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(mb) = self.mailbox.as_mut() else {
            client.reply(Response::err("no such message"));
            return Ok(());
        };
        let m = match lookup(mb, n) {
            Ok(m) => m,
            Err(e) => {
                client.reply(e);
                return Ok(());
            }
        };
        let r = self.up.command(&Command::Dele(m.upstream)).await?;
        if r.is_ok() {
            let _ = mb.map.mark_deleted(n);
            self.ahead.forget(m.upstream);
        }
        client.reply(r);
        Ok(())
    }

    async fn quit<S>(
        &mut self,
        client: &mut Client<S>,
        shared: &Shared<C>,
    ) -> Result<Flow, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if shared.proxy.settings.delete_hidden
            && let Some(mb) = self.mailbox.as_mut()
        {
            let hidden: Vec<u32> = mb.map.hidden_undeleted().map(|m| m.upstream).collect();
            let mut deleted = 0;
            for u in hidden {
                if self.up.command(&Command::Dele(u)).await?.is_ok() {
                    mb.map.mark_hidden_deleted(u);
                    deleted += 1;
                }
            }
            info!(
                deleted,
                "deleted hidden spam upstream (delete_hidden = true)"
            );
        }
        // The upstream enters UPDATE and commits the deletions the client asked for; its answer is the client's.
        let r = self.up.command(&Command::Quit).await?;
        debug!(dir = "p→c", response = %r);
        client.reply(r);
        Ok(Flow::End)
    }

    /// Learns the maildrop, scans what is not cached, plans the client's view, and writes the plan's verdicts and
    /// quarantine entries (once per session).
    async fn ensure_mailbox(&mut self, proxy: &Proxy<C>) -> Result<(), SessionError> {
        if self.mailbox.is_some() || self.refused.is_some() {
            return Ok(());
        }
        let s = &proxy.settings;
        let started = Instant::now();
        self.up.capabilities().await?;
        let listing = scan::fetch_listing(&mut self.up).await?;
        if let Err(absurd) = plan::check_sizes(&listing) {
            warn!(
                message = absurd.message,
                size = absurd.size,
                cap = plan::MAX_MESSAGE_SIZE,
                "upstream LIST size over the cap: maildrop refused for this session, nothing scanned or deleted"
            );
            self.refused = Some(absurd.reply());
            return Ok(());
        }

        let prefix = s.subject_prefix.as_str();
        let cached = |k: &str| valid_cached(&self.store, prefix, k);
        let mut scan_plan = plan::plan_scan(&listing, &cached, self.action, s.tag_sizing);
        scan_plan.nonce = session_nonce();
        let scanned = scan_plan.jobs.len();
        let quarantine =
            (self.action == Action::Hide).then(|| Quarantine::open(&s.data_dir, &self.user));
        let mut settings = scan_settings(proxy, quarantine.clone());
        settings.deadline = s.scan_budget.map(|b| started + b);
        let outcomes = if scan_plan.jobs.is_empty() {
            Vec::new()
        } else {
            // Header digests stand for identities only when the upstream has no UIDL at all; with UIDL, a message
            // keyed by its digest is one whose unique-id is no identity, and it must be scored this session.
            let by_digest = listing.uidls.is_none();
            let known = |k: &str| by_digest && valid_cached(&self.store, prefix, k).is_some();
            let jobs = scan_plan.jobs.clone();
            scan::scan(
                &mut self.up,
                &proxy.scorer,
                &self.user,
                jobs,
                &settings,
                &known,
            )
            .await?
        };
        let cached = |k: &str| valid_cached(&self.store, prefix, k);
        let MailboxPlan {
            mailbox,
            to_cache,
            quarantine: hidden_now,
            deferred,
            failed,
        } = plan::plan_mailbox(
            &listing,
            scan_plan,
            outcomes,
            &cached,
            self.action,
            &tag_settings(proxy),
            now_secs(),
        );
        for (upstream, reason) in failed {
            warn!(
                message = upstream,
                "could not be scanned ({reason}); shown untagged"
            );
        }

        // Persist before answering: a crash after this point does not lose the scan.
        let store = self.store.take();
        self.store = tokio::task::spawn_blocking(move || {
            let mut store = store;
            if let Some(s) = store.as_mut()
                && let Err(e) = s.insert_many(to_cache)
            {
                warn!("verdict cache not saved: {e}");
            }
            if let Some(q) = &quarantine
                && let Err(e) = q.add_entries(&hidden_now)
            {
                warn!("quarantine not saved: {e}");
            }
            store
        })
        .await
        .unwrap_or(None);

        if deferred > 0 {
            info!(
                deferred,
                budget_secs = s.scan_budget.map_or(0, |b| b.as_secs()),
                "scan budget reached: the messages not scanned yet are left out of this session (untouched \
                 upstream) and scanned first in the next one"
            );
        }
        if !mailbox.made_up_uids.is_empty() {
            warn!(
                messages = mailbox.made_up_uids.len(),
                "upstream unique-ids repeated or invalid: those messages were scored in this session, not \
                 looked up in the verdict cache, and the client sees unique-ids made up by the proxy"
            );
        }
        info!(
            messages = listing.sizes.len(),
            visible = mailbox.map.len(),
            scanned,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "maildrop ready"
        );
        self.mailbox = Some(mailbox);
        Ok(())
    }

    /// Writes the verdicts reached since the last write to the per-user cache, off the async workers.
    pub(super) async fn persist_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let store = self.store.take();
        self.store = tokio::task::spawn_blocking(move || {
            let mut store = store;
            if let Some(s) = store.as_mut()
                && let Err(e) = s.insert_many(batch)
            {
                warn!("verdict cache not saved: {e}");
            }
            store
        })
        .await
        .unwrap_or(None);
    }

    /// End of session: write pending verdicts, then prune per-user state of messages that left the maildrop (only
    /// after a full listing).
    pub(super) async fn finish(mut self, proxy: &Proxy<C>) {
        self.persist_pending().await;
        let Some(mb) = self.mailbox else {
            return;
        };
        let keys = mb.live_keys;
        let store = self.store;
        let data_dir = proxy.settings.data_dir.clone();
        let user = self.user;
        let _ = tokio::task::spawn_blocking(move || {
            let live = |k: &str| keys.contains(k);
            if let Some(mut s) = store
                && let Err(e) = s.compact_if_worthwhile(&live)
            {
                warn!("verdict cache compaction: {e}");
            }
            if let Err(e) = Quarantine::open(&data_dir, &user).prune(&live) {
                warn!("quarantine pruning: {e}");
            }
        })
        .await;
    }
}

/// A number that differs from session to session (for [`plan::ScanPlan::nonce`]): std's hasher keys are random
/// per process and change with every `RandomState`, so no extra dependency is needed.
fn session_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_secs());
    h.finish()
}

/// A cached verdict still valid: spam tagged with another Subject prefix must be scanned again.
fn valid_cached(store: &Option<VerdictStore>, prefix: &str, key: &str) -> Option<CachedVerdict> {
    store
        .as_ref()
        .and_then(|s| s.get(key))
        .filter(|v| v.effective_class() != Class::Spam || v.prefix == prefix)
        .cloned()
}

/// The message behind client number `n`, or the `-ERR` a server would give.
pub(super) fn lookup(mb: &Mailbox, n: u32) -> Result<MessageInfo, Response> {
    mb.map.get(n).cloned().map_err(|e| match e {
        MapError::NoSuchMessage => Response::err(format!(
            "no such message, only {} in maildrop",
            mb.map.len()
        )),
        MapError::Deleted => Response::err(format!("message {n} already deleted")),
    })
}
