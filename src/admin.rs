//! The admin server, on its own port: the status page `/`, `/metrics`, `/healthz`, `/readyz`,
//! `/api/v1/status` and `POST /-/reload`. It only reads shared state and forwards reload requests to the app; it never
//! shows a secret (nothing it can reach holds one but the admin token, which it only compares).
//!
//! `GET`s are open (scrapers, the kubelet's probes). `POST`s change things or spend credits: with
//! `admin.token` set they need `Authorization: Bearer <token>` (401 otherwise, compared in
//! constant time); without a token they answer loopback clients only (403 to others), which
//! `kubectl port-forward` is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::BoxFuture;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::observe::status::{AdminAccess, ConfigState, Parts, StatusDocument};
use crate::server::Limits;
use crate::ui;
use crate::vocab::RunReport;

/// The answer to a reload request: `Err` says why the new configuration was refused.
pub type ReloadResult = Result<(), ConfigError>;

/// What the components show through the admin API; the app implements it, so that this module
/// needs none of them.
pub trait Components: Send + Sync {
    /// Their parts of the status document (`probes`, `status_page`, …).
    fn status(&self) -> Parts;
    /// Runs one probe now; `None` if there is no probe of that name.
    fn run_probe<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<RunReport>>;
}

/// What the admin server reads and where it sends reload requests.
#[derive(Clone)]
pub struct AdminState {
    /// The registry `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// Set once the config is loaded and every listener is bound.
    pub ready: Arc<AtomicBool>,
    /// Where reload requests go (the app's reloader answers each).
    pub reload: mpsc::Sender<oneshot::Sender<ReloadResult>>,
    /// What the agent says of itself (config file, last reload).
    pub status: Arc<RwLock<AgentStatus>>,
    /// The components' parts of the status document.
    pub components: Arc<dyn Components>,
    /// The running configuration (`admin.token` is read from it at each request).
    pub config: watch::Receiver<Arc<Config>>,
}

/// What `GET /api/v1/status` reports about the agent itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentStatus {
    /// The configuration file in use.
    pub config_file: String,
    /// The problems of the last failed reload, until a reload succeeds.
    pub last_reload_error: Option<String>,
    /// Settings changed by a reload that only a restart applies.
    pub restart_required_for: Vec<String>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/api/v1/probes/{name}/run", post(run_probe))
        .route("/-/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .route("/", get(page))
        .route(ui::STYLESHEET_PATH, get(stylesheet))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status))
        .merge(guarded)
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "not found: GET / is the status page and lists the admin endpoints\n")
        })
        .with_state(state)
}

/// Serves the admin routes on an already-bound listener until `shutdown` is cancelled, with the
/// limits of [`crate::server`]; open connections finish on `tracker`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken, tracker: TaskTracker) {
    crate::server::serve_router(listener, "admin", Limits::default(), shutdown, tracker, router(state)).await;
}

/// Whether a `POST` from `peer` with `headers` may go through: `Err` is the answer instead.
fn authorize(token: Option<&str>, peer: SocketAddr, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    match token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or("");
            if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                Ok(())
            } else {
                Err((StatusCode::UNAUTHORIZED, "this endpoint needs `Authorization: Bearer <admin.token>`\n"))
            }
        }
        None if peer.ip().to_canonical().is_loopback() => Ok(()),
        None => Err((
            StatusCode::FORBIDDEN,
            "without admin.token this endpoint answers loopback clients only (kubectl port-forward is one)\n",
        )),
    }
}

