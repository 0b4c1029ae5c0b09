//! Wires the agent together: binds listeners, spawns the components with child cancellation
//! tokens, publishes reloaded configs, and shuts down in order (signal → `/readyz` 503 while
//! still serving for the drain delay → cancel → graceful server shutdown → drain in-flight work
//! within the grace period).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::BoxFuture;
use crate::account::Account;
use crate::admin::{self, AdminState, AgentStatus, Components, ReloadResult};
use crate::clients::Clients;
use crate::cluster::Cluster;
use crate::config::{self, Config};
use crate::maintenance::Maintenance;
use crate::metrics::Metrics;
use crate::observe::status::Parts;
use crate::observe::{self, Observer};
use crate::poller;
use crate::probe::{Callback, HttpRunner, Probes, WebhookWatch};
use crate::proxy::Proxy;
use crate::statuspage::StatusPage;
use crate::tasks::Tasks;
use crate::vocab::RunReport;
use crate::webhook::Webhooks;

/// What the running agent needs from its caller: a loaded config and where it came from.
pub struct Options {
    /// The configuration to start with.
    pub config: Config,
    /// Re-read on SIGHUP and `POST /-/reload`.
    pub config_path: PathBuf,
    /// How long in-flight work may take after a shutdown signal.
    pub grace_period: Duration,
    /// After a shutdown signal, how long to keep serving with `/readyz` at 503 before the
    /// listeners close, so that load balancers stop sending first (0: close at once).
    pub drain_delay: Duration,
}

/// The listeners the agent serves on, bound by the caller.
pub struct Listeners {
    /// The admin port's (`admin.listen`).
    pub admin: TcpListener,
    /// Present when `proxy.enabled`.
    pub proxy: Option<TcpListener>,
    /// Present when `webhooks.listen` is set.
    pub webhooks: Option<TcpListener>,
}

