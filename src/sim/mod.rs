//! `sim`: a ModelsLab-compatible emulator with fault injection, for tests, the demo and alert
//! drills. It serves the generation, fetch and wallet endpoints with the API's own validation,
//! magic keys (`sim-invalid…`, `sim-broke…`, `sim-basic…`, `sim-standard…`, `sim-premium…`),
//! per-key queue limits and async jobs that really run, plus a Statuspage-format status page.
//! Its behaviour comes from a [`Scenario`], replaceable at run time (`PUT /_sim/scenario`).
//!
//! Its clock is the runtime's (`tokio::time`): under a paused test clock, jobs run in virtual time.
//!
//! Nothing else in `src/` imports this module; it uses only the config module's document parser
//! and the error model's helpers. Its tasks (the accept loop, connections, webhook calls) are the
//! emulator's, not the agent's: they end with its shutdown token and are not on the agent's tracker.

mod api;
mod hooks;
mod llm;
mod media;
mod page;
pub mod scenario;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use scenario::{
    CatalogueDrop, Fault, Faults, Hooks, Llm, LlmFaults, Outputs, PageMaintenance, PageState, Scenario, Span, Wallet,
};

use api::{Family, Kind};

/// The emulator's shared state.
pub struct Sim {
    addr: SocketAddr,
    scenario: RwLock<Arc<Scenario>>,
    rng: Mutex<SmallRng>,
    jobs: Mutex<api::Jobs>,
    /// Each key's credits left (a key's wallet starts at the scenario's balance).
    wallets: Mutex<std::collections::HashMap<String, f64>>,
    stats: Stats,
    shutdown: CancellationToken,
    /// Calls webhooks.
    http: reqwest::Client,
    /// The status page: the state shown, and the change waiting out `status_page_lag`.
    page: Mutex<PageClock>,
    /// Each key's `request_count` calls of the last minute.
    calls: Mutex<std::collections::HashMap<String, std::collections::VecDeque<Instant>>>,
}

/// What the status page shows as time passes.
struct PageClock {
    shown: PageState,
    pending: Option<(Instant, PageState)>,
    /// When the scenario (and so its maintenance) was set.
    set_at: Instant,
    /// When the catalogue drops began to count: a scenario replaced with the same drops keeps it.
    drops_set_at: Instant,
}

impl PageClock {
    fn new(state: PageState) -> Self {
        PageClock { shown: state, pending: None, set_at: Instant::now(), drops_set_at: Instant::now() }
    }
}

struct Stats {
    /// `request_count` calls answered, and refused for the 30-a-minute limit.
    request_count: AtomicU64,
    request_count_refused: AtomicU64,
    requests: AtomicU64,
    resets: AtomicU64,
    timeouts: AtomicU64,
    by_status: [AtomicU64; 600],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            request_count: AtomicU64::new(0),
            request_count_refused: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Stats {
    fn json(&self) -> serde_json::Value {
        let by_status: serde_json::Map<String, serde_json::Value> = self
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(code, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (code.to_string(), json!(n)))
            })
            .collect();
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "resets": self.resets.load(Ordering::Relaxed),
            "timeouts": self.timeouts.load(Ordering::Relaxed),
            "by_status": by_status,
            "request_count": self.request_count.load(Ordering::Relaxed),
            "request_count_refused": self.request_count_refused.load(Ordering::Relaxed),
        })
    }
}

