//! Fetching and unpacking an image's layers, then recording the image.
//!
//! Layers unpack in parallel: layer i is prepared as an active snapshot whose
//! parent is *deferred* (the `molde.io/snapshot.parent` label), so the diff
//! service extracts it into its own upper directory while the layers below are
//! still downloading or extracting. Commits then happen strictly in order, each
//! naming its chain ID, once the one below is committed. A layer with a
//! hardlink to a file from a lower layer is re-applied on its real parent.
//! One unpack per chain ID at a time, whatever the number of pulls.

use super::*;
use molde_common::labels::GC_REF_CONTENT;

/// Label on an active snapshot naming its parent-to-be (see the snapshotter).
use molde_common::labels::SNAPSHOT_PARENT as DEFERRED_PARENT;

/// Whether the snapshot `key` exists.
pub(super) async fn snapshot_exists(ch: &Channel, ns: &str, snapshotter: &str, key: &str) -> Result<bool> {
    match SnapshotsClient::new(ch.clone())
        .stat(namespaced(
            ns,
            StatSnapshotRequest {
                snapshotter: snapshotter.into(),
                key: key.into(),
            },
        ))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(upstream(format!("snapshot {key}"))(s)),
    }
}

impl Puller {
    /// Unpacks an image whose manifest and config are stored (fetching layers
    /// the store lacks when it came from a registry), labels its graph for GC,
    /// and records it under its name. Returns (bytes fetched, blobs fetched,
    /// layers applied).
    pub(crate) async fn complete_image(&self, job: ImageJob<'_>) -> Result<(u64, u32, u32)> {
        let ns = job.ns;
        let snapshotter = job.snapshotter;
        let unpack = job.unpack;
        let manifest = job.manifest;
        let manifest_desc = job.manifest_desc;
        let index = job.index;
        let digest = job.target.digest().to_string();
        let chain = chain_ids(job.diff_ids);
        // Layers already unpacked: the highest chain ID present means all below are too.
        let mut present = 0;
        if unpack {
            for (i, c) in chain.iter().enumerate().rev() {
                if self.snapshot_exists(ns, snapshotter, c).await? {
                    present = i + 1;
                    break;
                }
            }
        }
        let (committed_tx, committed_rx) = watch::channel(present);
        let committed_tx = Arc::new(committed_tx);
        let sem = Arc::new(tokio::sync::Semaphore::new(self.parallel.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let stats = Arc::new(std::sync::Mutex::new((0u64, 0u32, 0u32)));
        // Largest first: the layers that take longest to unpack start earliest.
        let mut order: Vec<usize> = (0..manifest.layers().len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(manifest.layers()[i].size()));
        for i in order {
            let layer = manifest.layers()[i].clone();
            let ctx = LayerTask {
                store: self.store.clone(),
                snapshotter_ch: self.snapshotter.clone(),
                inflight: self.inflight.clone(),
                peers: self.peers.clone(),
                reg: job.source.as_ref().map(|(_, r)| r.clone()),
                remote: job.source.as_ref().map(|(r, _)| (*r).clone()),
                reference: job.name.to_string(),
                ns: job.ns.to_string(),
                lease: job.lease.to_string(),
                snapshotter: job.snapshotter.to_string(),
                layer,
                index: i,
                diff_id: job.diff_ids[i].clone(),
                chain: chain[..=i].to_vec(),
                unpack: unpack && i >= present,
                committed_tx: committed_tx.clone(),
                committed_rx: committed_rx.clone(),
                tx: job.tx.clone(),
                sem: sem.clone(),
                stats: stats.clone(),
            };
            tasks.spawn(tracing::Instrument::in_current_span(ctx.run()));
        }
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tasks.abort_all();
                    return Err(e);
                }
                Err(e) => {
                    tasks.abort_all();
                    return Err(Error::Io {
                        context: format!("unpacking {}", job.name),
                        source: std::io::Error::other(e.to_string()),
                    });
                }
            }
        }

