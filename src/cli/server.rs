//! `popguard server`: flags of the built-in maildir POP3 server, and running it until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use popguard::server::users::Users;
use popguard::server::{self, DEFAULT_IDLE_TIMEOUT, ServerConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port, printed on start).
    #[arg(long, default_value = "127.0.0.1:1110")]
    pub listen: SocketAddr,
    /// Directory with one maildir per user: DIR/USER/{new,cur,tmp}.
    #[arg(long, value_name = "DIR")]
    pub maildirs: PathBuf,
    /// Users file: `user:password` lines; passwords plaintext or `{SHA512-CRYPT}$6$...`, `{SHA256}...`, `{PLAIN}...`.
    #[arg(long, value_name = "FILE")]
    pub users: PathBuf,
    /// PEM certificate chain; with --tls-key, enables STLS (or implicit TLS with --implicit-tls).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Start TLS as soon as a client connects (the POP3S / port 995 style) instead of offering STLS.
    #[arg(long, requires = "tls_cert")]
    pub implicit_tls: bool,
    /// Inactivity timeout in seconds (RFC 1939 asks for at least 600).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub timeout: u64,
    /// Seconds to wait before answering a failed login.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub auth_failure_delay: f64,
    /// Most connections served at once.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Host name shown in the greeting's APOP timestamp.
    #[arg(long, default_value = "localhost")]
    pub hostname: String,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let users = Users::load(&args.users)?;
    if users.is_empty() {
        anyhow::bail!(
            "users file {} lists no users; add `user:password` lines",
            args.users.display()
        );
    }
    if !args.maildirs.is_dir() {
        anyhow::bail!(
            "--maildirs {} is not a directory; create it with one maildir per user (DIR/USER/new, cur, tmp)",
            args.maildirs.display()
        );
    }
    if args.timeout == 0 {
        anyhow::bail!("--timeout must be at least 1 second");
    }
    if args.timeout < DEFAULT_IDLE_TIMEOUT.as_secs() {
        tracing::warn!(
            "--timeout {} is below the 600 s minimum of RFC 1939 §3; clients on slow links may be cut off",
            args.timeout
        );
    }
    if !(0.0..=60.0).contains(&args.auth_failure_delay) {
        anyhow::bail!("--auth-failure-delay must be between 0 and 60 seconds");
    }
    let mut config = ServerConfig::new(&args.maildirs, users);
    config.idle_timeout = Duration::from_secs(args.timeout);
    config.auth_failure_delay = Duration::from_secs_f64(args.auth_failure_delay);
    config.max_connections = args.max_connections.max(1);
    config.hostname = args.hostname;
    config.implicit_tls = args.implicit_tls;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(popguard::tls::server_config(cert, key)?);
    }

    let listener = popguard::listener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let tls = match (&config.tls, config.implicit_tls) {
        (None, _) => "no TLS",
        (Some(_), false) => "STLS offered",
        (Some(_), true) => "implicit TLS",
    };
    println!(
        "popguard server listening on {addr} ({tls}), maildirs {}",
        args.maildirs.display()
    );
    server::run(listener, Arc::new(config), shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM (what `systemctl stop` and `docker stop` send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("popguard: shutting down");
}
