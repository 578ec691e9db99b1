//! The systemd cgroup driver (`[cri] cgroup_driver = "systemd"`): a
//! container whose record carries `UNIT_LABEL` is made a transient scope of
//! systemd's, as runc does for containerd and CRI-O. libcontainer creates
//! the container's cgroup at the path systemd gives such a unit (the slice's
//! nesting, then `<unit>`); once the container is created and held, molded
//! asks systemd's manager over D-Bus to start the scope with the container's
//! init in it, `Delegate=yes` (the cgroup below is the container's), and the
//! container's limits as unit properties, so systemd keeps them rather than
//! resetting them. `UpdateContainerResources` sets them again with
//! `SetUnitProperties`. When the container is removed (or its task deleted)
//! molded stops the scope itself: systemd would notice the emptied cgroup
//! on its own, but not when the cgroup is removed before its notification
//! is read, and the scope would then stay "active" with nothing in it.
//!
//! The D-Bus side is zbus's (a maintained implementation of the protocol);
//! the manager's methods are declared here from systemd's published
//! `org.freedesktop.systemd1.Manager` interface.

use molde_common::errdefs::Error;
use oci_spec::runtime::LinuxResources;
use zbus::zvariant::{OwnedObjectPath, Value};

pub use molde_common::labels::{SYSTEMD_SLICE as SLICE_LABEL, SYSTEMD_UNIT as UNIT_LABEL};

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    /// StartTransientUnit(s name, s mode, a(sv) properties, a(sa(sv)) aux) → o job
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, Vec<(&str, Value<'_>)>)],
    ) -> zbus::Result<OwnedObjectPath>;

    /// StopUnit(s name, s mode) → o job
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// SetUnitProperties(s name, b runtime, a(sv) properties)
    fn set_unit_properties(
        &self,
        name: &str,
        runtime: bool,
        properties: &[(&str, Value<'_>)],
    ) -> zbus::Result<()>;
}

/// How systemd names a cgroup limit: the unified hierarchy's properties, or
/// the legacy ones on a host whose controllers are cgroup v1 (systemd 252
/// still takes `MemoryLimit` and `CPUShares` there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    Unified,
    Legacy,
}

impl Hierarchy {
    /// This host's: unified when /sys/fs/cgroup is a cgroup2 mount.
    // statfs's f_type is i64 here and narrower on other architectures.
    #[allow(clippy::unnecessary_cast)]
    pub fn of_host() -> Hierarchy {
        match rustix::fs::statfs("/sys/fs/cgroup") {
            Ok(s) if s.f_type as i64 == libc::CGROUP2_SUPER_MAGIC as i64 => Hierarchy::Unified,
            _ => Hierarchy::Legacy,
        }
    }
}

/// The unit properties that carry `res`: memory, CPU weight or shares, CPU
/// quota and the task limit, each only when the spec sets it.
pub fn limit_properties(res: &LinuxResources, h: Hierarchy) -> Vec<(&'static str, Value<'static>)> {
    let mut p: Vec<(&'static str, Value<'static>)> = Vec::new();
    if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()).filter(|&l| l > 0) {
        let key = match h {
            Hierarchy::Unified => "MemoryMax",
            Hierarchy::Legacy => "MemoryLimit",
        };
        p.push((key, Value::U64(limit as u64)));
        // OCI's swap is memory and swap together; the unified hierarchy's
        // swap.max is the swap alone (systemd 252 has no swap property for
        // cgroup v1).
        if let (Hierarchy::Unified, Some(swap)) = (h, res.memory().as_ref().and_then(|m| m.swap())) {
            let max = if swap < 0 {
                u64::MAX
            } else {
                (swap - limit).max(0) as u64
            };
            p.push(("MemorySwapMax", Value::U64(max)));
        }
    }
    if let Some(cpu) = res.cpu() {
        if let Some(shares) = cpu.shares().filter(|&s| s > 0) {
            match h {
                // The kernel's (and runc's) conversion of shares [2, 262144]
                // to weight [1, 10000].
                Hierarchy::Unified => {
                    let shares = shares.clamp(2, 262_144);
                    p.push(("CPUWeight", Value::U64(1 + ((shares - 2) * 9999) / 262_142)));
                }
                Hierarchy::Legacy => p.push(("CPUShares", Value::U64(shares))),
            }
        }
        if let Some(quota) = cpu.quota().filter(|&q| q > 0) {
            let period = cpu.period().filter(|&p| p > 0).unwrap_or(100_000);
            // Time per second of wall clock, in microseconds; systemd rounds
            // to 10 ms, as runc's conversion does before it.
            let per_sec = (quota as u64 * 1_000_000 / period).div_ceil(10_000) * 10_000;
            p.push(("CPUQuotaPerSecUSec", Value::U64(per_sec)));
        }
    }
    if let Some(pids) = res.pids().as_ref().map(|p| p.limit()).filter(|&l| l > 0) {
        p.push(("TasksMax", Value::U64(pids as u64)));
    }
    p
}

