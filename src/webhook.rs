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

use crate::chain;
use crate::classify;
use crate::clock;
use crate::cluster::{Cluster, Delivery};
use crate::config::Config;
use crate::observe::status::WebhooksView;
use crate::observe::{self, Observer, WebhookResult};
use crate::server::Limits;
use crate::tasks::Tasks;

/// Largest delivery read; the API's payloads are a few KiB.
pub const MAX_BODY: usize = 64 * 1024;
/// A delivery up to this long after the job was seen finished is still on time (the probe only
/// sees the end at its next poll).
const ON_TIME_MARGIN: Duration = Duration::from_secs(5);
/// A run whose job never finished (its probe was cut) is forgotten after this long.
const ABANDON_AFTER: Duration = Duration::from_secs(2 * 3600);
/// Label value of deliveries no run waits for.
const NO_PROBE: &str = "none";

/// One probe run waiting for its webhook, as the replica whose probe asked keeps it (to end it).
struct Run {
    probe: String,
    created: Instant,
    job_id: Option<String>,
    /// When the probe saw the job end.
    finished: Option<Instant>,
    /// A delivery came (to any replica, as far as this one knows).
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
    tasks: Tasks,
    /// The listener's own address, for `public_url: ""`.
    local: SocketAddr,
    runs: Mutex<HashMap<String, Run>>,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// A delivery's verdict: the first is on time until shortly after the probe saw the job end,
/// late after that; later ones are duplicates. The delay is the arrival after the end (0 when it
/// came first).
fn verdict(d: &Delivery, now_ms: u64) -> (WebhookResult, Option<Duration>) {
    if d.count > 1 {
        return (WebhookResult::Duplicate, None);
    }
    match d.finished_ms {
        None => (WebhookResult::OnTime, Some(Duration::ZERO)),
        Some(t) => {
            let after = Duration::from_millis(now_ms.saturating_sub(t));
            (if after <= ON_TIME_MARGIN { WebhookResult::OnTime } else { WebhookResult::Late }, Some(after))
        }
    }
}

impl Webhooks {
    /// The receiver for connections on `listener` (bound by the caller).
    pub fn new(
        listener: &TcpListener,
        config: watch::Receiver<Arc<Config>>,
        observer: Observer,
        cluster: Cluster,
        tasks: Tasks,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Webhooks { inner: Arc::new(Inner { observer, config, cluster, tasks, local, runs: Mutex::default() }) })
    }

    fn runs(&self) -> MutexGuard<'_, HashMap<String, Run>> {
        self.inner.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `<public_url>` as the running configuration says (or the listener's own address).
    fn base(&self) -> String {
        let public = self.inner.config.borrow().webhooks.public_url.trim_end_matches('/').to_owned();
        if public.is_empty() { format!("http://{}", self.inner.local) } else { public }
    }

    /// Serves deliveries and judges overdue runs until `shutdown`; runs still waiting then are
    /// given up (they are not counted missing: nobody waited their grace out).
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let app = Router::new()
            .route("/hooks/{token}", post(deliver))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .with_state(self.clone());
        let sweeper = self.clone();
        let stop = shutdown.clone();
        self.inner.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => sweeper.sweep(Instant::now()).await,
                }
            }
            let left = sweeper.runs().len();
            if left > 0 {
                tracing::info!(runs = left, "shutting down: webhook runs still waiting are given up");
            }
        });
        let tracker = self.inner.tasks.tracker().clone();
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
                over.push((token.clone(), run.probe.clone(), run.job_id.clone(), run.finished.is_some()));
            }
            !done
        });
        for (token, probe, job_id, finished) in over {
            let delivered = self.inner.cluster.hook_take(&token).await;
            if finished && delivered == 0 {
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

    /// Judges one delivery for `token` (a run of any replica): the answer's status, and the
    /// verdict emitted.
    async fn judge(&self, token: &str, payload: Option<Payload>) -> StatusCode {
        let Some(payload) = payload else { return self.unknown(StatusCode::NOT_FOUND) };
        let Some(delivery) = self.inner.cluster.hook_deliver(token, payload.track_id.as_deref()).await else {
            return self.unknown(StatusCode::NOT_FOUND);
        };
        let (result, delay) = verdict(&delivery, clock::unix_millis());
        let local_job = self.runs().get_mut(token).and_then(|run| {
            run.delivered = true;
            run.job_id.clone()
        });
        let job_id = local_job.or(payload.job_id);
        self.inner.observer.emit(observe::WebhookDelivery {
            probe: &delivery.probe,
            result,
            delay,
            job_id: job_id.as_deref(),
        });
        StatusCode::OK
    }

    /// The receiver's part of `/api/v1/status`.
    pub fn status(&self) -> WebhooksView {
        WebhooksView { waiting: self.runs().values().filter(|r| !r.delivered).count() }
    }
}

async fn deliver(State(hooks): State<Webhooks>, Path(token): Path<String>, body: Body) -> (StatusCode, &'static str) {
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            // Counted as an unknown delivery either way; the answer says which it was.
            hooks.unknown(StatusCode::BAD_REQUEST);
            return if chain::find::<http_body_util::LengthLimitError>(&e).is_some() {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload too large\n")
            } else {
                (StatusCode::BAD_REQUEST, "the payload could not be read\n")
            };
        }
    };
    match hooks.judge(&token, Payload::read(&bytes)).await {
        StatusCode::OK => (StatusCode::OK, "ok\n"),
        status => (status, "no run waits for this delivery\n"),
    }
}

