//! Every task the agent starts runs on one `TaskTracker`, so that shutdown waits for all of them
//! (within the grace period) and none is cut off when the runtime stops. Components get a
//! [`Tasks`] handle; nothing in the agent calls `tokio::spawn` directly, but for the signal
//! listener in `app`, which must outlive the tracker it closes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio_util::task::TaskTracker;

/// The agent's tasks. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
}

impl Tasks {
    /// A new tracker.
    pub fn new() -> Self {
        Tasks::default()
    }

    /// The tracker, for servers that track their connections on it.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Runs `future` on a tracked task.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(future)
    }

    /// Runs `future` to its end at once when it needs no waiting (state in memory), else on a
    /// tracked task (a round trip to Redis): the caller never waits either way.
    pub fn finish_or_spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut future = Box::pin(future);
        if now(&mut future).is_none() {
            self.tracker.spawn(future);
        }
    }
}

/// Polls `future` once: its output if it is ready without waiting.
pub fn now<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(future).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn ready_work_is_done_at_once_and_the_rest_is_tracked() {
        let tasks = Tasks::new();
        let done = Arc::new(AtomicU32::new(0));
        let d = done.clone();
        tasks.finish_or_spawn(async move {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 1, "finished before the call returned");
        assert!(tasks.tracker().is_empty());
        let d = done.clone();
        tasks.finish_or_spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(tasks.tracker().len(), 1);
        tasks.tracker().close();
        tasks.tracker().wait().await;
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }
}
