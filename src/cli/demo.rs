//! `popguard demo`: the built-in server on a temporary maildir with a few sample ham and spam messages, and how to
//! connect to it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use popguard::server::users::Users;
use popguard::server::{self, ServerConfig};

/// The demo login; the password is the same word.
pub const DEMO_USER: &str = "demo";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the built-in POP3 server listens (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:11110")]
    pub server_listen: SocketAddr,
    /// Keep the sample maildrop in this directory instead of a temporary one (it is created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// Sample mail: (maildir file name, is spam, message). LF line ends on purpose: the server sends them as CRLF.
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
         CLICK HERE: http://lottery-prize.example/claim?id=12345\n",
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
        "From: Security Team <security@paypa1-verify.example>\nTo: demo@localhost\n\
         Subject: Urgent: your account has been suspended\nDate: Wed, 15 Nov 2023 10:00:00 +0000\n\
         Message-ID: <spam3@paypa1-verify.example>\n\n\
         We detected unusual activity. Your account will be closed within 24 hours\n\
         unless you verify your password at http://paypa1-verify.example/login\n",
    ),
];

/// Creates `root/USER/{new,cur,tmp}` with the samples in `new/`, and the users file `root/users`.
pub fn write_sample_maildirs(root: &Path) -> anyhow::Result<()> {
    let drop = root.join(DEMO_USER);
    // Re-running on a kept directory must not bring back what was deleted: only a new maildrop gets samples.
    let fresh = !drop.exists();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(drop.join(sub))
            .with_context(|| format!("cannot create {}", drop.join(sub).display()))?;
    }
    if fresh {
        for (name, _, text) in SAMPLES {
            let path = drop.join("new").join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    std::fs::write(root.join("users"), format!("{DEMO_USER}:{DEMO_USER}\n"))
        .context("cannot write the demo users file")?;
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The temporary directory lives until this function returns (after Ctrl-C), then is removed.
    let temp;
    let root = match &args.dir {
        Some(d) => d.clone(),
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
    let users = Users::load(&root.join("users"))?;
    let config = ServerConfig::new(&root, users);

    let listener = tokio::net::TcpListener::bind(args.server_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is a demo already running? pick another with --server-listen)",
                args.server_listen
            )
        })?;
    let addr = listener.local_addr()?;
    let spam = SAMPLES.iter().filter(|s| s.1).count();
    println!("popguard demo: built-in POP3 server on {addr}");
    println!(
        "  maildrop {} ({}{} ham and {spam} spam sample messages)",
        root.join(DEMO_USER).display(),
        if fresh {
            ""
        } else {
            "kept from before; started with "
        },
        SAMPLES.len() - spam
    );
    println!("  user {DEMO_USER}, password {DEMO_USER}");
    println!();
    println!("Connect with popguard's client:");
    println!(
        "  POPGUARD_PASSWORD={DEMO_USER} popguard client --server {addr} --user {DEMO_USER} list"
    );
    println!(
        "  POPGUARD_PASSWORD={DEMO_USER} popguard client --server {addr} --user {DEMO_USER} retr 2"
    );
    println!("or with curl:");
    println!("  curl --user {DEMO_USER}:{DEMO_USER} pop3://{addr}/      # list");
    println!("  curl --user {DEMO_USER}:{DEMO_USER} pop3://{addr}/2     # message 2");
    println!();
    println!(
        "Ctrl-C stops the demo{}.",
        if args.dir.is_none() {
            " and removes the temporary maildir"
        } else {
            ""
        }
    );
    server::run(listener, Arc::new(config), super::server::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

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