        // Labels that make the image's graph visible to GC and to containerd clients.
        let mut m_labels = HashMap::new();
        m_labels.insert(
            format!("{GC_REF_CONTENT}.config"),
            manifest.config().digest().to_string(),
        );
        for (i, l) in manifest.layers().iter().enumerate() {
            m_labels.insert(format!("{GC_REF_CONTENT}.l.{i}"), l.digest().to_string());
            self.store
                .set_labels(
                    ns,
                    l.digest().as_ref(),
                    [(
                        molde_common::labels::UNCOMPRESSED.to_string(),
                        job.diff_ids[i].clone(),
                    )]
                    .into(),
                )
                .await?;
        }
        if let Some((reference, _)) = &job.source {
            let source = (
                format!("{}{}", SOURCE_LABEL, reference.registry()),
                reference.repository().to_string(),
            );
            for d in manifest
                .layers()
                .iter()
                .map(|l| l.digest().to_string())
                .chain([manifest.config().digest().to_string(), digest.clone()])
            {
                self.store.set_labels(ns, &d, [source.clone()].into()).await?;
            }
            m_labels.insert(source.0.clone(), source.1.clone());
        }
        self.store
            .set_labels(ns, manifest_desc.digest().as_ref(), m_labels)
            .await?;
        if let Some(idx) = index {
            let pos = idx
                .manifests()
                .iter()
                .position(|m| m.digest() == manifest_desc.digest())
                .unwrap_or(0);
            self.store
                .set_labels(
                    ns,
                    &digest,
                    [(
                        format!("{GC_REF_CONTENT}.m.{pos}"),
                        manifest_desc.digest().to_string(),
                    )]
                    .into(),
                )
                .await?;
        }
        if unpack && let Some(top) = chain.last() {
            self.store
                .set_labels(
                    ns,
                    manifest.config().digest().as_ref(),
                    [(
                        format!("{}{snapshotter}", molde_common::labels::GC_REF_SNAPSHOT),
                        top.clone(),
                    )]
                    .into(),
                )
                .await?;
        }
        self.store
            .put_image(
                ns,
                job.name,
                ImageTarget {
                    media_type: job.target.media_type().to_string(),
                    digest: digest.clone(),
                    size: job.target.size() as i64,
                },
            )
            .await?;
        let stats = *stats.lock().unwrap_or_else(|p| p.into_inner());
        Ok(stats)
    }
}

/// An image to unpack and record (see `Puller::complete_image`).
pub(crate) struct ImageJob<'a> {
    pub ns: &'a str,
    pub lease: &'a str,
    pub name: &'a str,
    pub target: &'a Descriptor,
    pub index: Option<&'a ImageIndex>,
    pub manifest_desc: &'a Descriptor,
    pub manifest: &'a ImageManifest,
    pub diff_ids: &'a [String],
    pub snapshotter: &'a str,
    pub unpack: bool,
    /// The registry reference it came from, and the client to fetch missing blobs with.
    pub source: Option<(&'a Reference, Arc<Registry>)>,
    pub tx: &'a ProgressTx,
}

/// Fetching and unpacking one layer.
struct LayerTask {
    store: Arc<dyn ContentStore>,
    snapshotter_ch: Channel,
    inflight: Arc<Inflight>,
    peers: Option<Arc<dyn molde_common::store::PeerBlobs>>,
    reg: Option<Arc<Registry>>,
    remote: Option<Reference>,
    /// The image, for messages.
    reference: String,
    ns: String,
    lease: String,
    snapshotter: String,
    layer: Descriptor,
    index: usize,
    diff_id: String,
    /// Chain IDs of this layer and every one below it.
    chain: Vec<String>,
    unpack: bool,
    committed_tx: Arc<watch::Sender<usize>>,
    committed_rx: watch::Receiver<usize>,
    tx: ProgressTx,
    sem: Arc<tokio::sync::Semaphore>,
    stats: Arc<std::sync::Mutex<(u64, u32, u32)>>,
}

