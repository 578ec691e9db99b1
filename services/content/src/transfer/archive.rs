//! `molde save` / `molde load`: images as tar archives.
//!
//! Export writes an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), naming each image with the `io.containerd.image.name`
//! and `org.opencontainers.image.ref.name` annotations. Import reads an OCI
//! image layout or a docker-archive (`manifest.json` with `RepoTags`, `Config`
//! and `Layers` paths): every file goes into a content ingest and is committed
//! under its digest (a `blobs/` file must match its name), then each image is
//! unpacked and recorded as a pull would.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use molde_common::Digest;
use serde_json::{Value, json};

use crate::error::{ContentError, Result};
use crate::records::{self, ImageRecord, Labels};

use super::media::{self, Descriptor, ImageConfig, Index, Manifest};
use super::pull::{ImageJob, ProgressTx, Puller};

/// An archive's files: path → (digest, size).
type ArchiveFiles = HashMap<String, (String, i64)>;

const NAME_ANNOTATION: &str = "io.containerd.image.name";
use molde_common::labels::REF_NAME as REF_ANNOTATION;
/// Files kept in memory while importing (JSON documents) are at most this large.
const SMALL: u64 = 4 << 20;

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

impl Puller {
    fn blob_bytes(&self, ns: &str, digest: &str) -> Result<Vec<u8>> {
        if self
            .shared
            .store
            .get(&records::content_key(ns, digest))?
            .is_none()
        {
            return Err(ContentError::NotFound(format!("content {digest}")));
        }
        let d = Digest::parse_field(digest, "digest")?;
        std::fs::read(self.shared.blobs.blob_path(&d)).map_err(ContentError::io(format!("reading {digest}")))
    }

    /// Writes `names` as an OCI image layout tar into `out`.
    pub fn export(&self, ns: &str, names: &[String], out: impl Write) -> Result<()> {
        let mut blobs: BTreeMap<String, ()> = BTreeMap::new();
        let mut index = Vec::new();
        // The docker-archive view of single-platform images (`manifest.json`
        // naming the same blobs), so `docker load` reads the archive too.
        let mut docker: Vec<serde_json::Value> = Vec::new();
        for name in names {
            let (img, _): (ImageRecord, u64) =
                records::load(&*self.shared.store, &records::image_key(ns, name))?
                    .ok_or_else(|| ContentError::NotFound(format!("image {name:?}")))?;
            let t = &img.target;
            let mut manifests = vec![(t.digest.clone(), t.media_type.clone())];
            if media::is_index(&t.media_type) {
                let idx: Index = serde_json::from_slice(&self.blob_bytes(ns, &t.digest)?)
                    .map_err(|e| ContentError::InvalidArgument(format!("index of {name}: {e}")))?;
                manifests = idx
                    .manifests
                    .iter()
                    .filter(|m| {
                        self.shared
                            .store
                            .get(&records::content_key(ns, &m.digest))
                            .ok()
                            .flatten()
                            .is_some()
                    })
                    .map(|m| (m.digest.clone(), m.media_type.clone()))
                    .collect();
                blobs.insert(t.digest.clone(), ());
            }
            for (d, _) in &manifests {
                let m: Manifest = serde_json::from_slice(&self.blob_bytes(ns, d)?)
                    .map_err(|e| ContentError::InvalidArgument(format!("manifest {d} of {name}: {e}")))?;
                blobs.insert(d.clone(), ());
                blobs.insert(m.config.digest.clone(), ());
                for l in &m.layers {
                    blobs.insert(l.digest.clone(), ());
                }
                if manifests.len() == 1 && !media::is_index(&t.media_type) {
                    let path = |d: &str| format!("blobs/{}", d.replacen(':', "/", 1));
                    docker.push(json!({
                        "Config": path(&m.config.digest),
                        "RepoTags": [docker_name(name)],
                        "Layers": m.layers.iter().map(|l| path(&l.digest)).collect::<Vec<_>>(),
                    }));
                }
            }
            let tag = name
                .rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
                .map(|(_, t)| t.to_string())
                .unwrap_or_default();
            index.push(json!({
                "mediaType": t.media_type,
                "digest": t.digest,
                "size": t.size,
                "annotations": {NAME_ANNOTATION: name, REF_ANNOTATION: tag},
            }));
        }
        let mut b = tar::Builder::new(out);
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        b.append_data(&mut tar_header(layout.len() as u64), "oci-layout", &layout[..])
            .map_err(ContentError::io("writing the archive"))?;
        for d in blobs.keys() {
            let digest = Digest::parse_field(d, "digest")?;
            if self.shared.store.get(&records::content_key(ns, d))?.is_none() {
                return Err(ContentError::NotFound(format!(
                    "content {d} (the image is incomplete here)"
                )));
            }
            let path = self.shared.blobs.blob_path(&digest);
            let f = std::fs::File::open(&path).map_err(ContentError::io(format!("reading {d}")))?;
            let size = f
                .metadata()
                .map_err(ContentError::io(format!("reading {d}")))?
                .len();
            b.append_data(
                &mut tar_header(size),
                format!("blobs/{}/{}", digest.algorithm().name(), digest.hex()),
                f,
            )
            .map_err(ContentError::io("writing the archive"))?;
        }
        if !docker.is_empty() {
            let m = serde_json::to_vec(&docker).expect("json");
            b.append_data(&mut tar_header(m.len() as u64), "manifest.json", m.as_slice())
                .map_err(ContentError::io("writing the archive"))?;
        }
        let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": index})).expect("json");
        b.append_data(&mut tar_header(idx.len() as u64), "index.json", idx.as_slice())
            .map_err(ContentError::io("writing the archive"))?;
        b.into_inner()
            .map_err(ContentError::io("writing the archive"))?
            .flush()
            .map_err(ContentError::io("writing the archive"))?;
        Ok(())
    }

