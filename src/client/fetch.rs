//! `fetch`: download a whole maildrop into a maildir, like getmail — optionally only messages not seen before, and
//! optionally deleting from the server exactly the messages that are safely on disk.

use std::collections::{BTreeMap, BTreeSet};

use tokio::io::{AsyncRead, AsyncWrite};

use super::maildir::Maildir;
use super::uidl_state::UidlState;
use super::{Client, ClientError, Eol};

/// What to fetch and how.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// DELE every message once it is safely in new/ (QUIT commits the deletions).
    pub delete: bool,
    /// Skip messages whose UIDL the maildir's state file already lists for this account.
    pub new_only: bool,
    /// The key of the state file's lines, normally `user@host:port`.
    pub account: String,
    /// Line ends of the saved files.
    pub eol: Eol,
}

/// What a fetch did; filled in as it goes, so it is right even when an error ends the fetch early.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchSummary {
    /// Messages in the maildrop.
    pub on_server: usize,
    /// Messages saved into new/.
    pub fetched: usize,
    /// Octets written to disk for them.
    pub octets: u64,
    /// Messages skipped because `new_only` found their UIDL in the state file.
    pub skipped: usize,
    /// Messages marked deleted (removed by the server at QUIT).
    pub deleted: usize,
    /// Whether QUIT succeeded, which is what makes the deletions real.
    pub committed: bool,
}

/// Progress reports for a display.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// About to download `messages` messages of `octets` octets (sizes as LIST gives them).
    Start { messages: usize, octets: u64 },
    /// One message saved; `listed_octets` is its LIST size, to advance a bar started with `Start`'s total.
    Saved { number: u32, listed_octets: u64 },
}

/// Downloads the maildrop of a logged-in `client` into `maildir`, then QUITs.
///
/// Safety rules: a message is deleted only after its file is fsynced in new/ and its UIDL recorded; any error stops
/// the fetch; when the session is still sound (a local write error), QUIT commits the deletions made so far, and
/// when it is not (the connection broke), nothing is committed and the server keeps every message (RFC 1939 §6).
pub async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: Client<S>,
    maildir: &Maildir,
    opts: &FetchOptions,
    summary: &mut FetchSummary,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ClientError> {
    let state_err = |path: &std::path::Path, cause| ClientError::Maildir {
        path: path.to_owned(),
        cause,
    };
    let uids: Option<BTreeMap<u32, String>> = match client.uidl().await {
        Ok(list) => Some(list.into_iter().collect()),
        Err(ClientError::Server { text, .. }) if opts.new_only => {
            return Err(ClientError::Server {
                command: "UIDL",
                code: None,
                text: format!("{text} (--new-only needs UIDL, which this server does not support)"),
            });
        }
        Err(ClientError::Server { .. }) => None,
        Err(e) => return Err(e),
    };
    let mut state = match &uids {
        Some(_) => Some(
            UidlState::load(maildir.root(), &opts.account)
                .map_err(|e| state_err(maildir.root(), e))?,
        ),
        None => None,
    };
    let listing = client.list().await?;
    summary.on_server = listing.len();

    let uid_of = |n: u32| uids.as_ref().and_then(|u| u.get(&n)).cloned();
    let wanted: Vec<(u32, u64, Option<String>)> = listing
        .iter()
        .map(|&(n, size)| (n, size, uid_of(n)))
        .filter(|(_, _, uid)| {
            let seen =
                opts.new_only && matches!((uid, &state), (Some(u), Some(s)) if s.contains(u));
            !seen
        })
        .collect();
    summary.skipped = listing.len() - wanted.len();
    progress(Progress::Start {
        messages: wanted.len(),
        octets: wanted.iter().map(|w| w.1).sum(),
    });

    let mut deleted_uids = BTreeSet::new();
    let result = download(
        &mut client,
        maildir,
        opts,
        &wanted,
        &mut state,
        summary,
        &mut deleted_uids,
        progress,
    )
    .await;

    match &result {
        Err(ClientError::Sink(_)) | Err(ClientError::Maildir { .. }) | Ok(()) => {
            // The session is sound: commit what was safely saved.
            client.quit().await?;
            summary.committed = true;
        }
        // The connection is gone or out of step: dropping it leaves the maildrop exactly as it was.
        Err(_) => {}
    }
    if result.is_ok()
        && let (Some(uids), Some(state)) = (&uids, &mut state)
    {
        let still_there: BTreeSet<String> = uids
            .values()
            .filter(|u| !deleted_uids.contains(*u))
            .cloned()
            .collect();
        state
            .prune(&still_there)
            .map_err(|e| state_err(state.path(), e))?;
    }
    result
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
async fn download<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    maildir: &Maildir,
    opts: &FetchOptions,
    wanted: &[(u32, u64, Option<String>)],
    state: &mut Option<UidlState>,
    summary: &mut FetchSummary,
    deleted_uids: &mut BTreeSet<String>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ClientError> {
    let md_err = |cause| ClientError::Maildir {
        path: maildir.root().to_owned(),
        cause,
    };
    for (n, listed, uid) in wanted {
        let mut delivery = maildir.begin();
        let mut body = client.retr_body(*n, opts.eol).await?;
        let mut write_error = None;
        while let Some(chunk) = body.next_chunk().await? {
            // After a local write error the rest is still read, so the session stays in step and QUIT can
            // commit the deletions of the messages saved before this one.
            if write_error.is_none()
                && let Err(e) = delivery.write(chunk).await
            {
                write_error = Some(e);
            }
        }
        drop(body);
        // On any error the delivery is dropped, which removes its tmp file: nothing half-written stays.
        if let Some(e) = write_error {
            return Err(md_err(e));
        }
        let octets = delivery.len();
        delivery.commit().await.map_err(md_err)?;
        summary.fetched += 1;
        summary.octets += octets;
        if let (Some(uid), Some(state)) = (uid, state.as_mut()) {
            state.record(uid).map_err(|cause| ClientError::Maildir {
                path: state.path().to_owned(),
                cause,
            })?;
        }
        if opts.delete {
            client.dele(*n).await?;
            summary.deleted += 1;
            if let Some(uid) = uid {
                deleted_uids.insert(uid.clone());
            }
        }
        progress(Progress::Saved {
            number: *n,
            listed_octets: *listed,
        });
    }
    Ok(())
}
