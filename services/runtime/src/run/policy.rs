//! Applying restart policies: after an exit, and when molded starts.

use super::*;
use crate::restart::{self, Policy};

/// The label a container's record carries once the user stopped it.
pub(crate) const STOPPED_LABEL: &str = "io.molde/stopped-by-user";

impl RuntimeService {
    /// Marks (or clears) "the user stopped it": kept in the record, so it
    /// outlives the bundle (a reboot empties the state directory).
    pub(crate) fn set_stopped_by_user(&self, ns: &str, id: &str, stopped: bool) -> Result<(), Error> {
        let mut c = self.record(ns, id)?;
        // Only molde's own containers have restart policies.
        if !c.extensions.contains_key(RUN_REQUEST) || c.labels.contains_key(STOPPED_LABEL) == stopped {
            return Ok(());
        }
        if stopped {
            c.labels.insert(STOPPED_LABEL.into(), "true".into());
        } else {
            c.labels.remove(STOPPED_LABEL);
        }
        self.store
            .txn(Txn::new().put(containers::key(ns, id), c.encode_to_vec()))?;
        Ok(())
    }

    /// After an exit (or at molded's start, `at_boot`): starts the
    /// container again, after the back-off, when its policy says so.
    pub(crate) fn consider_restart(&self, ns: &str, id: &str, status: i32, at_boot: bool) {
        let Ok(c) = self.record(ns, id) else {
            return;
        };
        let Ok(policy) = Policy::parse(&run_request(&c).restart) else {
            return;
        };
        let b = Bundle::new(self.bundle_dir(ns, id));
        let restarts = b.restart_count();
        let stopped = c.labels.contains_key(STOPPED_LABEL);
        if !policy.should_restart(status, restarts, stopped, at_boot) {
            return;
        }
        let ran = std::fs::metadata(b.dir().join("init.pid"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let delay = if at_boot {
            Duration::ZERO
        } else {
            restart::delay(restarts, ran)
        };
        let (me, ns, id) = (self.clone(), ns.to_string(), id.to_string());
        let key = format!("{ns}/{id}");
        self.restarting
            .lock()
            .expect("restarting set")
            .insert(key.clone());
        tokio::spawn(async move {
            /// Takes the container off the Restarting set however the task ends.
            struct Done(
                std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
                String,
            );
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.lock().expect("restarting set").remove(&self.1);
                }
            }
            let _done = Done(me.restarting.clone(), key);
            tokio::time::sleep(delay).await;
            // Looked at again: removed, started or stopped meanwhile.
            let Ok(c) = me.record(&ns, &id) else {
                return;
            };
            if c.labels.contains_key(STOPPED_LABEL) && !at_boot {
                return;
            }
            if matches!(me.observe(&ns, &id).state, "running" | "paused") {
                return;
            }
            let b = Bundle::new(me.bundle_dir(&ns, &id));
            // After a reboot the bundle is made again by the launch below.
            let counted = std::fs::create_dir_all(b.dir()).and_then(|()| b.set_restart_count(restarts + 1));
            if let Err(e) = counted {
                tracing::warn!(namespace = %ns, container = %id, error = %e, "a restart could not be counted");
            }
            // At molded's start the services it calls may not answer yet.
            let mut tries = if at_boot { 10 } else { 1 };
            let started = loop {
                tries -= 1;
                let r = match me.launch(&ns, &id, false).await {
                    Ok(_) => me.await_started(&ns, &id).await,
                    Err(e) => Err(e),
                };
                match r {
                    Err(e) if tries > 0 && e.code() == tonic::Code::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    other => break other,
                }
            };
            match started {
                Ok(()) => {
                    tracing::info!(namespace = %ns, container = %id, restarts = restarts + 1, "container restarted by its policy")
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, container = %id, error = %e, "restarting a container by its policy failed")
                }
            }
        });
    }

    /// molded starts: containers whose policy says so start again. Those
    /// still running (their shims outlived molded) are left as they are;
    /// after a reboot, whose bundles are gone, they all come back.
    pub(crate) fn restart_at_boot(&self) {
        for (ns, c) in self.all_records() {
            if run_request(&c).restart.is_empty() {
                continue;
            }
            let b = Bundle::new(self.bundle_dir(&ns, &c.id));
            if b.exit().is_some() && !b.exit_published() {
                continue; // an exit while molded was away: the watcher's
            }
            let gone = !b.dir().exists();
            let o = self.observe(&ns, &c.id);
            let status = match o.state {
                "exited" => o.exit_code,
                // A container that was running when the host went down.
                _ if gone => 255,
                _ => continue,
            };
            self.consider_restart(&ns, &c.id, status, true);
        }
    }
}
