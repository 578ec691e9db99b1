//! Starting a container: its record, rootfs snapshot, spec, network and bundle, then its shim; following its log until it exits.

use super::*;
use molde_common::errdefs::OrLog;

impl RuntimeService {
    /// Everything up to a running shim. On failure, what was made is undone.
    pub(super) async fn start(&self, ns: &str, req: &api::RunRequest) -> Result<(String, PathBuf), Error> {
        let id = if req.name.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            req.name.clone()
        };
        containers::check_id(&id)?;
        spec::check_limits(req, host_cpus())?;
        spec::check_controllers(req, std::path::Path::new("/sys/fs/cgroup"))?;
        let key = containers::key(ns, &id);
        if self.store.get(&key)?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "container name {id:?} is already in use"
            )));
        }
        let img = if req.rootfs_parent_set {
            image::Image {
                process: Default::default(),
                top: req.rootfs_parent.clone(),
            }
        } else {
            image::resolve(&self.content, ns, &req.image).await?
        };
        let mounts = SnapshotsClient::new(self.snapshotter.clone())
            .prepare(namespaced(
                ns,
                PrepareSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: id.clone(),
                    parent: img.top.clone(),
                    labels: Default::default(),
                },
            ))
            .await
            .map_err(Error::upstream(format!("container {id}: preparing its rootfs")))?
            .into_inner()
            .mounts;
        let undo_snapshot = || async {
            SnapshotsClient::new(self.snapshotter.clone())
                .remove(namespaced(
                    ns,
                    RemoveSnapshotRequest {
                        snapshotter: "overlayfs".into(),
                        key: id.clone(),
                    },
                ))
                .await
                .or_log("removing a failed container's snapshot");
        };
        // The image's layers, top first, as the snapshotter presents them.
        let layers: Vec<PathBuf> = mounts
            .iter()
            .flat_map(|m| {
                m.options
                    .iter()
                    .filter_map(|o| o.strip_prefix("lowerdir="))
                    .flat_map(|l| l.split(':').map(PathBuf::from).collect::<Vec<_>>())
                    .chain((m.r#type == "bind").then(|| PathBuf::from(&m.source)))
                    .collect::<Vec<_>>()
            })
            .collect();
        let user = if req.user.is_empty() {
            img.process.user().clone().unwrap_or_default()
        } else {
            req.user.clone()
        };
        let spec = match crate::user::resolve(&user, &req.group_add, &layers)
            .and_then(|who| spec::build(ns, &id, &img.process, req, &who, &self.volumes))
        {
            Ok(s) => s,
            Err(e) => {
                undo_snapshot().await;
                return Err(e.context(format!("container {id}")));
            }
        };
        let bundle = self.bundle_dir(ns, &id);
        let mut spec = spec;
        if req.network.is_empty() || req.network == "bridge" {
            let ports = match req
                .ports
                .iter()
                .map(|p| crate::network::parse_port(p))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(p) => p,
                Err(e) => {
                    undo_snapshot().await;
                    return Err(e);
                }
            };
            // The host ports first: a port someone has fails the run before
            // any rule could take its connections.
            if let Err(e) = self.ports.reserve(&format!("{ns}/{id}"), &ports) {
                undo_snapshot().await;
                return Err(e.context(format!("container {id}")));
            }
            // Unique per container instance: addresses an earlier container of the
            // same name left allocated (a crash) can never clash with this one.
            let key = format!("{ns}-{id}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            let (netns, saved) = match self.cni.setup(&key, &ports).await {
                Ok(x) => x,
                Err(e) => {
                    self.ports.release(&format!("{ns}/{id}"));
                    undo_snapshot().await;
                    return Err(e.context(format!("container {id}: network")));
                }
            };
            Bundle::new(&bundle)
                .write_network_record(&saved)
                .or_log("writing a container's network record");
            if let Some(nss) = spec
                .linux_mut()
                .as_mut()
                .and_then(|l| l.namespaces_mut().as_mut())
            {
                for n in nss.iter_mut() {
                    if n.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                        n.set_path(Some(netns.clone()));
                    }
                }
            }
            tracing::info!(container = %id, address = ?crate::network::address(&saved), "network attached");
        } else if !req.ports.is_empty() {
            undo_snapshot().await;
            return Err(Error::InvalidArgument(format!(
                "container {id}: -p needs the bridge network"
            )));
        }
        // /etc/hosts, /etc/hostname and /etc/resolv.conf, written per container.
        let address = Bundle::new(&bundle)
            .network_record()
            .ok()
            .flatten()
            .and_then(|n| crate::network::address(&n));
        if let Err(e) = spec::add_etc_files(&mut spec, &bundle, address.as_deref(), req.network == "host") {
            self.remove(ns, &id).await;
            return Err(Error::Internal(format!("container {id}: {e}")));
        }
        if req.tty
            && let Some(p) = spec.process_mut()
        {
            p.set_terminal(Some(true));
        }
        if req.interactive {
            std::fs::create_dir_all(&bundle).or_log("creating a container's bundle");
            Bundle::new(&bundle)
                .set_interactive()
                .or_log("marking a container interactive");
        }
        let spec_json = serde_json::to_vec_pretty(&spec)
            .map_err(|e| Error::Internal(format!("encoding the OCI spec: {e}")))?;
        let written = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(bundle.join("rootfs"))?;
            std::fs::write(bundle.join("config.json"), &spec_json)?;
            molde_bundle::mount::write(&bundle, &molde_common::bundle_mounts(&mounts))
        })();
        if let Err(e) = written {
            undo_snapshot().await;
            let _ = std::fs::remove_dir_all(&bundle);
            return Err(Error::Internal(format!(
                "container {id}: writing its bundle: {e}"
            )));
        }
        let now = timestamp(now_nanos());
        let record = Container {
            id: id.clone(),
            image: req.image.clone(),
            runtime: Some(Runtime {
                name: RUNTIME_NAME.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: spec_json,
            }),
            snapshotter: "overlayfs".into(),
            snapshot_key: id.clone(),
            created_at: Some(now),
            updated_at: Some(now),
            ..Default::default()
        };
        let out = self.store.txn(
            Txn::new()
                .when(Compare::absent(key.clone()))
                .put(key, record.encode_to_vec()),
        )?;
        if out == TxnOutcome::CompareFailed {
            undo_snapshot().await;
            let _ = std::fs::remove_dir_all(&bundle);
            return Err(Error::AlreadyExists(format!(
                "container name {id:?} is already in use"
            )));
        }
        if let Err(e) = self.spawn_shim(ns, &id, &bundle, false) {
            self.remove(ns, &id).await;
            return Err(e);
        }
        tracing::info!(namespace = ns, container = %id, image = %req.image, "container started");
        self.events.publish(
            ns,
            "/containers/create",
            "ContainerCreate",
            molde_api::containerd::events::ContainerCreate {
                id: id.clone(),
                image: req.image.clone(),
                runtime: Some(molde_api::containerd::events::container_create::Runtime {
                    name: RUNTIME_NAME.into(),
                }),
            },
        );
        Ok((id, bundle))
    }

    pub(super) fn spawn_shim(&self, ns: &str, id: &str, bundle: &Path, hold: bool) -> Result<(), Error> {
        use std::os::unix::process::CommandExt;
        let log =
            std::fs::File::create(bundle.join("shim.log")).map_err(Error::io("creating the shim's log"))?;
        let mut child = std::process::Command::new(&self.shim)
            .arg("start")
            .args(["--id", &format!("{ns}-{id}")])
            .arg("--bundle")
            .arg(bundle)
            .arg("--state")
            .arg(self.state.join(".libcontainer"))
            .args(hold.then_some("--hold"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(Error::io("duplicating the shim's log"))?)
            .stderr(log)
            // Its own process group: signals meant for molded do not reach it.
            .process_group(0)
            .spawn()
            .map_err(Error::io(format!(
                "container {id}: starting {}",
                self.shim.display()
            )))?;
        // Reap the shim when it ends; it reports through its files.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }

    /// Streams the container's log to `tx` until the shim reports its exit.
    pub(super) async fn follow(&self, bundle: &Path, tx: &Tx) -> Result<(i32, bool), Error> {
        let b = Bundle::new(bundle);
        let log = b.log();
        let mut offset = 0u64;
        let mut carry = String::new();
        loop {
            let exited = b.exit();
            if let Ok(mut f) = std::fs::File::open(&log) {
                f.seek(SeekFrom::Start(offset))
                    .map_err(Error::io("reading the shim's log"))?;
                let mut r = BufReader::new(f);
                let mut line = String::new();
                while r
                    .read_line(&mut line)
                    .map_err(Error::io("reading the shim's log"))?
                    > 0
                {
                    offset += line.len() as u64;
                    if !line.ends_with('\n') {
                        carry.push_str(&line);
                        line.clear();
                        continue;
                    }
                    let full = std::mem::take(&mut carry) + &line;
                    line.clear();
                    if let Ok(rec) = serde_json::from_str::<molde_bundle::LogRecord>(&full) {
                        let stream = if rec.stream == "stderr" { 2 } else { 1 };
                        let data = rec.log.into_bytes();
                        if !send(tx, Event::Output(api::Output { stream, data })).await {
                            return Ok((0, false));
                        }
                    }
                }
            }
            if let Some(exit) = exited {
                return Ok((exit.status, exit.oom_killed));
            }
            if let Some(msg) = b.error() {
                return Err(Error::FailedPrecondition(msg));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
