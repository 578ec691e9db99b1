//! A container's state as its shim left it on disk, and acting on it: list,
//! logs, kill, stop, wait, remove.
//!
//! molded keeps no in-memory table of containers: a bundle directory, the
//! shim's `init.pid`, `exit.json` and `error` files say everything. That is
//! what lets containers outlive molded: a restarted molded reads the same
//! files and finds every container where its shim left it.

use molde_common::errdefs::Error;
use std::path::Path;
use std::time::Duration;

use molde_api::containerd::services::containers::v1::Container;
use molde_api::molde::services::runtime::v1 as api;
use molde_bundle::{Bundle, State};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use prost::Message;
use tonic::Status;

use crate::containers;
use crate::run::NAME_LABEL;
use crate::service::RuntimeService;

/// What the files of a bundle say.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub state: &'static str,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub pid: i32,
    pub finished_at: String,
    pub error: String,
}

/// The state a bundle's files give, in the API's terms.
pub fn observe(bundle: &Path, cgroup: &str) -> Observed {
    match Bundle::new(bundle).state(cgroup) {
        State::Exited(e) => Observed {
            state: "exited",
            exit_code: e.status,
            oom_killed: e.oom_killed,
            finished_at: e.exited_at,
            ..Default::default()
        },
        State::Failed(error) => Observed {
            state: "exited",
            exit_code: start_failure_status(&error),
            error: start_failure_message(&error),
            ..Default::default()
        },
        State::Running { pid } => Observed {
            state: "running",
            pid: pid.unwrap_or(0),
            ..Default::default()
        },
        State::Lost => Observed {
            state: "exited",
            exit_code: 255,
            error: "the container's shim ended without recording an exit status".into(),
            ..Default::default()
        },
        State::Created => Observed {
            state: "created",
            ..Default::default()
        },
    }
}

/// What a start that could not run the container's command says, as docker
/// words it: `exec: "x": executable file not found in $PATH` (or
/// `permission denied`), once, instead of the runtime's chain of causes.
pub fn start_failure_message(error: &str) -> String {
    let quoted = |after: &str| -> Option<String> {
        let rest = &error[error.find(after)? + after.len()..];
        let q = rest.chars().next()?;
        if !matches!(q, '\'' | '"') {
            return None;
        }
        let end = rest[1..].find(q)?;
        Some(rest[1..1 + end].to_string())
    };
    let program = quoted("executable ").or_else(|| quoted("executable="));
    let lower = error.to_ascii_lowercase();
    match program {
        Some(p) if lower.contains("not found") => {
            format!("exec: \"{p}\": executable file not found in $PATH")
        }
        Some(p) if lower.contains("permission") => format!("exec: \"{p}\": permission denied"),
        _ => error.to_string(),
    }
}

/// The status docker gives a container whose command could not be run:
/// 127 when it is not there, 126 when it cannot be executed, else 125.
pub fn start_failure_status(error: &str) -> i32 {
    let e = error.to_ascii_lowercase();
    if e.contains("no such file") || e.contains("not found") {
        127
    } else if e.contains("permission") || e.contains("exec format error") || e.contains("is a directory") {
        126
    } else {
        125
    }
}

/// Parses `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal, Error> {
    if s.is_empty() {
        return Ok(Signal::SIGKILL);
    }
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map_err(|_| Error::InvalidArgument(format!("signal {s:?}: unknown number")));
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse()
        .map_err(|_| Error::InvalidArgument(format!("signal {s:?}: unknown name")))
}

impl RuntimeService {
    pub(crate) fn record(&self, ns: &str, id: &str) -> Result<Container, Error> {
        let e = self
            .store
            .get(&containers::key(ns, id))?
            .ok_or_else(|| Error::NotFound(format!("container {id:?}")))?;
        Container::decode(e.value.as_slice()).map_err(|err| Error::Corrupt {
            key: e.key.clone(),
            message: err.to_string(),
        })
    }

    /// The records of the namespace's containers (molde's own and those
    /// containerd clients made).
    fn records(&self, ns: &str) -> Result<Vec<Container>, Error> {
        Ok(self
            .store
            .range(&molde_meta::keys::containers::prefix(ns))?
            .into_iter()
            .filter_map(|e| Container::decode(e.value.as_slice()).ok())
            .collect())
    }

    /// The records of every namespace's containers, with their namespace.
    pub(crate) fn all_records(&self) -> Vec<(String, Container)> {
        let Ok(entries) = self.store.range(molde_meta::keys::containers::ALL) else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter_map(|e| {
                let (ns, _) = molde_meta::keys::containers::parse(&e.key)?;
                Some((ns.to_string(), Container::decode(e.value.as_slice()).ok()?))
            })
            .collect()
    }