/// What the receiver reads of a delivery: the `track_id` it carries back and the job's id (both
/// bounded: they may be logged). Nothing else of a payload is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload {
    pub(crate) track_id: Option<String>,
    pub(crate) job_id: Option<String>,
}

impl Payload {
    /// `None` unless the body is a JSON object.
    pub(crate) fn read(bytes: &[u8]) -> Option<Payload> {
        let v = serde_json::from_slice::<Value>(bytes).ok().filter(Value::is_object)?;
        Some(Payload { track_id: v.get("track_id").and_then(classify::id), job_id: v.get("id").and_then(classify::id) })
    }
}

/// The webhook a probe run asks the API for.
#[derive(Debug, Clone)]
pub struct Expected {
    /// `<public_url>/hooks/<token>`.
    pub url: String,
    /// Unique per run; the delivery must carry it back.
    pub track_id: String,
    /// The receiver's handle on the run.
    pub token: String,
}

impl Webhooks {
    /// Registers a run of `probe` that will ask for a webhook (shared before the API is told, so
    /// that any replica can take the delivery).
    pub async fn expect(&self, probe: &str) -> Expected {
        let token = random_hex(16);
        let track_id = format!("sentinel-{}", random_hex(8));
        let url = format!("{}/hooks/{token}", self.base());
        self.runs().insert(
            token.clone(),
            Run { probe: probe.to_owned(), created: Instant::now(), job_id: None, finished: None, delivered: false },
        );
        let keep = ABANDON_AFTER + self.inner.config.borrow().webhooks.grace;
        self.inner.cluster.hook_expect(&token, probe, &track_id, keep).await;
        Expected { url, track_id, token }
    }

    /// The run saw its job end (or gave up on it): the delivery is judged against now.
    pub fn finished(&self, token: &str, job_id: Option<&str>) {
        if let Some(run) = self.runs().get_mut(token) {
            run.finished = Some(Instant::now());
            run.job_id = job_id.map(str::to_owned);
        }
        self.inner.tasks.finish_or_spawn(self.inner.cluster.hook_finished(token, clock::unix_millis()));
    }

