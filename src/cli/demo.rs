//! `popguard demo`: the built-in server on a temporary maildir with sample ham and spam, the filtering proxy in
//! front of it, and copy-paste commands that show the filter at work.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use popguard::config::Config;
use popguard::filter::Filter;
use popguard::filter::bayes::{self, TrainClass};
use popguard::proxy::{self, Action};
use popguard::server::users::Users;
use popguard::server::{self, ServerConfig};
use tokio::net::TcpListener;

/// The demo login; the password is the same word.
pub const DEMO_USER: &str = "demo";
/// Where the proxy listens unless `--listen` says otherwise: the proxy's own default.
pub const DEFAULT_PROXY_LISTEN: &str = proxy::DEFAULT_LISTEN;
/// Where the built-in server listens unless `--server-listen` says otherwise.
pub const DEFAULT_SERVER_LISTEN: &str = "127.0.0.1:11110";
/// The config file the demo writes into its directory, so `popguard score --config` reproduces its verdicts.
pub const CONFIG_FILE: &str = "popguard.toml";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the proxy listens [default: 127.0.0.1:1110, or a free port when that one is taken].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Where the built-in POP3 server listens [default: 127.0.0.1:11110, or a free port when taken].
    #[arg(long, value_name = "ADDR")]
    pub server_listen: Option<SocketAddr>,
    /// What the proxy does with spam: tag it (Subject prefix and X-Spam-* fields) or hide it.
    #[arg(long, value_parser = ["tag", "hide"], default_value = "tag")]
    pub action: String,
    /// Keep the sample maildrop, config and filter state in this directory instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub const SAMPLES: &[(&str, bool, &str)] = &[
    (
        "1700000001.M1P1.demo",
        false,
        "From: Alice Example <alice@example.org>\nTo: demo@localhost\nSubject: Lunch on Thursday?\n\
         Date: Tue, 14 Nov 2023 10:00:00 +0000\nMessage-ID: <ham1@example.org>\n\n\
         Hi,\n\nare we still on for lunch on Thursday at noon? The new place on Main Street\nhas a good \
         vegetarian menu.\n\nAlice\n",
    ),
    (
        "1700000002.M2P1.demo",
        true,
        "From: \"Prize Department\" <winner@lottery-prize.example>\nTo: demo@localhost\n\
         Subject: CONGRATULATIONS!!! You have WON $1,000,000\nDate: Tue, 14 Nov 2023 10:05:00 +0000\n\
         Message-ID: <spam1@lottery-prize.example>\n\n\
         Dear Winner,\n\nYour email address has been selected in our international lottery.\n\
         To claim your prize of ONE MILLION DOLLARS send your bank account details and a\n\
         processing fee of $99 to claims@lottery-prize.example TODAY.\n\n\
         CLICK HERE: http://lottery-prize.example/claim?id=12345\n\n\
         100% GUARANTEED and RISK FREE. This is NOT spam: you received this message because you\n\
         signed up with one of our partners. To be removed from our list reply with REMOVE.\n",
    ),
    (
        "1700000003.M3P1.demo",
        false,
        "From: Build Robot <ci@example.org>\nTo: demo@localhost\nSubject: [build] main #1234 passed\n\
         Date: Tue, 14 Nov 2023 11:00:00 +0000\nMessage-ID: <ham2@example.org>\n\n\
         Build #1234 of main passed in 4m12s.\n\n\
         .dotfile handling: a line starting with a dot, to show byte-stuffing.\n",
    ),
    (
        "1700000004.M4P1.demo",
        true,
        "From: Pharmacy Online <sales@cheap-meds.example>\nTo: demo@localhost\n\
         Subject: Cheap V1AGRA - 90% OFF - no prescription needed\nDate: Tue, 14 Nov 2023 12:00:00 +0000\n\
         Message-ID: <spam2@cheap-meds.example>\nContent-Type: text/html; charset=us-ascii\n\n\
         <html><body><p>BEST PRICES on V1AGRA and C1ALIS!!!</p>\n\
         <p><a href=\"http://cheap-meds.example/buy\">ORDER NOW</a> - limited time offer, act now!</p>\n\
         <p>No prescription needed. 100% SATISFACTION GUARANTEED. This is a one-time mailing.</p>\n\
         </body></html>\n",
    ),
    (
        "1700000005.M5P1.demo",
        false,
        "From: Bob Example <bob@example.org>\nTo: demo@localhost\nSubject: Re: quarterly report draft\n\
         Date: Wed, 15 Nov 2023 09:30:00 +0000\nMessage-ID: <ham3@example.org>\nIn-Reply-To: <q3@example.org>\n\n\
         Thanks, I read the draft. Section 2 needs the updated figures from finance;\n\
         otherwise it looks good to me.\n\nBob\n",
    ),
    (
        "1700000006.M6P1.demo",
        true,
        "From: Barrister James Okoro <j.okoro@fund-release.example>\nTo: undisclosed-recipients:;\n\
         Subject: URGENT BUSINESS PROPOSAL - REPLY IMMEDIATELY\nDate: Wed, 15 Nov 2023 10:00:00 +0000\n\
         Message-ID: <spam3@fund-release.example>\n\n\
         Dear Friend,\n\nI am Barrister James Okoro, personal attorney to the late Mr. Andrew, who died with\n\
         his family in a plane crash, leaving the sum of US$25,500,000 (TWENTY FIVE MILLION DOLLARS) in a\n\
         bank here with no next of kin. I seek your assistance to transfer this fund into your account;\n\
         you will receive 30% for your assistance. This transaction is 100% risk free and confidential.\n\
         Reply with your bank details at http://192.0.2.15/release.\n",
    ),
];

