//! Cross-field rules that types alone cannot express. Each rule adds a problem with the path of
//! the key to change and says what to write instead; none stops at the first problem.

use std::collections::HashMap;
use std::time::Duration;

use super::schema::*;
use super::{Problems, Seg, key};
use crate::classify::Outcome;

fn d(x: Duration) -> String {
    humantime::format_duration(x).to_string()
}

fn at(base: &[Seg], more: &[&str]) -> Vec<Seg> {
    let mut path = base.to_vec();
    path.extend(more.iter().map(|k| key(k)));
    path
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn all(
    upstream: Option<&mut Upstream>,
    admin: Option<&mut Admin>,
    proxy: Option<&Proxy>,
    jobs: Option<&Jobs>,
    labels: Option<&Labels>,
    probes: &[Option<Probe>],
    status_page: Option<&StatusPage>,
    telemetry: Option<&Telemetry>,
    p: &mut Problems<'_>,
) {
    if let Some(upstream) = upstream {
        check_upstream(upstream, p);
    }
    let admin = admin.map(|a| {
        check_admin(a, p);
        &*a
    });
    if let (Some(admin), Some(proxy)) = (admin, proxy) {
        if proxy.enabled && admin.listen == proxy.listen && admin.listen.port() != 0 {
            p.add(
                &[key("proxy"), key("listen")],
                format!("{} is also admin.listen: give the proxy its own port", proxy.listen),
            );
        }
    }
    if let Some(proxy) = proxy {
        check_proxy(proxy, p);
    }
    if let Some(jobs) = jobs {
        if jobs.ttl.is_zero() {
            p.add(&[key("jobs"), key("ttl")], "must be longer than 0s (e.g. `30m`)");
        }
        if jobs.max_tracked == 0 {
            p.add(&[key("jobs"), key("max_tracked")], "must be at least 1");
        }
    }
    if let Some(labels) = labels {
        check_labels(labels, p);
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, probe) in probes.iter().enumerate() {
        let Some(probe) = probe else { continue };
        let base = [key("probes"), Seg::Index(i)];
        if let Some(first) = seen.insert(probe.name.as_str(), i) {
            p.add(
                &at(&base, &["name"]),
                format!("duplicate probe name `{}` (also probes[{first}]): names must be unique", probe.name),
            );
        }
        check_probe(probe, &base, p);
    }
    if let Some(sp) = status_page {
        check_status_page(sp, p);
    }
    if let Some(t) = telemetry {
        check_telemetry(t, p);
    }
}

fn check_upstream(u: &mut Upstream, p: &mut Problems<'_>) {
    let path = [key("upstream"), key("base_url")];
    let url = &u.base_url;
    if !matches!(url.scheme(), "http" | "https") {
        p.add(&path, format!("scheme must be http or https, not `{}`", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        p.add(&path, "must name a host, as scheme://host[:port]");
    }
    if url.path() != "/" && !url.path().is_empty() {
        p.add(
            &path,
            format!(
                "must be scheme://host[:port] with no path (got path `{}`): probes and the proxy add the API paths",
                url.path()
            ),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        p.add(&path, "must not have a query string or fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        p.add(&path, "must not carry credentials: give the key as upstream.api_key");
    }
    if u.timeout.is_zero() {
        p.add(&[key("upstream"), key("timeout")], "must be longer than 0s (e.g. `60s`)");
    }
    if u.api_key.is_some() && u.api_key_file.is_some() {
        p.add(&[key("upstream"), key("api_key_file")], "give either `api_key` or `api_key_file`, not both");
    }
    if u.api_key.as_ref().is_some_and(Secret::is_empty) {
        u.api_key = None;
    }
}

fn check_admin(admin: &mut Admin, p: &mut Problems<'_>) {
    if admin.token.is_some() && admin.token_file.is_some() {
        p.add(&[key("admin"), key("token_file")], "give either `token` or `token_file`, not both");
    }
    // `${SENTINEL_ADMIN_TOKEN:-}` unset: no token.
    if admin.token.as_ref().is_some_and(Secret::is_empty) {
        admin.token = None;
    }
}

pub(crate) fn check_cluster(c: &mut Cluster, p: &mut Problems<'_>) {
    let base = [key("cluster")];
    if c.redis_url.is_some() && c.redis_url_file.is_some() {
        p.add(&at(&base, &["redis_url_file"]), "give either `redis_url` or `redis_url_file`, not both");
    }
    // `${SENTINEL_REDIS_URL:-}` unset: one replica.
    if c.redis_url.as_ref().is_some_and(Secret::is_empty) {
        c.redis_url = None;
    }
    check_redis_url(c, p);
    if c.key_prefix.is_empty()
        || c.key_prefix.len() > 64
        || !c.key_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        p.add(
            &at(&base, &["key_prefix"]),
            format!("`{}` must be 1 to 64 of A-Z, a-z, 0-9, `-`, `_`, `.`, `:`", c.key_prefix),
        );
    }
    if c.lease_ttl < Duration::from_secs(3) {
        p.add(
            &at(&base, &["lease_ttl"]),
            format!(
                "{} is too short: the lease is renewed every third of it; use at least 3s (e.g. 15s)",
                d(c.lease_ttl)
            ),
        );
    }
}

/// The Redis URL (given, or read from `redis_url_file`) is one a client can use. The URL may
/// carry a password: no message repeats it.
pub(crate) fn check_redis_url(c: &Cluster, p: &mut Problems<'_>) {
    let Some(u) = c.redis_url() else { return };
    let field = if c.redis_url_file.is_some() { "redis_url_file" } else { "redis_url" };
    let path = [key("cluster"), key(field)];
    match url::Url::parse(u.trim()) {
        Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.host_str().is_some_and(|h| !h.is_empty()) => {}
        Ok(url) if matches!(url.scheme(), "redis" | "rediss") => {
            p.add(&path, "must name a host: redis://HOST:PORT[/DB]");
        }
        Ok(url) => {
            p.add(&path, format!("scheme must be redis or rediss, not `{}` (e.g. redis://redis:6379/0)", url.scheme()));
        }
        Err(e) => p.add(&path, format!("not a URL ({e}): write redis://[:PASSWORD@]HOST:PORT[/DB]")),
    }
}

pub(crate) fn check_webhooks(w: &Webhooks, probes: &[Option<Probe>], p: &mut Problems<'_>) {
    let base = [key("webhooks")];
    if !w.public_url.is_empty() {
        match url::Url::parse(&w.public_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {}
            _ => p.add(
                &at(&base, &["public_url"]),
                format!("`{}` must be an http(s) URL without a query, e.g. https://sentinel.example.com", w.public_url),
            ),
        }
    }
    if w.grace.is_zero() {
        p.add(&at(&base, &["grace"]), "must be longer than 0s (e.g. `120s`)");
    }
    if w.listen.is_none() {
        for (i, probe) in probes.iter().enumerate() {
            if probe.as_ref().and_then(|pr| pr.follow.as_ref()).is_some_and(|f| f.webhook) {
                p.add(
                    &[key("probes"), Seg::Index(i), key("follow"), key("webhook")],
                    "needs the webhook receiver: set webhooks.listen (e.g. 0.0.0.0:9478) and webhooks.public_url",
                );
            }
        }
    }
}

pub(crate) fn check_maintenance(m: &super::Maintenance, p: &mut Problems<'_>) {
    let mut seen = std::collections::HashSet::new();
    for (i, w) in m.windows.iter().enumerate() {
        let base = [key("maintenance"), key("windows"), Seg::Index(i)];
        let good_name = !w.name.is_empty()
            && w.name.len() <= 64
            && w.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !good_name {
            p.add(&at(&base, &["name"]), format!("`{}` must be 1-64 of [a-z0-9_-], e.g. weekly-deploy", w.name));
        } else if !seen.insert(w.name.as_str()) {
            p.add(&at(&base, &["name"]), format!("`{}` names two windows", w.name));
        }
        match (&w.cron, &w.start) {
            (Some(_), Some(_)) => p.add(&base, "give `cron` or `start`, not both"),
            (None, None) => p.add(&base, "give `cron` (e.g. \"0 2 * * SUN\") or `start` (e.g. 2026-12-05T02:00:00Z)"),
            _ => {}
        }
        if w.duration.is_zero() {
            p.add(&at(&base, &["duration"]), "must be longer than 0s (e.g. `1h`)");
        }
    }
}

pub(crate) fn check_account(a: &Account, p: &mut Problems<'_>) {
    let path = |p: &mut Problems<'_>, poll: &str, path: &str, example: &str| {
        if !path.starts_with('/') || path.contains("://") {
            p.add(
                &[key("account"), key(poll), key("path")],
                format!("`{path}` must be a path starting with `/`, e.g. {example}"),
            );
        }
    };
    path(p, "queue", &a.queue.path, "/api/v6/processing/request_count");
    path(p, "models", &a.models.path, "/api/v7/llm/v1/models");
    let at_least = |p: &mut Problems<'_>, poll: &str, interval: Duration, min: Duration, why: &str| {
        if interval < min {
            p.add(
                &[key("account"), key(poll), key("interval")],
                format!("{} is too often: at least {} ({why})", d(interval), d(min)),
            );
        }
    };
    at_least(p, "queue", a.queue.interval, QUEUE_MIN_INTERVAL, "the API allows 30 request_count calls a minute");
    at_least(p, "models", a.models.interval, MODELS_MIN_INTERVAL, "the catalogue changes in days, not seconds");
    let base = [key("account"), key("balance")];
    let b = &a.balance;
    path(p, "balance", &b.path, "/api/wallet_balance");
    if b.interval.is_zero() {
        p.add(&at(&base, &["interval"]), "must be longer than 0s (e.g. `5m`)");
    }
    if b.timeout.is_zero() || b.timeout >= b.interval {
        p.add(
            &at(&base, &["timeout"]),
            format!("{} must be longer than 0s and shorter than the interval ({})", d(b.timeout), d(b.interval)),
        );
    }
}

pub(crate) fn check_slos(slos: &[Option<Slo>], probes: &[Option<Probe>], p: &mut Problems<'_>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let probe_names: Vec<&str> = probes.iter().flatten().map(|pr| pr.name.as_str()).collect();
    for (i, slo) in slos.iter().enumerate() {
        let Some(slo) = slo else { continue };
        let base = [key("slos"), Seg::Index(i)];
        if !valid_probe_name(&slo.name) {
            p.add(
                &at(&base, &["name"]),
                format!("`{}` is not a valid SLO name: use 1 to 63 of a-z, 0-9, `_` and `-`", slo.name),
            );
        }
        if let Some(first) = seen.insert(slo.name.as_str(), i) {
            p.add(&at(&base, &["name"]), format!("duplicate SLO name `{}` (also slos[{first}])", slo.name));
        }
        if !(slo.objective > 0.0 && slo.objective < 100.0) {
            p.add(
                &at(&base, &["objective"]),
                format!("{} is not a percentage between 0 and 100 (exclusive), e.g. 99.5", slo.objective),
            );
        }
        if !Slo::WINDOWS.iter().any(|(_, s)| Duration::from_secs(*s) == slo.window) {
            p.add(
                &at(&base, &["window"]),
                format!("{} is not a window the SLO rules compute: use 7d, 28d or 30d", d(slo.window)),
            );
        }
        match &slo.sli {
            Sli::Requests(r) => {
                for (j, e) in r.endpoints.iter().enumerate() {
                    if !e.starts_with('/') || e.contains('?') {
                        let mut path = at(&base, &["sli", "requests", "endpoints"]);
                        path.push(Seg::Index(j));
                        p.add(
                            &path,
                            format!("`{e}` is not an endpoint template: write e.g. /api/v6/images/fetch/{{id}}"),
                        );
                    }
                }
                if r.bad_classes.is_empty() {
                    p.add(
                        &at(&base, &["sli", "requests", "bad_classes"]),
                        "list at least one error class (or leave it out for the default)",
                    );
                }
            }
            Sli::Jobs(j) => {
                if j.max_duration.is_some_and(|m| m.is_zero()) {
                    p.add(&at(&base, &["sli", "jobs", "max_duration"]), "must be longer than 0s (or left out)");
                }
            }
            Sli::Probes(names) => {
                if names.is_empty() {
                    p.add(&at(&base, &["sli", "probes"]), "list at least one probe");
                }
                for (j, n) in names.iter().enumerate() {
                    if !probe_names.contains(&n.as_str()) {
                        let mut path = at(&base, &["sli", "probes"]);
                        path.push(Seg::Index(j));
                        p.add(&path, format!("no probe named `{n}` (probes: {})", probe_names.join(", ")));
                    }
                }
            }
        }
    }
}

fn check_proxy(proxy: &Proxy, p: &mut Problems<'_>) {
    let base = [key("proxy")];
    if proxy.upstream_timeout.is_zero() {
        p.add(&at(&base, &["upstream_timeout"]), "must be longer than 0s (e.g. `300s`)");
    }
    if proxy.max_request_body.as_u64() == 0 {
        p.add(&at(&base, &["max_request_body"]), "must be larger than 0 (e.g. `32MiB`)");
    }
    if proxy.inspect_limit.as_u64() == 0 {
        p.add(&at(&base, &["inspect_limit"]), "must be larger than 0 (e.g. `4MiB`)");
    }
    if proxy.max_connections == 0 {
        p.add(&at(&base, &["max_connections"]), "must be at least 1");
    }
    if proxy.upstream_max_connections == 0 {
        p.add(&at(&base, &["upstream_max_connections"]), "must be at least 1 (e.g. `256`)");
    }
    if proxy.retry_rate_limited.enabled && proxy.retry_rate_limited.max_wait.is_zero() {
        p.add(&at(&base, &["retry_rate_limited", "max_wait"]), "must be longer than 0s when retrying is enabled");
    }
}

fn check_labels(labels: &Labels, p: &mut Problems<'_>) {
    if labels.max_endpoints == 0 {
        p.add(&[key("labels"), key("max_endpoints")], "must be at least 1");
    }
    for (i, model) in labels.models.iter().enumerate() {
        let path = [key("labels"), key("models"), Seg::Index(i)];
        if model.trim().is_empty() || model.len() > 128 {
            p.add(&path, "a model id must be 1 to 128 characters");
        } else if model == "other" || model == "none" {
            p.add(
                &path,
                format!(
                    "`{model}` is reserved: the model label uses it for ids not listed and for requests without one"
                ),
            );
        } else if labels.models[..i].contains(model) {
            p.add(&path, format!("`{model}` is listed twice"));
        }
    }
}

fn valid_probe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_probe(probe: &Probe, base: &[Seg], p: &mut Problems<'_>) {
    if !valid_probe_name(&probe.name) {
        p.add(
            &at(base, &["name"]),
            format!("`{}` is not a valid probe name: use 1 to 63 of a-z, 0-9, `_` and `-`", probe.name),
        );
    }
    if probe.interval.is_zero() {
        p.add(&at(base, &["interval"]), "must be longer than 0s (e.g. `60s`)");
    }
    if probe.timeout.is_zero() {
        p.add(&at(base, &["timeout"]), "must be longer than 0s (e.g. `30s`)");
    } else if probe.timeout >= probe.interval {
        p.add(
            &at(base, &["timeout"]),
            format!(
                "{} must be shorter than the interval ({}) so that runs cannot overlap",
                d(probe.timeout),
                d(probe.interval)
            ),
        );
    }
    let req = &probe.request;
    if !req.path.starts_with('/') || req.path.contains("://") {
        p.add(
            &at(base, &["request", "path"]),
            format!("`{}` must be a path starting with `/` (the host comes from upstream.base_url)", req.path),
        );
    }
    for name in req.headers.0.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.add(&at(base, &["request", "headers", name]), format!("`{name}` is not a valid HTTP header name"));
        }
    }
    for (name, value) in &req.headers.0 {
        if http::HeaderValue::from_str(value).is_err() {
            p.add(
                &at(base, &["request", "headers", name]),
                "the value is not a valid HTTP header value (control characters?)",
            );
        }
    }
    if req.inject_key == InjectKey::Body && req.body.as_ref().is_some_and(|b| !b.is_object()) {
        p.add(
            &at(base, &["request", "body"]),
            "must be a mapping for the key to be injected into it (or set `inject_key: false`)",
        );
    }
    if let Some(f) = &probe.follow {
        let fb = at(base, &["follow"]);
        match &f.fetch_path {
            Some(path) if !path.starts_with('/') || !path.contains("{id}") => p.add(
                &at(&fb, &["fetch_path"]),
                format!("`{path}` must be a path containing `{{id}}`, e.g. /api/v6/images/fetch/{{id}}"),
            ),
            None if probe.fetch_path().is_none() => p.add(
                &at(&fb, &["fetch_path"]),
                format!("`{}` names no family to poll beside: set one, e.g. /api/v6/images/fetch/{{id}}", req.path),
            ),
            _ => {}
        }
        if f.poll_interval.is_zero() {
            p.add(&at(&fb, &["poll_interval"]), "must be longer than 0s (e.g. `5s`)");
        }
        if f.max_wait <= f.poll_interval {
            p.add(
                &at(&fb, &["max_wait"]),
                format!("{} must be longer than poll_interval ({})", d(f.max_wait), d(f.poll_interval)),
            );
        } else if f.max_wait >= probe.timeout {
            p.add(
                &at(&fb, &["max_wait"]),
                format!("{} is not shorter than the probe's timeout ({}): the run would be cut by the timeout first; raise timeout (and interval) or lower max_wait", d(f.max_wait), d(probe.timeout)),
            );
        }
    }
    if let Some(e) = &probe.expect {
        check_expect(e, &at(base, &["expect"]), p);
    }
}

