//! A container's cgroup, read the same way by the shim (its processes,
//! its OOM kills) and the runtime (stats, top): cgroup v2's unified
//! hierarchy or the v1 controllers, whichever the host mounts under
//! `/sys/fs/cgroup`, at the cgroups path the container's spec names; and
//! limits written to it (`molde update`).

use std::fs;
use std::path::{Path, PathBuf};

/// Where the cgroup file systems are mounted.
pub const MOUNT: &str = "/sys/fs/cgroup";

/// A cgroup by its path in the hierarchy (`/molde/default-web`,
/// `/kubepods/.../cri-…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    mount: PathBuf,
    rel: String,
}

/// What a container's cgroup has used (0 where the host keeps no count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// Usage less inactive file pages: what the kubelet evicts by.
    pub memory_working_set_bytes: u64,
    /// 0: no limit.
    pub memory_limit_bytes: u64,
    pub pids: u64,
}

/// The v1 controllers that hold a cgroup's processes, in the order tried.
const PROCS_V1: &[&str] = &["pids", "memory", "cpu,cpuacct", "cpuacct", "freezer"];

impl Cgroup {
    pub fn new(path: &str) -> Cgroup {
        Cgroup::under(MOUNT, path)
    }

    /// A cgroup under another mount point (tests).
    pub fn under(mount: impl Into<PathBuf>, path: &str) -> Cgroup {
        Cgroup {
            mount: mount.into(),
            rel: path.trim_start_matches('/').to_string(),
        }
    }

    /// `file` of v1 `controller`, or of the unified hierarchy when empty.
    fn file(&self, controller: &str, file: &str) -> PathBuf {
        let base = if controller.is_empty() {
            self.mount.clone()
        } else {
            self.mount.join(controller)
        };
        base.join(&self.rel).join(file)
    }

    /// The first of `candidates` that exists.
    fn read(&self, candidates: &[(&str, &str)]) -> Option<String> {
        candidates
            .iter()
            .find_map(|(c, f)| fs::read_to_string(self.file(c, f)).ok())
    }

