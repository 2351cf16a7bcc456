//! The client's view of the maildrop: client message numbers ↔ upstream numbers, hidden messages, the sizes the client
//! is promised, and deletion marks. Pure: no I/O, so every RFC 1939 corner is unit-tested here.
//!
//! Hidden messages get no client number at all, so "hidden" and "past the end" are indistinguishable to the client,
//! as they must be: the client sees a smaller, densely numbered maildrop.

/// One upstream message as the session learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The upstream's message number (1-based).
    pub upstream: u32,
    /// The upstream's LIST size.
    pub upstream_size: u64,
    /// The size the client receives (upstream size plus the tag), reported in STAT and LIST.
    pub client_size: u64,
    /// The upstream UIDL, when the upstream has UIDL.
    pub uidl: Option<String>,
    /// Left out of the client's view.
    pub hidden: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    info: MessageInfo,
    deleted: bool,
}

/// Why a client message number cannot be used; the text is what a server would answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// 0, past the end, or a hidden message (which has no client number).
    #[error("no such message")]
    NoSuchMessage,
    /// Marked deleted in this session (RFC 1939 §5: "may not be referenced").
    #[error("message already deleted")]
    Deleted,
}

/// The renumbered maildrop for one session.
#[derive(Debug, Clone, Default)]
pub struct MailboxMap {
    /// Every upstream message, in upstream order.
    slots: Vec<Slot>,
    /// Client number `n` is `slots[visible[n - 1]]`.
    visible: Vec<usize>,
}

impl MailboxMap {
    /// Builds the map; messages are sorted by upstream number so client numbering follows upstream order.
    pub fn new(mut messages: Vec<MessageInfo>) -> MailboxMap {
        messages.sort_by_key(|m| m.upstream);
        messages.dedup_by_key(|m| m.upstream);
        let slots: Vec<Slot> = messages
            .into_iter()
            .map(|info| Slot {
                info,
                deleted: false,
            })
            .collect();
        let visible = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.info.hidden)
            .map(|(i, _)| i)
            .collect();
        MailboxMap { slots, visible }
    }

    fn slot(&self, n: u32) -> Result<&Slot, MapError> {
        let idx = (n as usize)
            .checked_sub(1)
            .and_then(|i| self.visible.get(i))
            .ok_or(MapError::NoSuchMessage)?;
        Ok(&self.slots[*idx])
    }

    /// The message behind client number `n`, if it may be referenced.
    pub fn get(&self, n: u32) -> Result<&MessageInfo, MapError> {
        let s = self.slot(n)?;
        if s.deleted {
            Err(MapError::Deleted)
        } else {
            Ok(&s.info)
        }
    }

    /// The upstream number for client number `n` (RETR, TOP, DELE).
    pub fn upstream(&self, n: u32) -> Result<u32, MapError> {
        self.get(n).map(|m| m.upstream)
    }

    /// Number of client-visible messages, deleted ones included (the highest client number).
    pub fn len(&self) -> usize {
        self.visible.len()
    }

    pub fn is_empty(&self) -> bool {
        self.visible.is_empty()
    }

    /// STAT: count and total size of visible, undeleted messages (RFC 1939 §5: deleted ones are not counted).
    pub fn stat(&self) -> (usize, u64) {
        self.listing()
            .fold((0, 0), |(c, s), (_, m)| (c + 1, s + m.client_size))
    }

    /// LIST / UIDL without argument: `(client number, message)` for every visible, undeleted message.
    pub fn listing(&self) -> impl Iterator<Item = (u32, &MessageInfo)> + '_ {
        self.visible.iter().enumerate().filter_map(|(i, &idx)| {
            let s = &self.slots[idx];
            (!s.deleted).then(|| (client_number(i), &s.info))
        })
    }

    /// Marks client number `n` deleted once the upstream accepted the translated DELE.
    pub fn mark_deleted(&mut self, n: u32) -> Result<u32, MapError> {
        let idx = (n as usize)
            .checked_sub(1)
            .and_then(|i| self.visible.get(i))
            .copied()
            .ok_or(MapError::NoSuchMessage)?;
        let s = &mut self.slots[idx];
        if s.deleted {
            return Err(MapError::Deleted);
        }
        s.deleted = true;
        Ok(s.info.upstream)
    }

    /// RSET: every deletion mark is removed (RFC 1939 §5).
    pub fn rset(&mut self) {
        for s in &mut self.slots {
            s.deleted = false;
        }
    }

    /// Hidden messages not deleted in this session (for `delete_hidden` at QUIT).
    pub fn hidden_undeleted(&self) -> impl Iterator<Item = &MessageInfo> + '_ {
        self.slots
            .iter()
            .filter(|s| s.info.hidden && !s.deleted)
            .map(|s| &s.info)
    }

    /// Marks a hidden message deleted (after the upstream accepted its DELE at QUIT).
    pub fn mark_hidden_deleted(&mut self, upstream: u32) {
        if let Some(s) = self
            .slots
            .iter_mut()
            .find(|s| s.info.upstream == upstream && s.info.hidden)
        {
            s.deleted = true;
        }
    }

    /// Every message, hidden ones included, in upstream order.
    pub fn all(&self) -> impl Iterator<Item = &MessageInfo> + '_ {
        self.slots.iter().map(|s| &s.info)
    }
}