impl LayerTask {
    async fn run(self) -> Result<()> {
        let digest = digest_of(&self.layer)?;
        let layer_digest = digest.to_string();
        let size = self.layer.size() as i64;
        {
            // The registry's downloads are limited to `parallel` at once; in
            // a cluster, reads from peers (and following a peer's download)
            // are not: `through_cluster` takes a permit for the registry only.
            let _permit = match self.peers {
                Some(_) => None,
                None => Some(
                    self.sem
                        .acquire()
                        .await
                        .map_err(|_| Error::FailedPrecondition("pull cancelled".into()))?,
                ),
            };
            let _one = self.inflight.hold(&layer_digest).await;
            let status = match self.store.hold(&self.ns, &self.lease, &digest, size).await? {
                Some(_) => "exists",
                None => {
                    let (Some(reg), Some(remote)) = (&self.reg, &self.remote) else {
                        return Err(Error::NotFound(format!(
                            "layer {layer_digest} of {}",
                            self.reference
                        )));
                    };
                    let tx = self.tx.clone();
                    let d = layer_digest.clone();
                    let total = size;
                    let last = std::sync::atomic::AtomicU64::new(0);
                    let dest = fetch::Dest {
                        store: &*self.store,
                        ns: &self.ns,
                        lease: &self.lease,
                    };
                    let report = |n: u64| {
                        // At most a report per 4 MiB, dropped when the client is slow;
                        // a count that starts over (a peer gave up, the registry
                        // takes over) is reported at once.
                        let prev = last.load(std::sync::atomic::Ordering::Relaxed);
                        if n < prev || n - prev >= 4 << 20 || n as i64 == total {
                            last.store(n, std::sync::atomic::Ordering::Relaxed);
                            let _ = tx.try_send(Ok(api::Progress {
                                event: Some(api::progress::Event::Blob(api::BlobProgress {
                                    digest: d.clone(),
                                    offset: n as i64,
                                    total,
                                    status: "downloading".into(),
                                })),
                            }));
                        }
                    };
                    let n = match &self.peers {
                        Some(p) => {
                            fetch::through_cluster(
                                &dest,
                                &**p,
                                (reg, remote, &self.sem),
                                &digest,
                                size,
                                &report,
                            )
                            .await?
                        }
                        None => fetch::download(&dest, reg, remote, &digest, size, report).await?,
                    };
                    let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                    s.0 += n;
                    s.1 += 1;
                    "done"
                }
            };
            send(
                &self.tx,
                api::progress::Event::Blob(api::BlobProgress {
                    digest: layer_digest,
                    offset: size,
                    total: size,
                    status: status.into(),
                }),
            )
            .await;
        }
        if !self.unpack {
            return Ok(());
        }
        self.unpack().await
    }

    async fn wait_below(&self) -> Result<()> {
        let mut rx = self.committed_rx.clone();
        let i = self.index;
        rx.wait_for(|c| *c >= i)
            .await
            .map_err(|_| Error::FailedPrecondition("pull cancelled".into()))?;
        Ok(())
    }

