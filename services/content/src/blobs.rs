//! Blobs and ingests on local disk.
//!
//! ```text
//! <root>/blobs/<alg>/<hex>        committed blobs, shared by every namespace
//! <root>/ingest/<key>/meta.json   an ingest's namespace, ref, expected size and digest
//! <root>/ingest/<key>/data        the bytes written so far (its length is the offset)
//! ```
//!
//! **Architecture invariant:** a file appears under `blobs/` only through
//! [`Ingest::commit`], which checks size and digest of what was written and then
//! renames the data file into place in one atomic step. A crash at any point
//! leaves either the ingest (resumable) or the complete blob, never a partial blob.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::error::{ContentError, Result};
use molde_common::digest::{Algorithm, Digest, Hasher};
use molde_common::now_nanos;

/// The on-disk half of the content service.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// What an ingest was opened for; kept beside its data so a restart can resume it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestMeta {
    pub namespace: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub total: i64,
    pub expected: Option<String>,
    pub started_at: i64,
}

/// An ingest's state as `Status` reports it.
#[derive(Debug, Clone)]
pub struct IngestStatus {
    pub meta: IngestMeta,
    pub offset: i64,
    pub updated_at: i64,
}

fn mtime_nanos(md: &fs::Metadata) -> i64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl BlobStore {
    pub fn open(root: &Path) -> Result<Self> {
        for d in ["blobs/sha256", "blobs/sha512", "ingest"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(ContentError::io(format!("creating {}", p.display())))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.algorithm().name()).join(d.hex())
    }

    #[cfg(test)]
    pub fn blob_exists(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Opens a committed blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.blob_path(d)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ContentError::NotFound(format!("content {d}")),
            _ => ContentError::Io {
                context: format!("opening content {d}"),
                source: e,
            },
        })
    }

    /// Every committed blob on disk.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(alg.name());
            let rd = fs::read_dir(&dir).map_err(ContentError::io(format!("listing {}", dir.display())))?;
            for e in rd.flatten() {
                if let Ok(d) = format!("{}:{}", alg.name(), e.file_name().to_string_lossy()).parse() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    pub fn remove_blob(&self, d: &Digest) -> Result<()> {
        match fs::remove_file(self.blob_path(d)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContentError::Io {
                context: format!("removing blob {d}"),
                source: e,
            }),
        }
    }

    fn ingest_dir(&self, ns: &str, reference: &str) -> PathBuf {
        let mut h = Algorithm::Sha256.hasher();
        h.update(ns.as_bytes());
        h.update(b"\0");
        h.update(reference.as_bytes());
        self.root.join("ingest").join(h.finish().hex())
    }

    fn read_status(dir: &Path) -> Result<IngestStatus> {
        let meta_path = dir.join("meta.json");
        let raw =
            fs::read(&meta_path).map_err(ContentError::io(format!("reading {}", meta_path.display())))?;
        let meta: IngestMeta = serde_json::from_slice(&raw).map_err(|e| ContentError::Corrupt {
            key: meta_path.display().to_string(),
            message: e.to_string(),
        })?;
        let data = dir.join("data");
        let md = fs::metadata(&data).map_err(ContentError::io(format!("reading {}", data.display())))?;
        Ok(IngestStatus {
            meta,
            offset: md.len() as i64,
            updated_at: mtime_nanos(&md),
        })
    }

    /// The status of one ingest.
    pub fn ingest_status(&self, ns: &str, reference: &str) -> Result<IngestStatus> {
        let dir = self.ingest_dir(ns, reference);
        if !dir.join("meta.json").is_file() {
            return Err(ContentError::NotFound(format!("ingest ref {reference:?}")));
        }
        Self::read_status(&dir)
    }

    /// The data file of an ingest that is writing `digest` (expected), in
    /// any namespace, and the size it will have.
    pub fn ingest_writing(&self, d: &Digest) -> Option<(PathBuf, i64)> {
        let want = d.to_string();
        self.list_ingests().ok()?.into_iter().find_map(|(dir, st)| {
            let st = st.ok()?;
            (st.meta.expected.as_deref() == Some(want.as_str())).then(|| (dir.join("data"), st.meta.total))
        })
    }

    /// Every ingest on disk, with the directory that holds it.
    pub fn list_ingests(&self) -> Result<Vec<(PathBuf, Result<IngestStatus>)>> {
        let dir = self.root.join("ingest");
        let rd = fs::read_dir(&dir).map_err(ContentError::io(format!("listing {}", dir.display())))?;
        Ok(rd
            .flatten()
            .map(|e| {
                let p = e.path();
                let st = Self::read_status(&p);
                (p, st)
            })
            .collect())
    }

    /// Removes an ingest and what it wrote.
    pub fn abort_ingest(&self, ns: &str, reference: &str) -> Result<()> {
        let dir = self.ingest_dir(ns, reference);
        if !dir.exists() {
            return Err(ContentError::NotFound(format!("ingest ref {reference:?}")));
        }
        remove_dir(&dir)
    }

    /// Opens an ingest, resuming one left by an earlier writer (or an earlier molded).
    pub fn open_ingest(
        &self,
        ns: &str,
        reference: &str,
        total: i64,
        expected: Option<&Digest>,
    ) -> Result<Ingest> {
        let dir = self.ingest_dir(ns, reference);
        let data_path = dir.join("data");
        let meta_path = dir.join("meta.json");
        let ctx = |what: &str| format!("{what} ingest {reference:?}");
        let (meta, file) = if meta_path.is_file() && data_path.is_file() {
            let mut st = Self::read_status(&dir)?;
            if total > 0 {
                st.meta.total = total;
            }
            if let Some(e) = expected {
                st.meta.expected = Some(e.to_string());
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&data_path)
                .map_err(ContentError::io(ctx("resuming")))?;
            (st.meta, file)
        } else {
            fs::create_dir_all(&dir).map_err(ContentError::io(ctx("creating")))?;
            let meta = IngestMeta {
                namespace: ns.to_string(),
                reference: reference.to_string(),
                total,
                expected: expected.map(Digest::to_string),
                started_at: now_nanos(),
            };
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&data_path)
                .map_err(ContentError::io(ctx("creating")))?;
            (meta, file)
        };
        let mut ingest = Ingest {
            dir,
            meta,
            file,
            hasher: Algorithm::Sha256.hasher(),
            offset: 0,
        };
        ingest.save_meta()?;
        ingest.rehash()?;
        Ok(ingest)
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ContentError::Io {
            context: format!("removing {}", dir.display()),
            source: e,
        }),
    }
}

