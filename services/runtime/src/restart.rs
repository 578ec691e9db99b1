//! Restart policies (`molde run --restart`), as docker keeps them: molded
//! starts a container again when it exits, and when molded itself starts
//! (after a crash, an upgrade or the host's reboot), as its policy says.
//! A container the user stopped (stop, kill) stays stopped until the user
//! starts it, except that `always` starts it again with molded.

use std::time::Duration;

use molde_common::errdefs::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    No,
    /// Up to this many restarts (no limit when None) after a non-zero exit.
    OnFailure(Option<u32>),
    Always,
    UnlessStopped,
}

impl Policy {
    pub fn parse(s: &str) -> Result<Policy, Error> {
        let bad = || {
            Error::InvalidArgument(format!(
                "--restart {s:?}: no, on-failure[:MAX], always or unless-stopped"
            ))
        };
        Ok(match s.split_once(':') {
            None | Some((_, "")) if s.is_empty() || s == "no" => Policy::No,
            None if s == "always" => Policy::Always,
            None if s == "unless-stopped" => Policy::UnlessStopped,
            None if s == "on-failure" => Policy::OnFailure(None),
            Some(("on-failure", n)) => Policy::OnFailure(Some(n.parse().map_err(|_| bad())?)),
            _ => return Err(bad()),
        })
    }

    /// Whether a container that exited with `status`, restarted `restarts`
    /// times, starts again; `at_boot` when molded itself is starting.
    pub fn should_restart(self, status: i32, restarts: u32, stopped_by_user: bool, at_boot: bool) -> bool {
        match self {
            Policy::No => false,
            Policy::Always => !stopped_by_user || at_boot,
            Policy::UnlessStopped => !stopped_by_user,
            Policy::OnFailure(max) => status != 0 && !stopped_by_user && max.is_none_or(|m| restarts < m),
        }
    }
}

/// How long to wait before the next restart: docker's back-off, doubling
/// from 100 ms (to at most a minute) while the container keeps failing;
/// from 100 ms again once it ran 10 s.
pub fn delay(restarts: u32, ran: Duration) -> Duration {
    if ran >= Duration::from_secs(10) {
        return Duration::from_millis(100);
    }
    Duration::from_millis(100u64.saturating_mul(1 << restarts.min(10))).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_docker_spells_them() {
        assert_eq!(Policy::parse("").unwrap(), Policy::No);
        assert_eq!(Policy::parse("no").unwrap(), Policy::No);
        assert_eq!(Policy::parse("always").unwrap(), Policy::Always);
        assert_eq!(Policy::parse("unless-stopped").unwrap(), Policy::UnlessStopped);
        assert_eq!(Policy::parse("on-failure").unwrap(), Policy::OnFailure(None));
        assert_eq!(Policy::parse("on-failure:3").unwrap(), Policy::OnFailure(Some(3)));
        for bad in ["sometimes", "on-failure:x", "always:2"] {
            let e = Policy::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn who_restarts_when() {
        let f = Policy::OnFailure(Some(2));
        assert!(f.should_restart(1, 0, false, false));
        assert!(f.should_restart(1, 1, false, false));
        assert!(!f.should_restart(1, 2, false, false), "at most 2");
        assert!(!f.should_restart(0, 0, false, false), "success is no failure");
        assert!(!f.should_restart(137, 0, true, false), "stopped by the user");
        assert!(Policy::Always.should_restart(0, 50, false, false));
        assert!(!Policy::Always.should_restart(0, 0, true, false));
        assert!(
            Policy::Always.should_restart(0, 0, true, true),
            "always comes back with molded"
        );
        assert!(!Policy::UnlessStopped.should_restart(0, 0, true, true));
        assert!(!Policy::No.should_restart(1, 0, false, true));
    }

    #[test]
    fn back_off_doubles_and_resets() {
        assert_eq!(delay(0, Duration::ZERO), Duration::from_millis(100));
        assert_eq!(delay(3, Duration::from_secs(1)), Duration::from_millis(800));
        assert_eq!(delay(30, Duration::ZERO), Duration::from_secs(60));
        assert_eq!(delay(30, Duration::from_secs(11)), Duration::from_millis(100));
    }
}
