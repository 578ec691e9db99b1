//! tasks.v1 `Metrics`: a container's cgroup counters in containerd's shapes,
//! `io.containerd.cgroups.v1.Metrics` when its memory is counted by the v1
//! controllers and `io.containerd.cgroups.v2.Metrics` on the unified
//! hierarchy, as containerd's shims answer, so `ctr task metrics` and any
//! containerd client read molde's containers unchanged.

use std::collections::BTreeMap;

use molde_api::io::containerd::cgroups::{v1, v2};
use molde_bundle::cgroup::{Cgroup, hugepage_sizes};
use prost::Message;

/// The type URL clients look the data up by (the message's full name).
pub const V1_TYPE: &str = "io.containerd.cgroups.v1.Metrics";
pub const V2_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

/// The container's counters, encoded in the shape its host's hierarchy calls for.
pub fn of(cg: &Cgroup) -> prost_types::Any {
    match cg.memory_v1() {
        true => prost_types::Any {
            type_url: V1_TYPE.into(),
            value: v1_metrics(cg).encode_to_vec(),
        },
        false => prost_types::Any {
            type_url: V2_TYPE.into(),
            value: v2_metrics(cg).encode_to_vec(),
        },
    }
}

fn key(map: &BTreeMap<String, u64>, k: &str) -> u64 {
    map.get(k).copied().unwrap_or(0)
}

/// The first of the v1 controller names a host mounts cpuacct's files under.
fn cpuacct(cg: &Cgroup, file: &str) -> Option<String> {
    ["cpuacct", "cpu,cpuacct"].iter().find_map(|c| cg.text(c, file))
}

pub fn v1_metrics(cg: &Cgroup) -> v1::Metrics {
    let mem = cg.keyed("memory", "memory.stat");
    let entry = |prefix: &str| {
        let f = |name: &str| cg.value("memory", &format!("{prefix}.{name}")).unwrap_or(0);
        v1::MemoryEntry {
            limit: f("limit_in_bytes"),
            usage: f("usage_in_bytes"),
            max: f("max_usage_in_bytes"),
            failcnt: f("failcnt"),
        }
    };
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    let times: BTreeMap<String, u64> = cpuacct(cg, "cpuacct.stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((
                k.to_string(),
                v.trim().parse::<u64>().ok()? * 1_000_000_000 / ticks,
            ))
        })
        .collect();
    let throttle = cg.keyed("cpu", "cpu.stat");
    let blkio = |file: &str| -> Vec<v1::BlkIoEntry> {
        cg.text("blkio", file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
                let (major, minor) = dev.split_once(':')?;
                Some(v1::BlkIoEntry {
                    op: op.to_string(),
                    device: String::new(),
                    major: major.parse().ok()?,
                    minor: minor.parse().ok()?,
                    value: value.parse().ok()?,
                })
            })
            .collect()
    };
    let oom = cg.keyed("memory", "memory.oom_control");
    v1::Metrics {
        hugetlb: hugepage_sizes()
            .into_iter()
            .filter_map(|size| {
                let f = |name: &str| cg.value("hugetlb", &format!("hugetlb.{size}.{name}"));
                Some(v1::HugetlbStat {
                    usage: f("usage_in_bytes")?,
                    max: f("max_usage_in_bytes").unwrap_or(0),
                    failcnt: f("failcnt").unwrap_or(0),
                    pagesize: size,
                })
            })
            .collect(),
        pids: Some(v1::PidsStat {
            current: cg.value("pids", "pids.current").unwrap_or(0),
            limit: cg.value("pids", "pids.max").unwrap_or(0),
        }),
        cpu: Some(v1::CpuStat {
            usage: Some(v1::CpuUsage {
                total: cpuacct(cg, "cpuacct.usage")
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0),
                kernel: key(&times, "system"),
                user: key(&times, "user"),
                per_cpu: cpuacct(cg, "cpuacct.usage_percpu")
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect(),
            }),
            throttling: Some(v1::Throttle {
                periods: key(&throttle, "nr_periods"),
                throttled_periods: key(&throttle, "nr_throttled"),
                throttled_time: key(&throttle, "throttled_time"),
            }),
        }),
        memory: Some(v1::MemoryStat {
            cache: key(&mem, "cache"),
            rss: key(&mem, "rss"),
            rss_huge: key(&mem, "rss_huge"),
            mapped_file: key(&mem, "mapped_file"),
            dirty: key(&mem, "dirty"),
            writeback: key(&mem, "writeback"),
            pg_pg_in: key(&mem, "pgpgin"),
            pg_pg_out: key(&mem, "pgpgout"),
            pg_fault: key(&mem, "pgfault"),
            pg_maj_fault: key(&mem, "pgmajfault"),
            inactive_anon: key(&mem, "inactive_anon"),
            active_anon: key(&mem, "active_anon"),
            inactive_file: key(&mem, "inactive_file"),
            active_file: key(&mem, "active_file"),
            unevictable: key(&mem, "unevictable"),
            hierarchical_memory_limit: key(&mem, "hierarchical_memory_limit"),
            hierarchical_swap_limit: key(&mem, "hierarchical_memsw_limit"),
            total_cache: key(&mem, "total_cache"),
            total_rss: key(&mem, "total_rss"),
            total_rss_huge: key(&mem, "total_rss_huge"),
            total_mapped_file: key(&mem, "total_mapped_file"),
            total_dirty: key(&mem, "total_dirty"),
            total_writeback: key(&mem, "total_writeback"),
            total_pg_pg_in: key(&mem, "total_pgpgin"),
            total_pg_pg_out: key(&mem, "total_pgpgout"),
            total_pg_fault: key(&mem, "total_pgfault"),
            total_pg_maj_fault: key(&mem, "total_pgmajfault"),
            total_inactive_anon: key(&mem, "total_inactive_anon"),
            total_active_anon: key(&mem, "total_active_anon"),
            total_inactive_file: key(&mem, "total_inactive_file"),
            total_active_file: key(&mem, "total_active_file"),
            total_unevictable: key(&mem, "total_unevictable"),
            usage: Some(entry("memory")),
            swap: Some(entry("memory.memsw")),
            kernel: Some(entry("memory.kmem")),
            kernel_tcp: Some(entry("memory.kmem.tcp")),
        }),
        blkio: Some(v1::BlkIoStat {
            io_service_bytes_recursive: blkio("blkio.throttle.io_service_bytes"),
            io_serviced_recursive: blkio("blkio.throttle.io_serviced"),
        }),
        network: Vec::new(),
        memory_oom_control: Some(v1::MemoryOomControl {
            oom_kill_disable: key(&oom, "oom_kill_disable"),
            under_oom: key(&oom, "under_oom"),
            oom_kill: key(&oom, "oom_kill"),
        }),
    }
}

