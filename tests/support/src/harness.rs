//! The proxy harness: the one place tests and benchmarks build a popguard proxy (configuration text, filter,
//! optional fixed scorer, upstream trust, client TLS) and run it on a loopback port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use popguard::config::Config;
use popguard::filter::Filter;
use popguard::proxy::upstream::{Connect, TcpConnect};
use popguard::proxy::{self, Proxy, ProxyError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::scorer::FixedScorer;
use crate::tls::TestCa;

/// A proxy in front of one upstream, configured step by step:
///
/// ```ignore
/// let px = ProxyBuilder::new(dovecot.addr()).action("hide").fixed_scorer().start().await;
/// ```
///
/// The configuration has `upstream_tls = "none"` and `action = "tag"` unless told otherwise, and DNSBL lookups off
/// (tests use loopback only). Without [`ProxyBuilder::data_dir`], [`ProxyBuilder::start`] uses a temp dir that lives
/// as long as the [`RunningProxy`].
#[must_use]
pub struct ProxyBuilder<C: Connect = TcpConnect> {
    upstream: String,
    /// `None`: the port's default (implicit TLS on 995, STLS elsewhere).
    upstream_tls: Option<String>,
    ca_file: Option<PathBuf>,
    action: String,
    /// More TOML after the `[proxy]` keys (more keys, then possibly other tables).
    extra: String,
    data_dir: Option<PathBuf>,
    scorer: Option<FixedScorer>,
    trust: Option<Arc<rustls::ClientConfig>>,
    connector: C,
}

impl ProxyBuilder<TcpConnect> {
    /// A proxy connecting over TCP to `upstream` (`host:port`).
    pub fn new(upstream: impl ToString) -> ProxyBuilder<TcpConnect> {
        ProxyBuilder {
            upstream: upstream.to_string(),
            upstream_tls: Some("none".into()),
            ca_file: None,
            action: "tag".into(),
            extra: String::new(),
            data_dir: None,
            scorer: None,
            trust: None,
            connector: TcpConnect,
        }
    }
}

impl<C: Connect> ProxyBuilder<C> {
    /// Reaches upstreams through `connector` instead of TCP (e.g. the scripted upstream on in-memory pipes).
    pub fn connector<D: Connect>(self, connector: D) -> ProxyBuilder<D> {
        ProxyBuilder {
            upstream: self.upstream,
            upstream_tls: self.upstream_tls,
            ca_file: self.ca_file,
            action: self.action,
            extra: self.extra,
            data_dir: self.data_dir,
            scorer: self.scorer,
            trust: self.trust,
            connector,
        }
    }

    /// `proxy.upstream_tls`: "none", "implicit" or "starttls".
    pub fn upstream_tls(mut self, mode: &str) -> Self {
        self.upstream_tls = Some(mode.into());
        self
    }

    /// No `proxy.upstream_tls`: the upstream port decides (995 implicit TLS, anything else STLS).
    pub fn upstream_tls_by_port(mut self) -> Self {
        self.upstream_tls = None;
        self
    }

    /// `proxy.ca_file`: the CA the proxy trusts for upstream certificates, besides the system roots.
    pub fn ca_file(mut self, path: &Path) -> Self {
        self.ca_file = Some(path.to_owned());
        self
    }

    /// `proxy.action`: "tag" (the default) or "hide".
    pub fn action(mut self, action: &str) -> Self {
        self.action = action.into();
        self
    }

    /// More configuration after the `[proxy]` keys: `[proxy]` keys first, then any other tables (`[users.alice]`).
    pub fn config(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        if !self.extra.is_empty() && !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    /// Client-side TLS with `ca`'s server certificate; `mode` is `proxy.client_tls` ("stls" or "implicit").
    pub fn client_tls(self, ca: &TestCa, mode: &str) -> Self {
        let toml = ca.proxy_client_tls_toml(mode);
        self.config(&toml)
    }

    /// Keeps the proxy's state (verdict cache, quarantine, token DBs) in `dir`, which the caller owns.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Scores with `scorer` instead of the configured filter.
    pub fn scorer(mut self, scorer: FixedScorer) -> Self {
        self.scorer = Some(scorer);
        self
    }

    /// Scores with a fresh [`FixedScorer`].
    pub fn fixed_scorer(self) -> Self {
        self.scorer(FixedScorer::new())
    }

    /// Trusts exactly `trust` for upstream TLS (instead of the system roots plus `ca_file`).
    pub fn trust(mut self, trust: Arc<rustls::ClientConfig>) -> Self {
        self.trust = Some(trust);
        self
    }

    /// The configuration file text for state in `data_dir` (also for `popguard proxy --config`).
    pub fn config_text(&self, data_dir: &Path) -> String {
        let mut text = format!(
            "data_dir = {:?}\n[proxy]\nupstream = \"{}\"\n",
            path_str(data_dir),
            self.upstream
        );
        if let Some(mode) = &self.upstream_tls {
            text.push_str(&format!("upstream_tls = \"{mode}\"\n"));
        }
        if let Some(ca) = &self.ca_file {
            text.push_str(&format!("ca_file = {:?}\n", path_str(ca)));
        }
        text.push_str(&format!("action = \"{}\"\n", self.action));
        text.push_str(&self.extra);
        text.push_str("[dnsbl]\nenabled = false\n");
        text
    }

    /// The parsed configuration for state in `data_dir`.
    pub fn parse_config(&self, data_dir: &Path) -> Arc<Config> {
        let text = self.config_text(data_dir);
        Arc::new(
            Config::parse(&text)
                .unwrap_or_else(|e| panic!("test proxy config does not parse: {e}\n{text}")),
        )
    }

    /// The proxy, or the error that resolving this configuration or `Proxy::new` gives, as the CLI prints it.
    /// Needs [`ProxyBuilder::data_dir`].
    pub fn try_build(self) -> Result<Proxy<C>, String> {
        let data_dir = self.data_dir.clone().unwrap_or_else(|| {
            panic!("ProxyBuilder::build needs a data_dir (start() makes its own)")
        });
        self.build_in(&data_dir)
    }

    /// The proxy, shared, ready for `serve_connection` or `proxy::serve`. Needs [`ProxyBuilder::data_dir`].
    pub fn build(self) -> Arc<Proxy<C>> {
        Arc::new(
            self.try_build()
                .unwrap_or_else(|e| panic!("test proxy: {e}")),
        )
    }

    fn build_in(self, data_dir: &Path) -> Result<Proxy<C>, String> {
        let config = self.parse_config(data_dir);
        let filter = Arc::new(
            Filter::new(&config.filter_settings())
                .unwrap_or_else(|e| panic!("test proxy: the filter: {e}")),
        );
        let settings = config.proxy_settings().map_err(|e| e.to_string())?;
        let mut proxy = Proxy::new(settings, filter, self.connector).map_err(|e| e.to_string())?;
        if let Some(trust) = self.trust {
            proxy = proxy.with_upstream_tls(trust);
        }
        if let Some(scorer) = self.scorer {
            proxy = proxy.with_scorer(move |user, bytes| scorer.verdict(user, bytes));
        }
        Ok(proxy)
    }

    /// Builds the proxy and serves it on 127.0.0.1 (port 0) in this process until the handle is dropped or shut down.
    pub async fn start(mut self) -> RunningProxy {
        let (data_dir, owned) = match self.data_dir.take() {
            Some(dir) => (dir, None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("pgproxy")
                    .tempdir()
                    .unwrap_or_else(|e| panic!("test proxy: cannot make a data dir: {e}"));
                (dir.path().to_owned(), Some(dir))
            }
        };
        let proxy = Arc::new(
            self.build_in(&data_dir)
                .unwrap_or_else(|e| panic!("test proxy: {e}")),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("test proxy: cannot bind a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test proxy: no local address: {e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy::serve(listener, proxy, async {
            let _ = stopped.await;
        }));
        RunningProxy {
            addr,
            data_dir,
            stop: Some(stop),
            task: Some(task),
            _owned_data: owned,
        }
    }
}

/// A proxy serving in this process; stops accepting when dropped.
pub struct RunningProxy {
    pub addr: SocketAddr,
    data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ProxyError>>>,
    _owned_data: Option<tempfile::TempDir>,
}

impl RunningProxy {
    /// Where the proxy keeps its state.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the listener and waits for `proxy::serve` to return; its result.
    pub async fn shutdown(mut self) -> Result<(), ProxyError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| panic!("test proxy: the serve task failed: {e}")),
            None => Ok(()),
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("test paths are UTF-8: {}", p.display()))
}