    /// Stores every file of an archive read from `input`: path → (digest, size),
    /// plus the contents of small files.
    fn ingest_archive(
        &self,
        ns: &str,
        lease: &str,
        input: impl Read,
    ) -> Result<(ArchiveFiles, HashMap<String, Vec<u8>>)> {
        let mut files = HashMap::new();
        let mut small = HashMap::new();
        let mut archive = tar::Archive::new(input);
        let bad = |e: std::io::Error| ContentError::InvalidArgument(format!("reading the archive: {e}"));
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
            let mut ingest = self
                .shared
                .blobs
                .open_ingest(ns, &reference, size as i64, expected.as_ref())?;
            let mut keep = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let k = entry.read(&mut buf).map_err(bad)?;
                if k == 0 {
                    break;
                }
                ingest.append(&buf[..k])?;
                if size <= SMALL {
                    keep.extend_from_slice(&buf[..k]);
                }
            }
            let computed = ingest.digest();
            let digest = match self.shared.commit(
                ns,
                Some(lease),
                ingest,
                size as i64,
                expected.as_ref(),
                Labels::new(),
            ) {
                Ok(d) => d,
                Err(ContentError::AlreadyExists(_)) => {
                    // The namespace had it already; the import's lease holds it too.
                    super::fetch::adopt_existing(&self.shared, ns, lease, &computed, size as i64)?;
                    computed
                }
                Err(ContentError::FailedPrecondition(m)) => {
                    let _ = self.shared.blobs.abort_ingest(ns, &reference);
                    return Err(ContentError::InvalidArgument(format!("archive file {path}: {m}")));
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
        let lease = super::pull::PullLease::new(&self.shared, ns)?;
        let (files, small) = {
            let (ns2, lease2) = (ns.to_string(), lease.id.clone());
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.ingest_archive(&ns2, &lease2, input))
                .await
                .map_err(|e| ContentError::Io {
                    context: "importing".into(),
                    source: std::io::Error::other(e.to_string()),
                })??
        };
        let mut images: Vec<(String, Descriptor)> = Vec::new();
        if let Some(idx) = small.get("index.json") {
            let idx: Index = serde_json::from_slice(idx)
                .map_err(|e| ContentError::InvalidArgument(format!("index.json: {e}")))?;
            for (i, m) in idx.manifests.iter().enumerate() {
                let ann = m.annotations.clone().unwrap_or_default();
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
            let entries: Vec<Value> = serde_json::from_slice(mj)
                .map_err(|e| ContentError::InvalidArgument(format!("manifest.json: {e}")))?;
            for (i, e) in entries.iter().enumerate() {
                let find = |p: &str| {
                    files.get(p.trim_start_matches("./")).cloned().ok_or_else(|| {
                        ContentError::InvalidArgument(format!(
                            "manifest.json names {p}, which the archive lacks"
                        ))
                    })
                };
                let config_path = e["Config"].as_str().ok_or_else(|| {
                    ContentError::InvalidArgument("manifest.json entry without Config".into())
                })?;
                let (cd, cs) = find(config_path)?;
                let mut layers = Vec::new();
                for l in e["Layers"].as_array().cloned().unwrap_or_default() {
                    let p = l.as_str().unwrap_or_default();
                    let (d, s) = find(p)?;
                    let gz = self.blob_bytes_prefix(ns, &d)?.starts_with(&[0x1f, 0x8b]);
                    layers.push(json!({"mediaType": if gz { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" }, "digest": d, "size": s}));
                }
                let manifest = serde_json::to_vec(&json!({
                    "schemaVersion": 2,
                    "mediaType": media::OCI_MANIFEST,
                    "config": {"mediaType": media::OCI_CONFIG, "digest": cd, "size": cs},
                    "layers": layers,
                }))
                .expect("json");
                let md = Digest::of(molde_common::Algorithm::Sha256, &manifest);
                super::fetch::put_bytes(&self.shared, ns, &lease.id, &md, &manifest)?;
                let desc = Descriptor {
                    media_type: media::OCI_MANIFEST.into(),
                    digest: md.to_string(),
                    size: manifest.len() as i64,
                    platform: None,
                    annotations: None,
                };
                let tags: Vec<String> = e["RepoTags"]
                    .as_array()
                    .map(|t| t.iter().filter_map(|v| v.as_str().map(normalize)).collect())
                    .unwrap_or_default();
                if tags.is_empty() {
                    images.push((format!("import/image-{i}:latest"), desc));
                } else {
                    images.extend(tags.into_iter().map(|t| (t, desc.clone())));
                }
            }
        } else {
            return Err(ContentError::InvalidArgument(
                "the archive has neither index.json (OCI layout) nor manifest.json (docker-archive)".into(),
            ));
        }

        let platform = molde_common::image::host_platform();
        let mut names = Vec::new();
        for (name, target) in images {
            let top = self.blob_bytes(ns, &target.digest)?;
            let (index, manifest_desc, manifest_body) = if media::is_index(&target.media_type) {
                let idx: Index = serde_json::from_slice(&top)
                    .map_err(|e| ContentError::InvalidArgument(format!("index {}: {e}", target.digest)))?;
                let m = idx
                    .manifests
                    .iter()
                    .find(|m| {
                        m.platform
                            .as_ref()
                            .is_none_or(|p| molde_common::image::platform_matches(&platform, p))
                    })
                    .cloned()
                    .ok_or_else(|| {
                        ContentError::NotFound(format!(
                            "{name} for platform {}",
                            molde_common::image::platform_string(&platform)
                        ))
                    })?;
                let body = self.blob_bytes(ns, &m.digest)?;
                (Some(idx), m, body)
            } else {
                (None, target.clone(), top)
            };
            let manifest: Manifest = serde_json::from_slice(&manifest_body)
                .map_err(|e| ContentError::InvalidArgument(format!("manifest of {name}: {e}")))?;
            let config: ImageConfig = serde_json::from_slice(&self.blob_bytes(ns, &manifest.config.digest)?)
                .map_err(|e| ContentError::InvalidArgument(format!("config of {name}: {e}")))?;
            if config.rootfs.diff_ids.len() != manifest.layers.len() {
                return Err(ContentError::InvalidArgument(format!(
                    "{name}: the config lists {} diff IDs for {} layers",
                    config.rootfs.diff_ids.len(),
                    manifest.layers.len()
                )));
            }
            self.complete_image(ImageJob {
                ns,
                lease: &lease.id,
                name: &name,
                target: &target,
                index: index.as_ref(),
                manifest_desc: &manifest_desc,
                manifest: &manifest,
                diff_ids: &config.rootfs.diff_ids,
                snapshotter,
                unpack,
                source: None,
                tx,
            })
            .await?;
            tracing::info!(namespace = ns, image = %name, digest = %target.digest, "image imported");
            names.push(name);
        }
        drop(lease);
        Ok(names)
    }

    fn blob_bytes_prefix(&self, ns: &str, digest: &str) -> Result<Vec<u8>> {
        let _ = ns;
        let d = Digest::parse_field(digest, "digest")?;
        let mut f = std::fs::File::open(self.shared.blobs.blob_path(&d))
            .map_err(ContentError::io(format!("reading {digest}")))?;
        let mut head = [0u8; 4];
        let n = f
            .read(&mut head)
            .map_err(ContentError::io(format!("reading {digest}")))?;
        Ok(head[..n].to_vec())
    }
}

/// Docker-style names: `busybox` is `docker.io/library/busybox:latest`.
/// A name as docker shows it: `docker.io/library/` and `docker.io/` dropped.
fn docker_name(name: &str) -> String {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
        .to_string()
}

pub fn normalize(name: &str) -> String {
    match name.parse::<oci_client::Reference>() {
        Ok(r) => r.whole(),
        Err(_) => name.to_string(),
    }
}
