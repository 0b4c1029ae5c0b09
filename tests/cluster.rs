//! Several agent processes sharing one real `redis-server` (`cluster.redis_url`): jobs followed
//! across replicas and counted once, `replicas: one` probes run by one replica at a time and
//! moved when it dies, webhooks judged by whichever replica the API calls, and Redis going away
//! and coming back without a lost request or a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;
use modelslab_sentinel::sim::{Hooks, Scenario, Span};
use serde_json::{Value, json};

/// An agent replica with its proxy, sharing `redis`.
fn replica(sim: &str, redis: &str, extra: &str) -> AgentProcess {
    let cfg = format!(
        "upstream:\n  base_url: {sim}\n  api_key: cluster-key\n  timeout: 5s\nproxy:\n  enabled: true\n\
         labels:\n  models: [flux]\ncluster:\n  redis_url: {redis}\n  lease_ttl: 3s\n{extra}"
    );
    Process::agent(&cfg, &["--grace-period", "2s"], &[])
}

async fn status(agent: &AgentProcess) -> Value {
    serde_json::from_str(&get(&format!("{}/api/v1/status", agent.admin)).await.1).unwrap()
}

/// The sum of a family's matching series over every replica.
async fn total(agents: &[&AgentProcess], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for a in agents {
        let m = a.metrics().await;
        let mut sel = m.metric(name);
        for (k, v) in labels {
            sel = sel.label(k, v);
        }
        sum += sel.sum();
    }
    sum
}