fn check_expect(e: &Expect, base: &[Seg], p: &mut Problems<'_>) {
    for (i, code) in e.http_status.iter().enumerate() {
        if !(100..=599).contains(code) {
            let mut path = at(base, &["http_status"]);
            path.push(Seg::Index(i));
            p.add(&path, format!("{code} is not an HTTP status (100 to 599)"));
        }
    }
    if e.max_duration.is_some_and(|m| m.is_zero()) {
        p.add(&at(base, &["max_duration"]), "must be longer than 0s");
    }
    if (e.error_class.is_some() || e.reason.is_some())
        && matches!(e.status, Some(Outcome::Success | Outcome::Processing))
    {
        p.add(
            &at(base, &["status"]),
            "error_class and reason describe an error answer; drop them or expect `status: error`",
        );
    }
    if let Some(o) = &e.output {
        let ob = at(base, &["output"]);
        if o.count == 0 {
            p.add(&at(&ob, &["count"]), "must be at least 1");
        }
        if o.max_bytes.as_u64() == 0 {
            p.add(&at(&ob, &["max_bytes"]), "must be larger than 0 (e.g. `20MiB`)");
        }
        if o.timeout.is_zero() {
            p.add(&at(&ob, &["timeout"]), "must be longer than 0s (e.g. `30s`)");
        }
        if let OutputSize::Fixed { width, height } = o.size {
            if width == 0 || height == 0 {
                p.add(&at(&ob, &["size"]), "width and height must be at least 1");
            }
        }
        for (i, h) in o.hosts.iter().enumerate() {
            if h.is_empty() || h.contains('/') || h.contains(':') {
                let mut path = at(&ob, &["hosts"]);
                path.push(Seg::Index(i));
                p.add(&path, format!("`{h}` must be a host name, e.g. pub-3626123a908346a7a8be8d9295f44e26.r2.dev"));
            }
        }
        if matches!(e.status, Some(Outcome::Error | Outcome::Processing)) {
            p.add(&at(&ob, &[]), "output checks need a successful answer: drop them or expect `status: success`");
        }
    }
    for (i, check) in e.json.iter().enumerate() {
        let mut path = at(base, &["json"]);
        path.push(Seg::Index(i));
        if !check.pointer.is_empty() && !check.pointer.starts_with('/') {
            path.push(key("pointer"));
            p.add(&path, format!("`{}` is not a JSON pointer: it starts with `/`, e.g. /output/0", check.pointer));
        } else if check.exists.is_none() && check.equals.is_none() {
            p.add(&path, "say what to check: `exists: true|false` or `equals: VALUE`");
        }
    }
}

