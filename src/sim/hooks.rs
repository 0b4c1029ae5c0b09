//! The emulator's webhook calls: when a job that asked for one ends (plus the scenario's delay),
//! its `webhook` URL gets the documented payload; the scenario may drop some and send some twice.

use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use tokio::time::Instant;

use super::Sim;

/// Calls `url` with `payload` once the job ends at `done_at` (in a task of its own).
pub(super) fn call_back(sim: &std::sync::Arc<Sim>, url: String, payload: Value, done_at: Instant) {
    let scenario = sim.scenario();
    let hooks = scenario.webhooks;
    let (delay, dropped, twice) = {
        let mut rng = sim.rng();
        let (lo, hi) = (hooks.delay.min, hooks.delay.max);
        let delay = if hi > lo { rng.random_range(lo..hi) } else { lo };
        (delay, rng.random::<f64>() < hooks.drop, rng.random::<f64>() < hooks.duplicate)
    };
    if dropped {
        return;
    }
    let (client, shutdown) = (sim.http.clone(), sim.shutdown.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(done_at + delay) => {}
        }
        for n in 0..if twice { 2 } else { 1 } {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Err(e) = client.post(&url).json(&payload).send().await {
                tracing::debug!(error = %e.without_url(), "sim: webhook call failed");
            }
        }
    });
}
