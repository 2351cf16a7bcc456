//! `popguard client`: talk to any POP3 server from the command line — inspect, read, delete, or fetch into a maildir.

use std::io::{BufRead, IsTerminal, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use tokio::io::AsyncWriteExt;

use popguard::client::fetch::{self, FetchOptions, FetchSummary, Progress};
use popguard::client::maildir::Maildir;
use popguard::client::{AuthMethod, Client, ConnectOptions, Eol, Security};
use popguard::pop3::limits::{POP3_PORT, POP3S_PORT};
use popguard::secret::Secret;
use popguard::tls::TlsMode;

/// The environment variable that holds the password (never a command-line flag, which `ps` would show).
const PASSWORD_ENV: &str = "POPGUARD_PASSWORD";

/// A password line read from a pipe longer than this is not a password (and must not eat a whole file).
const MAX_PASSWORD_LINE: usize = 4096;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
PASSWORD: taken from $POPGUARD_PASSWORD; otherwise prompted for without echo on the terminal, or read as one line \
from standard input when that is not a terminal. Never from the command line.

TLS: without --tls, port 995 uses implicit TLS; any other port uses STLS when the server offers it. Clear text is \
only used without asking when the server is on a loopback address: popguard refuses to send a password in clear text \
to any other host unless you pass --tls none. Certificates are checked against the system roots plus --ca-file, and \
must be valid for the host name given in --server.

Messages printed or saved (retr, top, fetch) get LF line ends, the maildir and Unix convention (getmail and \
fetchmail do the same); pass --crlf to keep the CRLF of the wire.")]
pub struct Args {
    /// The POP3 server, HOST:PORT (PORT defaults to 995 with --tls implicit, otherwise 110).
    #[arg(long, value_name = "HOST:PORT")]
    server: String,
    /// The mailbox (login) name.
    #[arg(long, short)]
    user: String,
    /// none, implicit (TLS from the start, port 995) or starttls (STLS on a clear connection). Default: see below.
    #[arg(long, value_enum)]
    tls: Option<TlsArg>,
    /// PEM file with CA certificates to trust in addition to the system roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// How to log in: auto (USER/PASS, else AUTH PLAIN, else APOP), user, plain, apop.
    #[arg(long, value_enum, default_value_t = AuthArg::Auto)]
    auth: AuthArg,
    /// Seconds to wait for any one reply or chunk of a message before giving up.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
    /// Keep the CRLF line ends of the wire in saved messages instead of converting them to LF.
    #[arg(long, global = true)]
    crlf: bool,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TlsArg {
    None,
    Implicit,
    Starttls,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuthArg {
    Auto,
    User,
    Plain,
    Apop,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Print the number of messages and the maildrop size (STAT).
    Stat,
    /// Print "NUMBER SIZE" for every message, or for message N (LIST).
    List { n: Option<u32> },
    /// Print "NUMBER UNIQUE-ID" for every message, or for message N (UIDL).
    Uidl { n: Option<u32> },
    /// Print message N, or save it to a file (RETR).
    Retr {
        n: u32,
        /// Write the message to FILE instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the headers and the first LINES body lines of message N (TOP).
    Top { n: u32, lines: u32 },
    /// Delete message N. Sends QUIT right after DELE, because a POP3 server only removes messages at QUIT.
    Dele { n: u32 },
    /// Download every message into a maildir (tmp/ then new/, fsynced), like getmail.
    Fetch {
        /// The maildir (created with tmp/, new/ and cur/ if missing).
        #[arg(long, value_name = "MAILDIR")]
        to: PathBuf,
        /// Delete each message from the server once it is safely written (committed by QUIT at the end;
        /// messages skipped by --new-only stay on the server).
        #[arg(long)]
        delete: bool,
        /// Skip messages fetched before (their UIDLs are kept in MAILDIR/.popguard-uidls per user@server).
        #[arg(long)]
        new_only: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = connect_options(&args)?;
    let password = read_password(&args.user, &args.server)?;
    let mut client = Client::connect(&opts).await?;
    tracing::info!(server = %args.server, security = ?client.security(), "connected");
    if client.security() == Security::Plain && opts.tls.is_none() {
        tracing::info!("no TLS: the server is on this machine and offers no STLS");
    }
    let auth = match args.auth {
        AuthArg::Auto => AuthMethod::Auto,
        AuthArg::User => AuthMethod::User,
        AuthArg::Plain => AuthMethod::Plain,
        AuthArg::Apop => AuthMethod::Apop,
    };
    client.login(&args.user, &password, auth).await?;
    let eol = if args.crlf { Eol::Crlf } else { Eol::Lf };

    let mut stdout = std::io::stdout();
    match args.command {
        ClientCommand::Stat => {
            let (count, size) = client.stat().await?;
            writeln!(stdout, "{count} messages, {size} octets")?;
        }
        ClientCommand::List { n: None } => {
            for (n, size) in client.list().await? {
                writeln!(stdout, "{n} {size}")?;
            }
        }
        ClientCommand::List { n: Some(n) } => {
            writeln!(stdout, "{n} {}", client.list_one(n).await?)?
        }
        ClientCommand::Uidl { n: None } => {
            for (n, uid) in client.uidl().await? {
                writeln!(stdout, "{n} {uid}")?;
            }
        }
        ClientCommand::Uidl { n: Some(n) } => {
            writeln!(stdout, "{n} {}", client.uidl_one(n).await?)?
        }
        ClientCommand::Retr {
            n,
            output: Some(path),
        } => {
            // Written beside the target and renamed over it only when complete: a failed RETR leaves an existing
            // file as it was.
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let tmp = tempfile::Builder::new()
                .prefix(".popguard-retr")
                .tempfile_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            let mut file = tokio::fs::File::from_std(tmp.reopen()?);
            let octets = client.retr_to(n, &mut file, eol).await?;
            file.sync_all()
                .await
                .with_context(|| format!("writing {}", path.display()))?;
            tmp.persist(&path)
                .with_context(|| format!("renaming the message to {}", path.display()))?;
            eprintln!("message {n}: {octets} octets written to {}", path.display());
        }
        ClientCommand::Retr { n, output: None } => {
            let mut out = tokio::io::stdout();
            client.retr_to(n, &mut out, eol).await?;
            out.flush().await?;
        }
        ClientCommand::Top { n, lines } => {
            let mut out = tokio::io::stdout();
            client.top_to(n, lines, &mut out, eol).await?;
            out.flush().await?;
        }
        ClientCommand::Dele { n } => {
            client.dele(n).await?;
            client.quit().await?;
            writeln!(stdout, "message {n} deleted")?;
            return Ok(ExitCode::SUCCESS);
        }
        ClientCommand::Fetch {
            to,
            delete,
            new_only,
        } => {
            return run_fetch(client, &args.user, &opts, to, delete, new_only, eol).await;
        }
    }
    client.quit().await?;
    Ok(ExitCode::SUCCESS)
}

async fn run_fetch<S>(
    client: Client<S>,
    user: &str,
    opts: &ConnectOptions,
    to: PathBuf,
    delete: bool,
    new_only: bool,
    eol: Eol,
) -> anyhow::Result<ExitCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let maildir = Maildir::open_or_create(&to)
        .with_context(|| format!("opening maildir {}", to.display()))?;
    let account = format!("{user}@{}:{}", opts.host, opts.port);
    let fetch_opts = FetchOptions {
        delete,
        new_only,
        account,
        eol,
    };
    let bar = indicatif::ProgressBar::hidden();
    let show = std::io::stderr().is_terminal();
    let (mut total, mut done) = (0usize, 0usize);
    let mut on_progress = |p: Progress| match p {
        Progress::Start { messages, octets } => {
            total = messages;
            if show && messages > 0 {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(octets);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(format!("0/{total} messages"));
            }
        }
        Progress::Saved { listed_octets, .. } => {
            done += 1;
            bar.inc(listed_octets);
            bar.set_message(format!("{done}/{total} messages"));
        }
    };
    let mut summary = FetchSummary::default();
    let result = fetch::fetch(
        client,
        &maildir,
        &fetch_opts,
        &mut summary,
        &mut on_progress,
    )
    .await;
    bar.finish_and_clear();
    eprintln!("{}", summary_line(&summary, &to, delete, result.is_ok()));
    result?;
    Ok(ExitCode::SUCCESS)
}

fn summary_line(s: &FetchSummary, to: &std::path::Path, delete: bool, ok: bool) -> String {
    let mut line = format!(
        "{}: fetched {} of {} messages ({} octets) into {}",
        if ok { "done" } else { "stopped" },
        s.fetched,
        s.on_server,
        s.octets,
        to.display()
    );
    if s.skipped > 0 {
        line += &format!(", skipped {} seen before", s.skipped);
    }
    if delete {
        if s.committed {
            line += &format!(", deleted {} from the server", s.deleted);
        } else {
            line +=
                ", deleted none (the session ended before QUIT; the server keeps every message)";
        }
    }
    line
}

fn connect_options(args: &Args) -> anyhow::Result<ConnectOptions> {
    let tls = args.tls.map(|t| match t {
        TlsArg::None => TlsMode::None,
        TlsArg::Implicit => TlsMode::Implicit,
        TlsArg::Starttls => TlsMode::StartTls,
    });
    let default_port = if tls == Some(TlsMode::Implicit) {
        POP3S_PORT
    } else {
        POP3_PORT
    };
    let (host, port) = split_host_port(&args.server, default_port)?;
    if args.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let mut opts = ConnectOptions::new(host, port);
    opts.tls = tls;
    opts.ca_file = args.ca_file.clone();
    opts.timeout = Duration::from_secs(args.timeout);
    if args.ca_file.is_some() && tls == Some(TlsMode::None) {
        bail!("--ca-file has no effect with --tls none");
    }
    Ok(opts)
}

/// `host:port`, `host`, `[v6]:port`, `[v6]`.
fn split_host_port(s: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    let bad = || {
        anyhow::anyhow!("--server {s:?}: expected HOST:PORT, e.g. pop.example.org:995 or [::1]:110")
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                bail!("--server {s:?}: write an IPv6 address in brackets, [addr]:port")
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?,
    };
    Ok((host.to_owned(), port))
}

fn read_password(user: &str, server: &str) -> anyhow::Result<Secret> {
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        return Ok(Secret::new(p));
    }
    if std::io::stdin().is_terminal() {
        let term = console::Term::stderr();
        term.write_str(&format!("Password for {user} at {server}: "))?;
        let p = term
            .read_secure_line()
            .context("reading the password from the terminal")?;
        return Ok(Secret::new(p));
    }
    let mut line = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_PASSWORD_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .context("reading the password from standard input")?;
    if line.is_empty() {
        bail!("no password: set {PASSWORD_ENV}, or give it as one line on standard input");
    }
    if line.len() > MAX_PASSWORD_LINE {
        bail!(
            "the first line of standard input is longer than {MAX_PASSWORD_LINE} octets; it is not a password"
        );
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line)
        .map(Secret::new)
        .map_err(|_| anyhow::anyhow!("the password on standard input is not UTF-8"))
}
