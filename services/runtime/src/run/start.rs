//! Starting a container: its record, rootfs snapshot, spec, network and bundle, then its shim; following its log until it exits.

use super::*;
use molde_common::errdefs::OrLog;

/// The container record's extension that keeps the request it was created
/// from: what each start needs again (network, ports, rm).
pub(crate) const RUN_REQUEST: &str = "io.molde.run-request";
const RUN_REQUEST_TYPE: &str = "molde.services.runtime.v1.RunRequest";
/// The label holding a container's name, when it has one.
pub(crate) const NAME_LABEL: &str = "io.molde/name";
/// The label listing the anonymous volumes made for a container
/// (comma-separated), removed with it by `rm -v` and `run --rm`.
pub(crate) const ANONYMOUS_VOLUMES_LABEL: &str = "io.molde/anonymous-volumes";

/// The request a container was created from (a default one for records
/// made before it was kept).
pub(crate) fn run_request(c: &Container) -> api::RunRequest {
    c.extensions
        .get(RUN_REQUEST)
        .and_then(|a| api::RunRequest::decode(a.value.as_slice()).ok())
        .unwrap_or_default()
}

/// Keeps `req` as the request container `c` was created from.
pub(crate) fn set_run_request(c: &mut Container, req: &api::RunRequest) {
    c.extensions.insert(
        RUN_REQUEST.to_string(),
        prost_types::Any {
            type_url: RUN_REQUEST_TYPE.into(),
            value: req.encode_to_vec(),
        },
    );
}

/// `--log-opt max-size=10m --log-opt max-file=3`, as docker's json-file
/// driver reads them.
fn log_options(opts: &[String]) -> Result<molde_bundle::LogOptions, Error> {
    let mut o = molde_bundle::LogOptions::default();
    for opt in opts {
        let bad = |why: &str| Error::InvalidArgument(format!("--log-opt {opt:?}: {why}"));
        match opt.split_once('=') {
            Some(("max-size", v)) => {
                o.max_size = molde_common::parse_size(v)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("a size such as 10m"))?;
            }
            Some(("max-file", v)) => {
                o.max_file = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("a number, at least 1"))?;
            }
            _ => return Err(bad("molde's log takes max-size=SIZE and max-file=N")),
        }
    }
    if o.max_file > 1 && o.max_size == 0 {
        return Err(Error::InvalidArgument("--log-opt max-file needs max-size".into()));
    }
    Ok(o)
}

/// The directory `path` of the tree at `root`, resolved as if `root` were
/// `/` (links and `..` cannot leave it); None when it is not a directory.
fn open_in_root(root: &Path, path: &str) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    rustix::fs::openat2(
        &dir,
        path.trim_start_matches('/'),
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()
}

impl RuntimeService {
    /// Everything up to a running shim. On failure, what was made is undone.
    pub(super) async fn start(&self, ns: &str, req: &api::RunRequest) -> Result<(String, PathBuf), Error> {
        let id = self.create(ns, req).await?;
        match self.launch(ns, &id, false).await {
            Ok(bundle) => Ok((id, bundle)),
            Err(e) => {
                self.remove(ns, &id).await;
                Err(e)
            }
        }
    }

