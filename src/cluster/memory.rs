//! Shared state kept in this process: the whole truth with one replica, and what a replica keeps
//! while Redis does not answer. Bounded like Redis: jobs by `jobs.max_tracked` (oldest evicted),
//! webhook runs by their time to live.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{Delivery, SharedJob, Tracking};

#[derive(Default)]
struct Jobs {
    by_id: HashMap<String, SharedJob>,
    /// Ids in submission order; ids of jobs already ended are skipped when met.
    order: VecDeque<(u64, String)>,
}

struct HookRun {
    probe: String,
    track: String,
    finished_ms: Option<u64>,
    deliveries: u64,
    expires_ms: u64,
}

/// State in memory.
#[derive(Default)]
pub(super) struct Memory {
    jobs: Mutex<Jobs>,
    hooks: Mutex<HashMap<String, HookRun>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Memory {
    /// Starts following a job unless it is followed already; evicts the oldest beyond `max`.
    pub(super) fn track_job(&self, id: &str, job: SharedJob, max: usize) -> Tracking {
        let mut jobs = lock(&self.jobs);
        if jobs.by_id.contains_key(id) {
            return Tracking { new: false, evicted: Vec::new() };
        }
        jobs.order.push_back((job.submitted_ms, id.to_owned()));
        jobs.by_id.insert(id.to_owned(), job);
        let mut evicted = Vec::new();
        while jobs.by_id.len() > max.max(1) {
            let Some((_, oldest)) = jobs.order.pop_front() else { break };
            if let Some(job) = jobs.by_id.remove(&oldest) {
                evicted.push(job);
            }
        }
        Tracking { new: true, evicted }
    }

    /// A job's record; with `end`, taken out.
    pub(super) fn job(&self, id: &str, end: bool) -> Option<SharedJob> {
        let mut jobs = lock(&self.jobs);
        if end { jobs.by_id.remove(id) } else { jobs.by_id.get(id).cloned() }
    }

    /// Takes out the jobs submitted before `cutoff_ms` (at most `limit`), oldest first.
    pub(super) fn expire_jobs(&self, cutoff_ms: u64, limit: usize) -> Vec<SharedJob> {
        let mut jobs = lock(&self.jobs);
        let mut out = Vec::new();
        while out.len() < limit && jobs.order.front().is_some_and(|(at, _)| *at < cutoff_ms) {
            let Some((at, id)) = jobs.order.pop_front() else { break };
            if jobs.by_id.get(&id).is_some_and(|j| j.submitted_ms == at) {
                if let Some(job) = jobs.by_id.remove(&id) {
                    out.push(job);
                }
            }
        }
        // Ended jobs leave stale ids behind; drop them once they outnumber live ones.
        if jobs.order.len() > 2 * jobs.by_id.len() + 1024 {
            let Jobs { order, by_id } = &mut *jobs;
            order.retain(|(at, id)| by_id.get(id).is_some_and(|j| j.submitted_ms == *at));
        }
        out
    }

    /// Every job held, to move them elsewhere (Redis, once it answers again).
    pub(super) fn jobs(&self) -> Vec<(String, SharedJob)> {
        lock(&self.jobs).by_id.iter().map(|(id, j)| (id.clone(), j.clone())).collect()
    }

    pub(super) fn jobs_held(&self) -> usize {
        lock(&self.jobs).by_id.len()
    }

    /// Ids of the stale order entries (for the bound test).
    #[cfg(test)]
    fn order_len(&self) -> usize {
        lock(&self.jobs).order.len()
    }

    /// A run waiting for its webhook, kept until `expires_ms` at most.
    pub(super) fn hook_expect(&self, token: &str, probe: &str, track: &str, now_ms: u64, expires_ms: u64) {
        let mut hooks = lock(&self.hooks);
        hooks.retain(|_, run| run.expires_ms > now_ms);
        hooks.insert(
            token.to_owned(),
            HookRun { probe: probe.to_owned(), track: track.to_owned(), finished_ms: None, deliveries: 0, expires_ms },
        );
    }

    pub(super) fn hook_finished(&self, token: &str, at_ms: u64) {
        if let Some(run) = lock(&self.hooks).get_mut(token) {
            run.finished_ms = Some(at_ms);
        }
    }

    /// Counts a delivery for `token`; `None` when no run waits for it (or it is another's
    /// track id).
    pub(super) fn hook_deliver(&self, token: &str, track: Option<&str>) -> Option<Delivery> {
        let mut hooks = lock(&self.hooks);
        let run = hooks.get_mut(token)?;
        if track.is_some_and(|t| t != run.track) {
            return None;
        }
        run.deliveries += 1;
        Some(Delivery { probe: run.probe.clone(), count: run.deliveries, finished_ms: run.finished_ms })
    }

    /// Ends a run: how many deliveries it had.
    pub(super) fn hook_take(&self, token: &str) -> u64 {
        lock(&self.hooks).remove(token).map_or(0, |r| r.deliveries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(at: u64) -> SharedJob {
        SharedJob {
            submitted_ms: at,
            endpoint: "/api/v6/images/text2img".into(),
            model: "flux".into(),
            first_eta: Some(2.0),
            traceparent: None,
        }
    }

    #[test]
    fn jobs_end_once_expire_and_are_evicted_beyond_the_cap() {
        let m = Memory::default();
        assert!(m.track_job("1", job(1000), 2).new);
        assert!(!m.track_job("1", job(5000), 2).new, "a duplicate keeps the first");
        assert!(m.track_job("2", job(2000), 2).new);
        assert_eq!(m.job("1", false).map(|j| j.submitted_ms), Some(1000));
        assert!(m.job("1", true).is_some());
        assert!(m.job("1", true).is_none(), "ends once");
        m.track_job("3", job(3000), 2);
        let t = m.track_job("4", job(4000), 2);
        assert_eq!(t.evicted.iter().map(|j| j.submitted_ms).collect::<Vec<_>>(), [2000]);
        assert_eq!(m.expire_jobs(3500, 10).len(), 1, "job 3 is past the cutoff");
        assert!(m.expire_jobs(3500, 10).is_empty());
        assert_eq!(m.jobs_held(), 1);
    }

    #[test]
    fn stale_order_entries_do_not_grow_without_bound() {
        let m = Memory::default();
        for i in 0..5000 {
            m.track_job(&i.to_string(), job(10), 10);
            m.job(&i.to_string(), true);
        }
        m.expire_jobs(0, 10);
        assert!(m.order_len() <= 1024, "{}", m.order_len());
    }

    #[test]
    fn webhook_runs_count_deliveries_and_refuse_other_track_ids() {
        let m = Memory::default();
        m.hook_expect("t", "gen", "track-1", 0, 10_000);
        assert_eq!(m.hook_deliver("t", Some("track-2")), None);
        assert_eq!(m.hook_deliver("forged", Some("track-1")), None);
        m.hook_finished("t", 500);
        let d = m.hook_deliver("t", Some("track-1")).unwrap();
        assert_eq!((d.probe.as_str(), d.count, d.finished_ms), ("gen", 1, Some(500)));
        assert_eq!(m.hook_deliver("t", None).unwrap().count, 2);
        assert_eq!(m.hook_take("t"), 2);
        assert_eq!(m.hook_take("t"), 0);
        m.hook_expect("old", "gen", "x", 0, 100);
        m.hook_expect("new", "gen", "y", 200, 10_000);
        assert_eq!(m.hook_deliver("old", None), None, "expired runs are dropped");
    }
}
