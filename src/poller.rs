//! One loop for everything the agent polls on an interval (the vendor's status page, the
//! account's balance, …): it reads its schedule from the running configuration, follows reloads,
//! runs only on the lease holder when the poll is the account's (one call per interval whatever
//! the replica count), bounds each poll by its timeout, and never calls more often than the
//! interval allows, however often the configuration is reloaded in between.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::BoxFuture;
use crate::cluster::Cluster;
use crate::config::Config;

/// How often, how long, and where a poll runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Polls are at least this far apart.
    pub interval: Duration,
    /// A poll still running then has failed.
    pub timeout: Duration,
    /// Only on the replica holding the probe lease.
    pub leader_only: bool,
}

/// Something polled on an interval.
pub trait Polled: Send + Sync + 'static {
    /// When to poll under `config`; `None` while the poll is off.
    fn schedule(&self, config: &Config) -> Option<Schedule>;
    /// One poll; it records its own result.
    fn poll<'a>(&'a self, config: &'a Config) -> BoxFuture<'a, ()>;
    /// The poll did not end within `timeout`.
    fn timed_out(&self, timeout: Duration);
}

/// How long to wait for a configuration change while a poll is off.
const IDLE: Duration = Duration::from_secs(3600);

/// Polls `polled` as the configuration says until `shutdown`.
pub async fn run<P: Polled>(
    polled: P,
    mut config: watch::Receiver<Arc<Config>>,
    cluster: Cluster,
    shutdown: CancellationToken,
) {
    let mut last: Option<Instant> = None;
    loop {
        let current = config.borrow_and_update().clone();
        let wait = match polled.schedule(&current) {
            None => IDLE,
            Some(s) => {
                let due = last.map_or_else(Instant::now, |t| t + s.interval);
                if Instant::now() < due {
                    due - Instant::now()
                } else {
                    if !s.leader_only || cluster.leads() {
                        last = Some(Instant::now());
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            done = tokio::time::timeout(s.timeout, polled.poll(&current)) => {
                                if done.is_err() {
                                    polled.timed_out(s.timeout);
                                }
                            }
                        }
                    }
                    s.interval
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            changed = config.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::{self, Environment};

    struct Counter {
        at: Arc<Mutex<Vec<Instant>>>,
        interval: Duration,
        leader_only: bool,
        slow: bool,
        timeouts: Arc<Mutex<u32>>,
    }

    impl Polled for Counter {
        fn schedule(&self, _: &Config) -> Option<Schedule> {
            Some(Schedule { interval: self.interval, timeout: Duration::from_secs(1), leader_only: self.leader_only })
        }

        fn poll<'a>(&'a self, _: &'a Config) -> BoxFuture<'a, ()> {
            self.at.lock().unwrap().push(Instant::now());
            Box::pin(async move {
                if self.slow {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            })
        }

        fn timed_out(&self, _: Duration) {
            *self.timeouts.lock().unwrap() += 1;
        }
    }

    fn config() -> Config {
        let var = |_: &str| None;
        config::from_yaml(
            "upstream: { base_url: http://127.0.0.1:9 }",
            "t",
            &Environment { var: &var, base_dir: ".".into() },
        )
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn polls_keep_their_interval_through_reloads_and_slow_polls_time_out() {
        let (tx, rx) = watch::channel(Arc::new(config()));
        let at = Arc::new(Mutex::new(Vec::new()));
        let timeouts = Arc::new(Mutex::new(0));
        let counter = Counter {
            at: at.clone(),
            interval: Duration::from_secs(10),
            leader_only: true,
            slow: false,
            timeouts: timeouts.clone(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(counter, rx, Cluster::single(), stop.clone()));
        // A reload every second: still one poll per 10 s.
        for _ in 0..35 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send_replace(Arc::new(config()));
        }
        stop.cancel();
        task.await.unwrap();
        {
            let at = at.lock().unwrap();
            assert_eq!(at.len(), 4, "at 0, 10, 20 and 30 s");
            assert!(at.windows(2).all(|w| w[1] - w[0] >= Duration::from_secs(10)));
        }

        let (_tx, rx) = watch::channel(Arc::new(config()));
        let slow = Counter {
            at: Arc::new(Mutex::new(Vec::new())),
            interval: Duration::from_secs(10),
            leader_only: false,
            slow: true,
            timeouts: timeouts.clone(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(slow, rx, Cluster::single(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(25)).await;
        stop.cancel();
        task.await.unwrap();
        assert_eq!(*timeouts.lock().unwrap(), 3, "polls at 0, 10 and 20 s, each cut at 1 s");
    }
}
