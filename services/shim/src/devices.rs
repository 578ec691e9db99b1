//! The device cgroup on cgroup v2: a BPF program attached to the
//! container's cgroup that allows the devices its spec's
//! `linux.resources.devices` rules allow and refuses the rest.
//!
//! cgroup v1 has a devices controller, which libcontainer writes. v2 has
//! none; the kernel asks a `BPF_PROG_TYPE_CGROUP_DEVICE` program instead.
//! libcontainer can load one (its `cgroupsv2_devices` feature) but first
//! raises RLIMIT_MEMLOCK to 128 MiB and fails where it may not (root without
//! CAP_SYS_RESOURCE); kernels since 5.11 charge BPF memory to the cgroup and
//! need no such limit. So the shim builds and attaches the program itself,
//! once libcontainer has created the container and before it starts, with
//! the `bpf(2)` syscall (no crate wraps program loading without libbpf).
//!
//! The program reads the request (`struct bpf_cgroup_dev_ctx`: access and
//! type, major, minor), checks the rules from the last to the first (a later
//! rule overrides an earlier one, as on v1), and returns 1 to allow or 0.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, Spec};

/// One BPF instruction, as `struct bpf_insn` lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    fn bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

// Opcodes (linux/bpf.h, bpf_common.h).
const LDX_MEM_W: u8 = 0x61;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const MOV64_K: u8 = 0xb7;
const MOV64_X: u8 = 0xbf;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const EXIT: u8 = 0x95;

