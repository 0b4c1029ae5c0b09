//! The webhook receiver (`webhooks.listen`, a port of its own so that only it need be exposed):
//! probes with `follow.webhook` ask the API to call `<public_url>/hooks/<token>` with a random
//! token per run and a unique `track_id`, and each run's delivery is judged against the moment
//! the probe saw the job finished: `on_time` (before it, or within a few seconds), `late`
//! (within `webhooks.grace`), `missing` (not within it); extra deliveries are `duplicate`, and
//! any delivery no run waits for (a forged token, a replay, a wrong `track_id`, a malformed or
//! oversized body) is `unknown` and answered 404 (413 over the size limit).
//!
//! With several replicas (`cluster.redis_url`) the API delivers to whichever replica its Service
//! picks: runs are shared through Redis (`cluster::hooks`), any replica judges a delivery, and the
//! run's own replica ends it. When Redis cannot be reached, runs are judged where they live.
//!
//! Nothing from a payload is logged or kept but the job id; the key never reaches this module.
//! Uses `config`, `cluster` and `observe`; the app hands it to the probes (as a
//! `probe::WebhookWatch`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{self, Cluster, SharedDelivery};
use crate::config::Config;
use crate::observe::{self, Observer, WebhookResult};
use crate::server::Limits;

/// Largest delivery read; the API's payloads are a few KiB.
pub const MAX_BODY: usize = 64 * 1024;
/// A delivery up to this long after the job was seen finished is still on time (the probe only
/// sees the end at its next poll).
const ON_TIME_MARGIN: Duration = Duration::from_secs(5);
/// A run whose job never finished (its probe was cut) is forgotten after this long.
const ABANDON_AFTER: Duration = Duration::from_secs(2 * 3600);
/// Label value of deliveries no run waits for.
const NO_PROBE: &str = "none";

/// One probe run waiting for its webhook.
struct Run {
    probe: String,
    track_id: String,
    created: Instant,
    job_id: Option<String>,
    /// When the probe saw the job end.
    finished: Option<Instant>,
    delivered: bool,
}

/// The receiver and the runs it waits for. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    observer: Observer,
    config: watch::Receiver<Arc<Config>>,
    cluster: Cluster,
    /// `<public_url>` (or the listener's own address).
    base: String,
    runs: Mutex<HashMap<String, Run>>,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

impl Webhooks {
    /// The receiver for connections on `listener` (bound by the caller).
    pub fn new(
        listener: &TcpListener,
        config: watch::Receiver<Arc<Config>>,
        observer: Observer,
        cluster: Cluster,
    ) -> std::io::Result<Self> {
        let local: SocketAddr = listener.local_addr()?;
        let public = config.borrow().webhooks.public_url.trim_end_matches('/').to_owned();
        let base = if public.is_empty() { format!("http://{local}") } else { public };
        Ok(Webhooks { inner: Arc::new(Inner { observer, config, cluster, base, runs: Mutex::default() }) })
    }