    /// The id a new container gets: its name, unless a renamed container
    /// still has that id; a fresh one when it has no name.
    fn new_id(&self, ns: &str, name: &str) -> Result<String, Error> {
        if name.is_empty() {
            return Ok(uuid::Uuid::new_v4().simple().to_string());
        }
        containers::check_id(name)?;
        if self.named(ns, name)?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "container name {name:?} is already in use"
            )));
        }
        if self.store.get(&containers::key(ns, name))?.is_some() {
            return Ok(uuid::Uuid::new_v4().simple().to_string());
        }
        Ok(name.to_string())
    }

    /// Creates a container (record, rootfs snapshot, spec, bundle) that
    /// `launch` starts. On failure, what was made is undone.
    pub(super) async fn create(&self, ns: &str, req: &api::RunRequest) -> Result<String, Error> {
        let id = self.new_id(ns, &req.name)?;
        spec::check_limits(req, host_cpus())?;
        spec::check_controllers(req, std::path::Path::new("/sys/fs/cgroup"))?;
        let bridge = !matches!(req.network.as_str(), "none" | "host");
        let user_network = bridge && !matches!(req.network.as_str(), "" | "bridge");
        if user_network {
            self.cni.networks.find(&req.network)?;
        } else if !req.ip.is_empty() || !req.network_aliases.is_empty() {
            return Err(Error::InvalidArgument(
                "--ip and --network-alias need a user network (molde network create)".into(),
            ));
        }
        crate::restart::Policy::parse(&req.restart)?;
        spec::host_lines(&req.add_hosts)?;
        let log_options = log_options(&req.log_opts)?;
        if !req.stop_signal.is_empty() {
            crate::lifecycle::parse_signal(&req.stop_signal)
                .map_err(|e| e.context(format!("--stop-signal {}", req.stop_signal)))?;
        }
        let labels: molde_common::labels::Labels = req.labels.clone().into_iter().collect();
        molde_common::labels::validate(&labels)?;
        if req.rm && !matches!(req.restart.as_str(), "" | "no") {
            return Err(Error::InvalidArgument(
                "--restart and --rm conflict: a container removed when it exits cannot be restarted".into(),
            ));
        }
        if !bridge && !req.ports.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "container {id}: -p needs the bridge network"
            )));
        }
        for p in &req.ports {
            crate::network::parse_port(p)?;
        }
        let key = containers::key(ns, &id);
        let img = if req.rootfs_parent_set {
            image::Image {
                process: Default::default(),
                health: None,
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
        // Volumes made and filled before the spec names them.
        let image_volumes = img.process.volumes().clone().unwrap_or_default();
        let (volumes, anonymous) = match self.prepare_volumes(&id, req, &image_volumes, &mounts) {
            Ok(v) => v,
            Err(e) => {
                undo_snapshot().await;
                return Err(e.context(format!("container {id}")));
            }
        };
        let req = &api::RunRequest {
            volumes,
            ..req.clone()
        };
        let mut spec = match crate::user::resolve(&user, &req.group_add, &layers)
            .and_then(|who| spec::build(ns, &id, &img.process, req, &who, &self.volumes))
        {
            Ok(s) => s,
            Err(e) => {
                undo_snapshot().await;
                return Err(e.context(format!("container {id}")));
            }
        };
        if req.tty
            && let Some(p) = spec.process_mut()
        {
            p.set_terminal(Some(true));
        }
        let bundle = self.bundle_dir(ns, &id);
        let written = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(bundle.join("rootfs"))?;
            if req.interactive {
                Bundle::new(&bundle).set_interactive()?;
            }
            if log_options != molde_bundle::LogOptions::default() {
                Bundle::new(&bundle).write_log_options(&log_options)?;
            }
            molde_bundle::mount::write(&bundle, &molde_common::bundle_mounts(&mounts))
        })();
        let spec_json = serde_json::to_vec_pretty(&spec)
            .map_err(|e| Error::Internal(format!("encoding the OCI spec: {e}")))?;
        if let Err(e) = written {
            undo_snapshot().await;
            let _ = std::fs::remove_dir_all(&bundle);
            return Err(Error::Internal(format!(
                "container {id}: writing its bundle: {e}"
            )));
        }
        let now = timestamp(now_nanos());
        let mut kept = req.clone();
        kept.detach = false;
        kept.create_only = false;
        if kept.stop_signal.is_empty() {
            kept.stop_signal = img.process.stop_signal().clone().unwrap_or_default();
        }
        if kept.health.is_none() {
            kept.health = img.health.clone();
        }
        let record = Container {
            id: id.clone(),
            image: req.image.clone(),
            labels: (!req.name.is_empty())
                .then(|| (NAME_LABEL.to_string(), req.name.clone()))
                .into_iter()
                .chain(
                    (!anonymous.is_empty())
                        .then(|| (ANONYMOUS_VOLUMES_LABEL.to_string(), anonymous.join(","))),
                )
                .chain(req.labels.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect(),
            runtime: Some(Runtime {
                name: RUNTIME_NAME.into(),
                options: None,
            }),
            // The spec as created; each launch adds the network's
            // namespace and /etc files to the bundle's copy.
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: spec_json,
            }),
            snapshotter: "overlayfs".into(),
            snapshot_key: id.clone(),
            created_at: Some(now),
            updated_at: Some(now),
            extensions: [(
                RUN_REQUEST.to_string(),
                prost_types::Any {
                    type_url: RUN_REQUEST_TYPE.into(),
                    value: kept.encode_to_vec(),
                },
            )]
            .into_iter()
            .collect(),
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
        tracing::info!(namespace = ns, container = %id, image = %req.image, "container created");
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
        Ok(id)
    }

    /// The `-v` entries a container's spec gets: named volumes created
    /// (`NAME:/path`), an anonymous one for each `-v /path` and each of the
    /// image's VOLUMEs no mount covers; a volume that is empty gets what
    /// the image has at its path, as docker fills it. Returns the entries
    /// and the anonymous volumes' names.
    fn prepare_volumes(
        &self,
        id: &str,
        req: &api::RunRequest,
        image_volumes: &[String],
        mounts: &[molde_api::containerd::types::Mount],
    ) -> Result<(Vec<String>, Vec<String>), Error> {
        let vols = crate::volumes::Volumes::new(&self.volumes);
        let mut entries = Vec::new();
        // (volume, destination, options suffix, anonymous)
        let mut wanted: Vec<(String, String, String, bool)> = Vec::new();
        let anonymous_name = || {
            let a = uuid::Uuid::new_v4().simple().to_string();
            let b = uuid::Uuid::new_v4().simple().to_string();
            format!("{a}{b}")
        };
        for v in &req.volumes {
            let parts: Vec<&str> = v.split(':').collect();
            match parts.as_slice() {
                [dst] if dst.starts_with('/') => {
                    wanted.push((anonymous_name(), dst.to_string(), String::new(), true))
                }
                [src, dst, rest @ ..] if !src.starts_with('/') && rest.len() <= 1 => {
                    crate::volumes::check_name(src).map_err(|e| e.context(format!("volume {v:?}")))?;
                    let opts = rest.first().map(|o| format!(":{o}")).unwrap_or_default();
                    wanted.push((src.to_string(), dst.to_string(), opts, false));
                }
                _ => entries.push(v.clone()), // a bind mount, checked with the spec
            }
        }
        let clean = |p: &str| p.trim_end_matches('/').to_string();
        let covered: Vec<String> = req
            .volumes
            .iter()
            .filter_map(|v| {
                let parts: Vec<&str> = v.split(':').collect();
                match parts.as_slice() {
                    [dst] => Some(clean(dst)),
                    [_, dst, ..] => Some(clean(dst)),
                    _ => None,
                }
            })
            .chain(req.tmpfs.iter().map(|t| clean(t.split(':').next().unwrap_or(""))))
            .collect();
        for path in image_volumes {
            if path.starts_with('/') && !covered.contains(&clean(path)) {
                wanted.push((anonymous_name(), path.clone(), String::new(), true));
            }
        }
        let mut anonymous = Vec::new();
        let mut image_root: Option<(PathBuf, bool)> = None;
        let result = (|| -> Result<(), Error> {
            for (name, dst, opts, anon) in &wanted {
                vols.create(name, Default::default(), *anon)?;
                if *anon {
                    anonymous.push(name.clone());
                }
                let data = vols.data(name);
                let empty = std::fs::read_dir(&data)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                if empty && !mounts.is_empty() {
                    let root = match &image_root {
                        Some((root, _)) => root.clone(),
                        None => {
                            let root = self.state.join(".populate").join(id);
                            std::fs::create_dir_all(&root)
                                .map_err(Error::io("creating a mount point for the image"))?;
                            let mounted = molde_bundle::mount::mount_all(
                                &molde_common::bundle_mounts(mounts),
                                &root,
                                true,
                            );
                            image_root = Some((root.clone(), mounted.is_ok()));
                            mounted.map_err(Error::io("mounting the image to fill a volume"))?;
                            root
                        }
                    };
                    // What the image has there, if it has anything: looked
                    // up inside the image (its links resolve in it), never
                    // a path on the host.
                    if let Some(dir) = open_in_root(&root, dst) {
                        let from =
                            PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir)));
                        crate::volumes::populate(&from, &data)
                            .map_err(Error::io(format!("filling volume {name} from the image's {dst}")))?;
                    }
                }
                entries.push(format!("{name}:{dst}{opts}"));
            }
            Ok(())
        })();
        if let Some((root, mounted)) = image_root {
            if mounted {
                let _ = rustix::mount::unmount(&root, rustix::mount::UnmountFlags::DETACH);
            }
            let _ = std::fs::remove_dir(&root);
        }
        if let Err(e) = result {
            for name in &anonymous {
                let _ = vols.remove(name);
            }
            return Err(e);
        }
        Ok((entries, anonymous))
    }

    /// Removes the anonymous volumes made for a container.
    pub(crate) fn remove_anonymous_volumes(&self, c: &Container) {
        let vols = crate::volumes::Volumes::new(&self.volumes);
        for name in c
            .labels
            .get(ANONYMOUS_VOLUMES_LABEL)
            .map(|l| l.split(',').filter(|n| !n.is_empty()).collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if let Err(e) = vols.remove(name) {
                tracing::warn!(container = %c.id, volume = name, error = %e, "an anonymous volume could not be removed");
            }
        }
    }

    /// Starts a created or exited container in a new shim: its network
    /// set up anew, the bundle's spec written with it. On failure the
    /// network is given back and the container stays as it was.
    pub(crate) async fn launch(&self, ns: &str, id: &str, hold: bool) -> Result<PathBuf, Error> {
        let _starting = self.starting.claim(ns, id)?;
        let record = self.record(ns, id)?;
        let req = run_request(&record);
        let bundle = self.bundle_dir(ns, id);
        let b = Bundle::new(&bundle);
        if b.shim_alive() {
            return Err(Error::FailedPrecondition(format!("container {id:?} is running")));
        }
        // A shim that was killed leaves its network and libcontainer's state.
        self.release_network(ns, id).await;
        let _ = std::fs::remove_dir_all(self.state.join(".libcontainer").join(format!("{ns}-{id}")));
        b.clear_run()
            .map_err(Error::io(format!("container {id}: clearing its last run")))?;
        // After a reboot the state directory is empty: the bundle is made
        // again from the record and the snapshotter.
        if !bundle.join(molde_bundle::mount::MOUNTS_FILE).exists() {
            let mounts = self.snapshot_mounts(ns, id).await?;
            let made = (|| -> std::io::Result<()> {
                std::fs::create_dir_all(bundle.join("rootfs"))?;
                if req.interactive {
                    b.set_interactive()?;
                }
                molde_bundle::mount::write(&bundle, &molde_common::bundle_mounts(&mounts))
            })();
            made.map_err(Error::io(format!("container {id}: making its bundle again")))?;
        }
        let mut spec: oci_spec::runtime::Spec = record
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .ok_or_else(|| Error::Corrupt {
                key: containers::key(ns, id),
                message: "the container record has no readable spec".into(),
            })?;
        let fail = |e: Error| async move {
            self.release_network(ns, id).await;
            Err(e)
        };
        let user_network = match req.network.as_str() {
            "" | "bridge" | "none" | "host" => None,
            name => Some(self.cni.networks.find(name)?),
        };
        if user_network.is_some() || matches!(req.network.as_str(), "" | "bridge") {
            let ports = req
                .ports
                .iter()
                .map(|p| crate::network::parse_port(p))
                .collect::<Result<Vec<_>, _>>()?;
            // The host ports first: a port someone has fails the run before
            // any rule could take its connections.
            self.ports
                .reserve(&format!("{ns}/{id}"), &ports)
                .map_err(|e| e.context(format!("container {id}")))?;
            // Unique per container instance: addresses an earlier container of the
            // same name left allocated (a crash) can never clash with this one.
            let key = format!("{ns}-{id}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            let on = user_network.as_ref().map(|n| n.name.as_str()).unwrap_or_default();
            let (netns, mut saved) = match self.cni.setup(&key, &ports, on, &req.ip).await {
                Ok(x) => x,
                Err(e) => return fail(e.context(format!("container {id}: network"))).await,
            };
            if let Some(n) = &user_network {
                // The names the network's DNS answers for it.
                saved.names = std::iter::once(
                    record
                        .labels
                        .get(NAME_LABEL)
                        .cloned()
                        .unwrap_or_else(|| id.to_string()),
                )
                .chain(std::iter::once(id.chars().take(12).collect()))
                .chain(req.network_aliases.iter().cloned())
                .fold(Vec::new(), |mut v: Vec<String>, n| {
                    if !v.contains(&n) {
                        v.push(n);
                    }
                    v
                });
                saved.upstream = req.dns.clone();
                self.dns.serve(n);
            }
            // The networks it was connected to since it was created.
            let name = record
                .labels
                .get(NAME_LABEL)
                .cloned()
                .unwrap_or_else(|| id.to_string());
            for conn in &req.connections {
                if let Err(e) = self.attach_connection(&mut saved, &name, id, conn).await {
                    self.cni.teardown(&saved).await;
                    return fail(e.context(format!("container {id}: network {}", conn.network))).await;
                }
            }
            b.write_network_record(&saved)
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
        }
        // /etc/hosts, /etc/hostname and /etc/resolv.conf, written per start.
        let address = b
            .network_record()
            .ok()
            .flatten()
            .and_then(|n| crate::network::address(&n));
        let resolver = spec::Resolver {
            // A user network's containers ask molded's DNS on its gateway.
            nameservers: match &user_network {
                Some(n) => vec![n.gateway.clone()],
                None => req.dns.clone(),
            },
            search: req.dns_search.clone(),
            ndots0: user_network.is_some(),
            hosts: req.add_hosts.clone(),
        };
        if let Err(e) = spec::add_etc_files(
            &mut spec,
            &bundle,
            address.as_deref(),
            req.network == "host",
            &resolver,
        ) {
            return fail(Error::Internal(format!("container {id}: {e}"))).await;
        }
        let written = serde_json::to_vec_pretty(&spec)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(b.config(), json));
        if let Err(e) = written {
            return fail(Error::Internal(format!("container {id}: writing its spec: {e}"))).await;
        }
        if let Err(e) = self.spawn_shim(ns, id, &bundle, hold) {
            return fail(e).await;
        }
        if hold {
            // Until the shim holds the created container (or failed).
            match crate::bundle_wait::pid_or_error(&b, Duration::from_secs(60), Bundle::created_pid).await {
                Some(Ok(_)) => {}
                Some(Err(msg)) => {
                    return fail(Error::FailedPrecondition(format!("container {id}: {msg}"))).await;
                }
                None => {
                    return fail(Error::DeadlineExceeded(format!(
                        "container {id}: its shim did not create it within 60s"
                    )))
                    .await;
                }
            }
            self.watch_health(ns, id);
            return Ok(bundle);
        }
        tracing::info!(namespace = ns, container = %id, "container started");
        self.watch_health(ns, id);
        Ok(bundle)
    }

    /// Waits until the shim started the container (its init runs, or
    /// already ended), or says why it could not.
    pub(crate) async fn await_started(&self, ns: &str, id: &str) -> Result<(), Error> {
        let b = Bundle::new(self.bundle_dir(ns, id));
        let mut gone_since: Option<tokio::time::Instant> = None;
        let outcome = crate::bundle_wait::until(b.dir(), Duration::from_secs(60), || {
            if let Some(pid) = b.init_pid() {
                return Some(Ok(Some(pid)));
            }
            if b.exit().is_some() {
                return Some(Ok(None));
            }
            if let Some(msg) = b.error() {
                return Some(Err(Some(msg)));
            }
            // A shim gone without a word (killed): said after a grace, as a
            // process that is only between two states is no shim gone.
            if b.shim_pid().is_some() && !b.shim_alive() {
                let since = *gone_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > Duration::from_secs(2) {
                    return Some(Err(None));
                }
            } else {
                gone_since = None;
            }
            None
        })
        .await;
        match outcome {
            Some(Ok(Some(pid))) => {
                self.started(ns, id, pid as u32);
                Ok(())
            }
            Some(Ok(None)) => Ok(()),
            Some(Err(Some(msg))) => {
                self.release_network(ns, id).await;
                Err(Error::FailedPrecondition(format!(
                    "container {id}: {}",
                    crate::lifecycle::start_failure_message(&msg)
                )))
            }
            Some(Err(None)) => Err(Error::Internal(format!(
                "container {id}: its shim ended without starting it (see {}/shim.log)",
                b.dir().display()
            ))),
            None => Err(Error::DeadlineExceeded(format!(
                "container {id}: its shim did not start it within 60s"
            ))),
        }
    }

    pub(super) fn spawn_shim(&self, ns: &str, id: &str, bundle: &Path, hold: bool) -> Result<(), Error> {
        use std::os::unix::process::CommandExt;
        let log =
            std::fs::File::create(bundle.join("shim.log")).map_err(Error::io("creating the shim's log"))?;
        if self.spares.assign(&format!("{ns}-{id}"), bundle, hold) {
            return Ok(());
        }
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