/// Takes out of `res` what systemd holds as unit properties (memory and
/// swap limits, CPU shares, quota and period, task limit): under the systemd driver
/// systemd writes those into the scope's cgroup when it starts the scope,
/// before the container runs, and again on each update; libcontainer writes
/// only the rest (devices, cpuset, hugepages, unified keys).
pub fn without_unit_limits(res: &LinuxResources) -> LinuxResources {
    let mut rest = res.clone();
    if let Some(mut m) = *rest.memory() {
        m.set_limit(None);
        // A swap limit without a memory limit is refused by libcontainer.
        m.set_swap(None);
        rest.set_memory(Some(m));
    }
    if let Some(mut c) = rest.cpu().clone() {
        c.set_shares(None);
        c.set_quota(None);
        c.set_period(None);
        rest.set_cpu(Some(c));
    }
    rest.set_pids(None);
    rest
}

async fn manager() -> Result<ManagerProxy<'static>, Error> {
    let conn = zbus::Connection::system().await.map_err(|e| {
        Error::FailedPrecondition(format!("the systemd cgroup driver: reaching the system bus: {e}"))
    })?;
    ManagerProxy::new(&conn)
        .await
        .map_err(|e| Error::FailedPrecondition(format!("the systemd cgroup driver: systemd's manager: {e}")))
}

/// Starts `unit` in `slice` with `pid` in it, delegated, with `res` as its
/// limits.
pub async fn start_scope(unit: &str, slice: &str, pid: u32, res: &LinuxResources) -> Result<(), Error> {
    let mut props: Vec<(&str, Value<'_>)> = vec![
        ("Description", Value::from(format!("molde container {unit}"))),
        ("Slice", Value::from(slice.to_string())),
        ("Delegate", Value::Bool(true)),
        ("DefaultDependencies", Value::Bool(false)),
        ("PIDs", Value::from(vec![pid])),
        ("MemoryAccounting", Value::Bool(true)),
        ("CPUAccounting", Value::Bool(true)),
        ("TasksAccounting", Value::Bool(true)),
    ];
    props.extend(limit_properties(res, Hierarchy::of_host()));
    manager()
        .await?
        .start_transient_unit(unit, "replace", &props, &[])
        .await
        .map_err(|e| Error::FailedPrecondition(format!("systemd did not start {unit}: {e}")))?;
    Ok(())
}

/// Stops `unit`; a unit systemd has already let go of is no error.
pub async fn stop_scope(unit: &str) -> Result<(), Error> {
    match manager().await?.stop_unit(unit, "replace").await {
        Ok(_) => Ok(()),
        Err(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
        {
            Ok(())
        }
        Err(e) => Err(Error::FailedPrecondition(format!(
            "systemd did not stop {unit}: {e}"
        ))),
    }
}

/// Sets `res` on `unit` (for as long as it runs).
pub async fn update_scope(unit: &str, res: &LinuxResources) -> Result<(), Error> {
    let props = limit_properties(res, Hierarchy::of_host());
    if props.is_empty() {
        return Ok(());
    }
    manager()
        .await?
        .set_unit_properties(unit, true, &props)
        .await
        .map_err(|e| Error::FailedPrecondition(format!("systemd did not update {unit}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};

    fn res() -> LinuxResources {
        LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(64i64 << 20).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(100i64).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn limits_in_systemds_words_on_either_hierarchy() {
        let names = |h| {
            limit_properties(&res(), h)
                .into_iter()
                .map(|(k, v)| (k, u64::try_from(v).unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(Hierarchy::Legacy),
            [
                ("MemoryLimit", 64 << 20),
                ("CPUShares", 512),
                ("CPUQuotaPerSecUSec", 500_000),
                ("TasksMax", 100)
            ]
        );
        assert_eq!(
            names(Hierarchy::Unified),
            [
                ("MemoryMax", 64 << 20),
                ("CPUWeight", 20),
                ("CPUQuotaPerSecUSec", 500_000),
                ("TasksMax", 100)
            ]
        );
        assert!(limit_properties(&LinuxResources::default(), Hierarchy::Unified).is_empty());
        // What systemd holds is left out of what libcontainer writes.
        let rest = without_unit_limits(&res());
        assert!(limit_properties(&rest, Hierarchy::Legacy).is_empty());
        assert_eq!(rest.memory().as_ref().unwrap().limit(), None);
    }

    #[test]
    fn swap_goes_to_the_unit_with_the_memory_limit() {
        let with_swap = |swap: i64| {
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(64i64 << 20)
                        .swap(swap)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        let swap_max = |r: &LinuxResources, h| {
            limit_properties(r, h)
                .into_iter()
                .find(|(k, _)| *k == "MemorySwapMax")
                .map(|(_, v)| u64::try_from(v).unwrap())
        };
        // The kubelet's "no swap": memory+swap equal to memory.
        assert_eq!(swap_max(&with_swap(64 << 20), Hierarchy::Unified), Some(0));
        assert_eq!(swap_max(&with_swap(96 << 20), Hierarchy::Unified), Some(32 << 20));
        assert_eq!(swap_max(&with_swap(-1), Hierarchy::Unified), Some(u64::MAX));
        assert_eq!(swap_max(&with_swap(96 << 20), Hierarchy::Legacy), None);
        // libcontainer refuses a swap limit without a memory limit.
        let rest = without_unit_limits(&with_swap(96 << 20));
        assert_eq!(rest.memory().as_ref().unwrap().swap(), None);
    }
}
