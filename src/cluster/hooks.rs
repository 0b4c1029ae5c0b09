//! Webhook runs shared through Redis: the API delivers to whichever replica its Service picks,
//! not to the one whose probe asked. Each run is a hash `{prefix}:hook:TOKEN` (probe, track id,
//! when the probe saw the job end, deliveries so far); any replica judges a delivery from it, and
//! the run's own replica ends it (`missing` when the count is still 0 after the grace).

use std::time::Duration;

use super::{Cluster, scripts};
use crate::observe::ClusterOp;

/// A delivery as the shared run saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDelivery {
    pub probe: String,
    /// Deliveries so far, this one included: more than 1 is a duplicate.
    pub count: u64,
    /// When the run's replica saw the job end (unix ms), if it has.
    pub finished_ms: Option<u64>,
}

impl Cluster {
    fn hook_key(&self, token: &str) -> String {
        self.key(&format!("hook:{token}"))
    }

    /// Shares a run waiting for its webhook, kept at most `keep`. False when Redis could not
    /// be reached (the run is then judged only where it lives).
    pub async fn hook_expect(&self, token: &str, probe: &str, track_id: &str, keep: Duration) -> bool {
        let key = self.hook_key(token);
        let keep = keep.as_millis() as u64;
        let (probe, track) = (probe.to_owned(), track_id.to_owned());
        self.run(ClusterOp::Webhook, |mut c| async move {
            redis::pipe()
                .atomic()
                .hset_multiple(&key, &[("probe", probe.as_str()), ("track", track.as_str())])
                .ignore()
                .pexpire(&key, keep as i64)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
        .is_some()
    }

    /// Notes that the run's probe saw its job end at `at_ms`.
    pub async fn hook_finished(&self, token: &str, at_ms: u64) {
        let key = self.hook_key(token);
        let _: Option<i64> =
            self.run(ClusterOp::Webhook, |mut c| async move {
                scripts::FINISHED.key(key).arg(at_ms).invoke_async(&mut c).await
            })
            .await;
    }

    /// Records a delivery for `token`. Outer `None`: Redis could not be reached; inner `None`:
    /// no run waits for it (a forged token, a replay after the run ended, another's track id).
    pub async fn hook_deliver(&self, token: &str, track_id: Option<&str>) -> Option<Option<SharedDelivery>> {
        let key = self.hook_key(token);
        let track = track_id.unwrap_or("").to_owned();
        let got: Option<Vec<String>> =
            self.run(ClusterOp::Webhook, |mut c| async move {
                scripts::DELIVER.key(key).arg(track).invoke_async(&mut c).await
            })
            .await?;
        Some(got.and_then(|v| match v.as_slice() {
            [probe, count, finished] => Some(SharedDelivery {
                probe: probe.clone(),
                count: count.parse().ok()?,
                finished_ms: finished.parse().ok(),
            }),
            _ => None,
        }))
    }

    /// Ends a run: how many deliveries it had (`None` when Redis could not be reached).
    pub async fn hook_take(&self, token: &str) -> Option<u64> {
        let key = self.hook_key(token);
        self.run(ClusterOp::Webhook, |mut c| async move { scripts::TAKE.key(key).invoke_async(&mut c).await }).await
    }
}