async fn submit(proxy: &str) -> u64 {
    let v = post_json(
        &format!("{proxy}/api/v6/images/text2img"),
        &json!({"key": "sim-premium-cluster", "model_id": "flux", "prompt": "p"}),
    )
    .await;
    v["id"].as_u64().unwrap_or_else(|| panic!("no job id: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_through_one_replica_and_polled_through_another_is_counted_once() {
    let sim =
        emulator(Scenario { job_duration: Span::fixed(Duration::from_millis(1200)), ..Scenario::default() }).await;
    let redis = Redis::start().await;
    let (a, b) = (replica(&sim.url, &redis.url, ""), replica(&sim.url, &redis.url, ""));
    let id = submit(&a.proxy).await;
    eventually(Duration::from_secs(5), "the job is in flight on A", async || {
        a.metrics().await.metric("modelslab_jobs_in_flight").label("source", "proxy").value() == Some(1.0)
    })
    .await;
    let done = poll_job(
        &format!("{}/api/v6/images/fetch/{id}", b.proxy),
        &json!({"key": "sim-premium-cluster"}),
        Duration::from_millis(200),
        50,
    )
    .await;
    assert_eq!(done["status"], "success");
    let success = [("result", "success"), ("source", "proxy")];
    eventually(Duration::from_secs(5), "counted on B", async || {
        b.metrics().await.metric("modelslab_jobs_total").label("result", "success").sum() == 1.0
    })
    .await;
    assert_eq!(total(&[&a, &b], "modelslab_jobs_total", &success).await, 1.0, "counted once over both replicas");
    let mb = b.metrics().await;
    let duration = mb.metric("modelslab_job_duration_seconds_sum").label("result", "success").value().unwrap();
    assert!((1.0..5.0).contains(&duration), "the real duration, submit (on A) to end (on B): {duration}");
    assert_eq!(
        mb.metric("modelslab_jobs_total").label("model", "flux").label("endpoint", "/api/v6/images/text2img").sum(),
        1.0,
        "B labels the job with the model A saw"
    );
    assert!(
        mb.metric("modelslab_requests_total")
            .label("endpoint", "/api/v6/images/fetch/{id}")
            .label("model", "flux")
            .sum()
            >= 1.0,
        "B's polls carry the job's model"
    );
    assert_eq!(total(&[&a, &b], "modelslab_jobs_in_flight", &[]).await, 0.0, "in flight sums to none");
    for r in [&a, &b] {
        let s = status(r).await;
        assert!(["leader", "standby"].contains(&s["cluster"]["role"].as_str().unwrap()), "{s}");
        assert_eq!(s["cluster"]["redis_up"], true);
        assert_eq!(r.metrics().await.metric("modelslab_sentinel_cluster_up").value(), Some(1.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_jobs_spread_over_three_replicas_are_each_counted_once() {
    let sim = emulator(Scenario { job_duration: Span::fixed(Duration::from_millis(800)), ..Scenario::default() }).await;
    let redis = Redis::start().await;
    let replicas: Vec<AgentProcess> = (0..3).map(|_| replica(&sim.url, &redis.url, "")).collect();
    // sim-premium keys queue 15 jobs each: spread the submissions over keys.
    let mut jobs = Vec::new();
    for n in 0..200usize {
        let via = &replicas[n % 3].proxy;
        let body = json!({"key": format!("sim-premium-{}", n / 10), "model_id": "flux", "prompt": "p"});
        let v = post_json(&format!("{via}/api/v6/images/text2img"), &body).await;
        jobs.push((n, v["id"].as_u64().unwrap_or_else(|| panic!("{v}")), format!("sim-premium-{}", n / 10)));
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut polls = Vec::new();
    for (n, id, key) in jobs {
        // Polled through another replica than the one that saw the submission.
        let via = replicas[(n + 1) % 3].proxy.clone();
        polls.push(tokio::spawn(async move {
            poll_job(&format!("{via}/api/v6/images/fetch/{id}"), &json!({"key": key}), Duration::from_millis(200), 30)
                .await
        }));
    }
    for p in polls {
        assert_eq!(p.await.unwrap()["status"], "success");
    }
    let all: Vec<&AgentProcess> = replicas.iter().collect();
    let mut last = 0.0;
    eventually(Duration::from_secs(10), "200 jobs counted", async || {
        last = total(&all, "modelslab_jobs_total", &[("result", "success")]).await;
        last >= 200.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(total(&all, "modelslab_jobs_total", &[("result", "success")]).await, 200.0, "each counted once");
    assert_eq!(total(&all, "modelslab_jobs_total", &[]).await, 200.0, "nothing expired or evicted");
}

/// The replica that holds the probe lease, by its `/api/v1/status`.
async fn leader(replicas: &[AgentProcess]) -> Option<usize> {
    for (i, r) in replicas.iter().enumerate() {
        if status(r).await["cluster"]["role"] == "leader" {
            return Some(i);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_one_probe_runs_on_one_replica_and_moves_when_it_dies() {
    let sim = emulator(Scenario::default()).await;
    let redis = Redis::start().await;
    let probe = "probes:\n  - name: validation\n    interval: 1s\n    timeout: 900ms\n    request: { path: /api/v6/images/text2img, body: { model_id: flux } }\n    expect: { reason: missing_parameter }\n";
    let mut replicas: Vec<AgentProcess> = (0..3).map(|_| replica(&sim.url, &redis.url, probe)).collect();
    let mut lead = None;
    eventually(Duration::from_secs(10), "one replica takes the lease", async || {
        lead = leader(&replicas).await;
        lead.is_some()
    })
    .await;
    let lead = lead.unwrap();
    // Upstream hits over a window: one replica's schedule, not three. (The probe's requests are
    // the emulator's only 400s.)
    let hits = async || -> u64 {
        let s: Value = serde_json::from_str(&get(&format!("{}/_sim/stats", sim.url)).await.1).unwrap();
        s["by_status"]["400"].as_u64().unwrap_or(0)
    };
    let (before, window) = (hits().await, Duration::from_secs(10));
    tokio::time::sleep(window).await;
    let ran = hits().await - before;
    // One replica's schedule runs about 10; three would run about 30 (a busy machine skips a tick
    // or two).
    assert!((5..=13).contains(&ran), "{ran} probe requests in 10 s at a 1 s interval over 3 replicas");
    let mut leaders = 0;
    for r in &replicas {
        leaders += u32::from(r.metrics().await.metric("modelslab_sentinel_cluster_leader").value() == Some(1.0));
    }
    assert_eq!(leaders, 1, "one lease holder");
    let holder = status(&replicas[lead]).await["cluster"]["lease_holder"].as_str().unwrap().to_owned();
    for r in &replicas {
        assert_eq!(status(r).await["cluster"]["lease_holder"], holder.as_str(), "every replica knows the holder");
    }

    // Kill the holder: another replica probes within lease_ttl (3 s) and one interval (1 s).
    let dead = replicas.remove(lead);
    let killed = Instant::now();
    dead.process.signal("KILL");
    drop(dead);
    let base = hits().await;
    eventually(Duration::from_secs(8), "another replica probes", async || hits().await > base).await;
    let took = killed.elapsed();
    println!("probing moved after {took:?}");
    assert!(took <= Duration::from_millis(4000), "probing moved after {took:?} (lease_ttl 3 s + interval 1 s)");
    let mut statuses = Vec::new();
    for r in &replicas {
        statuses.push(status(r).await["cluster"].clone());
    }
    assert!(leader(&replicas).await.is_some(), "a new lease holder: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_loses_no_request_and_coming_back_needs_no_restart() {
    let sim = emulator(Scenario { job_duration: Span::fixed(Duration::from_millis(500)), ..Scenario::default() }).await;
    let mut redis = Redis::start().await;
    let (a, b) = (replica(&sim.url, &redis.url, ""), replica(&sim.url, &redis.url, ""));
    eventually(Duration::from_secs(5), "both connected", async || {
        a.metrics().await.metric("modelslab_sentinel_cluster_up").value() == Some(1.0)
            && b.metrics().await.metric("modelslab_sentinel_cluster_up").value() == Some(1.0)
    })
    .await;
    redis.stop();
    // Every proxied request is answered, quickly, while Redis is gone.
    let started = Instant::now();
    let mut ids = Vec::new();
    for n in 0..60 {
        let via = if n % 2 == 0 { &a.proxy } else { &b.proxy };
        let r = http()
            .post(format!("{via}/api/v6/images/text2img"))
            .json(&json!({"key": format!("sim-premium-down-{}", n / 10), "model_id": "flux", "prompt": "p"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push((n, r.json::<Value>().await.unwrap()["id"].as_u64().unwrap()));
    }
    assert!(started.elapsed() < Duration::from_secs(10), "Redis down slowed the proxy: {:?}", started.elapsed());
    // Polled through the replica that saw the submission: tracked locally meanwhile, counted.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (n, id) in &ids {
        let via = if n % 2 == 0 { &a.proxy } else { &b.proxy };
        let key = format!("sim-premium-down-{}", n / 10);
        let done =
            poll_job(&format!("{via}/api/v6/images/fetch/{id}"), &json!({"key": key}), Duration::from_millis(100), 20)
                .await;
        assert_eq!(done["status"], "success");
    }
    eventually(Duration::from_secs(5), "jobs counted while Redis is down", async || {
        total(&[&a, &b], "modelslab_jobs_total", &[("result", "success")]).await == 60.0
    })
    .await;
    for r in [&a, &b] {
        assert_eq!(get(&format!("{}/healthz", r.admin)).await.0, 200, "alive");
        let m = r.metrics().await;
        assert_eq!(m.metric("modelslab_sentinel_cluster_up").value(), Some(0.0));
        assert!(m.metric("modelslab_sentinel_cluster_errors_total").sum() > 0.0, "errors counted");
    }
    assert!(a.process.log().contains("cluster: Redis does not answer"), "{}", a.process.log());

    // Back: both reconnect by themselves, and jobs are shared again.
    redis.restart().await;
    eventually(Duration::from_secs(15), "both reconnected", async || {
        a.metrics().await.metric("modelslab_sentinel_cluster_up").value() == Some(1.0)
            && b.metrics().await.metric("modelslab_sentinel_cluster_up").value() == Some(1.0)
    })
    .await;
    let id = submit(&a.proxy).await;
    let done = poll_job(
        &format!("{}/api/v6/images/fetch/{id}", b.proxy),
        &json!({"key": "sim-premium-cluster"}),
        Duration::from_millis(200),
        30,
    )
    .await;
    assert_eq!(done["status"], "success");
    eventually(Duration::from_secs(5), "the cross-replica job is counted once", async || {
        total(&[&a, &b], "modelslab_jobs_total", &[("result", "success")]).await == 61.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_day_budget_is_shared_so_a_failover_does_not_spend_twice() {
    let sim = emulator(Scenario::default()).await;
    let redis = Redis::start().await;
    let probe = "probes:\n  - name: paid\n    interval: 1s\n    timeout: 900ms\n    max_runs_per_day: 3\n    request: { path: /api/v6/images/text2img, body: { model_id: flux } }\n";
    let mut replicas: Vec<AgentProcess> = (0..2).map(|_| replica(&sim.url, &redis.url, probe)).collect();
    let hits = async || -> u64 {
        let s: Value = serde_json::from_str(&get(&format!("{}/_sim/stats", sim.url)).await.1).unwrap();
        s["by_status"]["400"].as_u64().unwrap_or(0)
    };
    eventually(Duration::from_secs(10), "the day's 3 runs are spent", async || hits().await == 3).await;
    let mut lead = None;
    eventually(Duration::from_secs(5), "a lease holder", async || {
        lead = leader(&replicas).await;
        lead.is_some()
    })
    .await;
    let dead = replicas.remove(lead.unwrap());
    dead.process.signal("KILL");
    drop(dead);
    eventually(Duration::from_secs(8), "the other replica takes over", async || leader(&replicas).await.is_some())
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hits().await, 3, "the new holder knows the budget is spent");
    let m = replicas[0].metrics().await;
    assert!(m.metric("modelslab_probe_skipped_total").label("probe", "paid").label("reason", "budget").sum() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivered_to_another_replica_is_judged_there_and_not_missed_by_the_prober() {
    // Every webhook is sent twice; each replica tells the API to call the *other* one, as a
    // Service in front of several replicas would pick one at random.
    let hooks = Hooks { duplicate: 1.0, ..Hooks::default() };
    let sim = emulator(Scenario {
        job_duration: Span::fixed(Duration::from_millis(300)),
        webhooks: hooks,
        ..Scenario::default()
    })
    .await;
    let redis = Redis::start().await;
    let ports = [free_port(), free_port()];
    let probe = |own: u16, other: u16| {
        format!(
            "webhooks:\n  listen: 127.0.0.1:{own}\n  public_url: http://127.0.0.1:{other}\n  grace: 2s\n\
             probes:\n  - name: gen\n    interval: 2s\n    timeout: 1900ms\n\
             \x20   request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux, prompt: p }} }}\n\
             \x20   follow: {{ fetch_path: \"/api/v6/images/fetch/{{id}}\", poll_interval: 100ms, max_wait: 1500ms, webhook: true }}\n"
        )
    };
    let replicas = [
        replica(&sim.url, &redis.url, &probe(ports[0], ports[1])),
        replica(&sim.url, &redis.url, &probe(ports[1], ports[0])),
    ];
    let all: Vec<&AgentProcess> = replicas.iter().collect();
    let count = async |result: &str| total(&all, "modelslab_webhook_deliveries_total", &[("result", result)]).await;
    eventually(Duration::from_secs(15), "three runs' webhooks judged", async || count("on_time").await >= 3.0).await;
    // Every run's grace (2 s) has passed for the first runs: none was missed by the replica that
    // ran it, although the delivery reached the other.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (on_time, duplicate) = (count("on_time").await, count("duplicate").await);
    assert_eq!(count("missing").await, 0.0, "delivered elsewhere is not missing");
    assert_eq!(count("unknown").await, 0.0, "the other replica knows the run");
    assert!(
        duplicate >= on_time - 1.0 && duplicate <= on_time + 1.0,
        "each sent twice: {on_time} on time, {duplicate} duplicates"
    );
    let lead = leader(&replicas).await.unwrap();
    let m = replicas[1 - lead].metrics().await;
    assert!(
        m.metric("modelslab_webhook_deliveries_total").label("probe", "gen").label("result", "on_time").sum() >= 3.0,
        "the standby judged the leader's runs"
    );
    assert_eq!(m.metric("modelslab_probe_runs_total").label("probe", "gen").sum(), 0.0, "the standby ran none");
}

/// Issue 28's drill: three replicas behind a round-robin client; jobs submitted through all three;
/// the replica that saw some of the submissions is killed (SIGKILL) while they run; the client's
/// polls reach the two others. Every job ends counted exactly once, with its real duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_job_loses_none_of_its_jobs_and_counts_none_twice() {
    let sim =
        emulator(Scenario { job_duration: Span::fixed(Duration::from_millis(2000)), ..Scenario::default() }).await;
    let redis = Redis::start().await;
    let mut replicas: Vec<AgentProcess> = (0..3).map(|_| replica(&sim.url, &redis.url, "")).collect();
    let submitted = Instant::now();
    let mut ids = Vec::new();
    for n in 0..9 {
        ids.push(submit(&replicas[n % 3].proxy).await);
    }
    // The three jobs replica 0 saw submitted are in Redis; then it dies mid-job.
    eventually(Duration::from_secs(5), "replica 0 holds its jobs", async || {
        replicas[0].metrics().await.metric("modelslab_jobs_in_flight").label("source", "proxy").value() == Some(3.0)
    })
    .await;
    let dead = replicas.remove(0);
    dead.process.signal("KILL");
    drop(dead);
    // Round-robin polls over the survivors until every job ended.
    let mut n = 0;
    for id in &ids {
        let done = loop {
            n += 1;
            let proxy = &replicas[n % 2].proxy;
            let v =
                post_json(&format!("{proxy}/api/v6/images/fetch/{id}"), &json!({"key": "sim-premium-cluster"})).await;
            if v["status"] != "processing" {
                break v;
            }
            assert!(submitted.elapsed() < Duration::from_secs(30), "job {id} never ended: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(done["status"], "success", "{done}");
    }
    let survivors: Vec<&AgentProcess> = replicas.iter().collect();
    let success = [("result", "success"), ("source", "proxy")];
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = total(&survivors, "modelslab_jobs_total", &success).await;
        if counted >= 9.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 9.0, "every job counted once, the dead replica's three too");
    let durations = total(&survivors, "modelslab_job_duration_seconds_sum", &success).await;
    assert!((9.0 * 1.9..9.0 * 6.0).contains(&durations), "real durations, submit to end: {durations} s for 9 jobs");
    // Nothing left to expire twice later.
    for r in &replicas {
        assert_eq!(r.metrics().await.metric("modelslab_jobs_total").label("result", "expired").sum(), 0.0);
    }
}

/// Submits `n` jobs through `via` (each on its own key: a key queues 15), their ids with keys.
async fn submit_many(via: &str, n: usize, tag: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let key = format!("sim-premium-{tag}-{}", i / 10);
        let v = post_json(
            &format!("{via}/api/v6/images/text2img"),
            &json!({"key": key, "model_id": "flux", "prompt": "p"}),
        )
        .await;
        out.push((v["id"].as_u64().unwrap_or_else(|| panic!("no job id: {v}")), key));
    }
    out
}

/// Polls each job through `via` until it ends.
async fn poll_all(via: &str, jobs: &[(u64, String)]) {
    for (id, key) in jobs {
        let done =
            poll_job(&format!("{via}/api/v6/images/fetch/{id}"), &json!({"key": key}), Duration::from_millis(250), 120)
                .await;
        assert_eq!(done["status"], "success", "{done}");
    }
}

/// Waits until every replica's jobs add up to `n` ended (any result) and none in flight; returns
/// the successes.
async fn all_ended(agents: &[&AgentProcess], n: f64, within: Duration) -> f64 {
    let mut last = (0.0, 0.0);
    let done = settled(
        within,
        async || {
            last = (
                total(agents, "modelslab_jobs_total", &[]).await,
                total(agents, "modelslab_jobs_in_flight", &[]).await,
            );
            last
        },
        |(ended, in_flight)| *ended >= n && *in_flight == 0.0,
    )
    .await;
    assert_eq!(done, (n, 0.0), "every job ended, once: (ended, in flight)");
    total(agents, "modelslab_jobs_total", &[("result", "success")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_is_followed_through_slot_redirections_and_a_failover() {
    let sim = emulator(Scenario { job_duration: Span::fixed(Duration::from_secs(6)), ..Scenario::default() }).await;
    let mut nodes = redis_cluster(3, 1).await;
    // Named by a node that does not serve the agent's slot: its first answers are MOVED.
    let owner = slot_owner(&nodes[0], "{modelslab-sentinel}:lease").unwrap();
    let named = nodes.iter().find(|n| format!("127.0.0.1:{}", n.port) != owner).unwrap().url.clone();
    let (a, b) = (replica(&sim.url, &named, ""), replica(&sim.url, &named, ""));
    eventually(Duration::from_secs(15), "both replicas use the cluster, one leads", async || {
        let (sa, sb) = (status(&a).await, status(&b).await);
        let leaders = [&sa, &sb].iter().filter(|s| s["cluster"]["role"] == "leader").count();
        sa["cluster"]["redis_up"] == true && sb["cluster"]["redis_up"] == true && leaders == 1
    })
    .await;
    for r in [&a, &b] {
        assert_eq!(status(r).await["cluster"]["redis_cluster"], true);
        assert_eq!(r.metrics().await.metric("modelslab_sentinel_cluster_up").value(), Some(1.0));
        assert!(r.process.log().contains("names a Redis Cluster node"), "{}", r.process.log());
    }
    // Jobs submitted through A, polled through B after the primary of their slot is killed and
    // its replica promoted: each counted once, with its real duration.
    let before = submit_many(&a.proxy, 8, "before").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // replicated to the replica
    let killed = nodes.iter().position(|n| format!("127.0.0.1:{}", n.port) == owner).unwrap();
    nodes[killed].stop();
    let survivor = if killed == 0 { 1 } else { 0 };
    eventually(Duration::from_secs(20), "a replica promoted for the slot", async || {
        slot_owner(&nodes[survivor], "{modelslab-sentinel}:lease").is_some_and(|o| o != owner)
            && nodes[survivor].cli(&["cluster", "info"]).contains("cluster_state:ok")
    })
    .await;
    let failed_over = Instant::now();
    let after = submit_many(&b.proxy, 8, "after").await;
    poll_all(&b.proxy, &before).await;
    poll_all(&a.proxy, &after).await;
    let successes = all_ended(&[&a, &b], 16.0, Duration::from_secs(20)).await;
    assert_eq!(successes, 16.0, "each job counted once, as a success");
    let took = total(&[&a, &b], "modelslab_job_duration_seconds_sum", &[("result", "success")]).await;
    assert!((16.0 * 5.5..16.0 * 12.0).contains(&took), "real durations (6 s jobs): {took}");
    eventually(Duration::from_secs(15), "both up again, one leader", async || {
        let (sa, sb) = (status(&a).await, status(&b).await);
        let leaders = [&sa, &sb].iter().filter(|s| s["cluster"]["role"] == "leader").count();
        sa["cluster"]["redis_up"] == true && sb["cluster"]["redis_up"] == true && leaders == 1
    })
    .await;
    println!("failover: the cluster was ok again, 16 jobs counted once; {:?} after", failed_over.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_replica_as_redis_url_reads_cluster_up_0_and_says_why() {
    let primary = Redis::start().await;
    let port = primary.port.to_string();
    let replica_of = Redis::start_with(&["--replicaof", "127.0.0.1", &port]).await;
    let agent = Process::agent(
        &format!("upstream:\n  base_url: http://127.0.0.1:9\ncluster:\n  redis_url: {}\n", replica_of.url),
        &[],
        &[],
    );
    let m = settled(
        Duration::from_secs(10),
        async || scrape(&agent.admin).await,
        |m: &Scrape| {
            m.metric("modelslab_sentinel_cluster_up").value() == Some(0.0)
                && m.metric("modelslab_sentinel_cluster_leader").value() == Some(0.0)
        },
    )
    .await;
    assert_eq!(m.metric("modelslab_sentinel_cluster_up").value(), Some(0.0), "a Redis it cannot use");
    assert_eq!(m.metric("modelslab_sentinel_cluster_leader").value(), Some(0.0), "standby, said from the start");
    assert!(m.metric("modelslab_sentinel_cluster_errors_total").label("op", "lease").sum() >= 1.0);
    agent.process.wait_for_log("cluster: Redis cannot be used: ", Duration::from_secs(5));
    assert!(agent.process.log().contains("it is a read-only replica"), "{}", agent.process.log());
    let s = status(&agent).await;
    assert_eq!((s["cluster"]["redis_up"].as_bool(), s["cluster"]["role"].as_str()), (Some(false), Some("standby")));
}

/// The `replicas: one` probe's runs over every replica.
async fn probe_runs(agents: &[&AgentProcess]) -> f64 {
    total(agents, "modelslab_probe_runs_total", &[("probe", "system")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_loses_no_job_and_counts_none_twice() {
    let sim = emulator(Scenario { job_duration: Span::fixed(Duration::from_secs(5)), ..Scenario::default() }).await;
    let mut redis = Redis::start().await;
    let extra = "jobs:\n  ttl: 12s\nprobes:\n  - name: system\n    interval: 1s\n    timeout: 900ms\n    request: { path: /api/wallet_balance }\n";
    let (a, b) = (replica(&sim.url, &redis.url, extra), replica(&sim.url, &redis.url, extra));
    let leaders = async || {
        let (sa, sb) = (status(&a).await, status(&b).await);
        [&sa, &sb].iter().filter(|s| s["cluster"]["role"] == "leader").count()
    };
    eventually(Duration::from_secs(10), "one leader", async || leaders().await == 1).await;
    let epoch = async || {
        let (sa, sb) = (status(&a).await, status(&b).await);
        sa["cluster"]["epoch"].as_u64().unwrap().max(sb["cluster"]["epoch"].as_u64().unwrap())
    };
    let epoch_before = epoch().await;
    let through_a = submit_many(&a.proxy, 6, "a").await;
    let through_b = submit_many(&b.proxy, 6, "b").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs_before = probe_runs(&[&a, &b]).await;
    let restarted = Instant::now();
    redis.stop();
    redis.restart().await; // empty: no persistence
    // Each replica writes back the jobs it saw submitted; each job ends once, wherever polled.
    eventually(Duration::from_secs(10), "12 jobs written back", async || {
        total(&[&a, &b], "modelslab_sentinel_cluster_jobs_restored_total", &[]).await == 12.0
    })
    .await;
    poll_all(&b.proxy, &through_a[..3]).await;
    poll_all(&a.proxy, &through_a[3..]).await;
    poll_all(&a.proxy, &through_b[..3]).await;
    poll_all(&b.proxy, &through_b[3..]).await;
    let successes = all_ended(&[&a, &b], 12.0, Duration::from_secs(30)).await;
    assert_eq!(successes, 12.0, "each job counted once, as a success");
    // The lease: held again, its epoch above the one before, the probe never stopped for long.
    eventually(Duration::from_secs(10), "one leader again", async || leaders().await == 1).await;
    let runs = probe_runs(&[&a, &b]).await - runs_before;
    let seconds = restarted.elapsed().as_secs_f64();
    assert!(
        runs >= seconds - 4.0 && runs <= seconds + 4.0,
        "about one probe run a second over {seconds:.1} s (at most one lease interval double or missing): {runs}"
    );
    let epoch_after = epoch().await;
    let (sa, sb) = (status(&a).await, status(&b).await);
    assert!(epoch_after >= epoch_before, "the fencing epoch never goes back: {epoch_before} → {epoch_after}");
    assert_eq!(
        sa["cluster"]["jobs_restored"].as_u64().unwrap() + sb["cluster"]["jobs_restored"].as_u64().unwrap(),
        12,
        "the status page says what happened"
    );
    for r in [&a, &b] {
        let log = r.process.log();
        assert!(log.contains("Redis lost its data"), "{log}");
        let warnings = log.lines().filter(|l| l.contains("WARN") && l.contains("cluster:")).count();
        assert!(warnings <= 4, "no storm of warnings: {warnings}\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stalled_for_10_s_holds_no_request_and_loses_no_job() {
    let sim = emulator(Scenario { job_duration: Span::fixed(Duration::from_secs(2)), ..Scenario::default() }).await;
    let redis = Redis::start().await;
    let extra = "jobs:\n  ttl: 60s\n";
    let (a, b) = (replica(&sim.url, &redis.url, extra), replica(&sim.url, &redis.url, extra));
    eventually(Duration::from_secs(10), "both connected", async || {
        a.metrics().await.metric("modelslab_sentinel_cluster_up").value() == Some(1.0)
            && b.metrics().await.metric("modelslab_sentinel_cluster_up").value() == Some(1.0)
    })
    .await;
    let latency = async |via: &str, n: usize| {
        let mut took = Vec::new();
        for _ in 0..n {
            let started = Instant::now();
            let r = http()
                .post(format!("{via}/api/wallet_balance"))
                .json(&json!({"key": "sim-premium-latency"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            took.push(started.elapsed());
        }
        took.sort();
        took[took.len() * 99 / 100]
    };
    let calm = latency(&a.proxy, 100).await;
    // Jobs submitted before, ending during the stall; jobs submitted during it.
    let early = submit_many(&a.proxy, 6, "early").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.signal("STOP");
    let stalled = Instant::now();
    let during = submit_many(&a.proxy, 6, "during").await;
    let slow = latency(&a.proxy, 100).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The early jobs end while Redis is stalled, seen through both replicas.
    poll_all(&a.proxy, &early[..3]).await;
    poll_all(&b.proxy, &early[3..]).await;
    let submit_ok = stalled.elapsed();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(stalled.elapsed())).await;
    redis.signal("CONT");
    // The early jobs' ends, asked again once Redis answers: counted with the duration up to when
    // their end was seen (≈ 2–3 s), not up to Redis's return (≈ 10 s).
    eventually(Duration::from_secs(10), "the early jobs counted", async || {
        total(&[&a, &b], "modelslab_jobs_total", &[("result", "success")]).await == 6.0
    })
    .await;
    let early_took = total(&[&a, &b], "modelslab_job_duration_seconds_sum", &[("result", "success")]).await;
    assert!(early_took < 6.0 * 5.0, "durations up to when each end was seen: {early_took:.1} s for 6");
    poll_all(&a.proxy, &during).await;
    let successes = all_ended(&[&a, &b], 12.0, Duration::from_secs(60)).await;
    assert_eq!(successes, 12.0, "each job counted once, as a success");
    assert!(
        slow <= calm * 2 + Duration::from_millis(50),
        "a stalled Redis holds no proxied request: p99 {calm:?} calm, {slow:?} stalled"
    );
    assert!(submit_ok < Duration::from_secs(9), "the stall's requests were answered within it: {submit_ok:?}");
    println!(
        "stall: p99 {calm:?} calm, {slow:?} while Redis was stopped; the 6 jobs that ended in it took {early_took:.1} s in all"
    );
}