    /// The run started no job (its submission failed): no delivery is expected.
    pub fn abandon(&self, token: &str) {
        self.runs().remove(token);
        let take = self.inner.cluster.hook_take(token);
        self.inner.tasks.finish_or_spawn(async move {
            take.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::scrape::Scrape;

    fn config(public_url: &str) -> Arc<Config> {
        let text = format!(
            "upstream:\n  base_url: http://127.0.0.1:9\nwebhooks:\n  listen: 127.0.0.1:0\n  grace: 60s\n  public_url: \"{public_url}\"\n"
        );
        let var = |_: &str| None;
        let env = crate::config::Environment { var: &var, base_dir: ".".into() };
        Arc::new(crate::config::from_yaml(&text, "t", &env).unwrap())
    }

    async fn hooks_with(tx: &watch::Sender<Arc<Config>>) -> (Webhooks, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(&tx.borrow().labels).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hooks =
            Webhooks::new(&listener, tx.subscribe(), Observer::new(metrics.clone()), Cluster::single(), Tasks::new())
                .unwrap();
        (hooks, metrics)
    }

    async fn hooks() -> (Webhooks, Arc<Metrics>) {
        let (tx, _) = watch::channel(config(""));
        let hooks = hooks_with(&tx).await;
        std::mem::forget(tx);
        hooks
    }

    #[tokio::test]
    async fn a_reloaded_public_url_is_what_the_next_run_asks_for() {
        let (tx, _) = watch::channel(config(""));
        let (h, _) = hooks_with(&tx).await;
        assert!(h.expect("gen").await.url.starts_with("http://127.0.0.1:"), "the listener's own address");
        tx.send_replace(config("https://sentinel.example.com/"));
        let e = h.expect("gen").await;
        assert_eq!(e.url, format!("https://sentinel.example.com/hooks/{}", e.token));
    }

    fn count(m: &Metrics, probe: &str, result: &str) -> f64 {
        let s = Scrape::parse(&m.render().unwrap());
        s.metric("modelslab_webhook_deliveries_total").label("probe", probe).label("result", result).sum()
    }

    #[test]
    fn verdicts_by_count_and_arrival() {
        let d = |count, finished_ms| Delivery { probe: "gen".into(), count, finished_ms };
        let secs = |s: u64| Some(Duration::from_secs(s));
        let table = [
            (d(1, None), 10_000, (WebhookResult::OnTime, secs(0))),
            (d(1, Some(10_000)), 12_000, (WebhookResult::OnTime, secs(2))),
            (d(1, Some(10_000)), 15_000, (WebhookResult::OnTime, secs(5))),
            (d(1, Some(10_000)), 15_001, (WebhookResult::Late, Some(Duration::from_millis(5001)))),
            (d(1, Some(10_000)), 9_000, (WebhookResult::OnTime, secs(0))),
            (d(2, Some(10_000)), 11_000, (WebhookResult::Duplicate, None)),
        ];
        for (delivery, now, want) in table {
            assert_eq!(verdict(&delivery, now), want, "{delivery:?} at {now}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_run_ends_on_time_or_missing_and_extras_are_duplicates_or_unknown() {
        let (h, m) = hooks().await;
        let payload = |track: &str| {
            Payload::read(serde_json::json!({"status": "success", "id": 7, "track_id": track}).to_string().as_bytes())
        };

        // Before the probe sees the end: on time; again: a duplicate.
        let a = h.expect("gen").await;
        assert!(a.url.starts_with("http://127.0.0.1:") && a.url.ends_with(&a.token));
        assert_eq!(h.judge(&a.token, payload(&a.track_id)).await, StatusCode::OK);
        assert_eq!(h.judge(&a.token, payload(&a.track_id)).await, StatusCode::OK);
        h.finished(&a.token, Some("7"));

        // Never: missing once the grace is over; a delivery after that is unknown.
        let c = h.expect("gen").await;
        h.finished(&c.token, Some("9"));
        assert_eq!(h.status().waiting, 1, "the first run had its delivery, this one waits");
        tokio::time::advance(Duration::from_secs(61)).await;
        h.sweep(Instant::now()).await;
        assert_eq!(h.judge(&c.token, payload(&c.track_id)).await, StatusCode::NOT_FOUND, "too late: unknown");

        // Forged tokens, wrong track ids and malformed bodies: unknown, 404.
        let d = h.expect("gen").await;
        assert_eq!(h.judge("forged", payload(&d.track_id)).await, StatusCode::NOT_FOUND);
        assert_eq!(h.judge(&d.token, payload("sentinel-other")).await, StatusCode::NOT_FOUND);
        assert_eq!(h.judge(&d.token, None).await, StatusCode::NOT_FOUND);
        assert_eq!(h.judge(&d.token, Payload::read(b"[1]")).await, StatusCode::NOT_FOUND);
        h.abandon(&d.token);

        for (result, n) in [("on_time", 1.0), ("duplicate", 1.0), ("missing", 1.0)] {
            assert_eq!(count(&m, "gen", result), n, "{result}");
        }
        assert_eq!(count(&m, "none", "unknown"), 5.0);
        assert_eq!(h.status().waiting, 0, "ended, abandoned or delivered");
    }
}