impl Listeners {
    /// Binds what `config` names.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let admin = TcpListener::bind(config.admin.listen).await.with_context(|| {
            format!("cannot listen on admin.listen {} (is another agent running?)", config.admin.listen)
        })?;
        let proxy = if config.proxy.enabled {
            Some(
                TcpListener::bind(config.proxy.listen)
                    .await
                    .with_context(|| format!("cannot listen on proxy.listen {}", config.proxy.listen))?,
            )
        } else {
            None
        };
        let webhooks = match config.webhooks.listen {
            Some(addr) => Some(
                TcpListener::bind(addr).await.with_context(|| format!("cannot listen on webhooks.listen {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners { admin, proxy, webhooks })
    }
}

/// A started agent, for callers that bind their own listeners (tests, the demo).
pub struct Handle {
    /// Where the admin port listens.
    pub admin_addr: SocketAddr,
    /// Where the proxy listens, when it is enabled.
    pub proxy_addr: Option<SocketAddr>,
    /// Where the webhook receiver listens, when it is on.
    pub webhooks_addr: Option<SocketAddr>,
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
    /// The configuration in force (replaced by reloads).
    pub config: watch::Receiver<Arc<Config>>,
    /// Ask for a reload, as SIGHUP does.
    pub reload: mpsc::Sender<oneshot::Sender<ReloadResult>>,
}

/// Binds the listeners the config names, then serves until `shutdown` is cancelled.
pub async fn run(opts: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&opts.config).await?;
    let (handle, done) = start(opts, listeners, shutdown)?;
    tracing::info!("admin server listening on http://{}", handle.admin_addr);
    if let Some(addr) = handle.proxy_addr {
        tracing::info!("proxy listening on http://{addr}");
    }
    if let Some(addr) = handle.webhooks_addr {
        tracing::info!("webhook receiver listening on http://{addr}");
    }
    done.await
}

/// Starts the agent on already-bound listeners. The returned future finishes once the agent has
/// shut down after `shutdown` is cancelled.
pub fn start(
    opts: Options,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<(Handle, impl Future<Output = anyhow::Result<()>>)> {
    let Options { config, config_path, grace_period, drain_delay } = opts;
    // `shutdown` is the signal; `stop` closes the listeners, after the drain delay.
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new(&config.labels).context("cannot build the metric registry")?);
    metrics.agent.config_loaded(true);
    let observer = Observer::new(metrics.clone());
    observer.set_slos(&config.slos);
    let Listeners { admin: admin_listener, proxy: proxy_listener, webhooks: webhooks_listener } = listeners;
    let admin_addr = admin_listener.local_addr().context("admin listener has no local address")?;

    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let status =
        Arc::new(RwLock::new(AgentStatus { config_file: config_path.display().to_string(), ..Default::default() }));
    let ready = Arc::new(AtomicBool::new(false));
    let tasks = Tasks::new();
    let clients = Clients::new().context("cannot build the HTTP clients")?;

    let cluster = Cluster::new(&config_rx.borrow().cluster, observer.clone())?;
    tasks.spawn(cluster.clone().run(stop.child_token()));

    let mut runner = HttpRunner::new(observer.clone(), &clients);
    let mut webhooks_addr = None;
    let mut webhooks = None;
    if let Some(listener) = webhooks_listener {
        webhooks_addr = Some(listener.local_addr().context("webhook listener has no local address")?);
        let hooks = Webhooks::new(&listener, config_rx.clone(), observer.clone(), cluster.clone(), tasks.clone())
            .context("webhook listener has no local address")?;
        runner = runner.with_webhooks(Arc::new(WebhookAdapter(hooks.clone())));
        tasks.spawn(hooks.clone().serve(listener, stop.child_token()));
        webhooks = Some(hooks);
    }
    let maintenance = Maintenance::new();
    tasks.spawn(maintenance.clone().clock(config_rx.clone(), observer.clone(), stop.child_token()));
    let probes = Probes::new(
        config_rx.clone(),
        observer.clone(),
        Arc::new(runner),
        cluster.clone(),
        tasks.clone(),
        maintenance.clone(),
    );
    tasks.spawn(probes.clone().run(stop.child_token()));

    let mut proxy_addr = None;
    let mut proxy = None;
    if let Some(listener) = proxy_listener {
        proxy_addr = Some(listener.local_addr().context("proxy listener has no local address")?);
        let p = Proxy::new(&listener, config_rx.clone(), observer.clone(), cluster.clone(), tasks.clone())?;
        tasks.spawn(p.clone().serve(listener, stop.child_token()));
        proxy = Some(p);
    }

    // The exporter counts spans it could not deliver; publish the count with the metrics.
    let spans = metrics.clone();
    let span_token = stop.child_token();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = span_token.cancelled() => return,
                _ = tick.tick() => spans.agent.spans_dropped_total(crate::telemetry::spans_dropped()),
            }
        }
    });

    let status_page = StatusPage::new(observer.clone(), clients.pages.clone(), maintenance.clone());
    tasks.spawn(poller::run(status_page.clone(), config_rx.clone(), cluster.clone(), stop.child_token()));
    let account = Account::new(observer.clone(), clients.api);
    tasks.spawn(poller::run(account.balance.clone(), config_rx.clone(), cluster.clone(), stop.child_token()));
    tasks.spawn(poller::run(account.queue.clone(), config_rx.clone(), cluster.clone(), stop.child_token()));
    tasks.spawn(poller::run(account.models.clone(), config_rx.clone(), cluster.clone(), stop.child_token()));

    let admin_state = AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        reload: reload_tx.clone(),
        status: status.clone(),
        components: Arc::new(AgentComponents {
            config: config_rx.clone(),
            probes,
            proxy,
            status_page,
            account,
            cluster,
            webhooks,
            maintenance,
            observer: observer.clone(),
        }),
        config: config_rx.clone(),
    };
    tasks.spawn(admin::serve(admin_listener, admin_state, stop.child_token(), tasks.tracker().clone()));

    let reloader = Reloader { path: config_path, config: config_tx, observer, status };
    tasks.spawn(reloader.run(reload_rx, stop.child_token()));

    ready.store(true, Ordering::Release);
    let handle = Handle { admin_addr, proxy_addr, webhooks_addr, metrics, config: config_rx, reload: reload_tx };
    let done = async move {
        shutdown.cancelled().await;
        ready.store(false, Ordering::Release);
        if !drain_delay.is_zero() {
            tracing::info!(
                drain_delay = %humantime::format_duration(drain_delay),
                "draining: /readyz answers 503 and requests are still served until the drain delay ends"
            );
            tokio::time::sleep(drain_delay).await;
        }
        tracing::info!(grace_period = %humantime::format_duration(grace_period), "shutting down");
        stop.cancel();
        tasks.tracker().close();
        if tokio::time::timeout(grace_period, tasks.tracker().wait()).await.is_err() {
            tracing::warn!(left = tasks.tracker().len(), "grace period over with work still in flight; exiting anyway");
        }
        tracing::info!("stopped");
        Ok(())
    };
    Ok((handle, done))
}

