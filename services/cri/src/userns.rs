//! User namespaces for pods (`hostUsers: false`): the kubelet asks for mode
//! POD with one uid and one gid mapping. The pod gets a user namespace of its
//! own, and its network, IPC and UTS namespaces are made inside it (so that
//! its containers, root only in that user namespace, may mount sysfs and
//! mqueue and set the hostname). All are pinned like the pod's other
//! namespaces; the containers join the user namespace by path, and their
//! rootfs and volumes are seen through idmapped mounts (the shim and the
//! runtime), so what they write is owned by the mapped ids on the host.
//!
//! A user namespace can only be entered or made by a single-threaded
//! process, so molded runs itself as a helper (`molded pod-userns`): it
//! unshares the user namespace, waits while molded writes its maps, then
//! unshares the rest, sets the hostname and sysctls, and waits for molded
//! to pin them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_cri::v1 as cri;
use molde_common::errdefs::Error;
use serde::{Deserialize, Serialize};

/// The one mapping a pod's user namespace has, for uids and for gids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl IdMap {
    fn line(&self) -> String {
        format!("{} {} {}\n", self.container, self.host, self.size)
    }
}

/// A pod's user namespace: where it is pinned and its maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodUserns {
    pub path: String,
    pub uid: IdMap,
    pub gid: IdMap,
}

/// The mappings a pod asks for, checked as the kubelet's contract says:
/// mode NODE (or none) is the host's user namespace; POD takes exactly one
/// uid and one gid mapping, each mapping container id 0; CONTAINER and
/// TARGET are not modes a user namespace may have.
pub fn requested(config: &cri::PodSandboxConfig) -> Result<Option<(IdMap, IdMap)>, Error> {
    let Some(u) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref())
    else {
        return Ok(None);
    };
    match cri::NamespaceMode::try_from(u.mode) {
        Ok(cri::NamespaceMode::Node) => return Ok(None),
        Ok(cri::NamespaceMode::Pod) => {}
        _ => {
            return Err(Error::InvalidArgument(format!(
                "user namespace mode {}: only POD and NODE are supported",
                cri::NamespaceMode::try_from(u.mode).map_or("unknown", |m| m.as_str_name())
            )));
        }
    }
    let one = |what: &str, maps: &[cri::IdMapping]| -> Result<IdMap, Error> {
        let [m] = maps else {
            return Err(Error::InvalidArgument(format!(
                "user namespace: exactly one {what} mapping is supported, {} given",
                maps.len()
            )));
        };
        if m.container_id != 0 {
            return Err(Error::InvalidArgument(format!(
                "user namespace: the {what} mapping must map container id 0 (it starts at {})",
                m.container_id
            )));
        }
        if m.length == 0 || m.host_id == 0 || m.host_id.checked_add(m.length).is_none() {
            return Err(Error::InvalidArgument(format!(
                "user namespace: the {what} mapping {} {} {} is not a range of unprivileged host ids",
                m.container_id, m.host_id, m.length
            )));
        }
        Ok(IdMap {
            container: m.container_id,
            host: m.host_id,
            size: m.length,
        })
    };
    Ok(Some((one("uid", &u.uids)?, one("gid", &u.gids)?)))
}

/// Makes a userns pod's directory its root's alone (0700, owned by the ids
/// the pod's root maps to), in a parent others may only pass through.
pub fn own_dir(dir: &Path, u: &PodUserns) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = dir.parent() {
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
    }
    std::os::unix::fs::chown(dir, Some(u.uid.host), Some(u.gid.host))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Where a container of a userns pod has its rootfs mounted: inside the
/// pod's directory, where the container's root can reach it.
pub fn rootfs_dir(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("rootfs").join(container)
}