/// Chunks at least this large are hashed while another thread writes them.
const PARALLEL_HASH_MIN: usize = 256 << 10;
/// Writeback is started after every this many bytes.
const WRITEBACK_STEP: u64 = 16 << 20;

/// Streams the ingest to disk while it is written: the window that just filled,
/// `[upto - STEP, upto)`, starts writeback now, and the window before it is waited
/// for. The disk stays busy during the transfer, dirty pages stay bounded, and
/// the fsync at commit only has the last window or two left.
fn stream_to_disk(file: &File, upto: u64) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let range = |start: u64, flags: libc::c_uint| {
        // SAFETY: sync_file_range only uses the descriptor, which `file` keeps
        // open for the duration of the call; no memory is passed.
        let rc = unsafe {
            libc::sync_file_range(fd, start as libc::off64_t, WRITEBACK_STEP as libc::off64_t, flags)
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "sync_file_range");
        }
    };
    range(upto - WRITEBACK_STEP, libc::SYNC_FILE_RANGE_WRITE);
    if upto >= 2 * WRITEBACK_STEP {
        range(
            upto - 2 * WRITEBACK_STEP,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
    }
}

/// An open ingest: the only writer of its data file while it lives.
pub struct Ingest {
    dir: PathBuf,
    meta: IngestMeta,
    file: File,
    hasher: Hasher,
    offset: u64,
}

impl Ingest {
    pub fn meta(&self) -> &IngestMeta {
        &self.meta
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.current()
    }

    pub fn updated_at(&self) -> i64 {
        self.file
            .metadata()
            .map(|m| mtime_nanos(&m))
            .unwrap_or(self.meta.started_at)
    }

    fn wanted_algorithm(&self) -> Algorithm {
        self.meta
            .expected
            .as_deref()
            .and_then(|e| e.parse::<Digest>().ok())
            .map(|d| d.algorithm())
            .unwrap_or(Algorithm::Sha256)
    }

    fn save_meta(&self) -> Result<()> {
        let p = self.dir.join("meta.json");
        let tmp = self.dir.join("meta.json.tmp");
        fs::write(&tmp, serde_json::to_vec(&self.meta).expect("meta serialises"))
            .and_then(|_| fs::rename(&tmp, &p))
            .map_err(ContentError::io(format!(
                "saving ingest {:?}",
                self.meta.reference
            )))
    }

