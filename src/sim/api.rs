//! The emulated ModelsLab endpoints: generation, fetch, wallet balance. Validation, magic keys,
//! queue limits and async jobs behave as the API documents (seed document, API-FACTS.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Map, Value, json};

use super::Sim;
use super::media::Media;
use super::scenario::Account;

/// Which family an endpoint belongs to: decides its fetch path, its wording and its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    V6Images,
    V6Realtime,
    V7Images,
    V6Video,
    V6Voice,
    V63d,
    V7VideoFusion,
    V7Voice,
}

/// Every generation endpoint the emulator serves.
pub(super) const GENERATIONS: &[(&str, Family, Kind)] = &[
    ("/api/v6/images/text2img", Family::V6Images, Kind::Text),
    ("/api/v6/images/img2img", Family::V6Images, Kind::Image),
    ("/api/v6/images/inpaint", Family::V6Images, Kind::Image),
    ("/api/v6/realtime/text2img", Family::V6Realtime, Kind::Text),
    ("/api/v6/realtime/img2img", Family::V6Realtime, Kind::Image),
    ("/api/v6/realtime/inpaint", Family::V6Realtime, Kind::Image),
    ("/api/v7/images/text-to-image", Family::V7Images, Kind::Text),
    ("/api/v7/images/image-to-image", Family::V7Images, Kind::Image),
    ("/api/v7/images/inpaint", Family::V7Images, Kind::Image),
    ("/api/v6/video/text2video", Family::V6Video, Kind::Text),
    ("/api/v6/video/img2video", Family::V6Video, Kind::Image),
    ("/api/v6/voice/text_to_audio", Family::V6Voice, Kind::Text),
    ("/api/v6/voice/text_to_speech", Family::V6Voice, Kind::Text),
    ("/api/v6/3d/text_to_3d", Family::V63d, Kind::Text),
    ("/api/v6/3d/image_to_3d", Family::V63d, Kind::Image),
    ("/api/v7/video-fusion/text-to-video", Family::V7VideoFusion, Kind::Text),
    ("/api/v7/video-fusion/image-to-video", Family::V7VideoFusion, Kind::Image),
    ("/api/v7/voice/text-to-speech", Family::V7Voice, Kind::Text),
];

impl Family {
    /// Every family, each with its own fetch endpoint.
    pub(super) const ALL: [Family; 8] = [
        Family::V6Images,
        Family::V6Realtime,
        Family::V7Images,
        Family::V6Video,
        Family::V6Voice,
        Family::V63d,
        Family::V7VideoFusion,
        Family::V7Voice,
    ];

    pub(super) fn fetch_prefix(self) -> &'static str {
        match self {
            Family::V6Images => "/api/v6/images/fetch",
            Family::V6Realtime => "/api/v6/realtime/fetch",
            Family::V7Images => "/api/v7/images/fetch",
            Family::V6Video => "/api/v6/video/fetch",
            Family::V6Voice => "/api/v6/voice/fetch",
            Family::V63d => "/api/v6/3d/fetch",
            Family::V7VideoFusion => "/api/v7/video-fusion/fetch",
            Family::V7Voice => "/api/v7/voice/fetch",
        }
    }

    /// The kind of file its outputs are.
    pub(super) fn media(self) -> Media {
        match self {
            Family::V6Images | Family::V6Realtime | Family::V7Images => Media::Png,
            Family::V6Video | Family::V7VideoFusion => Media::Mp4,
            Family::V6Voice => Media::Mp3,
            Family::V7Voice => Media::Wav,
            Family::V63d => Media::Glb,
        }
    }

    /// v7 endpoints answer validation errors in Laravel's shape.
    fn is_v7(self) -> bool {
        matches!(self, Family::V7Images | Family::V7VideoFusion | Family::V7Voice)
    }

    /// Whether requests give a frame size (`width`, `height`).
    fn has_frames(self) -> bool {
        matches!(self.media(), Media::Png | Media::Mp4)
    }
}

/// What a generation endpoint needs besides a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Image,
}

/// How a job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Success,
    Failed,
    Error,
}