async fn guard(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let token = state.config.borrow().admin.token().map(str::to_owned);
    match authorize(token.as_deref(), peer, request.headers()) {
        Ok(()) => next.run(request).await,
        Err((status, why)) => {
            tracing::debug!(%peer, path = request.uri().path(), status = status.as_u16(), "admin request refused");
            let mut r = (status, why).into_response();
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            }
            r
        }
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The status document: the agent, its components, and the overall verdict judged from them.
fn status_document(state: &AdminState) -> StatusDocument {
    let agent = state.status.read().map(|s| s.clone()).unwrap_or_default();
    let config = ConfigState {
        file: agent.config_file,
        admin_access: if state.config.borrow().admin.token().is_some() {
            AdminAccess::Token
        } else {
            AdminAccess::LoopbackOnly
        },
        last_reload_success: state.metrics.agent.config_last_reload_success(),
        last_reload_success_timestamp_seconds: state.metrics.agent.config_last_reload_timestamp(),
        last_reload_error: agent.last_reload_error,
        restart_required_for: agent.restart_required_for,
    };
    StatusDocument::judge(state.ready.load(Ordering::Acquire), config, state.components.status())
}

async fn status(State(state): State<AdminState>) -> Response {
    Json(status_document(&state)).into_response()
}

/// The status page: the same document, for people.
async fn page(State(state): State<AdminState>) -> Response {
    let html = ui::page(&status_document(&state));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, ui::CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        ui::STYLESHEET,
    )
        .into_response()
}

async fn reload(State(state): State<AdminState>) -> (StatusCode, String) {
    let (tx, rx) = oneshot::channel();
    if state.reload.send(tx).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the agent is shutting down\n".into());
    }
    match rx.await {
        Ok(Ok(())) => (StatusCode::OK, "configuration reloaded\n".into()),
        Ok(Err(problems)) => (StatusCode::BAD_REQUEST, format!("{problems}\nthe running configuration is unchanged\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the agent is shutting down\n".into()),
    }
}

