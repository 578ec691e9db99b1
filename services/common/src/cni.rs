//! Networks through the standard CNI plugins (Debian's
//! containernetworking-plugins): pinned namespaces, and a network list run
//! ADD in order and DEL in reverse, each plugin given the previous one's
//! result and the runtime values of the capabilities it declares
//! (`portMappings`, `ipRanges`, ...). Used by the runtime (its `molde`
//! bridge) and by CRI (the node's network from `/etc/cni/net.d`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

pub use molde_bundle::CniResult;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::errdefs::{Error, OrLog};

/// A network: a name, a CNI version and its plugins in order.
#[derive(Debug, Clone)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

impl NetworkList {
    /// A `.conflist`, or a single-plugin `.conf`/`.json`.
    pub fn parse(text: &str, what: &str) -> Result<NetworkList, Error> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("CNI config {what}: {e}")))?;
        let name = v["name"]
            .as_str()
            .ok_or_else(|| Error::InvalidArgument(format!("CNI config {what}: no \"name\"")))?
            .to_string();
        let cni_version = v["cniVersion"].as_str().unwrap_or("0.4.0").to_string();
        let plugins = match v["plugins"].as_array() {
            Some(p) => p.clone(),
            None if v["type"].is_string() => vec![v.clone()],
            None => {
                return Err(Error::InvalidArgument(format!(
                    "CNI config {what}: neither \"plugins\" nor \"type\""
                )));
            }
        };
        if plugins.is_empty() || plugins.iter().any(|p| !p["type"].is_string()) {
            return Err(Error::InvalidArgument(format!(
                "CNI config {what}: every plugin needs a \"type\""
            )));
        }
        Ok(NetworkList {
            name,
            cni_version,
            plugins,
        })
    }

    /// The first valid config of `dir` in name order, as containerd and CRI-O
    /// choose it; None while the directory holds none.
    pub fn first_in(dir: &Path) -> Option<(PathBuf, NetworkList)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        files.sort();
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            match NetworkList::parse(&text, &f.display().to_string()) {
                Ok(l) => return Some((f, l)),
                Err(e) => tracing::warn!(file = %f.display(), error = %e, "skipping a CNI config"),
            }
        }
        None
    }
}

/// What one attachment is: the container (or pod) it is for, its namespace,
/// and what the plugins are told besides their config.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// CNI_ARGS: `K=V` pairs (joined with `;`).
    pub args: Vec<(String, String)>,
    /// Runtime values by capability name (`portMappings`: [...], ...).
    pub capabilities: serde_json::Map<String, Value>,
}

/// CNI_ARGS as plugins read it: `K=V` pairs joined with `;`. The format
/// has no escaping, so a key or value holding `;` or `=` (a pod named
/// `x;IP=10.0.0.1` would set the plugin's IP argument) is refused.
pub fn cni_args(args: &[(String, String)]) -> Result<String, Error> {
    let mut out = Vec::with_capacity(args.len());
    for (k, v) in args {
        if [k, v].iter().any(|s| s.contains([';', '='])) {
            return Err(Error::InvalidArgument(format!(
                "CNI argument {k}={v:?}: a CNI argument may not contain ';' or '='"
            )));
        }
        out.push(format!("{k}={v}"));
    }
    Ok(out.join(";"))
}

/// Runs plugins found in `bin_dirs` (first match wins).
#[derive(Debug, Clone)]
pub struct Cni {
    pub bin_dirs: Vec<PathBuf>,
    /// Run the plugins under SCHED_IDLE: work that can wait (a stopped
    /// pod's release) takes only CPU time nothing else wants.
    pub idle: bool,
}

impl Cni {
    fn binary(&self, kind: &str) -> Option<PathBuf> {
        self.bin_dirs.iter().map(|d| d.join(kind)).find(|p| p.is_file())
    }