#[derive(Debug)]
pub(super) struct Job {
    key: String,
    family: Family,
    pub(super) done_at: Instant,
    /// Seconds of its duration the model worked (the rest it waited in the queue).
    generation: f64,
    eta_bias: f64,
    fate: Fate,
    samples: u64,
    /// The size asked for, which the images served at the output URLs have.
    pub(super) width: u32,
    pub(super) height: u32,
}

/// Jobs and the per-key queues they occupy.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    next_id: u64,
    by_id: HashMap<u64, Job>,
    /// Finish times of the unfinished jobs of each key.
    queues: HashMap<String, Vec<Instant>>,
    inserted: u64,
}

/// Finished jobs stay fetchable this long.
const KEEP_FINISHED: Duration = Duration::from_secs(600);
/// Above this many jobs, finished ones older than KEEP_FINISHED are dropped.
const MAX_JOBS: usize = 200_000;

impl Jobs {
    fn queue_len(&mut self, key: &str, now: Instant) -> (usize, Option<Instant>) {
        let q = self.queues.entry(key.to_owned()).or_default();
        q.retain(|done| *done > now);
        (q.len(), q.iter().min().copied())
    }

    fn insert(&mut self, job: Job) -> u64 {
        if self.next_id == 0 {
            self.next_id = 134_700_000;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.queues.entry(job.key.clone()).or_default().push(job.done_at);
        self.by_id.insert(id, job);
        self.inserted += 1;
        if self.by_id.len() > MAX_JOBS && self.inserted % 1024 == 0 {
            let now = Instant::now();
            self.by_id.retain(|_, j| j.done_at + KEEP_FINISHED > now);
        }
        id
    }
}

/// The API's error body, honouring the scenario's `messege` spelling.
pub(super) fn error_body(sim: &Sim, message: Value) -> Value {
    let mut m = Map::new();
    m.insert("status".into(), "error".into());
    m.insert(sim.message_key().into(), message);
    Value::Object(m)
}

#[allow(clippy::needless_pass_by_value)] // callers build the body in the call
pub(super) fn json_response(status: StatusCode, body: Value) -> Response {
    (status, [(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// An answer decided before the happy path: a status and an API-shaped body.
struct Reply {
    status: StatusCode,
    body: Value,
}

impl From<Reply> for Response {
    fn from(r: Reply) -> Response {
        json_response(r.status, r.body)
    }
}

fn error(sim: &Sim, status: StatusCode, message: &str) -> Reply {
    Reply { status, body: error_body(sim, message.into()) }
}

/// The body as a JSON object; `Err` is the API's malformed-JSON answer.
fn parse_body(sim: &Sim, body: &Bytes) -> Result<Map<String, Value>, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(error(sim, StatusCode::BAD_REQUEST, "Malformed JSON in request body")),
    }
}

/// The key from the body, a `key` header or `Authorization: Bearer`, as clients send it.
fn api_key(body: &Map<String, Value>, headers: &HeaderMap) -> Option<String> {
    let from_body = body.get("key").and_then(Value::as_str).map(str::to_owned);
    let from_header = || headers.get("key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let from_bearer = || {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|s| s.trim().to_owned())
    };
    from_body.or_else(from_header).or_else(from_bearer).filter(|k| !k.is_empty())
}

/// Checks the key; `Err` is the API's answer to a missing, revoked or unfunded key.
fn authorize(sim: &Sim, body: &Map<String, Value>, headers: &HeaderMap) -> Result<(String, Account), Reply> {
    let Some(key) = api_key(body, headers) else {
        return Err(error(sim, StatusCode::UNAUTHORIZED, "key is required"));
    };
    match Account::of_key(&key, sim.scenario().account) {
        Account::Revoked => Err(error(sim, StatusCode::UNAUTHORIZED, "Invalid API key")),
        Account::Broke => {
            Err(error(sim, StatusCode::PAYMENT_REQUIRED, "Insufficient credits. Please add more credits to continue."))
        }
        account => Ok((key, account)),
    }
}

/// A number sent as a JSON number or a numeric string, as real clients do.
enum Num {
    Absent,
    Bad,
    Value(f64),
}

fn number(body: &Map<String, Value>, field: &str) -> Num {
    match body.get(field) {
        None | Some(Value::Null) => Num::Absent,
        Some(Value::String(s)) if s.trim().is_empty() => Num::Absent,
        Some(v) => crate::classify::number(v).map_or(Num::Bad, Num::Value),
    }
}

/// The seed document's validation table, in the API's words.
fn validate(sim: &Sim, family: Family, kind: Kind, body: &Map<String, Value>) -> Result<(), Reply> {
    let bad = |message: String| Err(error(sim, StatusCode::BAD_REQUEST, &message));
    match body.get("prompt") {
        None | Some(Value::Null) => return bad("prompt is required".into()),
        Some(Value::String(s)) if s.trim().is_empty() => return bad("prompt is required".into()),
        Some(Value::String(_)) => {}
        Some(_) => return bad("prompt must be a string".into()),
    }
    if let Some(model) = body.get("model_id") {
        let model = model.as_str().map_or_else(|| model.to_string(), str::to_owned);
        if !sim.scenario().models.contains(&model) {
            return bad(format!("Model not found: {model}"));
        }
    }
    for field in ["width", "height"].into_iter().filter(|_| family.has_frames()) {
        match number(body, field) {
            Num::Absent => {}
            Num::Bad => return bad(format!("{field} must be a number")),
            Num::Value(v) if !(256.0..=1024.0).contains(&v) => {
                return bad(format!("{field} must be between 256 and 1024"));
            }
            Num::Value(v) if v % 8.0 != 0.0 => return bad(format!("{field} must be divisible by 8")),
            Num::Value(_) => {}
        }
    }
    for (field, lo, hi) in [("samples", 1.0, 4.0), ("guidance_scale", 1.0, 20.0)] {
        match number(body, field) {
            Num::Absent => {}
            Num::Bad => return bad(format!("{field} must be a number")),
            Num::Value(v) if !(lo..=hi).contains(&v) => return bad(format!("{field} must be between {lo} and {hi}")),
            Num::Value(_) => {}
        }
    }
    if kind == Kind::Image {
        match body.get("init_image").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            // v7 answers in Laravel's shape: an object of field errors.
            None if family.is_v7() => {
                return Err(Reply {
                    status: StatusCode::BAD_REQUEST,
                    body: error_body(sim, json!({"init_image": ["The init image field is required."]})),
                });
            }
            None => return bad("init_image is required".into()),
            Some(u) => {
                let unreachable = url::Url::parse(u).ok().and_then(|u| u.host_str().map(|h| h.ends_with(".invalid")));
                if unreachable.unwrap_or(true) {
                    return bad("Unable to fetch image from provided URL".into());
                }
            }
        }
    }
    Ok(())
}

/// The kind of file job `id` made and the frame size asked for, if it exists and is done.
pub(super) fn finished_output(sim: &Sim, id: u64) -> Option<(Media, u32, u32)> {
    let jobs = sim.jobs();
    let job = jobs.by_id.get(&id)?;
    (Instant::now() >= job.done_at && job.fate == Fate::Success).then_some((job.family.media(), job.width, job.height))
}

fn output_links(base: &str, family: Family, id: u64, samples: u64) -> Vec<String> {
    let ext = family.media().extension();
    (0..samples).map(|i| format!("{base}/generations/{id}-{i}.{ext}")).collect()
}

/// `http://host:port` the client used, for links in answers.
fn base_url(sim: &Sim, headers: &HeaderMap) -> String {
    let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
    format!("http://{}", host.unwrap_or_else(|| sim.addr.to_string()))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What this generation will be.
struct Draw {
    /// Answered at once.
    sync: bool,
    /// Seconds in the account's queue.
    wait: f64,
    /// Seconds of generation (`generationTime`).
    generation: f64,
    fate: Fate,
}

/// Draws a generation of `model`: answered at once or not, its wait and generation, its end.
fn draw(sim: &Sim, scenario: &super::Scenario, model: Option<&str>) -> Draw {
    let mut rng = sim.rng();
    let mut within = |span: super::Span| {
        let (lo, hi) = (span.min.as_secs_f64(), span.max.as_secs_f64());
        if hi > lo { rng.random_range(lo..hi) } else { lo }
    };
    let pace = model.and_then(|m| scenario.model_pace.get(m)).copied().unwrap_or(1.0);
    let generation = within(scenario.job_duration) * pace;
    let wait = within(scenario.queue_wait);
    let sync_ratio = model.and_then(|m| scenario.model_sync.get(m)).copied().unwrap_or(scenario.sync_ratio);
    let sync = rng.random::<f64>() < sync_ratio;
    let fate = if rng.random::<f64>() < scenario.failure_ratio {
        if rng.random::<bool>() { Fate::Failed } else { Fate::Error }
    } else {
        Fate::Success
    };
    Draw { sync, wait, generation, fate }
}

/// The refusal, unless the account's queue has room (else 429 with `retry_after`: seconds until a slot frees)
/// and its wallet pays for the images (else 402; a 429 costs nothing).
fn admit(sim: &Sim, jobs: &mut Jobs, key: &str, account: Account, samples: u64, now: Instant) -> Option<Response> {
    let limit = account.queue_limit();
    let (queued, next_free) = jobs.queue_len(key, now);
    if queued >= limit {
        let wait = next_free.map_or(1.0, |t| t.saturating_duration_since(now).as_secs_f64().ceil()).max(1.0);
        let mut body = error_body(sim, format!("Rate limit exceeded. Maximum {limit} queued requests allowed.").into());
        body["retry_after"] = json!(wait as u64);
        return Some(json_response(StatusCode::TOO_MANY_REQUESTS, body));
    }
    let scenario = sim.scenario();
    let price = scenario.wallet.cost * samples as f64;
    let mut wallets = sim.wallets();
    let left = wallets.entry(key.to_owned()).or_insert(starting_balance(&scenario, account));
    if *left + 1e-9 < price {
        return Some(
            error(sim, StatusCode::PAYMENT_REQUIRED, "Insufficient credits. Please add more credits to continue.")
                .into(),
        );
    }
    *left = (*left - price).max(0.0);
    None
}

/// `POST` on a generation endpoint.
pub(super) async fn generate(
    State(sim): State<Arc<Sim>>,
    family: Family,
    kind: Kind,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match parse_body(&sim, &body) {
        Ok(b) => b,
        Err(r) => return r.into(),
    };
    let (key, account) = match authorize(&sim, &body, &headers) {
        Ok(k) => k,
        Err(r) => return r.into(),
    };
    if family == Family::V6Realtime && account == Account::Basic {
        return error(&sim, StatusCode::FORBIDDEN, "This feature requires a premium subscription").into();
    }
    if let Err(r) = validate(&sim, family, kind, &body) {
        return r.into();
    }
    let scenario = sim.scenario();
    let samples = match number(&body, "samples") {
        Num::Value(v) => v as u64,
        _ => 1,
    };
    let base = base_url(&sim, &headers);
    let Draw { sync, wait, generation, fate } =
        draw(&sim, &scenario, body.get("model_id").or_else(|| body.get("model")).and_then(Value::as_str));
    let now = Instant::now();
    let mut jobs = sim.jobs();
    if let Some(refused) = admit(&sim, &mut jobs, &key, account, samples, now) {
        return refused;
    }

    let dim = |k: &str| match number(&body, k) {
        Num::Value(v) => v as u32,
        _ => 512,
    };
    let (width, height) = (dim("width"), dim("height"));
    let webhook = body.get("webhook").and_then(Value::as_str).map(str::to_owned);
    let track_id = body.get("track_id").cloned();
    if sync {
        let id = jobs.insert(Job {
            key,
            family,
            done_at: now,
            generation: 0.0,
            eta_bias: scenario.eta_bias,
            fate: Fate::Success,
            samples,
            width,
            height,
        });
        drop(jobs);
        let links = output_links(&base, family, id, samples);
        // Answered after the latency alone: the model worked at most that long.
        let generation_time = round2(scenario.latency.min.as_secs_f64());
        if let Some(url) = webhook {
            let payload = json!({"status": "success", "id": id, "output": links, "track_id": track_id,
                                 "generationTime": generation_time});
            super::hooks::call_back(&sim, url, payload, now);
        }
        return json_response(
            StatusCode::OK,
            json!({
                "status": "success", "id": id, "generationTime": generation_time,
                "output": links, "proxy_links": links,
                "meta": {"model_id": body.get("model_id").cloned().unwrap_or(json!("flux")), "W": width, "H": height},
            }),
        );
    }
    let duration = wait + generation;
    let done_at = now + Duration::from_secs_f64(duration);
    let job = Job { key, family, done_at, generation, eta_bias: scenario.eta_bias, fate, samples, width, height };
    let id = jobs.insert(job);
    drop(jobs);
    if let Some(url) = webhook {
        // The payload the API sends when the job ends, as its docs show it.
        let payload = match fate {
            Fate::Success => {
                json!({"status": "success", "id": id, "output": output_links(&base, family, id, samples),
                       "track_id": track_id, "generationTime": round2(generation)})
            }
            Fate::Failed => json!({"status": "failed", "id": id, "track_id": track_id,
                                   "message": format!("Generation failed: the model did not return {}.", family.media().a_noun())}),
            Fate::Error => json!({"status": "error", "id": id, "track_id": track_id,
                                  "message": format!("Failed to generate {}, please try again.", family.media().noun())}),
        };
        super::hooks::call_back(&sim, url, payload, done_at);
    }
    let mut answer = json!({
        "status": "processing",
        "id": id,
        "eta": round2(duration * scenario.eta_bias),
        "fetch_result": format!("{base}{}/{id}", family.fetch_prefix()),
        "future_links": output_links(&base, family, id, samples),
        "output": [],
        "tip": format!("Your {noun} is processing in background, you can get this {noun} using fetch API", noun = family.media().noun()),
    });
    answer[sim.message_key()] = json!("Try to fetch request after seconds estimated");
    json_response(StatusCode::OK, answer)
}

/// `POST <family>/fetch/{id}`.
pub(super) async fn fetch_by_path(
    State(sim): State<Arc<Sim>>,
    family: Family,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fetch(&sim, family, Some(id), &headers, &body)
}

/// `POST /api/v6/images/fetch` with `request_id` in the body.
pub(super) async fn fetch_by_body(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    fetch(&sim, Family::V6Images, None, &headers, &body)
}

/// A job is found only on its own family's fetch endpoint, as with the real API.
fn fetch(sim: &Sim, family: Family, path_id: Option<String>, headers: &HeaderMap, body: &Bytes) -> Response {
    let body = match parse_body(sim, body) {
        Ok(b) => b,
        Err(r) => return r.into(),
    };
    if let Err(r) = authorize(sim, &body, headers) {
        return r.into();
    }
    let id = path_id.or_else(|| body.get("request_id").and_then(crate::classify::id));
    let Some(id) = id else {
        return error(sim, StatusCode::BAD_REQUEST, "request_id is required").into();
    };
    let base = base_url(sim, headers);
    let now = Instant::now();
    let jobs = sim.jobs();
    let found = id.trim().parse::<u64>().ok().and_then(|n| jobs.by_id.get(&n).map(|j| (n, j)));
    let Some(job) = found.filter(|(_, j)| j.family == family) else {
        return json_response(StatusCode::OK, error_body(sim, "Request not found".into()));
    };
    let (id, job) = job;
    if now < job.done_at {
        let remaining = job.done_at.duration_since(now).as_secs_f64();
        let mut answer =
            json!({"status": "processing", "id": id, "eta": round2((remaining * job.eta_bias).max(0.5)), "output": ""});
        answer[sim.message_key()] = json!("try again later.");
        return json_response(StatusCode::OK, answer);
    }
    match job.fate {
        Fate::Success => {
            let links = output_links(&base, family, id, job.samples);
            json_response(
                StatusCode::OK,
                json!({"status": "success", "id": id, "generationTime": round2(job.generation), "output": links, "proxy_links": links}),
            )
        }
        Fate::Failed => {
            let mut answer = json!({"status": "failed", "id": id});
            answer[sim.message_key()] = json!(format!(
                "Generation failed: the model did not return {}. No credits were charged.",
                family.media().a_noun()
            ));
            json_response(StatusCode::OK, answer)
        }
        Fate::Error => {
            let message = format!("Failed to generate {}, please try again.", family.media().noun());
            json_response(StatusCode::OK, error_body(sim, message.into()))
        }
    }
}

/// The key of an account endpoint's request and its account: a missing or revoked key is a 401
/// (an account out of credits may still ask).
fn account_key(sim: &Sim, headers: &HeaderMap, body: &Bytes) -> Result<(String, Account), Reply> {
    let body = parse_body(sim, body)?;
    let Some(key) = api_key(&body, headers) else {
        return Err(error(sim, StatusCode::UNAUTHORIZED, "key is required"));
    };
    match Account::of_key(&key, sim.scenario().account) {
        Account::Revoked => Err(error(sim, StatusCode::UNAUTHORIZED, "Invalid API key")),
        account => Ok((key, account)),
    }
}

/// The credits a key's wallet starts with.
fn starting_balance(scenario: &super::Scenario, account: Account) -> f64 {
    if account == Account::Broke { 0.0 } else { scenario.wallet.balance }
}

/// `POST /api/wallet_balance`.
pub(super) async fn wallet_balance(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let (key, account) = match account_key(&sim, &headers, &body) {
        Ok(k) => k,
        Err(r) => return r.into(),
    };
    let start = starting_balance(&sim.scenario(), account);
    let balance = *sim.wallets().get(&key).unwrap_or(&start);
    json_response(
        StatusCode::OK,
        json!({"status": "success", "data": {"balance": (balance * 10_000.0).round() / 10_000.0, "currency": "USD"}}),
    )
}

/// Calls of `request_count` the API allows per key in a minute.
pub(super) const REQUEST_COUNT_PER_MINUTE: usize = 30;

/// `POST /api/v6/processing/request_count`: the key's unfinished requests (every client's), at
/// most 30 calls a minute per key (429 beyond, with `retry_after`).
pub(super) async fn request_count(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = match account_key(&sim, &headers, &body) {
        Ok((key, _)) => key,
        Err(r) => return r.into(),
    };
    let now = Instant::now();
    if let Some(wait) = sim.count_call(&key, now) {
        let mut body = error_body(&sim, "Too many requests. You can check the request count 30 times a minute.".into());
        body["retry_after"] = json!(wait.as_secs_f64().ceil() as u64);
        return json_response(StatusCode::TOO_MANY_REQUESTS, body);
    }
    let (count, _) = sim.jobs().queue_len(&key, now);
    json_response(
        StatusCode::OK,
        json!({"status": "success", "processing_count": count, "message": format!("{count} requests are processing")}),
    )
}

/// `POST /_sim/topup` `{"key", "amount"}`: adds credits to a key's wallet (a top-up or
/// auto-funding, as the billing page would).
pub(super) async fn top_up(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let body = match parse_body(&sim, &body) {
        Ok(b) => b,
        Err(r) => return r.into(),
    };
    let (Some(key), Num::Value(amount)) = (body.get("key").and_then(Value::as_str), number(&body, "amount")) else {
        return error(&sim, StatusCode::BAD_REQUEST, "give key and a positive amount").into();
    };
    if amount <= 0.0 {
        return error(&sim, StatusCode::BAD_REQUEST, "give key and a positive amount").into();
    }
    let scenario = sim.scenario();
    let start = starting_balance(&scenario, Account::of_key(key, scenario.account));
    let mut wallets = sim.wallets();
    let left = wallets.entry(key.to_owned()).or_insert(start);
    *left += amount;
    json_response(StatusCode::OK, json!({"status": "success", "balance": *left}))
}
