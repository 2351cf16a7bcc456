//! RETR and TOP: the upstream's body streamed to the client with the tag spliced into its header (incoming fields of
//! the tag's names renamed first, `tag::forged`), scored on the way when `tag_sizing = "fixed"` left it unscored, and
//! the next messages asked for ahead of a sequential download.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use super::plan::{self, MsgTag};
use super::transaction::{PENDING_BATCH, Transaction, head_cap, scan_settings, tag_settings};
use super::{Client, SessionError, Shared};
use crate::pop3::{Command, Response};
use crate::proxy::Proxy;
use crate::proxy::mailbox_map::MessageInfo;
use crate::proxy::read_ahead::Answer;
use crate::proxy::scan::{self, Outcome, ScanJob};
use crate::proxy::tag::{self, Eol, ForgedFields, HeadEnd, TagPlan, TagSettings, TagVerdict};
use crate::proxy::upstream::{Connect, Upstream};
use crate::store::verdicts::now_secs;

/// The start of a body read from the upstream: the bytes so far, and whether the terminating dot was read.
struct Head {
    bytes: Vec<u8>,
    done: bool,
}

impl Head {
    /// Reads until the header's end (bounded by `cap`) is found or the body ends.
    async fn read_header<T>(
        &mut self,
        up: &mut Upstream<T>,
        cap: usize,
    ) -> Result<HeadEnd, SessionError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send,
    {
        loop {
            match tag::find_header_end(&self.bytes, cap) {
                HeadEnd::NeedMore if !self.done => self.more(up).await?,
                HeadEnd::NeedMore => return Ok(HeadEnd::NoBody),
                e => return Ok(e),
            }
        }
    }

    /// Reads until `limit` bytes are held or the body ends.
    async fn read_to<T>(&mut self, up: &mut Upstream<T>, limit: usize) -> Result<(), SessionError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send,
    {
        while !self.done && self.bytes.len() < limit {
            self.more(up).await?;
        }
        Ok(())
    }

    async fn more<T>(&mut self, up: &mut Upstream<T>) -> Result<(), SessionError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.done = up
            .chunk(&mut self.bytes)
            .await
            .map_err(SessionError::MidBody)?;
        Ok(())
    }
}

impl<C: Connect> Transaction<C> {
    /// RETR (`top == None`) or TOP: the upstream body streamed to the client, tagged in its header.
    pub(super) async fn relay_message<S>(
        &mut self,
        n: u32,
        top: Option<u32>,
        client: &mut Client<S>,
        shared: &Shared<C>,
    ) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = &shared.proxy;
        let Some(mb) = self.mailbox.as_ref() else {
            client.reply(Response::err("no such message"));
            return Ok(());
        };
        let m = match super::transaction::lookup(mb, n) {
            Ok(m) => m,
            Err(e) => {
                client.reply(e);
                return Ok(());
            }
        };
        let fixed = mb.fixed;
        if fixed && top.is_some() && !mb.tags.contains_key(&m.upstream) {
            // TOP must show the tag RETR will: score the message the way the scan does, first.
            self.score_now(proxy, &m).await?;
        }
        let (r, ready) = self.answer(&m, top).await?;
        if !r.is_ok() {
            client.reply(r);
            return Ok(());
        }
        client.reply(match top {
            None => Response::ok(format!("{} octets", m.client_size)),
            Some(_) => Response::ok("top of message follows"),
        });

