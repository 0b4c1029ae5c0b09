//! The proxy against an upstream that misbehaves at the connection level: keep-alive
//! connections closed while idle, at random moments. A request that never reached the upstream
//! is sent again on a fresh connection; none becomes a synthetic 502, and none is sent twice.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Agent, http, json_200, read_request, tcp_server};
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
