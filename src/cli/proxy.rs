//! `popguard proxy`: run the filtering proxy; flags override the config file for scripting.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use popguard::filter::Filter;
use popguard::proxy::{self, Action};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: super::CommonArgs,
    /// Address to listen on [default: proxy.listen, else 127.0.0.1:1110].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Upstream POP3 server, HOST:PORT (overrides proxy.upstream).
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: Option<String>,
    /// Upstream TLS [default: implicit on port 995, starttls otherwise].
    #[arg(long, value_name = "MODE", value_parser = ["none", "implicit", "starttls"])]
    pub upstream_tls: Option<String>,
    /// Extra trust anchor (PEM) for the upstream's certificate, besides the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// What to do with spam: tag it, or hide it from the client.
    #[arg(long, value_parser = ["tag", "hide"])]
    pub action: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = args.common.load()?;
    let p = &mut config.proxy;
    if let Some(l) = args.listen {
        p.listen = l;
    }
    if let Some(u) = args.upstream {
        p.upstream = Some(u);
    }
    if let Some(t) = args.upstream_tls {
        p.upstream_tls = Some(t);
    }
    if let Some(c) = args.ca_file {
        p.ca_file = Some(c);
    }
    if let Some(a) = args.action {
        p.action = a.parse::<Action>().map_err(anyhow::Error::msg)?;
    }
    let listen = p.listen.clone();
    let filter = Filter::new(&config.filter_settings()).context("loading the filter")?;
    let listener = popguard::listener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let upstream = config
        .proxy
        .upstream
        .clone()
        .unwrap_or_else(|| "(per user)".into());
    eprintln!(
        "popguard proxy on {addr} -> {upstream}, action {}; Ctrl-C to stop",
        config.proxy.action
    );
    let settings = config.proxy_settings()?;
    proxy::run(listener, settings, Arc::new(filter), shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM on Unix (service managers stop daemons with it).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