        // Buffer the header (bounded by the cap), splice the tag, then stream the rest as it comes.
        let settings = tag_settings(proxy);
        let cap = head_cap(proxy);
        let mut head = Head {
            done: ready.is_some(),
            bytes: ready.unwrap_or_default(),
        };
        let end = head.read_header(&mut self.up, cap).await?;
        let mut tag = self
            .mailbox
            .as_ref()
            .and_then(|mb| mb.tags.get(&m.upstream).cloned());
        if fixed && tag.is_none() {
            // Fixed sizes: a message not scored yet is scored from the first `scan_limit` bytes of this RETR.
            tag = Some(self.score_inline(proxy, &m, &mut head, &settings).await?);
        }
        // Scored above from the bytes as the upstream sent them; renamed only now, on their way out.
        let plan = tag_plan(&head.bytes, end, tag.as_ref(), fixed, cap, &settings, n);
        let mut forged = ForgedFields::new();
        let out = plan.start(&mut head.bytes, head.done, &mut forged);
        let Head { bytes: held, done } = head;
        client.write_chunk(&out).await?;
        let sent = out.len() as u64 + stream_rest(&mut self.up, client, done, forged, held).await?;
        client.finish_multiline().await?;
        if top.is_none()
            && let Some(mb) = self.mailbox.as_mut()
        {
            mb.last = mb.last.max(n);
        }
        if self.pending.len() >= PENDING_BATCH {
            self.persist_pending().await;
        }
        if top.is_none() {
            self.read_ahead(proxy, n, client).await;
            if sent != m.client_size {
                warn!(
                    message = n,
                    listed = m.client_size,
                    sent,
                    "RETR size differs from LIST (the upstream's LIST size was not exact)"
                );
            }
        }
        Ok(())
    }

    /// The upstream's status line for RETR or TOP, and the whole body when a read-ahead already holds it.
    async fn answer(
        &mut self,
        m: &MessageInfo,
        top: Option<u32>,
    ) -> Result<(Response, Option<Vec<u8>>), SessionError> {
        // A read-ahead of this very message answers it; the body may already be in memory.
        let ahead = match top {
            None => self.ahead.take(&mut self.up, m.upstream).await?,
            Some(_) => None,
        };
        Ok(match ahead {
            Some(Answer::OnWire(r)) => (r, None),
            Some(Answer::Read(r, body)) => (r, body),
            None => {
                let cmd = match top {
                    None => Command::Retr(m.upstream),
                    Some(l) => Command::Top(m.upstream, l),
                };
                (self.up.command(&cmd).await?, None)
            }
        })
    }

    /// Scores a message being retrieved from its first `scan_limit` bytes (`tag_sizing = "fixed"`).
    async fn score_inline(
        &mut self,
        proxy: &Proxy<C>,
        m: &MessageInfo,
        head: &mut Head,
        settings: &TagSettings,
    ) -> Result<MsgTag, SessionError> {
        let scan_limit = proxy.settings.scan_limit;
        let cap = head_cap(proxy);
        head.read_to(&mut self.up, scan_limit).await?;
        let prefix = &head.bytes[..head.bytes.len().min(scan_limit)];
        let end = tag::head_end(prefix, cap, head.done && head.bytes.len() <= scan_limit);
        let (verdict, subject_delta) = scan::score_prefix(
            &proxy.scorer,
            &self.user,
            prefix,
            end,
            cap,
            &settings.prefix,
        )
        .await;
        let cv = plan::cached_verdict(&verdict, subject_delta, &settings.prefix, now_secs());
        Ok(self.record_fixed(m.upstream, m.uidl.clone(), cv, settings))
    }

    /// Scores one message now, as the first scan would have (`tag_sizing = "fixed"`, before its first TOP).
    async fn score_now(&mut self, proxy: &Proxy<C>, m: &MessageInfo) -> Result<(), SessionError> {
        self.ahead.settle(&mut self.up).await?;
        let settings = scan_settings(proxy, None);
        let job = ScanJob {
            upstream: m.upstream,
            uidl: m.uidl.clone(),
        };
        let outcomes = scan::scan(
            &mut self.up,
            &proxy.scorer,
            &self.user,
            vec![job],
            &settings,
            &|_| false,
        )
        .await?;
        let tag_settings = tag_settings(proxy);
        for o in outcomes {
            if let Outcome::Scored {
                upstream,
                key,
                verdict,
                subject_delta,
                ..
            } = o
            {
                let cv =
                    plan::cached_verdict(&verdict, subject_delta, &tag_settings.prefix, now_secs());
                self.record_fixed(upstream, Some(key), cv, &tag_settings);
            }
        }
        Ok(())
    }

    /// Keeps a verdict reached after the first scan: the message's tag for the rest of the session, and its cache
    /// entry (under `key`, when there is one) for the next batch written.
    fn record_fixed(
        &mut self,
        upstream: u32,
        key: Option<String>,
        cv: crate::store::verdicts::CachedVerdict,
        settings: &TagSettings,
    ) -> MsgTag {
        let tg = match self.mailbox.as_mut() {
            Some(mb) => mb.record_fixed(upstream, &cv, settings),
            None => plan::msg_tag(&cv, settings, true),
        };
        if let Some(key) = key {
            self.pending.push((key, cv));
        }
        tg
    }

    /// After RETR `n`: the next messages asked for when the client downloads one message after another.
    async fn read_ahead<S>(&mut self, proxy: &Proxy<C>, n: u32, client: &Client<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let sequential = self.prev_retr != 0 && n == self.prev_retr.saturating_add(1);
        self.prev_retr = n;
        // A client that pipelines hides the round trip itself; one that waits for each answer gets the next
        // message asked for while it takes this one.
        if sequential && proxy.settings.read_ahead && !client.has_buffered_input() {
            let map = self.mailbox.as_ref().map(|mb| &mb.map);
            let lookup = |k: u32| {
                map.and_then(|m| m.get(k).ok())
                    .map(|m| (m.upstream, m.upstream_size))
            };
            self.ahead.extend(&mut self.up, n, lookup).await;
        }
    }
}