    fn runs(&self) -> MutexGuard<'_, HashMap<String, Run>> {
        self.inner.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves deliveries and judges overdue runs until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken, tracker: TaskTracker) {
        let app = Router::new()
            .route("/hooks/{token}", post(deliver))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .with_state(self.clone());
        let sweeper = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => sweeper.sweep(Instant::now()).await,
                }
            }
        });
        crate::server::serve_router(listener, "webhooks", Limits::default(), shutdown, tracker, app).await;
    }

    /// Ends the runs whose grace is over: `missing` when no replica saw a delivery.
    async fn sweep(&self, now: Instant) {
        let grace = self.inner.config.borrow().webhooks.grace;
        let mut over = Vec::new();
        self.runs().retain(|token, run| {
            let done = match run.finished {
                Some(t) => now >= t + grace,
                None => now >= run.created + ABANDON_AFTER,
            };
            if done {
                over.push((
                    token.clone(),
                    run.probe.clone(),
                    run.job_id.clone(),
                    run.delivered,
                    run.finished.is_some(),
                ));
            }
            !done
        });
        let cluster = &self.inner.cluster;
        for (token, probe, job_id, delivered_here, finished) in over {
            // Delivered to another replica? Redis says (and forgets the run); unreachable, only
            // what this replica saw counts.
            let elsewhere =
                if cluster.is_shared() { cluster.hook_take(&token).await.is_some_and(|n| n > 0) } else { false };
            if finished && !delivered_here && !elsewhere {
                self.inner.observer.emit(observe::WebhookDelivery {
                    probe: &probe,
                    result: WebhookResult::Missing,
                    delay: None,
                    job_id: job_id.as_deref(),
                });
            }
        }
    }

    fn unknown(&self, status: StatusCode) -> StatusCode {
        self.inner.observer.emit(observe::WebhookDelivery {
            probe: NO_PROBE,
            result: WebhookResult::Unknown,
            delay: None,
            job_id: None,
        });
        status
    }

    /// Judges one delivery, through Redis with several replicas (falling back to this replica's
    /// own runs when Redis cannot be reached).
    async fn judge(&self, token: &str, body: Result<Value, ()>, now: Instant) -> StatusCode {
        let cluster = &self.inner.cluster;
        if let (true, Ok(payload)) = (cluster.is_shared(), &body) {
            if !payload.is_object() {
                return self.unknown(StatusCode::NOT_FOUND);
            }
            let track = track_id(payload);
            match cluster.hook_deliver(token, track.as_deref()).await {
                Some(None) => return self.unknown(StatusCode::NOT_FOUND),
                Some(Some(seen)) => return self.receive_shared(token, &seen, payload),
                None => {}
            }
        }
        self.receive(token, body, now)
    }

    /// Judges a delivery Redis recorded: against the moment the run's replica saw the job end.
    fn receive_shared(&self, token: &str, seen: &SharedDelivery, payload: &Value) -> StatusCode {
        let local_job = self.runs().get_mut(token).and_then(|run| {
            run.delivered = true;
            run.job_id.clone()
        });
        let (result, delay) = if seen.count > 1 {
            (WebhookResult::Duplicate, None)
        } else {
            match seen.finished_ms {
                None => (WebhookResult::OnTime, Some(Duration::ZERO)),
                Some(t) => {
                    let after = Duration::from_millis(cluster::unix_ms().saturating_sub(t));
                    (if after <= ON_TIME_MARGIN { WebhookResult::OnTime } else { WebhookResult::Late }, Some(after))
                }
            }
        };
        let job_id = local_job.or_else(|| payload_id(payload));
        self.inner.observer.emit(observe::WebhookDelivery {
            probe: &seen.probe,
            result,
            delay,
            job_id: job_id.as_deref(),
        });
        StatusCode::OK
    }

    /// Judges one delivery for `token`: the answer's status, and the verdict emitted.
    fn receive(&self, token: &str, body: Result<Value, ()>, now: Instant) -> StatusCode {
        let grace = self.inner.config.borrow().webhooks.grace;
        let Ok(payload) = body else { return self.unknown(StatusCode::NOT_FOUND) };
        let mut runs = self.runs();
        let Some(run) = runs.get_mut(token) else {
            drop(runs);
            return self.unknown(StatusCode::NOT_FOUND);
        };
        if !payload.is_object() || track_id(&payload).is_some_and(|t| t != run.track_id) {
            drop(runs);
            return self.unknown(StatusCode::NOT_FOUND);
        }
        let (result, delay) = if run.delivered {
            (WebhookResult::Duplicate, None)
        } else {
            run.delivered = true;
            match run.finished {
                // Before the probe saw the end (the usual case: it polls at intervals).
                None => (WebhookResult::OnTime, Some(Duration::ZERO)),
                Some(t) => {
                    let after = now.saturating_duration_since(t);
                    let result = if after <= ON_TIME_MARGIN { WebhookResult::OnTime } else { WebhookResult::Late };
                    debug_assert!(after <= grace || result == WebhookResult::Late);
                    (result, Some(after))
                }
            }
        };
        let probe = run.probe.clone();
        let job_id = run.job_id.clone().or_else(|| payload_id(&payload));
        drop(runs);
        self.inner.observer.emit(observe::WebhookDelivery { probe: &probe, result, delay, job_id: job_id.as_deref() });
        StatusCode::OK
    }

    /// Runs waiting for a delivery now (for `/api/v1/status`).
    pub fn waiting(&self) -> usize {
        self.runs().values().filter(|r| !r.delivered).count()
    }
}

/// The longest job id kept from a payload (it is logged).
pub(crate) const MAX_ID_CHARS: usize = 64;

/// The `track_id` a payload carries back, if any.
pub(crate) fn track_id(payload: &Value) -> Option<String> {
    match &payload["track_id"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The job id a payload names (bounded: it is logged).
pub(crate) fn payload_id(payload: &Value) -> Option<String> {
    match &payload["id"] {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(crate::classify::truncate(s, MAX_ID_CHARS)),
        _ => None,
    }
}

async fn deliver(State(hooks): State<Webhooks>, Path(token): Path<String>, body: Body) -> (StatusCode, &'static str) {
    let now = Instant::now();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            // Counted as an unknown delivery either way; the answer says which it was.
            hooks.receive("", Err(()), now);
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(cause) = source {
                if cause.is::<http_body_util::LengthLimitError>() {
                    return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large\n");
                }
                source = cause.source();
            }
            return (StatusCode::BAD_REQUEST, "the payload could not be read\n");
        }
    };
    let payload = serde_json::from_slice::<Value>(&bytes).map_err(|_| ());
    match hooks.judge(&token, payload, now).await {
        StatusCode::OK => (StatusCode::OK, "ok\n"),
        status => (status, "no run waits for this delivery\n"),
    }
}

/// The webhook a probe run asks the API for.
#[derive(Debug, Clone)]
pub struct Expected {
    /// `<public_url>/hooks/<token>`.
    pub url: String,
    /// Unique per run; the delivery must carry it back.
    pub track_id: String,
    pub token: String,
}