/// The components as the admin API sees them.
struct AgentComponents {
    config: watch::Receiver<Arc<Config>>,
    probes: Probes,
    proxy: Option<Proxy>,
    status_page: StatusPage,
    account: Account,
    cluster: Cluster,
    webhooks: Option<Webhooks>,
    maintenance: Maintenance,
    observer: Observer,
}

impl Components for AgentComponents {
    fn status(&self) -> Parts {
        let config = self.config.borrow().clone();
        Parts {
            probes: self.probes.status(),
            recent: self.observer.history().recent(),
            status_page: self.status_page.status(&config),
            proxy: self.proxy.as_ref().map(Proxy::status),
            account: self.account.status(&config),
            cluster: self.cluster.status(),
            webhooks: self.webhooks.as_ref().map(Webhooks::status),
            maintenance: self.maintenance.view(&config),
        }
    }

    fn run_probe<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<RunReport>> {
        Box::pin(self.probes.run_now(name))
    }
}

/// The webhook receiver, as probe runs ask for webhooks.
struct WebhookAdapter(Webhooks);

impl WebhookWatch for WebhookAdapter {
    fn expect<'a>(&'a self, probe: &'a str) -> BoxFuture<'a, Callback> {
        Box::pin(async move {
            let e = self.0.expect(probe).await;
            Callback { url: e.url, track_id: e.track_id, token: e.token }
        })
    }

    fn finished(&self, token: &str, job_id: Option<&str>) {
        self.0.finished(token, job_id);
    }

    fn abandon(&self, token: &str) {
        self.0.abandon(token);
    }
}

/// Re-reads the config file on request and publishes a valid result atomically.
struct Reloader {
    path: PathBuf,
    config: watch::Sender<Arc<Config>>,
    observer: Observer,
    status: Arc<RwLock<AgentStatus>>,
}

impl Reloader {
    async fn run(self, mut requests: mpsc::Receiver<oneshot::Sender<ReloadResult>>, shutdown: CancellationToken) {
        let mut hangups = hangup_signals();
        loop {
            let reply = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(reply) = requests.recv() => Some(reply),
                Some(()) = next_hangup(&mut hangups) => None,
            };
            let result = self.reload();
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
    }

    fn reload(&self) -> ReloadResult {
        match config::load(&self.path) {
            Ok(new) => {
                let restart = self.config.borrow().restart_required_changes(&new);
                self.observer.metrics().set_label_policy(&new.labels);
                self.observer.set_slos(&new.slos);
                self.config.send_replace(Arc::new(new));
                if let Ok(mut s) = self.status.write() {
                    s.last_reload_error = None;
                    s.restart_required_for = restart.clone();
                }
                let file = self.path.display().to_string();
                self.observer.emit(observe::ConfigReloaded { file: &file, restart_required: &restart });
                Ok(())
            }
            Err(e) => {
                let problems = e.to_string();
                if let Ok(mut s) = self.status.write() {
                    s.last_reload_error = Some(problems.clone());
                }
                self.observer.emit(observe::ConfigReloadFailed { problems: &problems });
                Err(e)
            }
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangup_signals() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; use POST /-/reload"))
        .ok()
}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangups) -> Option<()> {
    match h {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
fn hangup_signals() -> Hangups {}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}

/// Cancels `token` on SIGTERM or SIGINT (Ctrl-C).
pub fn cancel_on_shutdown_signals(token: CancellationToken) {
    // Not on the agent's tracker: the signal starts the shutdown that closes and waits for it.
    tokio::spawn(async move {
        let name = shutdown_signal().await;
        tracing::info!(signal = name, "shutdown requested");
        token.cancel();
    });
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
