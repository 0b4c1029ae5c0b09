//! One proxied request: refuse what must not be forwarded, rebuild the request for the upstream,
//! send it (streamed, or buffered and replayed when `retry_rate_limited` holds 429s), and hand
//! the answer to its [`Exchange`] as it streams back.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::Instrument;

use super::body::full;
use super::body::{ClientBodyFailed, Inspect, RequestSeen, RequestTap, ResponseTap, TooLarge};
use super::exchange::{Exchange, Finished};
use super::inspect::{WHOLE_MAX, is_fetch_path, rewritable, small, uninspected_reason};
use super::{Proxy, ProxyBody, REQUEST_HEAD, Refusal, Synthetic};
use crate::classify::{self, Context, Failure, RequestKind};
use crate::config::Config;
use crate::observe::{self, RateLimitRetry};

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

impl Proxy {
    /// Handles one request; never fails (failures become synthetic answers).
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let config = self.inner.config.borrow().clone();
        let endpoint = self.inner.observer.endpoint_label(req.uri().path());
        let server = observe::server_span(req.method().as_str(), req.uri().path(), &endpoint, req.headers());
        if let Some(why) = self.refusal(&req, &config) {
            return self.synthetic(Synthetic::Refused(why), &server);
        }
        let max_body = config.proxy.max_request_body.as_u64();
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return self.synthetic(Synthetic::BodyTooLarge, &server);
        }

        let (parts, incoming) = req.into_parts();
        let kind = if is_fetch_path(parts.uri.path()) { RequestKind::Fetch } else { RequestKind::Submit };
        let seen = Arc::new(RequestSeen::default());
        let tap = RequestTap::new(incoming, max_body, REQUEST_HEAD, seen.clone());
        let exchange = Exchange::new(self.clone(), &parts, endpoint, kind, seen.clone(), config.clone(), server);

        let retry = &config.proxy.retry_rate_limited;
        if retry.enabled {
            // Held requests are replayed, so their body is read first (within the limit).
            let body = match tap.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) if TooLarge::caused(&*e) => return self.synthetic(Synthetic::BodyTooLarge, &exchange.server),
                Err(_) => return self.synthetic(Synthetic::BodyUnreadable, &exchange.server),
            };
            return self.forward_with_retries(parts, body, exchange, retry.max_wait).await;
        }
        match self.first_request(&parts, tap.boxed(), &config) {
            Ok((r, target)) => {
                // Sent once more only if it never reached the upstream, and then only if its body
                // is whole in hand.
                let again = || upstream_request(&parts, full(seen.whole()?), &target).ok();
                self.forward(r, exchange, again).await
            }
            Err(why) => self.synthetic(Synthetic::Refused(why), &exchange.server),
        }
    }

    /// The request for the upstream under `config`, with the target it went to (for sending it
    /// again).
    fn first_request(
        &self,
        parts: &http::request::Parts,
        body: ProxyBody,
        config: &Arc<Config>,
    ) -> Result<(Request<ProxyBody>, Arc<Target>), Refusal> {
        let target = self.target(config)?;
        Ok((upstream_request(parts, body, &target)?, target))
    }

    /// The upstream target of `config`: the one kept, or made and kept when the config changed.
    fn target(&self, config: &Arc<Config>) -> Result<Arc<Target>, Refusal> {
        let kept = self.inner.target.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(target) = kept.filter(|t| t.is_of(config)) {
            return Ok(target);
        }
        let target = Arc::new(Target::of(config)?);
        *self.inner.target.write().unwrap_or_else(PoisonError::into_inner) = Some(target.clone());
        Ok(target)
    }

    /// Why a request must not be forwarded, if it must not.
    fn refusal(&self, req: &Request<Incoming>, config: &Config) -> Option<Refusal> {
        if req.method() == Method::CONNECT {
            return Some(Refusal::Connect);
        }
        if let Some(authority) = req.uri().authority() {
            let upstream = &config.upstream.base_url;
            let port = authority.port_u16().unwrap_or(if req.uri().scheme_str() == Some("https") { 443 } else { 80 });
            let upstream_itself = upstream.host_str().is_some_and(|h| h.eq_ignore_ascii_case(authority.host()))
                && upstream.port_or_known_default() == Some(port);
            let ours = authority.as_str() == self.inner.local.to_string();
            if !upstream_itself && !ours {
                return Some(Refusal::OtherHost);
            }
        }
        None
    }

    /// Sends one request upstream and streams the answer back, classifying it as it ends.
    async fn forward(
        &self,
        req: Request<ProxyBody>,
        exchange: Exchange,
        again: impl FnOnce() -> Option<Request<ProxyBody>>,
    ) -> Response<ProxyBody> {
        let timeout = exchange.config.proxy.upstream_timeout;
        let upstream = &self.inner.upstream;
        // Every upstream connection busy: wait in turn, never answered while waiting; the wait
        // is the proxy's, not the API's, and is not in the exchange's duration.
        let Ok(slot) = tokio::time::timeout(timeout, upstream.slot()).await else {
            return self.synthetic(Synthetic::UpstreamTimeout, &exchange.server);
        };
        let mut exchange = exchange;
        exchange.sent_now();
        let sent = upstream.send(req, again).instrument(exchange.client.clone());
        let response = match tokio::time::timeout(timeout, sent).await {
            Err(_) => return exchange.failed(Failure::Timeout),
            Ok(Err(e)) if TooLarge::caused(&*e) => return self.synthetic(Synthetic::BodyTooLarge, &exchange.server),
            // The client's fault, not the API's: a 400, and no transport error for the API.
            Ok(Err(e)) if ClientBodyFailed::caused(&*e) => {
                return self.synthetic(Synthetic::BodyUnreadable, &exchange.server);
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, endpoint = %exchange.endpoint, "upstream unreachable");
                return exchange.failed(Failure::Transport);
            }
            Ok(Ok(r)) => r,
        };
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let inspect = exchange.config.proxy.inspect_limit.as_u64() as usize;
        let uninspected = uninspected_reason(&parts.headers);
        if uninspected.is_none() {
            if exchange.config.proxy.rewrite_fetch_result && rewritable(&parts.headers, inspect) {
                return exchange.whole(parts, incoming, inspect, true, timeout, slot).await;
            }
            // A small answer of known length (the API's JSON, nearly always) is read whole before
            // it is answered, so that a client that reads slowly or not at all (HTTP/2 window
            // starvation) holds no upstream connection; bigger and streamed answers stream.
            if small(&parts.headers) && !classify::stream::is_event_stream(&parts.headers) {
                return exchange.whole(parts, incoming, WHOLE_MAX, false, timeout, slot).await;
            }
        }
        let keeping = if uninspected.is_some() {
            Inspect::Nothing
        } else if parts.status.is_success() && classify::stream::is_event_stream(&parts.headers) {
            Inspect::Events
        } else {
            Inspect::Copy(inspect)
        };
        let finish = Box::new(Finished {
            exchange,
            status: parts.status.as_u16(),
            headers: parts.headers.clone(),
            uninspected,
            _slot: slot,
        });
        let body = ResponseTap::new(incoming, keeping, finish);
        Response::from_parts(parts, body.boxed())
    }

    /// Forwards a buffered request, holding and replaying it while the API answers 429 and its
    /// `retry_after` fits within `max_wait`.
    async fn forward_with_retries(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        exchange: Exchange,
        max_wait: Duration,
    ) -> Response<ProxyBody> {
        let held_since = Instant::now();
        loop {
            let attempt = exchange.again();
            let (req, target) = match self.first_request(&parts, full(body.clone()), &attempt.config) {
                Ok(built) => built,
                Err(why) => return self.synthetic(Synthetic::Refused(why), &exchange.server),
            };
            let again = || upstream_request(&parts, full(body.clone()), &target).ok();
            let response = self.forward(req, attempt, again).await;
            if response.status() != StatusCode::TOO_MANY_REQUESTS {
                return response;
            }
            let (resp_parts, resp_body) = response.into_parts();
            let bytes = resp_body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let c = classify::classify(429, &resp_parts.headers, &bytes, &Context::new(RequestKind::Submit));
            let wait = Duration::from_secs_f64(c.details().retry_after.unwrap_or(1.0).max(0.1));
            if held_since.elapsed() + wait > max_wait {
                return Response::from_parts(resp_parts, full(bytes));
            }
            self.inner.observer.emit(RateLimitRetry { wait });
            tokio::time::sleep(wait).await;
        }
    }
}