impl Sim {
    fn scenario(&self) -> Arc<Scenario> {
        self.scenario.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn rng(&self) -> MutexGuard<'_, SmallRng> {
        self.rng.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn jobs(&self) -> MutexGuard<'_, api::Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the status page shows now: its state (after the lag) and the maintenance it lists.
    fn page_view(&self) -> page::View {
        let scenario = self.scenario();
        let mut clock = self.page.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, state)) = clock.pending {
            if Instant::now() >= at {
                clock.shown = state;
                clock.pending = None;
            }
        }
        let maintenance = scenario.status_page_maintenance.and_then(|m| {
            let since = clock.set_at.elapsed();
            if since < m.starts_in {
                Some(page::Phase::Scheduled)
            } else if since < m.starts_in + m.lasts {
                Some(page::Phase::InProgress)
            } else {
                None
            }
        });
        page::View { state: clock.shown, maintenance }
    }

    /// Counts a `request_count` call of `key`: `Some(wait)` when it is over the API's 30 a minute.
    fn count_call(&self, key: &str, now: Instant) -> Option<Duration> {
        let minute = Duration::from_secs(60);
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = calls.entry(key.to_owned()).or_default();
        while seen.front().is_some_and(|t| now.duration_since(*t) >= minute) {
            seen.pop_front();
        }
        self.stats.request_count.fetch_add(1, Ordering::Relaxed);
        if seen.len() >= api::REQUEST_COUNT_PER_MINUTE {
            self.stats.request_count_refused.fetch_add(1, Ordering::Relaxed);
            return seen.front().map(|t| minute.saturating_sub(now.duration_since(*t)));
        }
        seen.push_back(now);
        None
    }

    /// Whether `model` is in the LLM catalogue now (it may have been dropped since the scenario
    /// was set).
    fn listed(&self, model: &str) -> bool {
        let scenario = self.scenario();
        let since = self.page.lock().unwrap_or_else(PoisonError::into_inner).drops_set_at.elapsed();
        scenario.llm.models.iter().any(|m| m == model)
            && !scenario.catalogue_drops.iter().any(|d| d.model == model && since >= d.after)
    }

    fn message_key(&self) -> &'static str {
        if self.scenario().legacy_messege { "messege" } else { "message" }
    }

    fn wallets(&self) -> MutexGuard<'_, std::collections::HashMap<String, f64>> {
        self.wallets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new scenario starts every wallet afresh (a drill can top up or drain them that way).
    fn set_scenario(&self, s: Scenario) {
        self.wallets().clear();
        {
            let mut page = self.page.lock().unwrap_or_else(PoisonError::into_inner);
            page.set_at = Instant::now();
            if s.catalogue_drops != self.scenario().catalogue_drops {
                page.drops_set_at = Instant::now();
            }
            if s.status_page_lag.is_zero() || s.status_page == page.shown {
                page.shown = s.status_page;
                page.pending = None;
            } else {
                page.pending = Some((Instant::now() + s.status_page_lag, s.status_page));
            }
        }
        *self.rng() = SmallRng::seed_from_u64(s.seed);
        *self.scenario.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(s);
    }
}

/// A running emulator.
pub struct SimHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The accept loop; it ends with the shutdown token.
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves the emulator on `listener` until `shutdown` is cancelled; returns at once.
pub fn spawn(listener: TcpListener, scenario: Scenario, shutdown: CancellationToken) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let sim = Arc::new(Sim {
        addr,
        rng: Mutex::new(SmallRng::seed_from_u64(scenario.seed)),
        page: Mutex::new(PageClock::new(scenario.status_page)),
        scenario: RwLock::new(Arc::new(scenario)),
        jobs: Mutex::new(api::Jobs::default()),
        wallets: Mutex::default(),
        calls: Mutex::default(),
        stats: Stats::default(),
        shutdown: shutdown.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|e| std::io::Error::other(format!("cannot build the webhook client: {e}")))?,
    });
    let task = tokio::spawn(accept_loop(listener, sim, shutdown));
    Ok(SimHandle { addr, task })
}

async fn accept_loop(listener: TcpListener, sim: Arc<Sim>, shutdown: CancellationToken) {
    let router = router(sim.clone());
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (sim, router, token) = (sim.clone(), router.clone(), shutdown.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(sim.clone(), router.clone(), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = token.cancelled() => {}
            }
        });
    }
}

/// Returned by the service to make hyper close the connection without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Latency and fault injection in front of the routes, for the API's own paths.
async fn handle(sim: Arc<Sim>, router: Router, req: Request<Incoming>) -> Result<Response, Dropped> {
    sim.stats.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path();
    if path.starts_with("/api/") && !path.starts_with("/api/v2/") {
        let scenario = sim.scenario();
        let (latency, fault) = {
            let mut rng = sim.rng();
            let (lo, hi) = (scenario.latency.min, scenario.latency.max);
            let latency = if hi > lo { rng.random_range(lo..hi) } else { lo };
            (latency, scenario.faults.pick(rng.random::<f64>()))
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Some(Fault::Reset) => {
                sim.stats.resets.fetch_add(1, Ordering::Relaxed);
                return Err(Dropped);
            }
            Some(Fault::Timeout) => {
                sim.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    _ = sim.shutdown.cancelled() => {}
                }
                return Err(Dropped);
            }
            Some(f) => return Ok(count(&sim, fault_response(&sim, f))),
            None => {}
        }
    }
    let response = match router.oneshot(req.map(Body::new)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    Ok(count(&sim, response))
}