async fn run_probe(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match state.components.run_probe(&name).await {
        Some(report) => Json(report).into_response(),
        None => (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": format!("no probe named `{name}`") })))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::observe::status::{Parts, ProbeView};
    use crate::vocab::{RunOutcome, RunReport};

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        h
    }

    #[test]
    fn posts_need_the_token_or_loopback() {
        let none = HeaderMap::new();
        assert!(authorize(None, peer("127.0.0.1"), &none).is_ok());
        assert!(authorize(None, peer("::1"), &none).is_ok());
        assert!(authorize(None, peer("::ffff:127.0.0.1"), &none).is_ok(), "IPv4-mapped loopback");
        assert_eq!(authorize(None, peer("10.0.0.7"), &none).unwrap_err().0, StatusCode::FORBIDDEN);
        assert!(authorize(Some("s3cret"), peer("10.0.0.7"), &bearer("s3cret")).is_ok());
        assert_eq!(authorize(Some("s3cret"), peer("127.0.0.1"), &none).unwrap_err().0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            authorize(Some("s3cret"), peer("10.0.0.7"), &bearer("s3cre")).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            authorize(Some("s3cret"), peer("10.0.0.7"), &bearer("s3cretx")).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
    }

    /// One probe, `gen`, that runs successfully on demand.
    struct OneProbe;

    impl Components for OneProbe {
        fn status(&self) -> Parts {
            Parts { probes: vec![ProbeView::new("gen", std::time::Duration::from_secs(60))], ..Parts::default() }
        }

        fn run_probe<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<RunReport>> {
            Box::pin(async move {
                (name == "gen").then(|| RunReport {
                    probe: "gen".into(),
                    outcome: RunOutcome::Success,
                    duration_seconds: 0.5,
                    started_at_unix: 0.0,
                    answer: None,
                    exchanges: Vec::new(),
                })
            })
        }
    }

    /// The admin routes over a config with `token`, and a reloader that refuses or accepts.
    fn app(token: Option<&str>, reload_ok: bool) -> Router {
        let text = match token {
            Some(t) => format!("upstream: {{ base_url: http://127.0.0.1:9 }}\nadmin: {{ token: {t} }}\n"),
            None => "upstream: { base_url: http://127.0.0.1:9 }\n".to_owned(),
        };
        let var = |_: &str| None;
        let env = crate::config::Environment { var: &var, base_dir: ".".into() };
        let config = crate::config::from_yaml(&text, "t.yaml", &env).unwrap();
        let metrics = Arc::new(Metrics::new(&config.labels).unwrap());
        metrics.agent.config_loaded(true);
        let (reload, mut requests) = mpsc::channel::<oneshot::Sender<ReloadResult>>(1);
        tokio::spawn(async move {
            while let Some(reply) = requests.recv().await {
                let result = if reload_ok {
                    Ok(())
                } else {
                    crate::config::from_yaml("upstream: {}", "t.yaml", &env_none()).map(drop)
                };
                let _ = reply.send(result);
            }
        });
        let (tx, rx) = watch::channel(Arc::new(config));
        std::mem::forget(tx);
        router(AdminState {
            metrics,
            ready: Arc::new(AtomicBool::new(true)),
            reload,
            status: Arc::new(RwLock::new(AgentStatus { config_file: "t.yaml".into(), ..Default::default() })),
            components: Arc::new(OneProbe),
            config: rx,
        })
    }

    fn env_none() -> crate::config::Environment<'static> {
        fn none(_: &str) -> Option<String> {
            None
        }
        crate::config::Environment { var: &none, base_dir: ".".into() }
    }

    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        from: &str,
        token: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(peer(from)));
        let resp = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        (parts.status, parts.headers, text)
    }

    #[tokio::test]
    async fn every_route_answers_as_documented() {
        let app = app(None, true);
        let (status, _, body) = call(&app, "GET", "/healthz", "10.0.0.1", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
        assert_eq!(call(&app, "GET", "/readyz", "10.0.0.1", None).await.0, StatusCode::OK);
        let (status, headers, body) = call(&app, "GET", "/metrics", "10.0.0.1", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
        assert!(body.contains("modelslab_sentinel_build_info"));
        let (status, _, body) = call(&app, "GET", "/api/v1/status", "10.0.0.1", None).await;
        assert_eq!(status, StatusCode::OK);
        let doc: StatusDocument = serde_json::from_str(&body).unwrap();
        assert_eq!((doc.probes.len(), doc.config.admin_access), (1, AdminAccess::LoopbackOnly));
        assert_eq!(doc.config.file, "t.yaml");
        let (status, headers, body) = call(&app, "GET", "/", "10.0.0.1", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], ui::CONTENT_SECURITY_POLICY);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(body.contains("id=\"probe-gen\""));
        let (status, headers, _) = call(&app, "GET", ui::STYLESHEET_PATH, "10.0.0.1", None).await;
        assert_eq!(
            (status, headers[header::CONTENT_TYPE].to_str().unwrap()),
            (StatusCode::OK, "text/css; charset=utf-8")
        );
        assert_eq!(call(&app, "GET", "/nope", "10.0.0.1", None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(call(&app, "GET", "/-/reload", "127.0.0.1", None).await.0, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn posts_are_guarded_and_answer_with_the_work_done() {
        let open = app(None, true);
        assert_eq!(call(&open, "POST", "/-/reload", "10.0.0.1", None).await.0, StatusCode::FORBIDDEN);
        let (status, _, body) = call(&open, "POST", "/-/reload", "127.0.0.1", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "configuration reloaded\n"));
        let (status, _, body) = call(&open, "POST", "/api/v1/probes/gen/run", "127.0.0.1", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(serde_json::from_str::<RunReport>(&body).unwrap().success());
        let (status, _, body) = call(&open, "POST", "/api/v1/probes/nope/run", "127.0.0.1", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, r#"{"error":"no probe named `nope`"}"#));

        let refusing = app(None, false);
        let (status, _, body) = call(&refusing, "POST", "/-/reload", "127.0.0.1", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("t.yaml:1: upstream: missing field `base_url`"), "{body}");
        assert!(body.ends_with("the running configuration is unchanged\n"), "{body}");

        let guarded = app(Some("s3cret"), true);
        let (status, headers, _) = call(&guarded, "POST", "/-/reload", "127.0.0.1", None).await;
        assert_eq!((status, headers[header::WWW_AUTHENTICATE].to_str().unwrap()), (StatusCode::UNAUTHORIZED, "Bearer"));
        assert_eq!(call(&guarded, "POST", "/-/reload", "10.0.0.1", Some("s3cret")).await.0, StatusCode::OK);
        let (_, _, body) = call(&guarded, "GET", "/api/v1/status", "10.0.0.1", None).await;
        assert!(!body.contains("s3cret"), "the token is never shown");
        assert!(body.contains(r#""admin_access":"token""#));
    }
}