/// Where requests go: `upstream.base_url` taken apart once per config, so that a request's URI
/// and `Host` are assembled from shared pieces rather than formatted and parsed each time.
pub(super) struct Target {
    /// The config it was made from.
    config: Arc<Config>,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    /// The base URL's path without its trailing `/` (empty for none).
    prefix: String,
}

impl Target {
    /// The target of `config`'s `upstream.base_url`.
    pub(super) fn of(config: &Arc<Config>) -> Result<Target, Refusal> {
        let base = &config.upstream.base_url;
        let scheme = Scheme::try_from(base.scheme()).map_err(|_| Refusal::BadUpstreamHost)?;
        let host = base.host_str().ok_or(Refusal::BadUpstreamHost)?;
        let authority = match base.port() {
            Some(port) => Authority::try_from(format!("{host}:{port}")),
            None => Authority::try_from(host),
        }
        .map_err(|_| Refusal::BadUpstreamHost)?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| Refusal::BadUpstreamHost)?;
        let prefix = base.path().trim_end_matches('/').to_owned();
        Ok(Target { config: config.clone(), scheme, authority, host, prefix })
    }

    /// Whether this is the target of `config`.
    pub(super) fn is_of(&self, config: &Arc<Config>) -> bool {
        Arc::ptr_eq(&self.config, config)
    }

    /// The upstream URI of a request's path and query.
    fn uri(&self, request: &Uri) -> Result<Uri, Refusal> {
        let path_and_query = match request.path_and_query() {
            Some(p) if self.prefix.is_empty() => p.clone(),
            p => {
                let p = p.map_or("/", PathAndQuery::as_str);
                PathAndQuery::try_from(format!("{}{p}", self.prefix)).map_err(|_| Refusal::BadPath)?
            }
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| Refusal::BadPath)
    }
}

/// The request as the upstream gets it: its URI, hop-by-hop headers gone, `Host` the upstream's.
fn upstream_request(
    parts: &http::request::Parts,
    body: ProxyBody,
    target: &Target,
) -> Result<Request<ProxyBody>, Refusal> {
    let uri = target.uri(&parts.uri)?;
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.insert(header::HOST, target.host.clone());
    let mut req =
        Request::builder().method(parts.method.clone()).uri(uri).body(body).map_err(|_| Refusal::Unbuildable)?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Removes the hop-by-hop headers, those `Connection` lists included.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names `Connection` lists beyond the usual `keep-alive`/`close` (nearly always none).
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| {
            !name.eq_ignore_ascii_case("close") && !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_str()))
        })
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(listed.iter()) {
        headers.remove(name);
    }
    // `Upgrade` is hop-by-hop only as part of a Connection: upgrade handshake, which is not
    // forwarded; a stray one is dropped the same way.
    headers.remove(header::UPGRADE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_the_rest_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-drop-me"));
        h.insert("x-drop-me", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("key", HeaderValue::from_static("k"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["content-type", "key"]);
    }
}
