//! A container's cgroup, read the same way by the shim (its processes,
//! its OOM kills) and the runtime (stats, top): cgroup v2's unified
//! hierarchy or the v1 controllers, whichever the host mounts under
//! `/sys/fs/cgroup`, at the cgroups path the container's spec names; and
//! limits written to it (`molde update`); and where a container's cgroup
//! goes under either cgroup driver ([`placement`]).
//!
//! Written here rather than on libcgroups' managers: those resolve and own
//! a cgroup for the process that creates it, while molde reads cgroups by
//! path after the fact (a shim's leftovers, stats of a container whose shim
//! restarted), a few files each, on hybrid hosts where some controllers are
//! v1 and the rest v2.

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// Usage less inactive file pages: what the kubelet evicts by.
    pub memory_working_set_bytes: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub memory_rss_bytes: u64,
    pub memory_page_faults: u64,
    pub memory_major_page_faults: u64,
    /// 0: no limit.
    pub memory_limit_bytes: u64,
    pub swap_usage_bytes: u64,
    pub pids: u64,
    /// Bytes read from and written to block devices, all devices summed.
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    /// Huge pages in use by page size (`2MB`, `1GB`), where the host has them.
    pub hugetlb: Vec<(String, u64)>,
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
        let swap = match self.read(&[("memory", "memory.memsw.usage_in_bytes")]) {
            Some(memsw) => memsw.trim().parse::<u64>().unwrap_or(0).saturating_sub(usage),
            None => self.number(&[("", "memory.swap.current")]),
        };
        let (io_read_bytes, io_write_bytes) = self.io();
        Stats {
            cpu_usage_ns: cpu,
            memory_usage_bytes: usage,
            memory_working_set_bytes: usage.saturating_sub(inactive),
            memory_rss_bytes: stat("total_rss").or_else(|| stat("anon")).unwrap_or(0),
            memory_page_faults: stat("total_pgfault").or_else(|| stat("pgfault")).unwrap_or(0),
            memory_major_page_faults: stat("total_pgmajfault")
                .or_else(|| stat("pgmajfault"))
                .unwrap_or(0),
            memory_limit_bytes: limit,
            swap_usage_bytes: swap,
            pids: self.number(&[("pids", "pids.current"), ("", "pids.current")]),
            io_read_bytes,
            io_write_bytes,
            hugetlb: self.hugetlb(),
        }
    }

    /// Whether this cgroup's memory is counted by the v1 controller (else
    /// by the unified hierarchy): which of containerd's two metrics shapes
    /// describes it.
    pub fn memory_v1(&self) -> bool {
        self.mount.join("memory").join(&self.rel).is_dir()
    }

    /// The text of `file` of v1 `controller`, or of the unified hierarchy
    /// when `controller` is empty.
    pub fn text(&self, controller: &str, file: &str) -> Option<String> {
        fs::read_to_string(self.file(controller, file)).ok()
    }

    /// A one-number file; `max` (v2's "no limit") reads as 0.
    pub fn value(&self, controller: &str, file: &str) -> Option<u64> {
        let text = self.text(controller, file)?;
        match text.trim() {
            "max" => Some(0),
            n => n.parse().ok(),
        }
    }

    /// A flat keyed file (`key value` lines: memory.stat, cpu.stat,
    /// memory.events, memory.oom_control).
    pub fn keyed(&self, controller: &str, file: &str) -> std::collections::BTreeMap<String, u64> {
        self.text(controller, file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// Block I/O bytes read and written: v1 `blkio.throttle.io_service_bytes`
    /// (`MAJ:MIN Read N` lines), v2 `io.stat` (`MAJ:MIN rbytes=N wbytes=N …`).
    fn io(&self) -> (u64, u64) {
        if let Some(v1) = self.read(&[("blkio", "blkio.throttle.io_service_bytes")]) {
            let sum = |op: &str| -> u64 {
                v1.lines()
                    .filter_map(|l| {
                        let mut f = l.split_whitespace();
                        let (_dev, kind, n) = (f.next()?, f.next()?, f.next()?);
                        (kind == op).then(|| n.parse::<u64>().ok()).flatten()
                    })
                    .sum()
            };
            return (sum("Read"), sum("Write"));
        }
        let v2 = self.read(&[("", "io.stat")]).unwrap_or_default();
        let sum = |key: &str| -> u64 {
            v2.split_whitespace()
                .filter_map(|kv| kv.strip_prefix(key)?.parse::<u64>().ok())
                .sum()
        };
        (sum("rbytes="), sum("wbytes="))
    }

    /// Huge page usage per size this host offers.
    fn hugetlb(&self) -> Vec<(String, u64)> {
        hugepage_sizes()
            .into_iter()
            .filter_map(|size| {
                let v1 = format!("hugetlb.{size}.usage_in_bytes");
                let v2 = format!("hugetlb.{size}.current");
                let text = self.read(&[("hugetlb", v1.as_str()), ("", v2.as_str())])?;
                Some((size, text.trim().parse().unwrap_or(0)))
            })
            .collect()
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
        if let Some(limit) = res.pids().as_ref().map(|p| p.limit()) {
            let v = if limit <= 0 {
                "max".to_string()
            } else {
                limit.to_string()
            };
            write(&[("pids", "pids.max"), ("", "pids.max")], v)?;
        }
        Ok(())
    }

    /// Freezes (`true`) or thaws every process in it: the v1 freezer
    /// controller where the host mounts one, else cgroup v2's
    /// `cgroup.freeze`. Returns once the kernel reports the new state
    /// (bounded: a freeze the kernel has not finished in 5 s is an error).
    pub fn freeze(&self, frozen: bool) -> std::io::Result<()> {
        use std::io::{Error, ErrorKind};
        let v1 = self.file("freezer", "freezer.state");
        let (file, value) = if v1.exists() {
            (v1, if frozen { "FROZEN" } else { "THAWED" })
        } else {
            (self.file("", "cgroup.freeze"), if frozen { "1" } else { "0" })
        };
        fs::write(&file, value).map_err(|e| Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.frozen() != frozen {
            if std::time::Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    format!("cgroup /{} did not become {value} within 5s", self.rel),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(())
    }

    /// Whether its processes are frozen (`molde pause`).
    pub fn frozen(&self) -> bool {
        if let Ok(s) = fs::read_to_string(self.file("freezer", "freezer.state")) {
            return s.trim() == "FROZEN";
        }
        fs::read_to_string(self.file("", "cgroup.events"))
            .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
    }

    /// The path it was named by, without the leading `/`.
    pub fn path(&self) -> &Path {
        Path::new(&self.rel)
    }
}

/// The huge page sizes the kernel offers, in the names cgroup files use
/// (`hugepages-2048kB` → `2MB`).
pub fn hugepage_sizes() -> Vec<String> {
    let Ok(dir) = fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut sizes: Vec<String> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(page_size_name(kb))
        })
        .collect();
    sizes.sort();
    sizes
}

fn page_size_name(kb: u64) -> String {
    match kb {
        kb if kb >= 1 << 20 && kb % (1 << 20) == 0 => format!("{}GB", kb >> 20),
        kb if kb >= 1 << 10 && kb % (1 << 10) == 0 => format!("{}MB", kb >> 10),
        kb => format!("{kb}KB"),
    }
}

/// How the cgroups of containers are placed: by path under the cgroup
/// mount (`cgroupfs`, molde's default), or as systemd units (`systemd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

impl Driver {
    /// `cgroupfs` or `systemd` (the kubelet's `cgroupDriver` names).
    pub fn parse(name: &str) -> Result<Driver, String> {
        match name {
            "" | "cgroupfs" => Ok(Driver::Cgroupfs),
            "systemd" => Ok(Driver::Systemd),
            other => Err(format!(
                "cgroup driver {other:?}: molde knows cgroupfs and systemd"
            )),
        }
    }
}

/// The cgroup of container `id` under `parent`: with cgroupfs `parent/id`
/// (`default_parent` when none is given); with systemd, a
/// `<prefix>-<id>.scope` in the slice `parent` names (its last element, as
/// the kubelet passes `/kubepods.slice/kubepods-besteffort.slice/…`),
/// expanded the way systemd nests slices (`a-b.slice` lives in `a.slice`),
/// `system.slice` when none is named.
pub fn placement(driver: Driver, parent: &str, default_parent: &str, prefix: &str, id: &str) -> PathBuf {
    match driver {
        Driver::Cgroupfs => {
            let parent = if parent.is_empty() { default_parent } else { parent };
            Path::new(parent).join(id)
        }
        Driver::Systemd => {
            let slice = Path::new(parent)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| s.ends_with(".slice") && s != "-.slice")
                .unwrap_or_else(|| "system.slice".into());
            let mut path = PathBuf::from("/");
            let mut nested = String::new();
            for part in slice.trim_end_matches(".slice").split('-') {
                if !nested.is_empty() {
                    nested.push('-');
                }
                nested.push_str(part);
                path.push(format!("{nested}.slice"));
            }
            path.join(format!("{prefix}-{id}.scope"))
        }
    }
}