    fn number(&self, candidates: &[(&str, &str)]) -> u64 {
        self.read(candidates)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The processes in it (none for the root or a cgroup that is gone).
    pub fn procs(&self) -> Vec<i32> {
        if self.rel.is_empty() {
            return Vec::new();
        }
        let mut candidates = vec![("", "cgroup.procs")];
        candidates.extend(PROCS_V1.iter().map(|c| (*c, "cgroup.procs")));
        self.read(&candidates)
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// How often the kernel's OOM killer killed in it.
    pub fn oom_kills(&self) -> u64 {
        [("memory", "memory.oom_control"), ("", "memory.events")]
            .iter()
            .find_map(|(c, f)| {
                let text = fs::read_to_string(self.file(c, f)).ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .map(|n| n.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0)
    }

    pub fn stats(&self) -> Stats {
        let usage = self.number(&[("memory", "memory.usage_in_bytes"), ("", "memory.current")]);
        let mut limit = self.number(&[("memory", "memory.limit_in_bytes"), ("", "memory.max")]);
        if limit >= 1 << 60 {
            limit = 0; // v1 says "no limit" with a huge number, v2 with "max"
        }
        let memory_stat = self
            .read(&[("memory", "memory.stat"), ("", "memory.stat")])
            .unwrap_or_default();
        let stat = |key: &str| {
            memory_stat
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
        };
        let inactive = stat("total_inactive_file")
            .or_else(|| stat("inactive_file"))
            .unwrap_or(0);
        let cpu = match self.read(&[("cpuacct", "cpuacct.usage"), ("cpu,cpuacct", "cpuacct.usage")]) {
            Some(v) => v.trim().parse().unwrap_or(0),
            None => self
                .read(&[("", "cpu.stat")])
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                })
                .map_or(0, |us| us * 1000),
        };
        Stats {
            cpu_usage_ns: cpu,
            memory_usage_bytes: usage,
            memory_working_set_bytes: usage.saturating_sub(inactive),
            memory_limit_bytes: limit,
            pids: self.number(&[("pids", "pids.current"), ("", "pids.current")]),
        }
    }

    /// Writes new limits (`molde update`), each into the v1 controller the
    /// host has for it or the unified hierarchy. A value the kernel refuses
    /// is an `InvalidInput` error naming the file; a cgroup without the
    /// file, `NotFound`.
    pub fn update(&self, res: &oci_spec::runtime::LinuxResources) -> std::io::Result<()> {
        use std::io::{Error, ErrorKind};
        let write = |candidates: &[(&str, &str)], value: String| -> std::io::Result<()> {
            for (controller, file) in candidates {
                let p = self.file(controller, file);
                if p.exists() {
                    return fs::write(&p, &value)
                        .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{file} = {value}: {e}")));
                }
            }
            Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "none of {} exists for cgroup /{}",
                    candidates.iter().map(|(_, f)| *f).collect::<Vec<_>>().join(", "),
                    self.rel
                ),
            ))
        };
        let v1 = |controller: &str| self.mount.join(controller).join(&self.rel).exists();
        if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) {
            if v1("memory") {
                write(&[("memory", "memory.limit_in_bytes")], limit.to_string())?;
            } else {
                let v = if limit <= 0 {
                    "max".to_string()
                } else {
                    limit.to_string()
                };
                write(&[("", "memory.max")], v)?;
            }
        }
        if let Some(c) = res.cpu() {
            if v1("cpu") {
                if let Some(p) = c.period() {
                    write(&[("cpu", "cpu.cfs_period_us")], p.to_string())?;
                }
                if let Some(q) = c.quota() {
                    write(&[("cpu", "cpu.cfs_quota_us")], q.to_string())?;
                }
                if let Some(s) = c.shares() {
                    write(&[("cpu", "cpu.shares")], s.to_string())?;
                }
            } else {
                if c.quota().is_some() || c.period().is_some() {
                    let quota = c
                        .quota()
                        .filter(|q| *q > 0)
                        .map_or("max".to_string(), |q| q.to_string());
                    write(
                        &[("", "cpu.max")],
                        format!("{quota} {}", c.period().unwrap_or(100_000)),
                    )?;
                }
                if let Some(s) = c.shares() {
                    // cgroup v2 weight from v1 shares, as runc converts them.
                    let weight = 1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142;
                    write(&[("", "cpu.weight")], weight.to_string())?;
                }
            }
            if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
                write(&[("cpuset", "cpuset.cpus"), ("", "cpuset.cpus")], cpus.clone())?;
            }
            if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
                write(&[("cpuset", "cpuset.mems"), ("", "cpuset.mems")], mems.clone())?;
            }
        }
        Ok(())
    }

    /// The path it was named by, without the leading `/`.
    pub fn path(&self) -> &Path {
        Path::new(&self.rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn a_v2_cgroup_reads_from_the_unified_hierarchy() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        put(r, "molde/c/cgroup.procs", "10\n11\n");
        put(r, "molde/c/memory.current", "1000\n");
        put(r, "molde/c/memory.max", "max\n");
        put(
            r,
            "molde/c/memory.stat",
            "anon 600\ninactive_file 300\nactive_file 100\n",
        );
        put(r, "molde/c/cpu.stat", "usage_usec 25\nuser_usec 20\n");
        put(r, "molde/c/pids.current", "2\n");
        put(r, "molde/c/memory.events", "low 0\noom 1\noom_kill 1\n");
        let cg = Cgroup::under(r, "/molde/c");
        assert_eq!(cg.procs(), [10, 11]);
        assert_eq!(cg.oom_kills(), 1);
        assert_eq!(
            cg.stats(),
            Stats {
                cpu_usage_ns: 25_000,
                memory_usage_bytes: 1000,
                memory_working_set_bytes: 700,
                memory_limit_bytes: 0,
                pids: 2,
            }
        );
    }

    #[test]
    fn a_v1_cgroup_reads_from_its_controllers() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        put(r, "memory/molde/c/cgroup.procs", "7\n");
        put(r, "memory/molde/c/memory.usage_in_bytes", "5000\n");
        put(r, "memory/molde/c/memory.limit_in_bytes", "9223372036854771712\n");
        put(
            r,
            "memory/molde/c/memory.stat",
            "cache 10\ninactive_file 5\ntotal_inactive_file 1000\n",
        );
        put(
            r,
            "memory/molde/c/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        put(r, "cpuacct/molde/c/cpuacct.usage", "123456\n");
        put(r, "pids/molde/c/pids.current", "1\n");
        let cg = Cgroup::under(r, "molde/c");
        assert_eq!(cg.procs(), [7]);
        assert_eq!(cg.oom_kills(), 3);
        let s = cg.stats();
        assert_eq!(
            (s.cpu_usage_ns, s.memory_usage_bytes, s.memory_limit_bytes, s.pids),
            (123456, 5000, 0, 1)
        );
        assert_eq!(s.memory_working_set_bytes, 4000);
    }

    #[test]
    fn limits_go_to_the_hierarchy_the_host_has() {
        use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
        let res = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(64 << 20).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(50_000)
                    .period(100_000u64)
                    .shares(1024u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in ["memory.max", "cpu.max", "cpu.weight"] {
            put(r, &format!("molde/c/{f}"), "");
        }
        Cgroup::under(r, "/molde/c").update(&res).unwrap();
        let read = |f: &str| fs::read_to_string(r.join("molde/c").join(f)).unwrap();
        assert_eq!(read("memory.max"), (64 << 20).to_string());
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cpu.weight"), "39");

        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "memory/molde/c/memory.limit_in_bytes",
            "cpu/molde/c/cpu.cfs_quota_us",
            "cpu/molde/c/cpu.cfs_period_us",
            "cpu/molde/c/cpu.shares",
        ] {
            put(r, f, "");
        }
        Cgroup::under(r, "molde/c").update(&res).unwrap();
        assert_eq!(
            fs::read_to_string(r.join("cpu/molde/c/cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        assert_eq!(
            fs::read_to_string(r.join("memory/molde/c/memory.limit_in_bytes")).unwrap(),
            (64 << 20).to_string()
        );

        let e = Cgroup::under(d.path(), "/gone").update(&res).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn the_root_and_a_gone_cgroup_have_no_processes() {
        let d = tempfile::tempdir().unwrap();
        assert!(Cgroup::under(d.path(), "").procs().is_empty());
        assert!(Cgroup::under(d.path(), "/gone").procs().is_empty());
        assert_eq!(Cgroup::under(d.path(), "/gone").stats(), Stats::default());
    }
}