fn count(sim: &Sim, r: Response) -> Response {
    if let Some(n) = sim.stats.by_status.get(usize::from(r.status().as_u16())) {
        n.fetch_add(1, Ordering::Relaxed);
    }
    r
}

const GATEWAY_HTML: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

fn fault_response(sim: &Sim, fault: Fault) -> Response {
    let internal = "Internal server error. Please try again.";
    match fault {
        Fault::ServerError => {
            api::json_response(StatusCode::INTERNAL_SERVER_ERROR, api::error_body(sim, internal.into()))
        }
        Fault::Unavailable => api::json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            api::error_body(sim, "Service temporarily unavailable. Please try again later.".into()),
        ),
        Fault::GatewayHtml => {
            (StatusCode::BAD_GATEWAY, [(header::CONTENT_TYPE, "text/html")], GATEWAY_HTML).into_response()
        }
        Fault::SoftError => api::json_response(StatusCode::OK, api::error_body(sim, internal.into())),
        // Handled before a response is built.
        Fault::Timeout | Fault::Reset => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn router(sim: Arc<Sim>) -> Router {
    fn generation(family: Family, kind: Kind) -> axum::routing::MethodRouter<Arc<Sim>> {
        post(move |state: State<Arc<Sim>>, headers: HeaderMap, body: Bytes| {
            api::generate(state, family, kind, headers, body)
        })
    }
    fn fetch(family: Family) -> axum::routing::MethodRouter<Arc<Sim>> {
        post(move |state: State<Arc<Sim>>, id: axum::extract::Path<String>, headers: HeaderMap, body: Bytes| {
            api::fetch_by_path(state, family, id, headers, body)
        })
    }
    let mut routes = Router::new();
    for (path, family, kind) in api::GENERATIONS {
        routes = routes.route(path, generation(*family, *kind));
    }
    for family in Family::ALL {
        routes = routes.route(&format!("{}/{{id}}", family.fetch_prefix()), fetch(family));
    }
    routes
        .route("/api/v6/images/fetch", post(api::fetch_by_body))
        .route("/api/wallet_balance", post(api::wallet_balance))
        .route("/api/v6/processing/request_count", post(api::request_count))
        .route("/_sim/topup", post(api::top_up))
        .route("/generations/{file}", get(media::generated))
        .route(
            "/api/v2/summary.json",
            get(|State(s): State<Arc<Sim>>| async move { json_ok(page::summary_json(s.page_view())) }),
        )
        .route(
            "/api/v2/status.json",
            get(|State(s): State<Arc<Sim>>| async move { json_ok(page::status_json(s.page_view())) }),
        )
        .route(
            "/status",
            get(|State(s): State<Arc<Sim>>| async move { axum::response::Html(page::html(s.page_view())) }),
        )
        .merge(llm::routes())
        .route("/_sim/scenario", get(get_scenario).put(put_scenario))
        .route("/_sim/stats", get(|State(s): State<Arc<Sim>>| async move { json_ok(s.stats.json()) }))
        .fallback(|State(s): State<Arc<Sim>>| async move {
            api::json_response(StatusCode::NOT_FOUND, api::error_body(&s, "Not Found".into()))
        })
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(sim)
}

fn json_ok(v: serde_json::Value) -> Response {
    api::json_response(StatusCode::OK, v)
}

async fn get_scenario(State(sim): State<Arc<Sim>>) -> Response {
    match serde_json::to_value(&*sim.scenario()) {
        Ok(v) => json_ok(v),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn put_scenario(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match Scenario::parse(&text) {
        Ok(s) => {
            tracing::info!(status_page = ?s.status_page, "sim: scenario replaced");
            sim.set_scenario(s);
            get_scenario(State(sim)).await
        }
        Err(problems) => {
            (StatusCode::BAD_REQUEST, format!("scenario refused, the old one is kept:\n{problems}\n")).into_response()
        }
    }
}
