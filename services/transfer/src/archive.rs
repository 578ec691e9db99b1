//! `molde save` / `molde load`: images as tar archives.
//!
//! Export writes an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), naming each image with the `io.containerd.image.name`
//! and `org.opencontainers.image.ref.name` annotations. Import reads an OCI
//! image layout or a docker-archive (`manifest.json` with `RepoTags`, `Config`
//! and `Layers` paths): every file goes into a content ingest and is committed
//! under its digest (a `blobs/` file must match its name), then each image is
//! unpacked and recorded as a pull would.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};

use bytes::Bytes;
use futures::StreamExt;
use molde_common::Digest;
use molde_common::errdefs::{Error, Result};
use molde_common::image::{host_platform, select_manifest};
use molde_common::store::ByteStream;
use oci_spec::image::{ImageIndexBuilder, OciLayoutBuilder};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::media::{
    self, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, descriptor, parse,
};
use crate::pull::{ImageJob, ProgressTx, PullLease, Puller};

/// An archive's files: path → (digest, size).
type ArchiveFiles = HashMap<String, (String, i64)>;

const NAME_ANNOTATION: &str = "io.containerd.image.name";
use molde_common::labels::REF_NAME as REF_ANNOTATION;
/// Files kept in memory while importing (JSON documents) are at most this large.
const SMALL: u64 = 4 << 20;

/// One image of a docker-archive's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    #[serde(default)]
    layers: Vec<String>,
}

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("image documents serialise")
}

fn oci_error(what: &str) -> impl FnOnce(oci_spec::OciSpecError) -> Error {
    move |e| Error::Internal(format!("{what}: {e}"))
}

/// A blob's bytes as a blocking reader (for the tar writer on its thread).
struct StreamReader {
    handle: Handle,
    stream: ByteStream,
    cur: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

impl Puller {
    async fn blob_bytes(&self, ns: &str, digest: &str) -> Result<Vec<u8>> {
        self.store.read(ns, digest, media::MAX_METADATA).await
    }

    /// Writes `names` as an OCI image layout tar into `out`. Runs on a
    /// blocking thread; `handle` reaches the content store.
    pub fn export(&self, handle: &Handle, ns: &str, names: &[String], out: impl Write) -> Result<()> {
        let mut blobs: BTreeSet<String> = BTreeSet::new();
        let mut index = Vec::new();
        // The docker-archive view of single-platform images (`manifest.json`
        // naming the same blobs), so `docker load` reads the archive too.
        let mut docker: Vec<DockerArchiveImage> = Vec::new();
        for name in names {
            let t = handle
                .block_on(self.store.image(ns, name))?
                .ok_or_else(|| Error::NotFound(format!("image {name:?}")))?;
            let top_type = MediaType::from(t.media_type.as_str());
            let mut manifests = vec![t.digest.clone()];
            if media::is_index(&top_type) {
                let idx: ImageIndex = parse(
                    &handle.block_on(self.blob_bytes(ns, &t.digest))?,
                    &format!("index of {name}"),
                )?;
                manifests.clear();
                for m in idx.manifests() {
                    let d = m.digest().to_string();
                    if handle.block_on(self.store.info(ns, &d))?.is_some() {
                        manifests.push(d);
                    }
                }
                blobs.insert(t.digest.clone());
            }
            for d in &manifests {
                let m: ImageManifest = parse(
                    &handle.block_on(self.blob_bytes(ns, d))?,
                    &format!("manifest {d} of {name}"),
                )?;
                blobs.insert(d.clone());
                blobs.insert(m.config().digest().to_string());
                for l in m.layers() {
                    blobs.insert(l.digest().to_string());
                }
                if manifests.len() == 1 && !media::is_index(&top_type) {
                    let path =
                        |d: &Descriptor| format!("blobs/{}/{}", d.digest().algorithm(), d.digest().digest());
                    docker.push(DockerArchiveImage {
                        config: path(m.config()),
                        repo_tags: vec![docker_name(name)],
                        layers: m.layers().iter().map(path).collect(),
                    });
                }
            }
            let tag = name
                .rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
                .map(|(_, t)| t.to_string())
                .unwrap_or_default();
            let mut entry = descriptor(&top_type, &t.digest, t.size as u64)?;
            entry.set_annotations(Some(
                [
                    (NAME_ANNOTATION.to_string(), name.clone()),
                    (REF_ANNOTATION.to_string(), tag),
                ]
                .into(),
            ));
            index.push(entry);
        }
        let mut b = tar::Builder::new(out);
        let layout = json(
            &OciLayoutBuilder::default()
                .image_layout_version("1.0.0")
                .build()
                .map_err(oci_error("oci-layout"))?,
        );
        b.append_data(
            &mut tar_header(layout.len() as u64),
            "oci-layout",
            layout.as_slice(),
        )
        .map_err(Error::io("writing the archive"))?;
        for d in &blobs {
            let digest = Digest::parse_field(d, "digest")?;
            let size = handle
                .block_on(self.store.info(ns, d))?
                .ok_or_else(|| Error::NotFound(format!("content {d} (the image is incomplete here)")))?
                .size;
            let reader = StreamReader {
                handle: handle.clone(),
                stream: handle.block_on(self.store.read_stream(ns, d))?,
                cur: Bytes::new(),
            };
            b.append_data(
                &mut tar_header(size as u64),
                format!("blobs/{}/{}", digest.algorithm().name(), digest.hex()),
                reader,
            )
            .map_err(Error::io("writing the archive"))?;
        }
        if !docker.is_empty() {
            let m = json(&docker);
            b.append_data(&mut tar_header(m.len() as u64), "manifest.json", m.as_slice())
                .map_err(Error::io("writing the archive"))?;
        }
        let idx = json(
            &ImageIndexBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageIndex)
                .manifests(index)
                .build()
                .map_err(oci_error("index.json"))?,
        );
        b.append_data(&mut tar_header(idx.len() as u64), "index.json", idx.as_slice())
            .map_err(Error::io("writing the archive"))?;
        b.into_inner()
            .map_err(Error::io("writing the archive"))?
            .flush()
            .map_err(Error::io("writing the archive"))?;
        Ok(())
    }

