//! Entitlements: what a build may do beyond its sandbox, granted by the
//! person building (`molde build --allow NAME`) and by the daemon's
//! configuration (`[builder] entitlements`), both at once, as BuildKit's
//! `--allow` and `--allow-insecure-entitlement`.
//!
//! `network.host` lets `RUN --network=host` use the host's network: its
//! interfaces and the services listening on its loopback. Without it such a
//! step is refused before the build starts (and again when an ONBUILD
//! trigger brings one in).

use crate::dockerfile::{Command, Instruction};
use molde_common::errdefs::Error;

pub const NETWORK_HOST: &str = "network.host";
pub const SECURITY_INSECURE: &str = "security.insecure";

/// The entitlements one build holds.
#[derive(Debug, Clone, Default)]
pub struct Granted {
    network_host: bool,
}

impl Granted {
    /// What the person building asked for, checked against what the daemon
    /// grants at all.
    pub fn new(asked: &[String], daemon: &[String]) -> Result<Granted, Error> {
        let mut g = Granted::default();
        for a in asked {
            match a.as_str() {
                NETWORK_HOST => {}
                SECURITY_INSECURE => {
                    return Err(Error::PermissionDenied(format!(
                        "--allow {a}: molde does not run insecure (privileged) build steps"
                    )));
                }
                other => {
                    return Err(Error::PermissionDenied(format!(
                        "--allow {other:?}: unknown entitlement (molde knows {NETWORK_HOST})"
                    )));
                }
            }
            if !daemon.iter().any(|d| d == a) {
                return Err(Error::PermissionDenied(format!(
                    "--allow {a}: this molded does not grant it (add it to [builder] entitlements in its configuration)"
                )));
            }
            g.network_host |= a == NETWORK_HOST;
        }
        Ok(g)
    }

    /// Refuses an instruction that needs an entitlement this build lacks.
    pub fn check(&self, ins: &Instruction) -> Result<(), Error> {
        if !matches!(ins.command, Command::Run { .. }) {
            return Ok(());
        }
        if ins.flag("network") == Some("host") && !self.network_host {
            return Err(Error::PermissionDenied(format!(
                "RUN --network=host needs the {NETWORK_HOST} entitlement: build with --allow {NETWORK_HOST}"
            )));
        }
        match ins.flag("security") {
            None | Some("sandbox") => Ok(()),
            Some("insecure") => Err(Error::PermissionDenied(format!(
                "RUN --security=insecure needs the {SECURITY_INSECURE} entitlement, which molde does not grant"
            ))),
            Some(other) => Err(Error::PermissionDenied(format!(
                "RUN --security={other}: expected sandbox or insecure"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(flags: &str) -> Instruction {
        let df =
            crate::dockerfile::parse("Dockerfile", &format!("FROM scratch\nRUN {flags} true\n")).unwrap();
        df.stages[0].instructions[0].clone()
    }

    #[test]
    fn host_network_needs_both_grants() {
        let daemon = vec![NETWORK_HOST.to_string()];
        let none = Granted::new(&[], &daemon).unwrap();
        let err = none.check(&run("--network=host")).unwrap_err();
        assert!(err.to_string().contains("--allow network.host"), "{err}");
        assert!(none.check(&run("--network=none")).is_ok());
        let asked = vec![NETWORK_HOST.to_string()];
        assert!(
            Granted::new(&asked, &daemon)
                .unwrap()
                .check(&run("--network=host"))
                .is_ok()
        );
        let err = Granted::new(&asked, &[]).unwrap_err();
        assert!(err.to_string().contains("does not grant"), "{err}");
        assert!(
            Granted::new(&["network.everything".into()], &daemon)
                .unwrap_err()
                .to_string()
                .contains("unknown")
        );
    }

    #[test]
    fn insecure_steps_are_refused() {
        let g = Granted::new(&[], &[]).unwrap();
        assert!(
            g.check(&run("--security=insecure"))
                .unwrap_err()
                .to_string()
                .contains("security.insecure")
        );
        assert!(g.check(&run("--security=sandbox")).is_ok());
        assert!(Granted::new(&[SECURITY_INSECURE.into()], &[SECURITY_INSECURE.into()]).is_err());
    }
}