impl Webhooks {
    /// Registers a run of `probe` that will ask for a webhook (shared through Redis before the
    /// API is told, so that any replica can take the delivery).
    pub async fn expect(&self, probe: &str) -> Expected {
        let token = random_hex(16);
        let track_id = format!("sentinel-{}", random_hex(8));
        let url = format!("{}/hooks/{token}", self.inner.base);
        self.runs().insert(
            token.clone(),
            Run {
                probe: probe.to_owned(),
                track_id: track_id.clone(),
                created: Instant::now(),
                job_id: None,
                finished: None,
                delivered: false,
            },
        );
        if self.inner.cluster.is_shared() {
            let keep = ABANDON_AFTER + self.inner.config.borrow().webhooks.grace;
            self.inner.cluster.hook_expect(&token, probe, &track_id, keep).await;
        }
        Expected { url, track_id, token }
    }

    /// The run saw its job end (or gave up on it): the delivery is judged against now.
    pub fn finished(&self, token: &str, job_id: Option<&str>) {
        if let Some(run) = self.runs().get_mut(token) {
            run.finished = Some(Instant::now());
            run.job_id = job_id.map(str::to_owned);
        }
        if self.inner.cluster.is_shared() {
            let (cluster, token, at) = (self.inner.cluster.clone(), token.to_owned(), cluster::unix_ms());
            tokio::spawn(async move { cluster.hook_finished(&token, at).await });
        }
    }

    /// The run started no job (its submission failed): no delivery is expected.
    pub fn abandon(&self, token: &str) {
        self.runs().remove(token);
        if self.inner.cluster.is_shared() {
            let (cluster, token) = (self.inner.cluster.clone(), token.to_owned());
            tokio::spawn(async move { cluster.hook_take(&token).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    async fn hooks() -> (Webhooks, Arc<Metrics>) {
        let text = "upstream:\n  base_url: http://127.0.0.1:9\nwebhooks:\n  listen: 127.0.0.1:0\n  grace: 60s\n";
        let var = |_: &str| None;
        let env = crate::config::Environment { var: &var, base_dir: ".".into() };
        let cfg = crate::config::from_yaml(text, "t", &env).unwrap();
        let metrics = Arc::new(Metrics::new(&cfg.labels).unwrap());
        let (tx, rx) = watch::channel(Arc::new(cfg));
        std::mem::forget(tx);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (Webhooks::new(&listener, rx, Observer::new(metrics.clone()), Cluster::single()).unwrap(), metrics)
    }

    fn count(m: &Metrics, probe: &str, result: &str) -> f64 {
        let text = m.render().unwrap();
        let series = format!("modelslab_webhook_deliveries_total{{probe=\"{probe}\",result=\"{result}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0.0, |v| v.parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn each_run_ends_on_time_late_or_missing_and_extras_are_duplicates_or_unknown() {
        let (h, m) = hooks().await;
        let payload = |track: &str| Ok(serde_json::json!({"status": "success", "id": 7, "track_id": track}));
        let t0 = Instant::now();

        // Before the probe sees the end: on time; again: a duplicate.
        let a = h.expect("gen").await;
        assert!(a.url.starts_with("http://127.0.0.1:") && a.url.ends_with(&a.token));
        assert_eq!(h.receive(&a.token, payload(&a.track_id), t0), StatusCode::OK);
        assert_eq!(h.receive(&a.token, payload(&a.track_id), t0), StatusCode::OK);
        h.finished(&a.token, Some("7"));

        // After it, beyond the margin: late.
        let b = h.expect("gen").await;
        h.finished(&b.token, Some("8"));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(h.receive(&b.token, payload(&b.track_id), Instant::now()), StatusCode::OK);

        // Never: missing once the grace is over.
        let c = h.expect("gen").await;
        h.finished(&c.token, Some("9"));
        tokio::time::advance(Duration::from_secs(61)).await;
        h.sweep(Instant::now()).await;
        assert_eq!(
            h.receive(&c.token, payload(&c.track_id), Instant::now()),
            StatusCode::NOT_FOUND,
            "too late: unknown"
        );

        // Forged tokens, wrong track ids and malformed bodies: unknown, 404.
        let d = h.expect("gen").await;
        assert_eq!(h.receive("forged", payload(&d.track_id), Instant::now()), StatusCode::NOT_FOUND);
        assert_eq!(h.receive(&d.token, payload("sentinel-other"), Instant::now()), StatusCode::NOT_FOUND);
        assert_eq!(h.receive(&d.token, Err(()), Instant::now()), StatusCode::NOT_FOUND);
        h.abandon(&d.token);

        for (result, n) in [("on_time", 1.0), ("duplicate", 1.0), ("late", 1.0), ("missing", 1.0)] {
            assert_eq!(count(&m, "gen", result), n, "{result}");
        }
        assert_eq!(count(&m, "none", "unknown"), 4.0);
        assert_eq!(h.waiting(), 0);
    }
}
