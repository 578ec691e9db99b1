//! Tasks made early: as soon as CreateContainer has recorded a container,
//! its task (shim, namespaces, mounts, cgroup: everything up to the user's
//! program) is made in the background, and StartContainer, which the
//! kubelet sends right after, finds it made or nearly so and only orders
//! the start. CreateContainer does not wait for the task, so neither call
//! carries the whole of it.
//!
//! A task made early that failed is made again by StartContainer, whose
//! answer then says why; one whose molded restarted before the start is
//! found by the runtime (the shim holds it across the restart).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// What became of a task made early: Ok, or why it could not be made.
pub(crate) type Outcome = Result<(), String>;

/// The tasks being made, or made and not yet started, by container ID.
#[derive(Default)]
pub(crate) struct EarlyTasks(Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>);

/// Where the maker of a task says how it went.
pub(crate) struct Maker(watch::Sender<Option<Outcome>>);

impl Maker {
    pub(crate) fn done(self, outcome: Outcome) {
        let _ = self.0.send(Some(outcome));
    }
}

impl EarlyTasks {
    /// Notes that the task of `id` is being made.
    pub(crate) fn begin(&self, id: &str) -> Maker {
        let (tx, rx) = watch::channel(None);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), rx);
        Maker(tx)
    }

    /// Waits until the task of `id` is made (or its making failed) and
    /// forgets it; None when no task of `id` was being made here. A maker
    /// dropped without a word counts as a failure.
    pub(crate) async fn settle(&self, id: &str) -> Option<Outcome> {
        let rx = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        let mut rx = rx?;
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Err("the task was not made".into())),
            Err(_) => Err("the task's maker ended without a word".into()),
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_start_waits_for_the_task_being_made_and_gets_its_outcome() {
        let early = Arc::new(EarlyTasks::default());
        let maker = early.begin("c1");
        let waiter = tokio::spawn({
            let early = early.clone();
            async move { early.settle("c1").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the start did not wait for the task");
        maker.done(Err("mounting the rootfs: no space".into()));
        assert_eq!(
            waiter.await.unwrap(),
            Some(Err("mounting the rootfs: no space".into()))
        );
        // Settled once: a second look finds nothing being made.
        assert_eq!(early.settle("c1").await, None);
    }

    #[tokio::test]
    async fn a_task_never_made_here_is_not_waited_for_and_a_lost_maker_is_a_failure() {
        let early = EarlyTasks::default();
        assert_eq!(early.settle("unknown").await, None);
        drop(early.begin("c2"));
        assert!(matches!(early.settle("c2").await, Some(Err(_))));
        let maker = early.begin("c3");
        maker.done(Ok(()));
        assert_eq!(early.settle("c3").await, Some(Ok(())));
    }
}
