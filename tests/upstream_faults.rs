//! The proxy against an upstream that misbehaves at the connection level: keep-alive
//! connections closed while idle, at random moments. A request that never reached the upstream
//! is sent again on a fresh connection; none becomes a synthetic 502, and none is sent twice.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Agent, eventually, http, json_200, read_request, tcp_server};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// The requests an upstream saw, by the `n` each carried.
type Seen = Arc<Mutex<HashMap<u64, usize>>>;

/// An HTTP/1.1 upstream that answers every request and, after a third of its answers, closes
/// the connection once it has been idle for a random 0–2 ms, without saying so beforehand.
async fn flaky_upstream(seen: Seen) -> String {
    tcp_server(move |mut stream| {
        let seen = seen.clone();
        async move {
            let mut buf = Vec::new();
            while let Some((_, body)) = read_request(&mut stream, &mut buf).await {
                let n = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["n"].as_u64()).unwrap_or(0);
                *seen.lock().unwrap().entry(n).or_default() += 1;
                let answer = format!(r#"{{"status":"success","id":{n},"output":[]}}"#);
                if stream.write_all(&json_200(answer.as_bytes())).await.is_err() {
                    return;
                }
                if rand::random::<f64>() < 0.33 {
                    let idle = Duration::from_micros(rand::random::<u64>() % 2000);
                    // Close only if the proxy sent nothing more meanwhile: an idle close.
                    tokio::time::sleep(idle).await;
                    let mut peek = [0u8; 1];
                    match tokio::time::timeout(Duration::ZERO, stream.peek(&mut peek)).await {
                        Ok(Ok(n)) if n > 0 => continue,
                        _ => return,
                    }
                }
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_closed_at_random_by_the_upstream_never_become_synthetic_502s() {
    let seen: Seen = Arc::default();
    let upstream = flaky_upstream(seen.clone()).await;
    let agent = Agent::start(&format!("upstream:\n  base_url: {upstream}\nproxy:\n  enabled: true\n")).await;
    let client = http();
    let (workers, each) = (20u64, 100u64);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, url) = (client.clone(), format!("{}/api/v6/images/text2img", agent.proxy));
        tasks.push(tokio::spawn(async move {
            let mut synthetic = Vec::new();
            for i in 0..each {
                let n = w * each + i + 1;
                let r = client.post(&url).json(&json!({"key": "k", "prompt": "p", "n": n})).send().await.unwrap();
                if r.headers().contains_key("x-modelslab-sentinel") {
                    synthetic.push((n, r.status().as_u16(), r.text().await.unwrap()));
                } else {
                    assert_eq!(r.status(), 200);
                }
                tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % 3000)).await;
            }
            synthetic
        }));
    }
    let mut synthetic = Vec::new();
    for t in tasks {
        synthetic.extend(t.await.unwrap());
    }
    let seen = seen.lock().unwrap().clone();
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "requests sent twice: {twice:?}");
    let reached = synthetic.iter().filter(|(n, _, _)| seen.contains_key(n)).count();
    assert!(
        synthetic.is_empty(),
        "{} synthetic answers, {reached} of them for requests the upstream saw",
        synthetic.len()
    );
    assert_eq!(seen.len() as u64, workers * each, "every request reached the upstream once");
    agent.stop().await;
}