/// Writes a demo file owner-only: the users file holds the demo password, and the maildrop and config are the
/// user's mail and settings, private like everything under a data directory. The replace is a new file, so one kept
/// from an older demo run (once written world-readable) ends up owner-only too.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    popguard::fsutil::write_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates `root/USER/{new,cur,tmp}` with the samples in `new/`, and the users file `root/users`.
pub fn write_sample_maildirs(root: &Path) -> anyhow::Result<()> {
    let drop = root.join(DEMO_USER);
    // Re-running on a kept directory must not bring back what was deleted: only a new maildrop gets samples.
    let fresh = !drop.exists();
    for sub in ["new", "cur", "tmp"] {
        popguard::fsutil::create_private_dir_all(&drop.join(sub))
            .with_context(|| format!("cannot create {}", drop.join(sub).display()))?;
    }
    if fresh {
        for (name, _, text) in SAMPLES {
            let path = drop.join("new").join(name);
            write_private(&path, text.as_bytes())?;
        }
    }
    write_private(
        &root.join("users"),
        format!("{DEMO_USER}:{DEMO_USER}\n").as_bytes(),
    )?;
    Ok(())
}

/// Sample files `root/samples/{ham,spam}-N.eml` for `popguard score`: the maildrop's copies move or vanish as the
/// demo is used. Returns the paths with their class.
pub fn write_sample_files(root: &Path) -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let dir = root.join("samples");
    popguard::fsutil::create_private_dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let (mut ham, mut spam) = (0, 0);
    let mut out = Vec::new();
    for (_, is_spam, text) in SAMPLES {
        let name = if *is_spam {
            spam += 1;
            format!("spam-{spam}.eml")
        } else {
            ham += 1;
            format!("ham-{ham}.eml")
        };
        let path = dir.join(name);
        write_private(&path, text.as_bytes())?;
        out.push((path, *is_spam));
    }
    Ok(out)
}

/// The demo's configuration, also written to `root/popguard.toml` so `score` and `proxy` can reuse it.
pub fn demo_config_text(
    root: &Path,
    upstream: SocketAddr,
    listen: SocketAddr,
    action: Action,
) -> String {
    let spam = SAMPLES.iter().filter(|s| s.1).count();
    let ham = SAMPLES.len() - spam;
    // Debug formatting gives a TOML basic string with quotes and escapes for any path.
    let data_dir = format!("{:?}", root.join("data").display().to_string());
    format!(
        "# Written by `popguard demo`.\n\
         data_dir = {data_dir}\n\n\
         [proxy]\n\
         listen = \"{listen}\"\n\
         upstream = \"{upstream}\"\n\
         upstream_tls = \"none\"\n\
         action = \"{action}\"\n\n\
         # The demo never touches the network beyond loopback.\n\
         [dnsbl]\n\
         enabled = false\n\n\
         # The demo model is trained on just the samples; a real one needs far more mail before it is trusted.\n\
         [bayes]\n\
         min_spam = {spam}\n\
         min_ham = {ham}\n"
    )
}

