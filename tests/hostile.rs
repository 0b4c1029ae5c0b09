//! Hostile clients and upstreams, on every port the agent opens (proxy, admin, webhooks):
//! slowloris, oversized headers and bodies, request-smuggling shapes, and upstreams that reset,
//! stop short, never end, bomb, talk garbage, dance the 100-continue or speak HTTP/1.0. Each is
//! answered in a defined way, counted, and the agent stays healthy for everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Agent, Scrape, emulator, get, http, json_200, tcp_server};
use modelslab_sentinel::sim::Scenario;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the header read timeout is (`src/server.rs`), as the docs say.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Sends `request` and reads what comes back until the server closes, or `wait` passes.
async fn exchange(url: &str, request: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr(url)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The agent is still fine: `/healthz` answers and a request goes through the proxy.
async fn still_healthy(agent: &Agent, path: &str) {
    let (code, _) = get(&format!("{}/healthz", agent.admin)).await;
    assert_eq!(code, 200);
    let r = http().post(format!("{}{path}", agent.proxy)).body(r#"{"model_id":"flux"}"#).send().await.unwrap();
    assert!(r.status().is_success() || r.status().is_client_error(), "{}", r.status());
}

// ------------------------------------------------------------------------- slowloris

async fn timed(f: impl AsyncFnOnce() -> bool) -> Duration {
    let t = Instant::now();
    assert!(f().await, "the normal request failed");
    t.elapsed()
}

/// Latencies of `n` fresh-connection requests to each port: proxy, admin, webhooks.
async fn normal_latencies(agent: &Agent, hooks: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for _ in 0..n {
        // A client per request: every request needs the port to accept a new connection.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let c = client.clone();
        out.push(
            timed(async || {
                let r = c.post(format!("{}/api/v6/images/text2img", agent.proxy)).body(r#"{"key":"k","prompt":"p"}"#);
                r.send().await.is_ok_and(|r| r.status().is_success())
            })
            .await,
        );
        let c = client.clone();
        out.push(timed(async || c.get(format!("{}/healthz", agent.admin)).send().await.is_ok()).await);
        let c = client.clone();
        out.push(timed(async || c.post(format!("{hooks}/hooks/nope")).body("{}").send().await.is_ok()).await);
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_every_port_neither_stops_normal_clients_nor_holds_connections_past_the_header_timeout() {
    let sim = emulator(Scenario { sync_ratio: 1.0, ..Scenario::default() }).await;
    let agent = Agent::start(&format!(
        "upstream:\n  base_url: {}\n  api_key: k\nproxy:\n  enabled: true\nwebhooks:\n  listen: 127.0.0.1:0\n",
        sim.url
    ))
    .await;
    let hooks = format!("http://{}", agent.handle.webhooks_addr.unwrap());
    let before = median(normal_latencies(&agent, &hooks, 10).await);

    // 1,000 slow clients on the proxy and 200 on each of the other ports, all sending their
    // headers one byte a second.
    let mut slow = Vec::new();
    for (url, n) in [(agent.proxy.as_str(), 1000), (agent.admin.as_str(), 200), (hooks.as_str(), 200)] {
        for _ in 0..n {
            let mut s = TcpStream::connect(addr(url)).await.unwrap();
            s.write_all(b"POST /api/v6/images/text2img HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            slow.push(s);
        }
    }
    let opened = Instant::now();
    let slow = Arc::new(tokio::sync::Mutex::new(slow));
    let dripping = {
        let slow = slow.clone();
        tokio::spawn(async move {
            // Bounded: a byte a second for at most the timeout and a margin.
            for _ in 0..(HEADER_READ_TIMEOUT.as_secs() + 10) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for s in slow.lock().await.iter_mut() {
                    let _ = s.write_all(b"X").await;
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = normal_latencies(&agent, &hooks, 10).await;
    let worst = *during.iter().max().unwrap();
    let during = median(during);
    assert!(
        during <= (before * 5).max(before + Duration::from_millis(50)),
        "normal clients slowed from a median of {before:?} to {during:?}"
    );
    assert!(worst < Duration::from_secs(2), "a normal request took {worst:?} beside the slow clients");

    // Past the header timeout every slow connection has been closed by the agent.
    let deadline = opened + HEADER_READ_TIMEOUT + Duration::from_secs(8);
    tokio::time::sleep_until(tokio::time::Instant::from_std(opened + HEADER_READ_TIMEOUT)).await;
    let mut open = 0;
    for s in slow.lock().await.iter_mut() {
        let mut buf = [0u8; 256];
        let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {} // an answer (408), EOF or a reset: closed
            Err(_) => open += 1,
        }
    }
    dripping.abort();
    assert_eq!(open, 0, "{open} slow connections still open {:?} after they started", opened.elapsed());
    still_healthy(&agent, "/api/v6/images/text2img").await;
    agent.stop().await;
    sim.stop().await;
}

// ------------------------------------------------------------------------- framing

/// An upstream that records the raw head of every request and answers 200 with a JSON body.
async fn recording_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let url = tcp_server(move |mut s| {
        let seen = seen.clone();
        async move {
            let mut buf = Vec::new();
            while let Some((head, _)) = common::read_request(&mut s, &mut buf).await {
                seen.lock().unwrap().push(head);
                if s.write_all(&json_200(br#"{"status":"success","id":1,"output":[]}"#)).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (url, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_ambiguous_requests_are_refused_on_every_port_and_never_forwarded_ambiguously() {
    let (upstream, heads) = recording_upstream().await;
    let agent = Agent::start(&format!(
        "upstream:\n  base_url: {upstream}\n  api_key: k\nproxy:\n  enabled: true\n  max_request_body: 1MiB\n\
         webhooks:\n  listen: 127.0.0.1:0\n"
    ))
    .await;
    let hooks = format!("http://{}", agent.handle.webhooks_addr.unwrap());
    let wait = Duration::from_secs(5);
    let big_header = format!("X-Big: {}\r\n", "a".repeat(70 * 1024));

    for (port, url, path) in [
        ("proxy", &agent.proxy, "/api/v6/images/text2img"),
        ("admin", &agent.admin, "/-/reload"),
        ("webhooks", &hooks, "/hooks/t"),
    ] {
        // Headers over 64 KiB: 431.
        let a = exchange(url, format!("POST {path} HTTP/1.1\r\nHost: x\r\n{big_header}\r\n").as_bytes(), wait).await;
        assert_eq!(status_of(&a), 431, "{port}: oversized headers: {a:.200}");

        // Content-Length with Transfer-Encoding (RFC 9112 §6.3): the chunked framing wins, the
        // Content-Length is dropped, and the connection is closed after the answer, so what
        // follows the last chunk (here a second request) is never read as a request.
        let smuggle = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
             0\r\n\r\nPOST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let a = exchange(url, smuggle.as_bytes(), wait).await;
        assert_eq!(a.matches("HTTP/1.1 ").count(), 1, "{port}: one answer, then closed: {a:.400}");
        assert!(a.to_ascii_lowercase().contains("connection: close"), "{port}: {a:.400}");

        // The other smuggling shapes (RFC 9112 §6.1, §6.3, §5.2): 400, the connection closed.
        for (shape, request) in [
            (
                "two different Content-Lengths",
                format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{{}}"),
            ),
            (
                "an obs-folded header",
                format!("POST {path} HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\n{{}}"),
            ),
            (
                "a Transfer-Encoding other than chunked last",
                format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
                ),
            ),
            (
                "a bad chunk size",
                format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"),
            ),
        ] {
            let a = exchange(url, request.as_bytes(), wait).await;
            if shape == "a bad chunk size" && port == "admin" {
                // /-/reload (allowed from loopback) never reads a body: it answers, and the connection
                // closes because the body was not read to its end.
                assert_eq!(status_of(&a), 200, "{port}: {shape}: {a:.300}");
            } else {
                assert_eq!(status_of(&a), 400, "{port}: {shape}: {a:.300}");
            }
            assert_eq!(a.matches("HTTP/1.1").count(), 1, "{port}: {shape}: one answer, then closed: {a:.300}");
        }
    }

    // A body declared larger than max_request_body: 413 at once, without waiting for the body.
    let t = Instant::now();
    let mut s = TcpStream::connect(addr(&agent.proxy)).await.unwrap();
    s.write_all(b"POST /api/v6/images/text2img HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n{")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(wait, s.read(&mut buf)).await.unwrap().unwrap();
    let a = String::from_utf8_lossy(&buf[..n]);
    assert_eq!(status_of(&a), 413, "{a}");
    assert!(a.contains("x-modelslab-sentinel: synthetic"), "{a}");
    assert!(t.elapsed() < Duration::from_secs(2), "413 took {:?}", t.elapsed());
    // The webhook receiver refuses a large delivery too.
    let r = http().post(format!("{hooks}/hooks/t")).body(vec![b'x'; 200 * 1024]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);

    // Nothing ambiguous reached the upstream: the one request with both framings arrived with
    // chunked framing alone, nothing was smuggled, nothing refused was forwarded.
    let seen = heads.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = seen[0].to_ascii_lowercase();
    assert!(head.starts_with("post /api/v6/images/text2img "), "{head}");
    assert!(head.contains("transfer-encoding: chunked") && !head.contains("content-length"), "{head}");
    still_healthy(&agent, "/api/v6/images/text2img").await;
    assert_eq!(heads.lock().unwrap().len(), 2);
    let m = agent.metrics();
    assert_eq!(m.metric("modelslab_proxy_synthetic_responses_total").label("reason", "body_too_large").sum(), 1.0);
    agent.stop().await;
}

// ------------------------------------------------------------------------- upstreams

/// What the hostile upstream answers when it answers properly.
const ANSWER: &[u8] = br#"{"status":"success","id":9,"output":["https://cdn.example/x.png"]}"#;

/// An upstream whose behaviour is chosen by the request path (see each arm).
async fn hostile_upstream(ended: Arc<Mutex<Vec<&'static str>>>) -> String {
    // 64 MiB of zeros as gzip (about 64 KiB), built once.
    let bomb = tokio::task::spawn_blocking(|| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for _ in 0..64 {
            gz.write_all(&[0u8; 1 << 20]).unwrap();
        }
        Arc::new(gz.finish().unwrap())
    })
    .await
    .unwrap();
    tcp_server(move |mut s| {
        let ended = ended.clone();
        let bomb = bomb.clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let end = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end;
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let path = head.split(' ').nth(1).unwrap_or("").to_owned();
            match path.as_str() {
                "/reset-mid-body" => {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10000\r\n\r\n",
                        )
                        .await;
                    let _ = s.write_all(&[b' '; 1000]).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = s.set_zero_linger(); // close with RST
                }
                "/short" => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"status\":").await;
                    let _ = s.shutdown().await;
                }
                "/endless" => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").await;
                    let piece = format!("{:x}\r\n{}\r\n", 65536, " ".repeat(65536));
                    // Bounded: 10 GiB or 60 s, far beyond what the client reads.
                    let t = Instant::now();
                    for _ in 0..160_000 {
                        if s.write_all(piece.as_bytes()).await.is_err() || t.elapsed() > Duration::from_secs(60) {
                            break;
                        }
                    }
                    ended.lock().unwrap().push("endless");
                }
                "/bomb" => {
                    let body = &*bomb;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body).await;
                }
                "/garbage" => {
                    let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 garbage\r\n\r\n").await;
                }
                "/continue" => {
                    let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = buf.split_off(end + 4);
                    while body.len() < len {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => body.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = s.write_all(&json_200(&body)).await;
                }
                "/http10" => {
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n").await;
                    let _ = s.write_all(ANSWER).await;
                    let _ = s.shutdown().await;
                }
                _ => {
                    let _ = s.write_all(&json_200(ANSWER)).await;
                }
            }
        }
    })
    .await
}

fn synthetic_answers(m: &Scrape, reason: &str) -> f64 {
    m.metric("modelslab_proxy_synthetic_responses_total").label("reason", reason).sum()
}

/// POSTs through the proxy; the status, whether the body ended cleanly, and its length.
async fn through(proxy: &str, path: &str) -> (u16, Result<usize, String>, bool) {
    let r = http().post(format!("{proxy}{path}")).body(r#"{"model_id":"flux"}"#).send().await.unwrap();
    let status = r.status().as_u16();
    let synthetic = r.headers().contains_key("x-modelslab-sentinel");
    let body = r.bytes().await.map(|b| b.len()).map_err(|e| format!("{e:?}"));
    (status, body, synthetic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_upstreams_are_answered_in_a_defined_way_and_counted() {
    let ended = Arc::new(Mutex::new(Vec::new()));
    let upstream = hostile_upstream(ended.clone()).await;
    let agent = Agent::start(&format!(
        "upstream:\n  base_url: {upstream}\n  api_key: k\nproxy:\n  enabled: true\n  upstream_timeout: 5s\n"
    ))
    .await;
    let p = agent.proxy.clone();

    // Reset in the middle of the body, or a body shorter than its Content-Length: the client gets
    // the head and the bytes that came, then the same abrupt end (never a complete answer).
    for path in ["/reset-mid-body", "/short"] {
        let (status, body, synthetic) = through(&p, path).await;
        assert_eq!((status, synthetic), (200, false), "{path}");
        assert!(body.is_err(), "{path}: the client must see the body break off, got {body:?}");
    }

    // A status line of garbage: a synthetic 502, counted as the upstream being unreachable.
    let (status, _, synthetic) = through(&p, "/garbage").await;
    assert_eq!((status, synthetic), (502, true));

    // An endless chunked body streams; when the client has had enough and leaves, the upstream
    // connection is closed (the upstream's writes fail) rather than drained forever.
    let r = http().post(format!("{p}/endless")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r;
    let mut got = 0usize;
    while got < 32 << 20 {
        got += stream.chunk().await.unwrap().unwrap().len();
    }
    drop(stream);
    common::eventually(Duration::from_secs(10), "the endless upstream to see the proxy leave", async || {
        ended.lock().unwrap().contains(&"endless")
    })
    .await;

    // A gzip bomb (64 MiB of zeros in a few hundred KiB) passes through as it came, never inflated
    // beyond the inspection limit.
    let r = http().post(format!("{p}/bomb")).body("{}").send().await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let declared: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), declared);
    assert!(declared < 1 << 20, "{declared}");

    // The 100-continue dance: the client waits for 100 before its body, then gets the answer.
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    s.write_all(b"POST /continue HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 13\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100 Continue\r\n"), "{interim}");
    s.write_all(b"{\"status\":\"x\"").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&out).contains("{\"status\":\"x\"") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("{\"status\":\"x\""), "{answer}");

    // HTTP/1.0 without a length: the body ends when the upstream closes; the client gets all of it.
    let (status, body, synthetic) = through(&p, "/http10").await;
    assert_eq!((status, synthetic), (200, false));
    assert_eq!(body, Ok(ANSWER.len()));

    // Counted: every exchange above is in the request counters, the garbage one as a transport
    // error; the broken bodies are not recorded as successes.
    let m = agent.metrics();
    assert_eq!(synthetic_answers(&m, "upstream_unreachable"), 1.0, "{}", m.text());
    let errors =
        |class: &str| m.metric("modelslab_errors_total").label("source", "proxy").label("error_class", class).sum();
    assert_eq!(errors("transport"), 3.0, "garbage, reset and short: {}", m.text());
    let ok = m.metric("modelslab_requests_total").label("source", "proxy").label("outcome", "success").sum();
    assert_eq!(ok, 2.0, "the 100-continue and HTTP/1.0 answers: {}", m.text());
    still_healthy(&agent, "/ok").await;
    agent.stop().await;
}
