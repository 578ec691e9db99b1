//! A container's state, read from its bundle's files and the processes they
//! name. molded keeps no table of containers: this is what lets a restarted
//! molded find every container where its shim left it.

use crate::dir::{Bundle, Exit};

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Its shim has not started it yet.
    Created,
    /// Its init runs (`pid`), or has just ended and its shim is recording
    /// the exit (`None`).
    Running { pid: Option<i32> },
    /// It ended; its shim recorded how.
    Exited(Exit),
    /// It never started; the shim's reason.
    Failed(String),
    /// Its shim ended without recording an exit: it was killed.
    Lost,
}

impl State {
    /// docker's and containerd's word for it.
    pub fn name(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running { .. } => "running",
            State::Exited(_) | State::Failed(_) | State::Lost => "exited",
        }
    }
}

/// Whether `pid` is alive and is the init of the container with cgroup `cg`
/// (a recycled pid is in another cgroup).
fn alive(pid: i32, cg: &str) -> bool {
    if pid <= 0
        || rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid).expect("positive")).is_err()
    {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(cg))
}

impl Bundle {
    /// The container's state; `cgroup` is its cgroup path, which tells its
    /// init from a process that took the same pid later.
    pub fn state(&self, cgroup: &str) -> State {
        if let Some(e) = self.exit() {
            return State::Exited(e);
        }
        if let Some(msg) = self.error() {
            return State::Failed(msg);
        }
        match self.init_pid() {
            Some(pid) if alive(pid, cgroup) => State::Running { pid: Some(pid) },
            Some(_) if self.shim_alive() => State::Running { pid: None },
            Some(_) => State::Lost,
            // Created and held by a shim that is gone: it can never start.
            None if self.created_pid().is_some() && !self.shim_alive() => State::Lost,
            None => State::Created,
        }
    }

    /// Whether the bundle's shim process still runs.
    pub fn shim_alive(&self) -> bool {
        let Some(pid) = self.shim_pid() else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("molde-shim"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_from_the_files() {
        let d = tempfile::tempdir().unwrap();
        let b = Bundle::new(d.path());
        assert_eq!(b.state("/molde/x"), State::Created);
        // Created and held, but no shim holds it any more.
        b.write_created_pid(999_999_999).unwrap();
        assert_eq!(b.state("/molde/x"), State::Lost);
        assert!(!b.order_held(crate::HOLD_START).unwrap(), "nobody reads the FIFO");
        b.write_init_pid(999_999_999).unwrap();
        assert_eq!(b.state("/molde/x"), State::Lost, "no such process, no shim");
        b.write_init_pid(std::process::id() as i32).unwrap();
        assert_eq!(
            b.state("/molde/x"),
            State::Lost,
            "a pid outside the container's cgroup"
        );
        let e = Exit {
            status: 3,
            signal: None,
            oom_killed: false,
            exited_at: String::new(),
        };
        b.write_exit(&e).unwrap();
        assert_eq!(b.state("/molde/x"), State::Exited(e));
        assert_eq!(b.state("/molde/x").name(), "exited");
        // Started again: the last run's files go, the spec and log stay.
        std::fs::write(b.config(), "{}").unwrap();
        std::fs::write(b.log(), "{}\n").unwrap();
        b.write_error("old").unwrap();
        b.clear_run().unwrap();
        assert_eq!(b.state("/molde/x"), State::Created);
        assert!(b.config().exists() && b.log().exists());
        b.clear_run().unwrap();
    }
}