/// Mounts each volume the kubelet gave id mappings (they must be the pod's)
/// idmapped with the pod's user namespace, in the pod's directory
/// (`volumes/<container>/<index>`), where the container binds it from:
/// files keep their owners on disk as the pod sees them. By mount index.
pub fn idmap_volumes(
    pod: &crate::store::SandboxRecord,
    container: &str,
    mounts: &[cri::Mount],
) -> Result<HashMap<usize, PathBuf>, Error> {
    let mut out = HashMap::new();
    for (idx, m) in mounts.iter().enumerate() {
        if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
            continue;
        }
        let Some(u) = &pod.userns else {
            return Err(Error::InvalidArgument(format!(
                "mount {}: id mappings are only for pods in a user namespace of their own",
                m.container_path
            )));
        };
        let same = |maps: &[cri::IdMapping], want: IdMap| matches!(maps, [x] if x.container_id == want.container && x.host_id == want.host && x.length == want.size);
        if !same(&m.uid_mappings, u.uid) || !same(&m.gid_mappings, u.gid) {
            return Err(Error::InvalidArgument(format!(
                "mount {}: only the pod's own id mappings are supported on a volume",
                m.container_path
            )));
        }
        let at = Path::new(&pod.dir)
            .join("volumes")
            .join(container)
            .join(idx.to_string());
        std::fs::create_dir_all(&at).map_err(Error::io(format!("creating {}", at.display())))?;
        molde_bundle::mount::bind_idmapped(Path::new(&m.host_path), &at, Path::new(&u.path))
            .map_err(|e| Error::InvalidArgument(format!("mount {}: {e}", m.container_path)))?;
        out.insert(idx, at);
    }
    Ok(out)
}