/// Binds `wanted`, or the default address and then a free port on the same host when the default is taken.
async fn bind(
    wanted: Option<SocketAddr>,
    default: &str,
    what: &str,
) -> anyhow::Result<TcpListener> {
    if let Some(addr) = wanted {
        return popguard::listener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for the {what}: pick another address")
        });
    }
    match popguard::listener::bind(default).await {
        Ok(l) => Ok(l),
        Err(e) => {
            let mut any: SocketAddr = default.parse().context("bad built-in address")?;
            any.set_port(0);
            let l = popguard::listener::bind(any)
                .await
                .with_context(|| format!("cannot listen on {any} for the {what}"))?;
            eprintln!(
                "note: {default} is not available for the {what} ({e}); using {} instead",
                l.local_addr()?
            );
            Ok(l)
        }
    }
}

/// How to run this very binary in the printed commands: `popguard` when that is what `PATH` finds, else its path
/// (as under `cargo run`).
fn program_name() -> String {
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("popguard"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
    });
    match me {
        Some(me) if on_path.as_ref() != Some(&me) => shell_quote(&me.display().to_string()),
        _ => "popguard".to_owned(),
    }
}

/// Quotes a word for a POSIX shell when it holds anything beyond plain path characters.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let action: Action = args.action.parse().map_err(anyhow::Error::msg)?;
    // The temporary directory lives until this function returns (after Ctrl-C), then is removed.
    let temp;
    let root = match &args.dir {
        Some(d) => {
            popguard::fsutil::create_private_dir_all(d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("popguard-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            temp.path().to_owned()
        }
    };
    let fresh = !root.join(DEMO_USER).exists();
    write_sample_maildirs(&root)?;
    let samples = write_sample_files(&root)?;
    let users = Users::load(&root.join("users"))?;
    let server_config = ServerConfig::new(&root, users);

    let server_listener =
        bind(args.server_listen, DEFAULT_SERVER_LISTEN, "built-in server").await?;
    let server_addr = server_listener.local_addr()?;
    let proxy_listener = bind(args.listen, DEFAULT_PROXY_LISTEN, "proxy").await?;
    let proxy_addr = proxy_listener.local_addr()?;

    let config_path = root.join(CONFIG_FILE);
    let text = demo_config_text(&root, server_addr, proxy_addr, action);
    write_private(&config_path, text.as_bytes())?;
    let config = Config::load(Some(&config_path))?;

    // Train the demo user's model on the samples, so the verdicts show BAYES_* hits next to the rules. Training is
    // idempotent (a message already in its class is refused), so a kept --dir can be reused.
    for (path, is_spam) in &samples {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let class = if *is_spam {
            TrainClass::Spam
        } else {
            TrainClass::Ham
        };
        bayes::train_message(&config.bayes_settings(), DEMO_USER, &text, class, false)
            .with_context(|| format!("training the demo model on {}", path.display()))?;
    }
    let filter = Filter::new(&config.filter_settings()).context("loading the filter")?;

    let spam = SAMPLES.iter().filter(|s| s.1).count();
    let me = program_name();
    let spam_file = samples
        .iter()
        .find(|s| s.1)
        .map(|s| shell_quote(&s.0.display().to_string()))
        .unwrap_or_default();
    let cfg = shell_quote(&config_path.display().to_string());
    let client = |addr: SocketAddr, cmd: &str| {
        format!(
            "POPGUARD_PASSWORD={DEMO_USER} {me} client --server {addr} --user {DEMO_USER} {cmd}"
        )
    };
    // One `key: value` line per fact first, so scripts (and the tests) can read the addresses.
    println!("proxy: {proxy_addr}");
    println!("server: {server_addr}");
    println!("user: {DEMO_USER}");
    println!("password: {DEMO_USER}");
    println!("action: {action}");
    println!("maildrop: {}", root.join(DEMO_USER).display());
    println!("config: {}", config_path.display());
    println!();
    println!(
        "popguard demo: the filtering proxy on {proxy_addr} ({action}s spam) in front of the built-in POP3 server \
         on {server_addr}."
    );
    println!(
        "The maildrop {} {} ham and {spam} spam sample messages; the demo's Bayes model is trained on them and \
         DNS blocklists are off.",
        if fresh {
            "holds"
        } else {
            "was kept from before; it started with"
        },
        SAMPLES.len() - spam
    );
    println!();
    println!(
        "Through the proxy (spam subjects start with [SPAM], every message has X-Spam-* fields):"
    );
    println!("  {}", client(proxy_addr, "list"));
    println!("  {}", client(proxy_addr, "top 2 0"));
    println!("  curl -s pop3://{proxy_addr}/2 -u {DEMO_USER}:{DEMO_USER}");
    println!("Directly from the server, for comparison:");
    println!("  {}", client(server_addr, "top 2 0"));
    println!("  curl -s pop3://{server_addr}/2 -u {DEMO_USER}:{DEMO_USER}");
    println!("Why a message is spam (the proxy's verdict, reproduced offline):");
    println!("  {me} score --config {cfg} --user {DEMO_USER} --explain {spam_file}");
    if action == Action::Hide {
        println!("Hidden messages (after a client has listed the maildrop):");
        println!("  {me} quarantine list --config {cfg} --user {DEMO_USER}");
    }
    println!();
    println!(
        "Ctrl-C stops the demo{}.",
        if args.dir.is_none() {
            " and removes its temporary directory"
        } else {
            ""
        }
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let stopped = |mut rx: tokio::sync::watch::Receiver<()>| async move {
        // An error means the sender is gone, which also means stop.
        let _ = rx.changed().await;
    };
    let server = server::run(
        server_listener,
        Arc::new(server_config),
        stopped(stop_rx.clone()),
    );
    let proxy = proxy::run(
        proxy_listener,
        config.proxy_settings()?,
        Arc::new(filter),
        stopped(stop_rx),
    );
    let both = async { tokio::join!(server, proxy) };
    tokio::pin!(both);
    let (server_result, proxy_result) = tokio::select! {
        r = &mut both => r,
        () = super::server::shutdown_signal() => {
            let _ = stop_tx.send(());
            both.await
        }
    };
    server_result.context("built-in server")?;
    proxy_result.context("proxy")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_parses_with_no_network_and_a_usable_model() {
        let root = Path::new("/tmp/it's a \"demo\"");
        let server: SocketAddr = "127.0.0.1:11110".parse().unwrap();
        let proxy: SocketAddr = "127.0.0.1:1110".parse().unwrap();
        let c = Config::parse(&demo_config_text(root, server, proxy, Action::Hide)).unwrap();
        assert!(!c.dnsbl.enabled, "the demo never leaves loopback");
        assert_eq!(c.data_dir, Some(root.join("data")));
        assert_eq!(c.proxy.upstream.as_deref(), Some("127.0.0.1:11110"));
        assert_eq!(c.proxy.upstream_tls.as_deref(), Some("none"));
        assert_eq!(c.proxy.action, Action::Hide);
        let spam = SAMPLES.iter().filter(|s| s.1).count() as u32;
        assert_eq!(
            (c.bayes.min_spam, c.bayes.min_ham),
            (spam, SAMPLES.len() as u32 - spam)
        );
    }

    #[test]
    fn shell_quote_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("/tmp/popguard-demo-x1/samples/spam-1.eml"),
            "/tmp/popguard-demo-x1/samples/spam-1.eml"
        );
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn samples_make_a_valid_maildrop_and_rerun_keeps_deletions() {
        let t = tempfile::tempdir().unwrap();
        write_sample_maildirs(t.path()).unwrap();
        let drop = popguard::server::maildir::Maildrop::open(&t.path().join(DEMO_USER)).unwrap();
        assert_eq!(drop.messages().len(), SAMPLES.len());
        let users = Users::load(&t.path().join("users")).unwrap();
        assert!(users.verify(DEMO_USER, DEMO_USER.as_bytes()));
        // Every sample parses as a message with a subject (the filter will read them).
        for (_, _, text) in SAMPLES {
            assert!(text.contains("\nSubject: "), "{text}");
            assert!(text.contains("\n\n"), "header and body");
        }
        // Owner-only, whatever the umask: the users file holds the demo password.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&t.path().join("users")), 0o600);
            assert_eq!(mode(&t.path().join(DEMO_USER).join("new")), 0o700);
            assert_eq!(mode(&drop.messages()[0].path), 0o600);
            let samples = write_sample_files(t.path()).unwrap();
            assert_eq!(mode(&t.path().join("samples")), 0o700);
            assert!(samples.iter().all(|(p, _)| mode(p) == 0o600));
            // A users file left world-readable by an older demo run is owner-only after the next one.
            let users = t.path().join("users");
            std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).unwrap();
            write_sample_maildirs(t.path()).unwrap();
            assert_eq!(mode(&users), 0o600);
        }
        std::fs::remove_file(drop.messages()[0].path.clone()).unwrap();
        write_sample_maildirs(t.path()).unwrap();
        assert_eq!(
            popguard::server::maildir::Maildrop::open(&t.path().join(DEMO_USER))
                .unwrap()
                .messages()
                .len(),
            SAMPLES.len() - 1,
            "a deleted sample stays deleted"
        );
    }
}