    /// One plugin's config as the plugin receives it.
    fn config(list: &NetworkList, plugin: &Value, a: &Attachment, prev: &CniResult) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = json!(list.cni_version);
        conf["name"] = json!(list.name);
        let mut runtime = serde_json::Map::new();
        if let Some(caps) = plugin["capabilities"].as_object() {
            for (cap, on) in caps {
                if on.as_bool() == Some(true)
                    && let Some(v) = a.capabilities.get(cap)
                {
                    runtime.insert(cap.clone(), v.clone());
                }
            }
        }
        if !runtime.is_empty() {
            conf["runtimeConfig"] = Value::Object(runtime);
        }
        if !prev.is_empty() {
            conf["prevResult"] = prev.to_value();
        }
        conf
    }

    async fn invoke(&self, command: &str, a: &Attachment, conf: &Value) -> Result<Value, Error> {
        let kind = conf["type"].as_str().unwrap_or_default().to_string();
        let bin = self.binary(&kind).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "CNI plugin {kind:?} is in none of {} (install containernetworking-plugins)",
                self.bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let args = cni_args(&a.args)?;
        let mut cmd = tokio::process::Command::new(&bin);
        if self.idle {
            // SAFETY: only sched_setscheduler, async-signal-safe, between
            // fork and exec; the plugin and what it runs inherit the policy.
            unsafe {
                cmd.pre_exec(|| {
                    let param = libc::sched_param { sched_priority: 0 };
                    if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &a.container_id)
            .env("CNI_NETNS", &a.netns)
            .env("CNI_IFNAME", &a.ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", path)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::FailedPrecondition(format!("CNI plugin {}: {e}", bin.display())))?;
        let input = serde_json::to_vec(conf).expect("json");
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&input)
            .await
            .map_err(Error::io(format!("writing to CNI plugin {kind}")))?;
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(Error::io(format!("running CNI plugin {kind}")))?;
        if !out.status.success() {
            let msg: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            return Err(Error::Internal(format!(
                "CNI {command} with {kind}: {} {}",
                msg["msg"].as_str().unwrap_or_default(),
                msg["details"]
                    .as_str()
                    .unwrap_or(&String::from_utf8_lossy(&out.stderr))
            )));
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    /// ADD through the list; the last plugin's result. A failure part-way
    /// undoes what was added (DEL in reverse).
    pub async fn add(&self, list: &NetworkList, a: &Attachment) -> Result<CniResult, Error> {
        let mut prev = CniResult::default();
        for (i, plugin) in list.plugins.iter().enumerate() {
            let conf = Self::config(list, plugin, a, &prev);
            match self.invoke("ADD", a, &conf).await {
                Ok(r) => prev = CniResult::from_value(r),
                Err(e) => {
                    let done = NetworkList {
                        plugins: list.plugins[..i].to_vec(),
                        ..list.clone()
                    };
                    self.del(&done, a, &prev).await;
                    return Err(e);
                }
            }
        }
        Ok(prev)
    }

    /// DEL through the list in reverse. Failures are logged: a teardown must
    /// finish whatever state a crash left.
    pub async fn del(&self, list: &NetworkList, a: &Attachment, result: &CniResult) {
        for plugin in list.plugins.iter().rev() {
            let conf = Self::config(list, plugin, a, result);
            if let Err(e) = self.invoke("DEL", a, &conf).await {
                tracing::warn!(container = %a.container_id, network = %list.name, error = %e, "CNI DEL");
            }
        }
    }
}

/// The loopback network every namespace gets for `lo`.
pub fn loopback() -> NetworkList {
    NetworkList {
        name: "cni-loopback".into(),
        cni_version: "1.0.0".into(),
        plugins: vec![json!({"type": "loopback"})],
    }
}

/// Namespaces a pod or container holds without a process in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinned {
    Net,
    Ipc,
    Uts,
}

impl Pinned {
    fn flag(self) -> rustix::thread::UnshareFlags {
        match self {
            Pinned::Net => rustix::thread::UnshareFlags::NEWNET,
            Pinned::Ipc => rustix::thread::UnshareFlags::NEWIPC,
            Pinned::Uts => rustix::thread::UnshareFlags::NEWUTS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pinned::Net => "net",
            Pinned::Ipc => "ipc",
            Pinned::Uts => "uts",
        }
    }
}

/// Creates new namespaces of `kinds` and pins each at `path_of(kind)` (a bind
/// mount of the namespace file), setting the UTS one's hostname and the
/// `sysctls` (`net.ipv4.ip_forward`, `kernel.shmmax`: each lands in the
/// namespace it belongs to). Nothing runs in them; a container joins them by
/// path.
pub fn pin_namespaces(
    kinds: &[Pinned],
    hostname: Option<&str>,
    sysctls: &[(String, String)],
    path_of: impl Fn(Pinned) -> PathBuf,
) -> Result<(), Error> {
    let targets: Vec<(Pinned, PathBuf)> = kinds.iter().map(|&k| (k, path_of(k))).collect();
    for (_, p) in &targets {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        std::fs::File::create(p).map_err(Error::io(format!("creating the pin {}", p.display())))?;
    }
    let flags = kinds
        .iter()
        .fold(rustix::thread::UnshareFlags::empty(), |f, k| f | k.flag());
    let hostname = hostname.map(str::to_string);
    let sysctls = sysctls.to_vec();
    let pins = targets.clone();
    // unshare moves only the calling thread: do it on a thread of its own,
    // pin the new namespaces, and let the thread end.
    let made = std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: only the namespaces of this short-lived thread change; it
        // shares no file descriptor table or filesystem state differently
        // afterwards, and it touches no other thread's data.
        unsafe { rustix::thread::unshare_unsafe(flags)? };
        if let Some(h) = &hostname {
            rustix::system::sethostname(h.as_bytes())?;
        }
        // A sysctl is written in the namespace of the thread that writes it.
        for (k, v) in &sysctls {
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            std::fs::write(&path, v)
                .map_err(|e| std::io::Error::new(e.kind(), format!("sysctl {k}={v}: {e}")))?;
        }
        for (k, p) in &pins {
            rustix::mount::mount_bind(format!("/proc/thread-self/ns/{}", k.name()), p)?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| Error::Internal("creating namespaces panicked".into()))?;
    if let Err(e) = made {
        unpin(&targets.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>());
        return Err(Error::Internal(format!("creating namespaces: {e}")));
    }
    Ok(())
}

/// Unmounts and removes namespace pins; a pin already gone is fine.
pub fn unpin(paths: &[PathBuf]) {
    for p in paths {
        if !p.exists() {
            continue;
        }
        if let Err(e) = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH)
            && e != rustix::io::Errno::INVAL
        {
            tracing::warn!(pin = %p.display(), error = %e, "unmounting a namespace pin failed");
        }
        std::fs::remove_file(p).or_log("removing a namespace pin");
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn cni_args_refuse_separators_in_values() {
        let ok = cni_args(&[
            ("K8S_POD_NAME".into(), "web-0".into()),
            ("IgnoreUnknown".into(), "1".into()),
        ]);
        assert_eq!(ok.unwrap(), "K8S_POD_NAME=web-0;IgnoreUnknown=1");
        let e = cni_args(&[("K8S_POD_NAME".into(), "inj;IP=10.77.222.222".into())]).unwrap_err();
        assert!(e.to_string().contains("K8S_POD_NAME"), "{e}");
        assert!(cni_args(&[("K8S_POD_UID".into(), "a=b".into())]).is_err());
    }

    use super::*;

    #[test]
    fn conflists_and_single_confs_parse() {
        let l = NetworkList::parse(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            "x",
        )
        .unwrap();
        assert_eq!((l.name.as_str(), l.plugins.len()), ("n", 2));
        let one = NetworkList::parse(r#"{"cniVersion":"0.4.0","name":"m","type":"bridge"}"#, "y").unwrap();
        assert_eq!(one.plugins.len(), 1);
        assert!(NetworkList::parse(r#"{"name":"z"}"#, "z").is_err());
        assert!(NetworkList::parse(r#"{"plugins":[]}"#, "w").is_err());
    }

    #[test]
    fn capabilities_reach_only_the_plugins_that_declare_them() {
        let l = NetworkList::parse(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            "x",
        )
        .unwrap();
        let mut a = Attachment::default();
        a.capabilities
            .insert("portMappings".into(), json!([{"hostPort": 8080}]));
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]});
        let bridge = Cni::config(&l, &l.plugins[0], &a, &CniResult::default());
        let portmap = Cni::config(&l, &l.plugins[1], &a, &CniResult::from_value(prev.clone()));
        assert!(bridge.get("runtimeConfig").is_none());
        assert_eq!(portmap["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(bridge.get("prevResult").is_none());
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(portmap["name"], "n");
    }

    #[test]
    fn the_first_config_by_name_wins() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("20-b.conflist"),
            r#"{"name":"b","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("10-a.conflist"),
            r#"{"name":"a","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("05-broken.conflist"), "{").unwrap();
        std::fs::write(d.path().join("00-readme.txt"), "not a config").unwrap();
        let (f, l) = NetworkList::first_in(d.path()).unwrap();
        assert_eq!(l.name, "a");
        assert!(f.ends_with("10-a.conflist"));
        assert!(NetworkList::first_in(&d.path().join("missing")).is_none());
    }

    #[test]
    fn ips_come_without_prefix_lengths() {
        let r = json!({"ips": [{"address": "10.77.0.5/16"}, {"address": "fd00::5/64"}]});
        assert_eq!(CniResult::from_value(r).ips(), ["10.77.0.5", "fd00::5"]);
        assert_eq!(CniResult::from_value(Value::Null).first_ip(), None);
    }
}