/// Unmounts a container's idmapped volumes and removes their mount points.
pub fn release_volumes(pod_dir: &Path, container: &str) {
    let dir = pod_dir.join("volumes").join(container);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let _ = rustix::mount::unmount(e.path(), rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(e.path());
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Detaches whatever is still mounted in a userns pod's directory (a
/// container's rootfs whose shim died, idmapped volumes), so removing the
/// directory removes no container's or volume's files.
pub fn unmount_rootfs_dirs(pod_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(pod_dir.join("rootfs")) {
        for e in entries.flatten() {
            let _ = rustix::mount::unmount(e.path(), rustix::mount::UnmountFlags::DETACH);
        }
    }
    if let Ok(entries) = std::fs::read_dir(pod_dir.join("volumes")) {
        for e in entries.flatten() {
            release_volumes(pod_dir, &e.file_name().to_string_lossy());
        }
    }
}

/// What the pod's namespaces are pinned at.
pub struct Pins {
    pub user: PathBuf,
    pub net: PathBuf,
    pub ipc: PathBuf,
    pub uts: PathBuf,
}

/// Makes the pod's user namespace with `uid`/`gid` and, inside it, its
/// network, IPC and UTS namespaces (`hostname` and `sysctls` set in them),
/// and pins all four. `helper` is molded's own binary.
pub fn create(
    helper: &Path,
    uid: IdMap,
    gid: IdMap,
    hostname: &str,
    sysctls: &[(String, String)],
    pins: &Pins,
) -> Result<(), Error> {
    let all = [&pins.user, &pins.net, &pins.ipc, &pins.uts];
    for p in all {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        std::fs::File::create(p).map_err(Error::io(format!("creating the pin {}", p.display())))?;
    }
    let made = run_helper(helper, uid, gid, hostname, sysctls, pins);
    if made.is_err() {
        molde_common::cni::unpin(&all.map(|p| p.to_path_buf()));
    }
    made
}

fn run_helper(
    helper: &Path,
    uid: IdMap,
    gid: IdMap,
    hostname: &str,
    sysctls: &[(String, String)],
    pins: &Pins,
) -> Result<(), Error> {
    let mut cmd = Command::new(helper);
    cmd.arg("pod-userns").arg(hostname);
    for (k, v) in sysctls {
        cmd.arg(format!("{k}={v}"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io(format!("starting {} pod-userns", helper.display())))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut step = |expect: &str| -> bool {
        let mut line = String::new();
        out.read_line(&mut line).is_ok() && line.trim() == expect
    };
    let result = (|| -> Result<(), Error> {
        if !step("userns") {
            return Err(Error::Internal(
                "the pod's user namespace could not be made".into(),
            ));
        }
        // molded has CAP_SETUID and CAP_SETGID where the maps point, so it
        // writes them directly (no newuidmap) and setgroups stays allowed.
        let proc = PathBuf::from(format!("/proc/{pid}"));
        std::fs::write(proc.join("uid_map"), uid.line()).map_err(Error::io(format!(
            "writing the pod's uid_map ({})",
            uid.line().trim()
        )))?;
        std::fs::write(proc.join("gid_map"), gid.line()).map_err(Error::io(format!(
            "writing the pod's gid_map ({})",
            gid.line().trim()
        )))?;
        stdin
            .write_all(b"mapped\n")
            .map_err(Error::io("telling the pod's namespace helper to go on"))?;
        if !step("namespaces") {
            return Err(Error::Internal(
                "the pod's namespaces could not be made in its user namespace".into(),
            ));
        }
        for (kind, pin) in [
            ("user", &pins.user),
            ("net", &pins.net),
            ("ipc", &pins.ipc),
            ("uts", &pins.uts),
        ] {
            rustix::mount::mount_bind(proc.join("ns").join(kind), pin)
                .map_err(|e| Error::Internal(format!("pinning the pod's {kind} namespace: {e}")))?;
        }
        Ok(())
    })();
    drop(stdin);
    let _ = child.wait();
    if let Err(e) = result {
        let mut why = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut why);
        }
        let why = why.trim();
        return Err(if why.is_empty() {
            e
        } else {
            Error::Internal(format!("{e}: {why}"))
        });
    }
    Ok(())
}

/// `molded pod-userns HOSTNAME [KEY=VALUE...]`: the helper `create` runs.
/// Single-threaded from the start, as unsharing a user namespace needs.
pub fn helper_main() -> ! {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let fail = |what: &str, e: std::io::Error| -> ! {
        eprintln!("pod-userns: {what}: {e}");
        std::process::exit(1)
    };
    let (hostname, sysctls) = match args.split_first() {
        Some((h, rest)) => (h.clone(), rest.to_vec()),
        None => fail(
            "usage",
            std::io::Error::other("pod-userns HOSTNAME [KEY=VALUE...]"),
        ),
    };
    // SAFETY: this process has one thread; unshare changes only its own namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        fail("unsharing a user namespace", std::io::Error::last_os_error());
    }
    let mut out = std::io::stdout().lock();
    let mut input = std::io::stdin().lock();
    let _ = writeln!(out, "userns");
    let _ = out.flush();
    let mut line = String::new();
    if input.read_line(&mut line).unwrap_or(0) == 0 || line.trim() != "mapped" {
        std::process::exit(1);
    }
    // Root of the new namespace now that the maps exist.
    // SAFETY: plain syscalls on this process's own credentials and namespaces.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            fail("becoming the namespace's root", std::io::Error::last_os_error());
        }
        if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) != 0 {
            fail("unsharing the pod's namespaces", std::io::Error::last_os_error());
        }
    }
    if let Err(e) = rustix::system::sethostname(hostname.as_bytes()) {
        fail("setting the hostname", e.into());
    }
    for kv in &sysctls {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        if let Err(e) = std::fs::write(&path, v) {
            fail(&format!("sysctl {k}={v}"), e);
        }
    }
    let _ = writeln!(out, "namespaces");
    let _ = out.flush();
    // Held until molded has pinned them and closes stdin.
    let mut rest = Vec::new();
    let _ = input.read_to_end(&mut rest);
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(mode: cri::NamespaceMode, uids: Vec<cri::IdMapping>) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        userns_options: Some(cri::UserNamespace {
                            mode: mode as i32,
                            gids: uids.clone(),
                            uids,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn map(c: u32, h: u32, l: u32) -> cri::IdMapping {
        cri::IdMapping {
            container_id: c,
            host_id: h,
            length: l,
        }
    }

    #[test]
    fn the_kubelets_contract_for_user_namespaces() {
        assert_eq!(requested(&cri::PodSandboxConfig::default()).unwrap(), None);
        assert_eq!(requested(&pod(cri::NamespaceMode::Node, vec![])).unwrap(), None);
        let want = IdMap {
            container: 0,
            host: 65536,
            size: 65536,
        };
        assert_eq!(
            requested(&pod(cri::NamespaceMode::Pod, vec![map(0, 65536, 65536)])).unwrap(),
            Some((want, want))
        );
        for (bad, says) in [
            (
                pod(cri::NamespaceMode::Pod, vec![map(0, 1000, 10), map(0, 2000, 10)]),
                "exactly one",
            ),
            (
                pod(cri::NamespaceMode::Pod, vec![map(1, 1000, 10)]),
                "container id 0",
            ),
            (pod(cri::NamespaceMode::Pod, vec![]), "exactly one"),
            (pod(cri::NamespaceMode::Pod, vec![map(0, 0, 10)]), "unprivileged"),
            (pod(cri::NamespaceMode::Container, vec![]), "CONTAINER"),
            (pod(cri::NamespaceMode::Target, vec![]), "TARGET"),
        ] {
            let e = requested(&bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