fn check_status_page(sp: &StatusPage, p: &mut Problems<'_>) {
    let base = [key("status_page")];
    if !matches!(sp.url.scheme(), "http" | "https") {
        p.add(&at(&base, &["url"]), format!("scheme must be http or https, not `{}`", sp.url.scheme()));
    }
    if sp.interval.is_zero() {
        p.add(&at(&base, &["interval"]), "must be longer than 0s (e.g. `60s`)");
    }
    if sp.timeout.is_zero() || sp.timeout >= sp.interval {
        p.add(
            &at(&base, &["timeout"]),
            format!("{} must be longer than 0s and shorter than the interval ({})", d(sp.timeout), d(sp.interval)),
        );
    }
    if sp.max_components == 0 {
        p.add(&at(&base, &["max_components"]), "must be at least 1");
    }
}

fn check_telemetry(t: &Telemetry, p: &mut Problems<'_>) {
    let base = [key("telemetry")];
    if t.service_name.trim().is_empty() {
        p.add(&at(&base, &["service_name"]), "must not be empty");
    }
    if !t.otlp.endpoint.is_empty() {
        match url::Url::parse(&t.otlp.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => p.add(
                &at(&base, &["otlp", "endpoint"]),
                format!(
                    "`{}` is not an http(s) URL, e.g. http://otel-collector:4317 (or empty for no traces)",
                    t.otlp.endpoint
                ),
            ),
        }
    }
    if !(0.0..=1.0).contains(&t.otlp.sample_ratio) {
        p.add(
            &at(&base, &["otlp", "sample_ratio"]),
            format!("{} is not a ratio between 0.0 and 1.0", t.otlp.sample_ratio),
        );
    }
    for name in t.otlp.headers.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.add(&at(&base, &["otlp", "headers", name]), format!("`{name}` is not a valid HTTP header name"));
        }
    }
}

/// Probes that inject the key need one.
pub(crate) fn key_needed(upstream: &Upstream, probes: &[Option<Probe>], p: &mut Problems<'_>) {
    if upstream.api_key.as_ref().is_some_and(|k| !k.is_empty()) || upstream.api_key_file.is_some() {
        return;
    }
    let needing: Vec<&str> = probes
        .iter()
        .flatten()
        .filter(|pr| pr.request.inject_key.injects() && !pr.request.carries_a_key())
        .map(|pr| pr.name.as_str())
        .collect();
    if !needing.is_empty() {
        p.add(
            &[key("upstream")],
            format!(
                "no api_key (or api_key_file), but probe{} `{}` inject{} it: set one, or `inject_key: none` on the probe",
                if needing.len() == 1 { "" } else { "s" },
                needing.join("`, `"),
                if needing.len() == 1 { "s" } else { "" }
            ),
        );
    }
}