/// The tag for the header in `head` (none without a verdict); warns when its size is not what LIST said.
fn tag_plan(
    head: &[u8],
    end: HeadEnd,
    tag: Option<&MsgTag>,
    fixed: bool,
    cap: usize,
    settings: &TagSettings,
    n: u32,
) -> TagPlan {
    let plan = match tag {
        Some(tg) => {
            let v = TagVerdict {
                class: tg.class,
                score: tg.score,
                rules: &tg.rules,
            };
            if fixed {
                tag::plan_fixed(head, end, cap, v, settings, Eol::Crlf, tag::FIXED_TAG_SIZE)
            } else {
                tag::plan(head, end, cap, v, settings, Eol::Crlf)
            }
        }
        None => TagPlan::default(),
    };
    if let Some(tg) = tag
        && plan.added_len() as u64 != tg.promised
    {
        warn!(
            message = n,
            promised = tg.promised,
            actual = plan.added_len(),
            "the header changed since the scan; LIST size will be off"
        );
    }
    plan
}

/// Streams the rest of the body (unless `done`) to the client as it comes, after `held` (what `forged` held back of
/// the head), renaming owned fields while the header lasts; returns the bytes sent.
async fn stream_rest<T, S>(
    up: &mut Upstream<T>,
    client: &mut Client<S>,
    mut done: bool,
    mut forged: ForgedFields,
    held: Vec<u8>,
) -> Result<u64, SessionError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut sent = 0;
    // A fresh buffer: `held` is a few bytes, but may sit in the whole head's allocation.
    let mut buf = Vec::with_capacity(crate::pop3::stream::READ_BUFFER);
    buf.extend_from_slice(&held);
    drop(held);
    loop {
        if !done {
            done = up.chunk(&mut buf).await.map_err(SessionError::MidBody)?;
        }
        // Past the header this is the whole buffer at once; within it, at most a few bytes wait for the next chunk.
        let ready = forged.rename(&mut buf, done);
        if ready > 0 {
            sent += ready as u64;
            client.write_chunk(&buf[..ready]).await?;
            buf.drain(..ready);
        }
        if done {
            return Ok(sent);
        }
    }
}