/// Starts, in the background, the wait every cgroup migration on this host
/// begins with, so that the container about to be created does not wait for
/// it alone. Moving a process between cgroups by pid (what a runtime does
/// to place a container's init) takes the kernel's global cgroup
/// threadgroup lock for writing, and the first writer after a quiet spell
/// waits one RCU grace period (5–11 ms here: most of a container's create
/// on a cgroup v1 host). A no-op move of this process into the cgroup it is
/// already in starts that grace period at once; writers arriving while it
/// lasts, or shortly after, share it. Errors (no cgroupfs, no permission)
/// only mean no head start.
pub fn prime_migration() {
    let procs = match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(own) => own.lines().find_map(|l| {
            // "0::/path" (v2) or "N:pids:/path" (a v1 controller).
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            let mount = match ctrl {
                "" if Path::new("/sys/fs/cgroup/cgroup.procs").exists() => PathBuf::from("/sys/fs/cgroup"),
                "" => PathBuf::from("/sys/fs/cgroup/unified"),
                "pids" => PathBuf::from("/sys/fs/cgroup/pids"),
                _ => return None,
            };
            Some(mount.join(path.trim_start_matches('/')).join("cgroup.procs"))
        }),
        Err(_) => None,
    };
    let Some(procs) = procs else { return };
    let _ = std::thread::Builder::new()
        .name("cgroup-prime".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let _ = std::fs::write(&procs, std::process::id().to_string());
        });
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
            "anon 600\ninactive_file 300\nactive_file 100\npgfault 40\npgmajfault 2\n",
        );
        put(r, "molde/c/memory.swap.current", "64\n");
        put(
            r,
            "molde/c/io.stat",
            "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=5 wbytes=1 rios=1 wios=1\n",
        );
        put(r, "molde/c/cpu.stat", "usage_usec 25\nuser_usec 20\n");
        put(r, "molde/c/pids.current", "2\n");
        put(r, "molde/c/memory.events", "low 0\noom 1\noom_kill 1\n");
        let cg = Cgroup::under(r, "/molde/c");
        assert_eq!(cg.procs(), [10, 11]);
        assert_eq!(cg.oom_kills(), 1);
        let s = cg.stats();
        assert_eq!(
            Stats {
                hugetlb: Vec::new(),
                ..s
            },
            Stats {
                cpu_usage_ns: 25_000,
                memory_usage_bytes: 1000,
                memory_working_set_bytes: 700,
                memory_rss_bytes: 600,
                memory_page_faults: 40,
                memory_major_page_faults: 2,
                memory_limit_bytes: 0,
                swap_usage_bytes: 64,
                pids: 2,
                io_read_bytes: 105,
                io_write_bytes: 21,
                hugetlb: Vec::new(),
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
            "cache 10\ninactive_file 5\ntotal_inactive_file 1000\nrss 1\ntotal_rss 3000\ntotal_pgfault 9\ntotal_pgmajfault 1\n",
        );
        put(r, "memory/molde/c/memory.memsw.usage_in_bytes", "5500\n");
        put(
            r,
            "blkio/molde/c/blkio.throttle.io_service_bytes",
            "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n",
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
        assert_eq!(
            (
                s.memory_rss_bytes,
                s.memory_page_faults,
                s.memory_major_page_faults,
                s.swap_usage_bytes
            ),
            (3000, 9, 1, 500)
        );
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (4096, 512));
    }

    #[test]
    fn page_sizes_are_named_as_cgroup_files_name_them() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1 << 20), "1GB");
        assert_eq!(page_size_name(64), "64KB");
    }

    #[test]
    fn containers_are_placed_by_driver() {
        let p = |d, parent| {
            placement(d, parent, "/k8s.io", "cri-molde", "abc")
                .display()
                .to_string()
        };
        assert_eq!(p(Driver::Cgroupfs, ""), "/k8s.io/abc");
        assert_eq!(p(Driver::Cgroupfs, "/kubepods/pod1"), "/kubepods/pod1/abc");
        assert_eq!(
            p(
                Driver::Systemd,
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
            ),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-molde-abc.scope"
        );
        assert_eq!(p(Driver::Systemd, ""), "/system.slice/cri-molde-abc.scope");
        assert_eq!(Driver::parse("systemd"), Ok(Driver::Systemd));
        assert!(Driver::parse("sytemd").unwrap_err().contains("sytemd"));
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
    fn freezing_writes_the_hierarchy_the_host_has() {
        let v1 = tempfile::tempdir().unwrap();
        put(v1.path(), "freezer/molde/c/freezer.state", "THAWED\n");
        let cg = Cgroup::under(v1.path(), "/molde/c");
        assert!(!cg.frozen());
        // The kernel would move FREEZING to FROZEN; a file just keeps it.
        cg.freeze(true).unwrap();
        assert_eq!(
            fs::read_to_string(v1.path().join("freezer/molde/c/freezer.state")).unwrap(),
            "FROZEN"
        );
        assert!(cg.frozen());
        let v2 = tempfile::tempdir().unwrap();
        put(v2.path(), "molde/c/cgroup.freeze", "0\n");
        put(v2.path(), "molde/c/cgroup.events", "populated 1\nfrozen 0\n");
        let cg = Cgroup::under(v2.path(), "/molde/c");
        assert!(!cg.frozen());
        let err = cg.freeze(true).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert_eq!(
            fs::read_to_string(v2.path().join("molde/c/cgroup.freeze")).unwrap(),
            "1"
        );
        put(v2.path(), "molde/c/cgroup.events", "populated 1\nfrozen 1\n");
        assert!(cg.frozen());
        let gone = Cgroup::under(v2.path(), "/molde/gone");
        assert!(gone.freeze(true).is_err(), "no such cgroup");
    }

    #[test]
    fn the_root_and_a_gone_cgroup_have_no_processes() {
        let d = tempfile::tempdir().unwrap();
        assert!(Cgroup::under(d.path(), "").procs().is_empty());
        assert!(Cgroup::under(d.path(), "/gone").procs().is_empty());
        assert_eq!(Cgroup::under(d.path(), "/gone").stats(), Stats::default());
    }
}