    /// Stores every file of an archive read from `input`: path → (digest, size),
    /// plus the contents of small files. Runs on a blocking thread.
    fn ingest_archive(
        &self,
        handle: &Handle,
        ns: &str,
        lease: &str,
        input: impl Read,
    ) -> Result<(ArchiveFiles, HashMap<String, Vec<u8>>)> {
        let mut files = HashMap::new();
        let mut small = HashMap::new();
        let mut archive = tar::Archive::new(input);
        let bad = |e: std::io::Error| Error::InvalidArgument(format!("reading the archive: {e}"));
        for (n, entry) in archive.entries().map_err(bad)?.enumerate() {
            let mut entry = entry.map_err(bad)?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = String::from_utf8_lossy(&entry.path_bytes())
                .trim_start_matches("./")
                .to_string();
            let size = entry.size();
            let expected = path
                .strip_prefix("blobs/")
                .and_then(|p| p.split_once('/'))
                .and_then(|(alg, hex)| format!("{alg}:{hex}").parse::<Digest>().ok());
            let reference = format!("import-{}-{n}", uuid::Uuid::new_v4().simple());
            let mut ingest =
                handle.block_on(
                    self.store
                        .writer(ns, lease, &reference, size as i64, expected.as_ref()),
                )?;
            let mut keep = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let k = entry.read(&mut buf).map_err(bad)?;
                if k == 0 {
                    break;
                }
                handle.block_on(ingest.write(Bytes::copy_from_slice(&buf[..k])))?;
                if size <= SMALL {
                    keep.extend_from_slice(&buf[..k]);
                }
            }
            let digest = match handle.block_on(ingest.commit()) {
                Ok(d) => d,
                Err(Error::FailedPrecondition(m)) => {
                    let cleanup = handle.block_on(async {
                        let w = self.store.writer(ns, lease, &reference, 0, None).await?;
                        w.abort().await
                    });
                    if let Err(e) = cleanup {
                        tracing::warn!(reference, error = %e, "could not remove a refused archive file's ingest");
                    }
                    return Err(Error::InvalidArgument(format!("archive file {path}: {m}")));
                }
                Err(e) => return Err(e),
            };
            files.insert(path.clone(), (digest.to_string(), size as i64));
            if size <= SMALL {
                small.insert(path, keep);
            }
        }
        Ok((files, small))
    }

    /// Imports an archive; returns the image names it recorded.
    pub async fn import(
        self: &std::sync::Arc<Self>,
        ns: &str,
        input: Box<dyn Read + Send>,
        unpack: bool,
        snapshotter: &str,
        tx: &ProgressTx,
    ) -> Result<Vec<String>> {
        let lease = PullLease::new(&self.store, ns).await?;
        let (files, small) = {
            let (ns2, lease2) = (ns.to_string(), lease.id.clone());
            let me = self.clone();
            let handle = Handle::current();
            tokio::task::spawn_blocking(move || me.ingest_archive(&handle, &ns2, &lease2, input))
                .await
                .map_err(|e| Error::Io {
                    context: "importing".into(),
                    source: std::io::Error::other(e.to_string()),
                })??
        };
        let mut images: Vec<(String, Descriptor)> = Vec::new();
        if let Some(idx) = small.get("index.json") {
            let idx: ImageIndex = parse(idx, "index.json")?;
            for (i, m) in idx.manifests().iter().enumerate() {
                let ann = m.annotations().clone().unwrap_or_default();
                let name = ann
                    .get(NAME_ANNOTATION)
                    .cloned()
                    .or_else(|| {
                        ann.get(REF_ANNOTATION).map(|r| {
                            if r.contains('/') || r.contains(':') {
                                r.clone()
                            } else {
                                format!("import/image-{i}:{r}")
                            }
                        })
                    })
                    .unwrap_or_else(|| format!("import/image-{i}:latest"));
                images.push((name, m.clone()));
            }
        } else if let Some(mj) = small.get("manifest.json") {
            let entries: Vec<DockerArchiveImage> = parse(mj, "manifest.json")?;
            for (i, e) in entries.iter().enumerate() {
                let find = |p: &str| {
                    files.get(p.trim_start_matches("./")).cloned().ok_or_else(|| {
                        Error::InvalidArgument(format!("manifest.json names {p}, which the archive lacks"))
                    })
                };
                let (cd, cs) = find(&e.config)?;
                let mut layers = Vec::new();
                for p in &e.layers {
                    let (d, s) = find(p)?;
                    let gz = self.starts_gzip(ns, &d).await?;
                    let mt = if gz {
                        MediaType::ImageLayerGzip
                    } else {
                        MediaType::ImageLayer
                    };
                    layers.push(descriptor(&mt, &d, s as u64)?);
                }
                let manifest = json(
                    &oci_spec::image::ImageManifestBuilder::default()
                        .schema_version(2u32)
                        .media_type(MediaType::ImageManifest)
                        .config(descriptor(&MediaType::ImageConfig, &cd, cs as u64)?)
                        .layers(layers)
                        .build()
                        .map_err(oci_error("manifest"))?,
                );
                let md = Digest::of(molde_common::Algorithm::Sha256, &manifest);
                let desc = descriptor(&MediaType::ImageManifest, &md.to_string(), manifest.len() as u64)?;
                self.store.put(ns, &lease.id, &md, Bytes::from(manifest)).await?;
                let tags: Vec<String> = e.repo_tags.iter().map(|t| normalize(t)).collect();
                if tags.is_empty() {
                    images.push((format!("import/image-{i}:latest"), desc));
                } else {
                    images.extend(tags.into_iter().map(|t| (t, desc.clone())));
                }
            }
        } else {
            return Err(Error::InvalidArgument(
                "the archive has neither index.json (OCI layout) nor manifest.json (docker-archive)".into(),
            ));
        }

        let platform = host_platform();
        let mut names = Vec::new();
        for (name, target) in images {
            let top = self.blob_bytes(ns, target.digest().as_ref()).await?;
            let (index, manifest_desc, manifest_body) = if media::is_index(target.media_type()) {
                let idx: ImageIndex = parse(&top, &format!("index {}", target.digest()))?;
                let m = select_manifest(&idx, &platform, &name)?.clone();
                let body = self.blob_bytes(ns, m.digest().as_ref()).await?;
                (Some(idx), m, body)
            } else {
                (None, target.clone(), top)
            };
            let manifest: ImageManifest = parse(&manifest_body, &format!("manifest of {name}"))?;
            let config: ImageConfiguration = parse(
                &self.blob_bytes(ns, manifest.config().digest().as_ref()).await?,
                &format!("config of {name}"),
            )?;
            let diff_ids = config.rootfs().diff_ids();
            media::check_diff_ids(&name, &config, &manifest)?;
            self.complete_image(ImageJob {
                ns,
                lease: &lease.id,
                name: &name,
                target: &target,
                index: index.as_ref(),
                manifest_desc: &manifest_desc,
                manifest: &manifest,
                diff_ids,
                snapshotter,
                unpack,
                source: None,
                tx,
            })
            .await?;
            tracing::info!(namespace = ns, image = %name, digest = %target.digest(), "image imported");
            names.push(name);
        }
        lease.release().await;
        Ok(names)
    }

    /// Whether a blob starts with gzip's magic number.
    async fn starts_gzip(&self, ns: &str, digest: &str) -> Result<bool> {
        let mut s = self.store.read_stream(ns, digest).await?;
        match s.next().await {
            Some(Ok(b)) => Ok(b.starts_with(&[0x1f, 0x8b])),
            Some(Err(e)) => Err(e),
            None => Ok(false),
        }
    }
}

/// A name as docker shows it: `docker.io/library/` and `docker.io/` dropped.
fn docker_name(name: &str) -> String {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
        .to_string()
}

/// Docker-style names: `busybox` is `docker.io/library/busybox:latest`,
/// by the one rule of `molde_common::reference`.
pub use molde_common::reference::normalize;