    /// Re-reads the data file to rebuild the running hash (on resume, or when the
    /// expected digest names another algorithm).
    fn rehash(&mut self) -> Result<()> {
        let mut h = self.wanted_algorithm().hasher();
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(ContentError::io("rewinding ingest"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n_total = 0u64;
        loop {
            let n = self
                .file
                .read(&mut buf)
                .map_err(ContentError::io("rehashing ingest"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            n_total += n as u64;
        }
        self.hasher = h;
        self.offset = n_total;
        Ok(())
    }

    /// Records a newer expected size or digest sent mid-stream.
    pub fn set_expectations(&mut self, total: i64, expected: Option<&Digest>) -> Result<()> {
        let mut changed = false;
        if total > 0 && total != self.meta.total {
            self.meta.total = total;
            changed = true;
        }
        if let Some(e) = expected {
            let e = e.to_string();
            if self.meta.expected.as_deref() != Some(&e) {
                self.meta.expected = Some(e);
                changed = true;
            }
        }
        if changed {
            self.save_meta()?;
            if self.hasher.algorithm() != self.wanted_algorithm() {
                self.rehash()?;
            }
        }
        Ok(())
    }

    /// Drops everything written and starts again from offset 0.
    pub fn reset(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .map_err(ContentError::io("truncating ingest"))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(ContentError::io("truncating ingest"))?;
        self.hasher = self.wanted_algorithm().hasher();
        self.offset = 0;
        Ok(())
    }

    /// Appends at the current offset. Large chunks are written on a scoped thread
    /// while this one hashes them, and every finished 16 MiB goes to disk right
    /// away (see `stream_to_disk`), so the fsync at commit has little left to do.
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        if self.meta.total > 0 && self.offset + data.len() as u64 > self.meta.total as u64 {
            return Err(ContentError::FailedPrecondition(format!(
                "ingest {:?}: write of {} bytes at offset {} passes the expected total {}",
                self.meta.reference,
                data.len(),
                self.offset,
                self.meta.total
            )));
        }
        let file = &mut self.file;
        let offset = self.offset;
        let mut write = move || {
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.write_all(data))
        };
        let written = if data.len() >= PARALLEL_HASH_MIN {
            let hasher = &mut self.hasher;
            std::thread::scope(|s| {
                let w = s.spawn(write);
                hasher.update(data);
                w.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("ingest writer panicked")))
            })
        } else {
            let r = write();
            self.hasher.update(data);
            r
        };
        written.map_err(ContentError::io(format!(
            "writing ingest {:?}",
            self.meta.reference
        )))?;
        let end = self.offset + data.len() as u64;
        if end / WRITEBACK_STEP > self.offset / WRITEBACK_STEP {
            stream_to_disk(&self.file, end - end % WRITEBACK_STEP);
        }
        self.offset = end;
        Ok(())
    }

    /// Verifies what was written and moves it into place as a blob.
    ///
    /// `size` and `expected` (when set) must match the data; the ingest's own
    /// expectations are checked too. On a mismatch nothing is stored and the
    /// ingest is left for the client to retry or abort.
    pub fn commit(
        mut self,
        store: &BlobStore,
        size: i64,
        expected: Option<&Digest>,
    ) -> Result<(Digest, i64)> {
        self.set_expectations(size, expected)?;
        let actual_size = self.offset as i64;
        if self.meta.total > 0 && actual_size != self.meta.total {
            return Err(ContentError::FailedPrecondition(format!(
                "ingest {:?}: unexpected commit size {actual_size}, expected {}",
                self.meta.reference, self.meta.total
            )));
        }
        let digest = self.hasher.current();
        if let Some(want) = &self.meta.expected
            && *want != digest.to_string()
        {
            return Err(ContentError::FailedPrecondition(format!(
                "ingest {:?}: unexpected commit digest {digest}, expected {want}",
                self.meta.reference
            )));
        }
        self.file.sync_all().map_err(ContentError::io(format!(
            "syncing ingest {:?}",
            self.meta.reference
        )))?;
        let target = store.blob_path(&digest);
        if !target.exists() {
            match fs::rename(self.dir.join("data"), &target) {
                Ok(()) => {
                    if let Some(parent) = target.parent()
                        && let Ok(d) = File::open(parent)
                    {
                        let _ = d.sync_all();
                    }
                }
                // Another ingest committed the same bytes meanwhile: the blob
                // is there, verified by its own commit. That is success.
                Err(_) if target.exists() => {}
                Err(e) => return Err(ContentError::io(format!("committing {digest}"))(e)),
            }
        }
        remove_dir(&self.dir)?;
        Ok((digest, actual_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_verifies_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let mut w = s.open_ingest("default", "r1", 0, None).unwrap();
        w.append(b"hello ").unwrap();
        w.append(b"world").unwrap();
        let want = Digest::of(Algorithm::Sha256, b"hello world");
        let (d, n) = w.commit(&s, 11, Some(&want)).unwrap();
        assert_eq!((d.clone(), n), (want.clone(), 11));
        assert_eq!(fs::read(s.blob_path(&d)).unwrap(), b"hello world");
        assert!(s.list_ingests().unwrap().is_empty());
    }

    #[test]
    fn digest_mismatch_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let mut w = s.open_ingest("default", "r1", 0, None).unwrap();
        w.append(b"abc").unwrap();
        let wrong = Digest::of(Algorithm::Sha256, b"abd");
        assert!(w.commit(&s, 0, Some(&wrong)).is_err());
        assert!(s.list_blobs().unwrap().is_empty());
    }

    #[test]
    fn resume_rebuilds_offset_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        {
            let mut w = s.open_ingest("default", "r1", 6, None).unwrap();
            w.append(b"abc").unwrap();
        }
        let mut w = s.open_ingest("default", "r1", 0, None).unwrap();
        assert_eq!(w.offset(), 3);
        assert_eq!(w.meta().total, 6);
        w.append(b"def").unwrap();
        let (d, _) = w.commit(&s, 0, None).unwrap();
        assert_eq!(d, Digest::of(Algorithm::Sha256, b"abcdef"));
    }

    #[test]
    fn sha512_expected_switches_hash() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let mut w = s.open_ingest("default", "r", 0, None).unwrap();
        w.append(b"xyz").unwrap();
        let want = Digest::of(Algorithm::Sha512, b"xyz");
        let (d, _) = w.commit(&s, 3, Some(&want)).unwrap();
        assert_eq!(d, want);
    }
}