    /// The id of the container named `name` (by --name or rename).
    pub(crate) fn named(&self, ns: &str, name: &str) -> Result<Option<String>, Error> {
        Ok(self
            .records(ns)?
            .into_iter()
            .find(|c| c.labels.get(NAME_LABEL).is_some_and(|n| n == name))
            .map(|c| c.id))
    }

    /// The id a user's reference names, as docker resolves it: a name, a
    /// full id (molde's container id is its name when it was created with
    /// one and that name was free as an id), else the one id that starts
    /// with it (`ps` prints 12 characters).
    pub(crate) fn resolve(&self, ns: &str, reference: &str) -> Result<String, Error> {
        if reference.is_empty() {
            return Err(Error::InvalidArgument("no container given".into()));
        }
        let records = self.records(ns)?;
        if let Some(c) = records
            .iter()
            .find(|c| c.labels.get(NAME_LABEL).is_some_and(|n| n == reference))
        {
            return Ok(c.id.clone());
        }
        if records.iter().any(|c| c.id == reference) {
            return Ok(reference.to_string());
        }
        let matches: Vec<&str> = records
            .iter()
            .filter(|c| c.id.starts_with(reference))
            .map(|c| c.id.as_str())
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(Error::NotFound(format!(
                "container {reference:?}: no container has that name or an id starting with it"
            ))),
            many => Err(Error::InvalidArgument(format!(
                "container {reference:?}: {} containers have ids starting with it ({}); give more of the id",
                many.len(),
                many.join(", ")
            ))),
        }
    }

    /// Gives container `id` the name `name`, as `docker rename` does.
    pub(crate) fn rename(&self, ns: &str, id: &str, name: &str) -> Result<(), Error> {
        containers::check_id(name)?;
        let mut c = self.record(ns, id)?;
        let taken = self
            .records(ns)?
            .into_iter()
            .any(|o| o.id != id && (o.labels.get(NAME_LABEL).is_some_and(|n| n == name) || o.id == name));
        if taken {
            return Err(Error::AlreadyExists(format!(
                "container name {name:?} is already in use"
            )));
        }
        c.labels.insert(NAME_LABEL.into(), name.into());
        c.updated_at = Some(molde_common::timestamp(molde_common::now_nanos()));
        self.store
            .txn(molde_meta::Txn::new().put(containers::key(ns, id), c.encode_to_vec()))?;
        tracing::info!(namespace = ns, container = id, name, "container renamed");
        Ok(())
    }

    /// Freezes or thaws a running container's processes.
    pub(crate) fn pause(&self, ns: &str, id: &str, frozen: bool) -> Result<(), Error> {
        let (_, o) = self.running(ns, id)?;
        if frozen && o.state == "paused" {
            return Err(Error::FailedPrecondition(format!(
                "container {id:?} is already paused"
            )));
        }
        if !frozen && o.state != "paused" {
            return Err(Error::FailedPrecondition(format!(
                "container {id:?} is not paused"
            )));
        }
        molde_bundle::cgroup::Cgroup::new(&self.cgroup(ns, id))
            .freeze(frozen)
            .map_err(Error::io(format!("container {id:?}: the cgroup freezer")))?;
        tracing::info!(
            namespace = ns,
            container = id,
            frozen,
            "container paused or resumed"
        );
        Ok(())
    }

    pub(crate) fn observe(&self, ns: &str, id: &str) -> Observed {
        let bundle = self.bundle_dir(ns, id);
        let cg = cgroup_of(&bundle).unwrap_or_else(|| crate::spec::cgroup_path(ns, id));
        let mut o = observe(&bundle, &cg);
        if o.state == "running" && molde_bundle::cgroup::Cgroup::new(&cg).frozen() {
            o.state = "paused";
        }
        o
    }

    pub(crate) fn status(&self, ns: &str, c: &Container) -> api::ContainerStatus {
        let mut o = self.observe(ns, &c.id);
        if o.state == "exited"
            && self
                .restarting
                .lock()
                .expect("restarting set")
                .contains(&format!("{ns}/{}", c.id))
        {
            o.state = "restarting";
        }
        // molde's own containers always have a bundle; one without was lost
        // with the state directory (the host restarted).
        if c.extensions.contains_key(crate::run::RUN_REQUEST) && !self.bundle_dir(ns, &c.id).exists() {
            o = Observed {
                state: "exited",
                exit_code: 255,
                error: "its run was lost with molded's state directory (the host restarted)".into(),
                ..Default::default()
            };
        }
        let command = c
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice::<oci_spec::runtime::Spec>(&s.value).ok())
            .and_then(|s| s.process().as_ref()?.args().clone())
            .unwrap_or_default();
        let req = crate::run::run_request(c);
        let tty = c
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice::<oci_spec::runtime::Spec>(&s.value).ok())
            .and_then(|s| s.process().as_ref()?.terminal())
            .unwrap_or(false);
        let health = if matches!(o.state, "running" | "paused") {
            Bundle::new(self.bundle_dir(ns, &c.id))
                .health()
                .map(|h| h.status)
                .unwrap_or_default()
        } else {
            String::new()
        };
        let started_at = Bundle::new(self.bundle_dir(ns, &c.id))
            .started_at()
            .map(|t| {
                chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            })
            .unwrap_or_default();
        api::ContainerStatus {
            started_at,
            labels: c
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("io.molde/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            health,
            restart_count: Bundle::new(self.bundle_dir(ns, &c.id)).restart_count(),
            restart_policy: req.restart.clone(),
            name: c.labels.get(NAME_LABEL).cloned().unwrap_or_default(),
            ports: req.ports,
            tty,
            id: c.id.clone(),
            image: c.image.clone(),
            command,
            created_unix: c.created_at.as_ref().map(|t| t.seconds).unwrap_or(0),
            state: o.state.to_string(),
            exit_code: o.exit_code,
            oom_killed: o.oom_killed,
            pid: o.pid,
            finished_at: o.finished_at,
            error: o.error,
        }
    }

    pub(crate) fn list(&self, ns: &str, all: bool) -> Result<Vec<api::ContainerStatus>, Error> {
        let records = self.store.range(&molde_meta::keys::containers::prefix(ns))?;
        self.statuses(ns, all, records.iter().map(|e| e.value.as_slice()))
    }

    /// `list` of the named containers only (a status of one container
    /// costs one record, not the namespace's); unknown IDs are left out.
    pub(crate) fn list_only(
        &self,
        ns: &str,
        all: bool,
        ids: &[String],
    ) -> Result<Vec<api::ContainerStatus>, Error> {
        let mut records = Vec::new();
        for id in ids {
            if let Some(e) = self.store.get(&containers::key(ns, id))? {
                records.push(e);
            }
        }
        self.statuses(ns, all, records.iter().map(|e| e.value.as_slice()))
    }

    fn statuses<'a>(
        &self,
        ns: &str,
        all: bool,
        records: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Vec<api::ContainerStatus>, Error> {
        let mut out = Vec::new();
        for value in records {
            let Ok(c) = Container::decode(value) else {
                continue;
            };
            if c.runtime
                .as_ref()
                .is_none_or(|r| r.name != crate::service::RUNTIME_NAME)
            {
                continue; // records containerd clients made for other runtimes
            }
            let st = self.status(ns, &c);
            if all || matches!(st.state.as_str(), "running" | "paused" | "restarting") {
                out.push(st);
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.created_unix));
        Ok(out)
    }

    /// The record of a container that runs, and what its files say;
    /// FailedPrecondition for one that does not.
    pub(crate) fn running(&self, ns: &str, id: &str) -> Result<(Container, Observed), Error> {
        let c = self.record(ns, id)?;
        let o = self.observe(ns, id);
        if o.state != "running" && o.state != "paused" {
            return Err(Error::FailedPrecondition(format!(
                "container {id:?} is not running"
            )));
        }
        Ok((c, o))
    }

    pub(crate) fn kill(&self, ns: &str, id: &str, sig: Signal) -> Result<(), Error> {
        let (_, o) = self.running(ns, id)?;
        // A pid of 0 would signal molded's own process group: the init is
        // already gone and its shim is recording the exit, so there is
        // nothing left to signal.
        if o.pid <= 0 {
            return Ok(());
        }
        nix::sys::signal::kill(Pid::from_raw(o.pid), sig)
            .map_err(|e| Error::io(format!("signalling container {id:?}"))(e.into()))?;
        // A frozen container takes its signal when thawed, as docker's
        // stop and kill of a paused container do.
        if o.state == "paused" && matches!(sig, Signal::SIGKILL | Signal::SIGTERM) {
            molde_bundle::cgroup::Cgroup::new(&self.cgroup(ns, id))
                .freeze(false)
                .map_err(Error::io(format!("container {id:?}: thawing it")))?;
        }
        tracing::info!(namespace = ns, container = id, signal = %sig, "container signalled");
        Ok(())
    }

    /// Waits until the container exited (bounded by `limit` when given).
    pub(crate) async fn wait(
        &self,
        ns: &str,
        id: &str,
        limit: Option<Duration>,
    ) -> Result<Option<Observed>, Status> {
        self.record(ns, id)?;
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        loop {
            let o = self.observe(ns, id);
            if o.state == "exited" {
                self.exited(ns, id);
                return Ok(Some(o));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops with `signal` first, then SIGKILL after `timeout`.
    pub(crate) async fn stop_with(
        &self,
        ns: &str,
        id: &str,
        timeout: Duration,
        signal: Signal,
    ) -> Result<Observed, Error> {
        self.record(ns, id)?;
        if matches!(self.observe(ns, id).state, "running" | "paused") {
            let _ = self.kill(ns, id, signal);
            if let Some(o) = self.wait(ns, id, Some(timeout)).await? {
                return Ok(o);
            }
            let _ = self.kill(ns, id, Signal::SIGKILL);
        }
        let o = self
            .wait(ns, id, Some(Duration::from_secs(30)))
            .await?
            .unwrap_or_else(|| self.observe(ns, id));
        if o.state != "running" {
            // A stopped container holds no address, port mapping or netns.
            self.release_network(ns, id).await;
        }
        Ok(o)
    }

    pub(crate) async fn remove_container(&self, ns: &str, id: &str, force: bool) -> Result<(), Error> {
        self.record(ns, id)?;
        self.abandon_held(ns, id).await;
        self.exited(ns, id);
        if matches!(self.observe(ns, id).state, "running" | "paused") {
            if !force {
                return Err(Error::FailedPrecondition(format!(
                    "container {id:?} is running: stop it first, or remove it with --force"
                )));
            }
            let _ = self.kill(ns, id, Signal::SIGKILL);
            self.wait(ns, id, Some(Duration::from_secs(30))).await?;
        }
        self.release_scope(ns, id).await;
        self.remove(ns, id).await;
        tracing::info!(namespace = ns, container = id, "container removed");
        Ok(())
    }

    /// Under the systemd cgroup driver, stops the container's scope: its
    /// processes are gone, and systemd may not have noticed.
    pub(crate) async fn release_scope(&self, ns: &str, id: &str) {
        let unit = (self.record(ns, id).ok()).and_then(|c| c.labels.get(crate::systemd::UNIT_LABEL).cloned());
        if let Some(unit) = unit
            && let Err(e) = crate::systemd::stop_scope(&unit).await
        {
            tracing::warn!(namespace = ns, container = id, "{e}");
        }
    }

    /// The log records of a container, the last `tail` of them when not 0.
    /// With `from` 0, the rotated files too (`--log-opt max-file`).
    pub(crate) fn read_log(&self, ns: &str, id: &str, from: u64) -> (Vec<api::LogRecord>, u64) {
        let b = molde_bundle::Bundle::new(self.bundle_dir(ns, id));
        let (records, end) = if from == 0 {
            b.all_log_records()
        } else {
            b.log_records(from)
        };
        let out = records
            .into_iter()
            .map(|r| api::LogRecord {
                stream: if r.stream == "stderr" { 2 } else { 1 },
                data: r.log.into_bytes(),
                time: r.time,
            })
            .collect();
        (out, end)
    }
}

/// Writes new limits into a running container's cgroup.
pub fn cgroup_update(cg: &str, res: &oci_spec::runtime::LinuxResources) -> Result<(), Error> {
    molde_bundle::cgroup::Cgroup::new(cg)
        .update(res)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::FailedPrecondition(e.to_string()),
            _ => Error::InvalidArgument(e.to_string()),
        })
}