/// An upstream that answers the first request of each connection and reads the second, then
/// closes without answering: as a server that crashed on it.
async fn crashing_upstream(seen: Seen) -> String {
    tcp_server(move |mut stream| {
        let seen = seen.clone();
        async move {
            let mut buf = Vec::new();
            let mut answered = 0;
            while let Some((_, body)) = read_request(&mut stream, &mut buf).await {
                let n = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["n"].as_u64()).unwrap_or(0);
                *seen.lock().unwrap().entry(n).or_default() += 1;
                if answered == 1 {
                    return; // read it all, then closed: a plain FIN
                }
                answered += 1;
                let _ = stream.write_all(&json_200(br#"{"status":"success","id":1,"output":[]}"#)).await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_request_the_upstream_read_before_closing_is_never_sent_twice() {
    let seen: Seen = Arc::default();
    let upstream = crashing_upstream(seen.clone()).await;
    let agent = Agent::start(&format!("upstream:\n  base_url: {upstream}\nproxy:\n  enabled: true\n")).await;
    let url = format!("{}/api/v6/images/text2img", agent.proxy);
    let first = http().post(&url).json(&json!({"key": "k", "prompt": "p", "n": 1})).send().await.unwrap();
    assert_eq!(first.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The proxy reuses the connection; the upstream reads the request and closes.
    let second = http().post(&url).json(&json!({"key": "k", "prompt": "p", "n": 2})).send().await.unwrap();
    assert_eq!(second.status(), 502);
    assert_eq!(second.headers()["x-modelslab-sentinel"], "synthetic");
    assert_eq!(seen.lock().unwrap().get(&2), Some(&1), "read once, never sent again");
    agent.stop().await;
}

/// Connections an upstream has open now, the most it had at once, and how many it accepted.
#[derive(Default)]
struct Conns {
    open: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    accepted: std::sync::atomic::AtomicUsize,
}

/// An upstream that takes 20 ms over each answer and counts its connections; a request whose body
/// asks for `"stream": true` gets a chunked answer in pieces, so that its connection stays busy
/// until the client has read it through.
async fn counting_upstream(conns: Arc<Conns>) -> String {
    use std::sync::atomic::Ordering::SeqCst;
    tcp_server(move |mut stream| {
        let conns = conns.clone();
        async move {
            conns.accepted.fetch_add(1, SeqCst);
            let now = conns.open.fetch_add(1, SeqCst) + 1;
            conns.peak.fetch_max(now, SeqCst);
            let mut buf = Vec::new();
            while let Some((_, body)) = read_request(&mut stream, &mut buf).await {
                let v = serde_json::from_slice::<Value>(&body).unwrap_or_default();
                let n = v["n"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(20)).await;
                let answer = format!(r#"{{"status":"success","id":{n},"output":[]}}"#);
                let sent = if v["stream"] == true {
                    let head =
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                    let mut ok = stream.write_all(head).await.is_ok();
                    for piece in answer.as_bytes().chunks(8) {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
                        ok = ok && stream.write_all(&chunk).await.is_ok();
                    }
                    ok && stream.write_all(b"0\r\n\r\n").await.is_ok()
                } else {
                    stream.write_all(&json_200(answer.as_bytes())).await.is_ok()
                };
                if !sent {
                    break;
                }
            }
            conns.open.fetch_sub(1, SeqCst);
        }
    })
    .await
}

/// 200 requests at once (a fifth of them streamed answers) through the proxy; returns the
/// requests answered by anything but the upstream.
async fn burst(proxy: &str, from: u64) -> Vec<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build().unwrap();
    let url = format!("{proxy}/api/v6/images/text2img");
    let mut tasks = Vec::new();
    for n in from..from + 200 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = client.post(&url).json(&json!({"key": "k", "n": n, "stream": n % 5 == 0})).send().await.unwrap();
            let (status, synthetic) = (r.status(), r.headers().contains_key("x-modelslab-sentinel"));
            let body: Value = r.json().await.unwrap_or_default();
            (status == 200 && !synthetic && body["id"] == n).then_some(()).ok_or(format!("{n}: {status} {body}"))
        }));
    }
    let mut wrong = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            wrong.push(e);
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_stay_within_their_bound_and_requests_beyond_it_wait_their_turn() {
    use std::sync::atomic::Ordering::SeqCst;
    let conns = Arc::new(Conns::default());
    let upstream = counting_upstream(conns.clone()).await;
    let config = |max: usize| {
        format!(
            "upstream:\n  base_url: {upstream}\nadmin:\n  listen: 127.0.0.1:0\nproxy:\n  enabled: true\n  \
             listen: 127.0.0.1:0\n  upstream_max_connections: {max}\n  upstream_max_idle: 4\n"
        )
    };
    let agent = Agent::start(&config(8)).await;
    let m = agent.metrics();
    assert_eq!(m.metric("modelslab_proxy_upstream_connections_limit").value(), Some(8.0));
    assert_eq!(m.metric("modelslab_proxy_upstream_connections").value(), Some(0.0));

    let wrong = burst(&agent.proxy, 0).await;
    assert!(wrong.is_empty(), "answered by the proxy or wrongly: {wrong:?}");
    let peak = conns.peak.load(SeqCst);
    assert!(peak <= 8, "{peak} upstream connections open at once, over the bound of 8");
    let m = agent.metrics();
    let waited = m.metric("modelslab_proxy_upstream_wait_seconds_count").value().unwrap_or(0.0);
    assert!(waited >= 100.0, "200 requests over 8 connections: most must have waited, {waited} did");
    assert_eq!(m.metric("modelslab_proxy_upstream_waiting").value(), Some(0.0));
    assert_eq!(m.metric("modelslab_requests_total").label("source", "proxy").sum(), 200.0, "each counted once");
    assert_eq!(m.metric("modelslab_proxy_synthetic_responses_total").sum(), 0.0);
    // Within the idle cap once the burst is over: the gauge agrees with the upstream's count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let open = agent.metrics().metric("modelslab_proxy_upstream_connections").value().unwrap();
    assert!(open <= 4.0, "{open} connections kept idle, over upstream_max_idle 4");
    assert_eq!(open as usize, conns.open.load(SeqCst), "the gauge says what the upstream sees");
    // The wait is not the API's latency: every exchange took the upstream's 20 ms, not seconds.
    let slow = m.metric("modelslab_request_duration_seconds_bucket").label("source", "proxy").label("le", "0.25").sum();
    assert_eq!(slow, 200.0, "exchanges timed from when they were sent, not from when they arrived");

    // Raised by a reload: the next burst uses more, still within the new bound.
    agent.reload(&config(16)).await.unwrap();
    // The proxy follows the new config on its own task, moments after the reload returns.
    eventually(Duration::from_secs(5), "the limit gauge to follow the reload to 16", async || {
        agent.metrics().metric("modelslab_proxy_upstream_connections_limit").value() == Some(16.0)
    })
    .await;
    conns.peak.store(conns.open.load(SeqCst), SeqCst);
    let wrong = burst(&agent.proxy, 1000).await;
    assert!(wrong.is_empty(), "answered by the proxy or wrongly: {wrong:?}");
    let peak = conns.peak.load(SeqCst);
    assert!((9..=16).contains(&peak), "{peak} upstream connections at once with a bound of 16");
    agent.stop().await;
}