fn client_number(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream 1..=n; the listed upstream numbers are hidden; client size = upstream size + 10.
    fn map(n: u32, hidden: &[u32]) -> MailboxMap {
        MailboxMap::new(
            (1..=n)
                .map(|u| MessageInfo {
                    upstream: u,
                    upstream_size: 100 * u as u64,
                    client_size: 100 * u as u64 + 10,
                    uidl: Some(format!("uid{u}")),
                    hidden: hidden.contains(&u),
                })
                .collect(),
        )
    }

    #[test]
    fn empty_maildrop() {
        let m = map(0, &[]);
        assert_eq!(m.stat(), (0, 0));
        assert!(m.is_empty());
        assert_eq!(m.get(1), Err(MapError::NoSuchMessage));
        assert_eq!(m.listing().count(), 0);
    }

    #[test]
    fn nothing_hidden_is_identity() {
        let m = map(3, &[]);
        for n in 1..=3 {
            assert_eq!(m.upstream(n), Ok(n));
        }
        assert_eq!(m.stat(), (3, 110 + 210 + 310));
    }

    #[test]
    fn hidden_messages_are_renumbered_away() {
        let m = map(5, &[2, 4]);
        assert_eq!(m.len(), 3);
        assert_eq!(m.upstream(1), Ok(1));
        assert_eq!(m.upstream(2), Ok(3));
        assert_eq!(m.upstream(3), Ok(5));
        assert_eq!(m.upstream(4), Err(MapError::NoSuchMessage));
        assert_eq!(m.stat(), (3, 110 + 310 + 510));
        let l: Vec<(u32, u64, &str)> = m
            .listing()
            .map(|(n, i)| (n, i.client_size, i.uidl.as_deref().unwrap()))
            .collect();
        assert_eq!(
            l,
            vec![(1, 110, "uid1"), (2, 310, "uid3"), (3, 510, "uid5")]
        );
    }

    #[test]
    fn zero_and_past_end_and_huge_are_no_such_message() {
        let m = map(3, &[3]);
        for n in [0, 3, 4, u32::MAX] {
            assert_eq!(m.get(n), Err(MapError::NoSuchMessage), "n={n}");
        }
    }

    #[test]
    fn all_hidden() {
        let m = map(2, &[1, 2]);
        assert_eq!(m.stat(), (0, 0));
        assert_eq!(m.get(1), Err(MapError::NoSuchMessage));
        assert_eq!(m.hidden_undeleted().count(), 2);
        assert_eq!(m.all().count(), 2);
    }

    #[test]
    fn dele_then_reference_then_rset() {
        let mut m = map(4, &[2]);
        assert_eq!(m.mark_deleted(2), Ok(3));
        assert_eq!(m.get(2), Err(MapError::Deleted));
        assert_eq!(m.mark_deleted(2), Err(MapError::Deleted));
        assert_eq!(m.upstream(2), Err(MapError::Deleted));
        // Numbers do not shift after DELE (RFC 1939 §5).
        assert_eq!(m.upstream(3), Ok(4));
        assert_eq!(m.stat(), (2, 110 + 410));
        let l: Vec<u32> = m.listing().map(|(n, _)| n).collect();
        assert_eq!(l, vec![1, 3]);
        m.rset();
        assert_eq!(m.upstream(2), Ok(3));
        assert_eq!(m.stat(), (3, 110 + 310 + 410));
    }

    #[test]
    fn dele_of_bad_numbers() {
        let mut m = map(2, &[2]);
        assert_eq!(m.mark_deleted(0), Err(MapError::NoSuchMessage));
        assert_eq!(m.mark_deleted(2), Err(MapError::NoSuchMessage));
        assert_eq!(m.mark_deleted(9), Err(MapError::NoSuchMessage));
        assert_eq!(m.stat().0, 1);
    }

    #[test]
    fn hidden_stay_out_of_client_deletes_and_rset() {
        let mut m = map(3, &[1]);
        m.mark_deleted(1).unwrap();
        m.mark_deleted(2).unwrap();
        let hidden: Vec<u32> = m.hidden_undeleted().map(|i| i.upstream).collect();
        assert_eq!(hidden, vec![1]);
        m.mark_hidden_deleted(1);
        assert_eq!(m.hidden_undeleted().count(), 0);
        // Marking a visible message through the hidden path does nothing.
        m.rset();
        m.mark_hidden_deleted(2);
        assert_eq!(m.get(1).map(|i| i.upstream), Ok(2));
    }

    #[test]
    fn unsorted_and_duplicate_input_is_normalised() {
        let info = |u| MessageInfo {
            upstream: u,
            upstream_size: 1,
            client_size: 1,
            uidl: None,
            hidden: false,
        };
        let m = MailboxMap::new(vec![info(3), info(1), info(3), info(2)]);
        let l: Vec<u32> = m.listing().map(|(_, i)| i.upstream).collect();
        assert_eq!(l, vec![1, 2, 3]);
    }

    #[test]
    fn exhaustive_small_maps_agree_with_a_naive_model() {
        // Every hidden pattern of 4 messages, every single DELE, checked against a direct computation.
        for mask in 0u32..16 {
            let hidden: Vec<u32> = (1..=4).filter(|u| mask & (1 << (u - 1)) != 0).collect();
            let visible: Vec<u32> = (1..=4).filter(|u| !hidden.contains(u)).collect();
            for del in 0..=visible.len() as u32 + 1 {
                let mut m = map(4, &hidden);
                let ok = m.mark_deleted(del).is_ok();
                assert_eq!(ok, del >= 1 && (del as usize) <= visible.len());
                for n in 0..=6u32 {
                    let expect = if n == 0 || n as usize > visible.len() {
                        Err(MapError::NoSuchMessage)
                    } else if ok && n == del {
                        Err(MapError::Deleted)
                    } else {
                        Ok(visible[n as usize - 1])
                    };
                    assert_eq!(m.upstream(n), expect, "mask={mask} del={del} n={n}");
                }
                let count = visible.len() - usize::from(ok);
                assert_eq!(m.stat().0, count);
                m.rset();
                assert_eq!(m.stat().0, visible.len());
            }
        }
    }
}