    /// Unpacks the layer, unless another pull did while this one waited:
    /// one unpack per chain ID at a time (as containerd serialises unpacks of
    /// one layer), so N pulls of one image cost about one.
    async fn unpack(&self) -> Result<()> {
        let chain_id = self.chain.last().expect("non-empty").clone();
        let _unpacking = self
            .inflight
            .hold(&format!("unpack {} {} {chain_id}", self.ns, self.snapshotter))
            .await;
        if snapshot_exists(&self.snapshotter_ch, &self.ns, &self.snapshotter, &chain_id).await? {
            // Committed, so every layer below it is too.
            self.committed_tx.send_modify(|c| *c = (*c).max(self.index + 1));
            self.applied(chain_id, true).await;
            return Ok(());
        }
        let parent = if self.index > 0 {
            self.chain[self.index - 1].clone()
        } else {
            String::new()
        };
        let mut sn = SnapshotsClient::new(self.snapshotter_ch.clone());
        let key = format!("extract-{} {chain_id}", uuid::Uuid::new_v4().simple());
        let mut labels = HashMap::new();
        if !parent.is_empty() {
            labels.insert(DEFERRED_PARENT.to_string(), parent.clone());
        }
        let applied = self.prepare_apply(&mut sn, &key, "", labels).await;
        let applied = match applied {
            // A hardlink to a file below this layer: apply again on the real parent.
            Err(Error::Remote {
                code: tonic::Code::DataLoss,
                message,
            }) if message.contains("hardlink target") && !parent.is_empty() => {
                self.discard(&key).await;
                self.wait_below().await?;
                tracing::info!(layer = %self.layer.digest(), "layer links into its parent; applying on the parent");
                self.prepare_apply(&mut sn, &key, &parent, HashMap::new()).await?
            }
            other => other?,
        };
        if applied != self.diff_id {
            self.discard(&key).await;
            return Err(Error::Remote {
                code: tonic::Code::DataLoss,
                message: format!(
                    "layer {} of {}: unpacked to diff ID {applied}, but the image config says {}",
                    self.layer.digest(),
                    self.reference,
                    self.diff_id
                ),
            });
        }
        self.wait_below().await?;
        let commit = sn
            .commit(namespaced(
                &self.ns,
                CommitSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    name: chain_id.clone(),
                    key: key.clone(),
                    labels: Default::default(),
                },
            ))
            .await;
        match commit {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.discard(&key).await;
            }
            Err(s) => return Err(upstream(format!("committing snapshot {chain_id}"))(s)),
        }
        self.committed_tx.send_modify(|c| *c = (*c).max(self.index + 1));
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).2 += 1;
        self.applied(chain_id, false).await;
        Ok(())
    }

    async fn applied(&self, chain_id: String, shared: bool) {
        send(
            &self.tx,
            api::progress::Event::Applied(api::LayerApplied {
                digest: self.layer.digest().to_string(),
                chain_id,
                diff_id: self.diff_id.clone(),
                shared,
            }),
        )
        .await;
    }

    /// Removes a working snapshot this pull made; a failure is logged (the
    /// snapshotter's cleanup takes what is left).
    async fn discard(&self, key: &str) {
        if let Err(s) = SnapshotsClient::new(self.snapshotter_ch.clone())
            .remove(namespaced(
                &self.ns,
                RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.to_string(),
                },
            ))
            .await
        {
            tracing::warn!(key, error = %s.message(), "could not remove a pull's working snapshot");
        }
    }

    /// Prepares `key` and applies the layer onto it; returns the diff ID.
    async fn prepare_apply(
        &self,
        sn: &mut SnapshotsClient<Channel>,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<String> {
        let mounts = sn
            .prepare(namespaced(
                &self.ns,
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    labels,
                },
            ))
            .await
            .map_err(upstream(format!(
                "preparing snapshot for layer {}",
                self.layer.digest()
            )))?
            .into_inner()
            .mounts;
        let applied = DiffClient::new(self.snapshotter_ch.clone())
            .apply(namespaced(
                &self.ns,
                ApplyRequest {
                    diff: Some(api_desc(&self.layer)),
                    mounts,
                    ..Default::default()
                },
            ))
            .await;
        match applied {
            Ok(r) => Ok(r.into_inner().applied.map(|d| d.digest).unwrap_or_default()),
            Err(s) => {
                self.discard(key).await;
                Err(upstream(format!(
                    "layer {} of {}",
                    self.layer.digest(),
                    self.reference
                ))(s))
            }
        }
    }
}