// Registers: r1 holds the context on entry; r2 type, r3 access, r4 major,
// r5 minor once read; r1 is scratch after that.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn access_bits(access: &str) -> i32 {
    access
        .chars()
        .map(|c| match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

/// The program for `rules`, which (like the v1 controller's lists) start
/// from "allow nothing" and apply in order: an `a` rule for every device
/// resets what came before, a later rule overrides an earlier one.
pub(crate) fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    // What an `a *:* rwm` rule left as the default, and the rules after it.
    let mut default_allow = false;
    let mut list: Vec<&LinuxDeviceCgroup> = Vec::new();
    for r in rules {
        let everything = matches!(r.typ(), None | Some(LinuxDeviceType::A))
            && r.major().is_none()
            && r.minor().is_none()
            && access_bits(r.access().as_deref().unwrap_or("rwm")) == ACC_MKNOD | ACC_READ | ACC_WRITE;
        if everything {
            default_allow = r.allow();
            list.clear();
        } else {
            list.push(r);
        }
    }
    let mut p = vec![
        Insn::new(LDX_MEM_W, 2, 1, 0, 0),
        Insn::new(ALU64_AND_K, 2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, 3, 1, 0, 0),
        Insn::new(ALU64_RSH_K, 3, 0, 0, 16),
        Insn::new(LDX_MEM_W, 4, 1, 4, 0),
        Insn::new(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in list.iter().rev() {
        let mut checks: Vec<Insn> = Vec::new();
        match r.typ() {
            Some(LinuxDeviceType::C | LinuxDeviceType::U) => checks.push(Insn::new(JNE_K, 2, 0, 0, DEV_CHAR)),
            Some(LinuxDeviceType::B) => checks.push(Insn::new(JNE_K, 2, 0, 0, DEV_BLOCK)),
            _ => {}
        }
        let access = access_bits(r.access().as_deref().unwrap_or("rwm"));
        if access != ACC_MKNOD | ACC_READ | ACC_WRITE {
            // Every access asked for must be among the rule's: (r3 & rule) == r3.
            checks.push(Insn::new(MOV64_X, 1, 3, 0, 0));
            checks.push(Insn::new(ALU64_AND_K, 1, 0, 0, access));
            checks.push(Insn::new(JNE_X, 1, 3, 0, 0));
        }
        if let Some(major) = r.major().filter(|m| *m >= 0) {
            checks.push(Insn::new(JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = r.minor().filter(|m| *m >= 0) {
            checks.push(Insn::new(JNE_K, 5, 0, 0, minor as i32));
        }
        // A failed check skips the rest of this rule: its checks and the two
        // instructions that answer.
        let n = checks.len();
        for (i, c) in checks.iter_mut().enumerate() {
            if matches!(c.code, JNE_K | JNE_X) {
                c.off = (n - i - 1 + 2) as i16;
            }
        }
        p.extend(checks);
        p.push(Insn::new(MOV64_K, 0, 0, 0, r.allow() as i32));
        p.push(Insn::new(EXIT, 0, 0, 0, 0));
    }
    p.push(Insn::new(MOV64_K, 0, 0, 0, default_allow as i32));
    p.push(Insn::new(EXIT, 0, 0, 0, 0));
    p
}

/// Whether this shim sees a pure cgroup v2 hierarchy at /sys/fs/cgroup.
pub(crate) fn unified() -> bool {
    rustix::fs::statfs("/sys/fs/cgroup").is_ok_and(|s| s.f_type as u64 == libc::CGROUP2_SUPER_MAGIC as u64)
}

/// The v2 cgroup directory process `pid` is in.
fn cgroup_of(pid: i32) -> Result<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading the cgroup of container process {pid}"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .with_context(|| format!("container process {pid} has no cgroup v2 entry"))?;
    Ok(Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')))
}

/// Attaches the spec's device rules to the cgroup of `pid` (the created,
/// not yet started, container init). Nothing to do on cgroup v1, where
/// libcontainer wrote the devices controller.
pub(crate) fn apply(spec: &Spec, pid: i32) -> Result<()> {
    if !unified() {
        return Ok(());
    }
    let rules = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let cgroup = cgroup_of(pid)?;
    let dir = std::fs::File::open(&cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
    let prog = load(&program(&rules)).context("loading the container's device program")?;
    attach(&prog, &dir).with_context(|| format!("attaching the device program to {}", cgroup.display()))
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` is larger than either command's fields; the kernel
/// wants the rest zeroed.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn put_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, zero-padded buffer of the size passed, laid
    // out as the kernel's bpf_attr for `cmd`; the pointers inside it point to
    // data that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.bytes()).collect();
    let license = c"Apache";
    // Without the verifier's log first (a log that does not fit fails the
    // load); with it only to say why a load failed.
    let mut log = vec![0u8; 256 << 10];
    let mut first_error = None;
    for log_level in [0u32, 1] {
        let mut attr = Attr([0; 128]);
        // prog_type, insn_cnt, insns, license, log_level, log_size, log_buf.
        attr.put_u32(0, BPF_PROG_TYPE_CGROUP_DEVICE);
        attr.put_u32(4, insns.len() as u32);
        attr.put_u64(8, code.as_ptr() as u64);
        attr.put_u64(16, license.as_ptr() as u64);
        if log_level > 0 {
            attr.put_u32(24, log_level);
            attr.put_u32(28, log.len() as u32);
            attr.put_u64(32, log.as_mut_ptr() as u64);
        }
        match bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let verifier = String::from_utf8_lossy(&log);
    let last = verifier
        .trim_end_matches('\0')
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>();
    bail!(
        "{}: {}",
        first_error.map(|e| e.to_string()).unwrap_or_default(),
        last.into_iter().rev().collect::<Vec<_>>().join("; ")
    )
}

fn attach(prog: &OwnedFd, cgroup: &std::fs::File) -> Result<()> {
    let mut attr = Attr([0; 128]);
    // target_fd, attach_bpf_fd, attach_type, attach_flags.
    attr.put_u32(0, cgroup.as_raw_fd() as u32);
    attr.put_u32(4, prog.as_raw_fd() as u32);
    attr.put_u32(8, BPF_CGROUP_DEVICE);
    attr.put_u32(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    /// Runs the program on one request, as the kernel would: the subset of
    /// eBPF the generator emits.
    fn run(p: &[Insn], typ: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access as u32) << 16) | typ as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (d, s) = (i.dst as usize, i.src as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[d] = ctx[i.off as usize / 4] as u64,
                ALU64_AND_K => r[d] &= i.imm as u64,
                ALU64_RSH_K => r[d] >>= i.imm,
                MOV64_K => r[d] = i.imm as u64,
                MOV64_X => r[d] = r[s],
                JNE_K if r[d] != i.imm as u64 => pc += i.off as usize,
                JNE_X if r[d] != r[s] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn the_default_list_allows_its_devices_and_nothing_else() {
        let mut rules = molde_common_rules();
        rules.push(rule(true, LinuxDeviceType::C, Some(10), Some(229), "r"));
        let p = program(&rules);
        let (r, w, m) = (ACC_READ, ACC_WRITE, ACC_MKNOD);
        assert_eq!(run(&p, DEV_CHAR, r | w, 1, 3), 1, "null");
        assert_eq!(run(&p, DEV_CHAR, w, 136, 7), 1, "a pseudo-terminal");
        assert_eq!(run(&p, DEV_CHAR, m, 1, 11), 1, "mknod of anything");
        assert_eq!(run(&p, DEV_BLOCK, m, 8, 0), 1);
        assert_eq!(run(&p, DEV_CHAR, w, 1, 11), 0, "the kernel log");
        assert_eq!(run(&p, DEV_CHAR, r, 10, 232), 0, "kvm");
        assert_eq!(run(&p, DEV_BLOCK, r, 8, 0), 0, "a disk");
        assert_eq!(run(&p, DEV_CHAR, r, 10, 229), 1, "asked for read-only");
        assert_eq!(run(&p, DEV_CHAR, w, 10, 229), 0, "not writable");
        assert_eq!(run(&p, DEV_CHAR, r | w, 10, 229), 0);
    }

    #[test]
    fn allowing_everything_after_the_defaults_allows_everything() {
        let mut rules = molde_common_rules();
        rules.push(rule(true, LinuxDeviceType::A, None, None, "rwm"));
        let p = program(&rules);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ | ACC_WRITE, 8, 0), 1);
        // No rules at all: nothing is allowed.
        assert_eq!(run(&program(&[]), DEV_CHAR, ACC_READ, 1, 3), 0);
    }

    #[test]
    fn a_later_deny_overrides_an_earlier_allow() {
        let rules = [
            rule(true, LinuxDeviceType::A, None, None, "rwm"),
            rule(false, LinuxDeviceType::C, Some(1), Some(11), "w"),
        ];
        let p = program(&rules);
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 11), 0);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 11), 1);
    }

    /// The defaults every container starts from.
    fn molde_common_rules() -> Vec<LinuxDeviceCgroup> {
        molde_common::spec::default_device_rules()
    }
}