/// The cgroup a bundle's spec names (molde's or a containerd client's).
pub fn cgroup_of(bundle: &Path) -> Option<String> {
    let spec = molde_bundle::Bundle::new(bundle).spec().ok()?;
    spec.linux()
        .as_ref()?
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Pids in a container's cgroup.
pub fn cgroup_pids(cg: &str) -> Vec<i32> {
    molde_bundle::cgroup::Cgroup::new(cg).procs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_in_dockers_words() {
        let raw = "creating container x (libcontainer::workload::default: executable for container process not found \
                   in PATH executable=\"nosuch\"): failed to create container: exec process failed with error error in \
                   executing process : executable 'nosuch' not found in $PATH";
        assert_eq!(
            start_failure_message(raw),
            "exec: \"nosuch\": executable file not found in $PATH"
        );
        assert_eq!(start_failure_message("no space left"), "no space left");
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigint").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn exited_and_created_states_come_from_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(observe(d.path(), "/molde/x").state, "created");
        std::fs::write(d.path().join("init.pid"), "999999999").unwrap();
        assert_eq!(
            observe(d.path(), "/molde/x").state,
            "exited",
            "a dead shim means exited"
        );
        std::fs::write(
            d.path().join("exit.json"),
            r#"{"status":137,"oom_killed":true,"exited_at":"t"}"#,
        )
        .unwrap();
        let o = observe(d.path(), "/molde/x");
        assert_eq!((o.state, o.exit_code, o.oom_killed), ("exited", 137, true));
    }
}