pub fn v2_metrics(cg: &Cgroup) -> v2::Metrics {
    let mem = cg.keyed("", "memory.stat");
    let cpu = cg.keyed("", "cpu.stat");
    let events = cg.keyed("", "memory.events");
    let value = |file: &str| cg.value("", file).unwrap_or(0);
    let io = cg
        .text("", "io.stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (major, minor) = fields.next()?.split_once(':')?;
            let counts: BTreeMap<&str, u64> = fields
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k, v.parse().ok()?))
                })
                .collect();
            let c = |k: &str| counts.get(k).copied().unwrap_or(0);
            Some(v2::IoEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                rbytes: c("rbytes"),
                wbytes: c("wbytes"),
                rios: c("rios"),
                wios: c("wios"),
            })
        })
        .collect();
    v2::Metrics {
        pids: Some(v2::PidsStat {
            current: value("pids.current"),
            limit: value("pids.max"),
        }),
        cpu: Some(v2::CpuStat {
            usage_usec: key(&cpu, "usage_usec"),
            user_usec: key(&cpu, "user_usec"),
            system_usec: key(&cpu, "system_usec"),
            nr_periods: key(&cpu, "nr_periods"),
            nr_throttled: key(&cpu, "nr_throttled"),
            throttled_usec: key(&cpu, "throttled_usec"),
        }),
        memory: Some(v2::MemoryStat {
            anon: key(&mem, "anon"),
            file: key(&mem, "file"),
            kernel_stack: key(&mem, "kernel_stack"),
            slab: key(&mem, "slab"),
            sock: key(&mem, "sock"),
            shmem: key(&mem, "shmem"),
            file_mapped: key(&mem, "file_mapped"),
            file_dirty: key(&mem, "file_dirty"),
            file_writeback: key(&mem, "file_writeback"),
            anon_thp: key(&mem, "anon_thp"),
            inactive_anon: key(&mem, "inactive_anon"),
            active_anon: key(&mem, "active_anon"),
            inactive_file: key(&mem, "inactive_file"),
            active_file: key(&mem, "active_file"),
            unevictable: key(&mem, "unevictable"),
            slab_reclaimable: key(&mem, "slab_reclaimable"),
            slab_unreclaimable: key(&mem, "slab_unreclaimable"),
            pgfault: key(&mem, "pgfault"),
            pgmajfault: key(&mem, "pgmajfault"),
            workingset_refault: key(&mem, "workingset_refault_file")
                + key(&mem, "workingset_refault_anon")
                + key(&mem, "workingset_refault"),
            workingset_activate: key(&mem, "workingset_activate_file")
                + key(&mem, "workingset_activate_anon")
                + key(&mem, "workingset_activate"),
            workingset_nodereclaim: key(&mem, "workingset_nodereclaim"),
            pgrefill: key(&mem, "pgrefill"),
            pgscan: key(&mem, "pgscan"),
            pgsteal: key(&mem, "pgsteal"),
            pgactivate: key(&mem, "pgactivate"),
            pgdeactivate: key(&mem, "pgdeactivate"),
            pglazyfree: key(&mem, "pglazyfree"),
            pglazyfreed: key(&mem, "pglazyfreed"),
            thp_fault_alloc: key(&mem, "thp_fault_alloc"),
            thp_collapse_alloc: key(&mem, "thp_collapse_alloc"),
            usage: value("memory.current"),
            usage_limit: value("memory.max"),
            swap_usage: value("memory.swap.current"),
            swap_limit: value("memory.swap.max"),
            max_usage: value("memory.peak"),
            swap_max_usage: value("memory.swap.peak"),
        }),
        io: Some(v2::IoStat { usage: io }),
        hugetlb: hugepage_sizes()
            .into_iter()
            .filter_map(|size| {
                Some(v2::HugeTlbStat {
                    current: cg.value("", &format!("hugetlb.{size}.current"))?,
                    max: cg.value("", &format!("hugetlb.{size}.max")).unwrap_or(0),
                    pagesize: size,
                })
            })
            .collect(),
        memory_events: Some(v2::MemoryEvents {
            low: key(&events, "low"),
            high: key(&events, "high"),
            max: key(&events, "max"),
            oom: key(&events, "oom"),
            oom_kill: key(&events, "oom_kill"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup tree laid out in a temporary directory the way the kernel
    /// lays out each hierarchy.
    fn write(root: &std::path::Path, rel: &str, files: &[(&str, &str)]) {
        for (name, text) in files {
            let p = root.join(rel).join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    #[test]
    fn v1_controllers_fill_containerds_v1_shape() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "memory/c1",
            &[
                (
                    "memory.stat",
                    "cache 4096\nrss 8192\ntotal_rss 8192\npgfault 17\n",
                ),
                ("memory.usage_in_bytes", "12288\n"),
                ("memory.limit_in_bytes", "67108864\n"),
                ("memory.max_usage_in_bytes", "20480\n"),
                ("memory.failcnt", "0\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        write(
            dir.path(),
            "cpuacct/c1",
            &[
                ("cpuacct.usage", "123456789\n"),
                ("cpuacct.usage_percpu", "100000000 23456789 \n"),
            ],
        );
        write(
            dir.path(),
            "cpu/c1",
            &[("cpu.stat", "nr_periods 5\nnr_throttled 2\nthrottled_time 999\n")],
        );
        write(
            dir.path(),
            "pids/c1",
            &[("pids.current", "3\n"), ("pids.max", "max\n")],
        );
        write(
            dir.path(),
            "blkio/c1",
            &[(
                "blkio.throttle.io_service_bytes",
                "8:0 Read 4096\n8:0 Write 512\n8:0 Total 4608\nTotal 4608\n",
            )],
        );
        let cg = Cgroup::under(dir.path(), "/c1");
        let any = of(&cg);
        assert_eq!(any.type_url, V1_TYPE);
        let m = v1::Metrics::decode(any.value.as_slice()).unwrap();
        let mem = m.memory.unwrap();
        assert_eq!(
            (mem.cache, mem.rss, mem.total_rss, mem.pg_fault),
            (4096, 8192, 8192, 17)
        );
        let usage = mem.usage.unwrap();
        assert_eq!((usage.usage, usage.limit, usage.max), (12288, 64 << 20, 20480));
        let cpu = m.cpu.unwrap();
        let u = cpu.usage.unwrap();
        assert_eq!(u.total, 123456789);
        assert_eq!(u.per_cpu, vec![100000000, 23456789]);
        assert_eq!(cpu.throttling.unwrap().throttled_periods, 2);
        assert_eq!(m.pids.unwrap(), v1::PidsStat { current: 3, limit: 0 });
        let blk = m.blkio.unwrap().io_service_bytes_recursive;
        assert_eq!(blk.len(), 3, "the per-device lines, not the grand total");
        assert_eq!(
            (blk[0].op.as_str(), blk[0].major, blk[0].value),
            ("Read", 8, 4096)
        );
        assert_eq!(m.memory_oom_control.unwrap().oom_kill, 2);
    }

    #[test]
    fn the_unified_hierarchy_fills_containerds_v2_shape() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "c2",
            &[
                (
                    "memory.stat",
                    "anon 8192\nfile 4096\ninactive_file 1024\npgfault 9\n",
                ),
                ("memory.current", "12288\n"),
                ("memory.max", "max\n"),
                ("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"),
                ("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
                ("pids.current", "2\n"),
                ("pids.max", "64\n"),
                (
                    "io.stat",
                    "8:0 rbytes=4096 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n",
                ),
            ],
        );
        let any = of(&Cgroup::under(dir.path(), "/c2"));
        assert_eq!(any.type_url, V2_TYPE);
        let m = v2::Metrics::decode(any.value.as_slice()).unwrap();
        let mem = m.memory.unwrap();
        assert_eq!(
            (mem.anon, mem.file, mem.usage, mem.usage_limit),
            (8192, 4096, 12288, 0)
        );
        assert_eq!(m.cpu.unwrap().usage_usec, 1500);
        assert_eq!(
            m.pids.unwrap(),
            v2::PidsStat {
                current: 2,
                limit: 64
            }
        );
        let io = m.io.unwrap().usage;
        assert_eq!((io[0].major, io[0].rbytes, io[0].wios), (8, 4096, 1));
        assert_eq!(m.memory_events.unwrap().oom_kill, 1);
    }
}
