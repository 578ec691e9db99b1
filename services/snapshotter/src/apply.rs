//! Applying a layer (a tar, plain, gzip or zstd) onto a directory.
//!
//! **Architecture invariant:** extraction never writes outside the target
//! directory, whatever the tar says: `../` and absolute names are cleaned to stay
//! inside (`fsutil::clean`), every parent is resolved with `RESOLVE_IN_ROOT` so a
//! symlink planted by the layer resolves inside it, final components are
//! created with `O_EXCL`/`O_NOFOLLOW` after removing what was there, and
//! hardlink targets are resolved inside the root too.
//!
//! Whiteouts (`.wh.NAME`, `.wh..wh..opq`) become overlay whiteouts (a 0/0
//! character device, the `trusted.overlay.opaque` xattr) when the directory is an
//! overlay upper layer, or are carried out (removals) for the native snapshotter.
//! Layer xattrs in `trusted.overlay.` are dropped: a layer must not forge them.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use molde_common::{Algorithm, Digest, Hasher};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};

use crate::fsutil::{self, Root, clean, lstat_at, remove_all_at};

/// How whiteout entries of a layer are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Keep them as overlayfs whiteouts in the upper directory.
    Overlay,
    /// Remove what they name (the directory holds the whole merged tree).
    Remove,
}

/// What to apply a layer onto.
#[derive(Debug, Clone)]
pub struct Target {
    pub dir: PathBuf,
    pub whiteouts: Whiteouts,
    /// Lower layers, top first: where a hardlink to a file below this layer is copied up
    /// from, and where implicitly created directories take their owner and mode from.
    pub lowers: Vec<PathBuf>,
}

/// The uncompressed layer that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// sha256 of the uncompressed tar: the layer's diff ID.
    pub diff_id: Digest,
    pub size: u64,
    pub entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("corrupt layer: {0}")]
    Corrupt(String),
    #[error("layer entry {path:?}: {source}")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: hardlink target {target:?} is not in this layer or below it")]
    LinkTarget { path: String, target: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// Layers this large or larger (uncompressed) are always streamed.
const WHOLE_BUFFER_MAX: usize = 1 << 30;

/// Decompresses a whole single-member gzip blob with libdeflate, which is
/// about twice as fast as a streaming inflate. `None` when the blob is not such
/// a gzip (multi-member, over the size limit, or not gzip at all): stream it.
pub fn gunzip_whole(blob: &[u8]) -> Option<Vec<u8>> {
    if !blob.starts_with(GZIP_MAGIC) || blob.len() < 18 {
        return None;
    }
    // The trailer's ISIZE is the uncompressed size modulo 2^32.
    let isize = u32::from_le_bytes(blob[blob.len() - 4..].try_into().ok()?) as usize;
    if isize >= WHOLE_BUFFER_MAX {
        return None;
    }
    let mut out = vec![0u8; isize];
    // The first member only, and how much of the blob it took: a blob of
    // several members (eStargz, concatenated gzips) must not pass for its
    // first one when that one's size happens to match the last's trailer.
    match gunzip_member(blob, &mut out) {
        Some((taken, n)) if taken == blob.len() && n == isize => Some(out),
        _ => None,
    }
}

/// libdeflate's gzip decompression of `blob`'s first member into `out`:
/// the input bytes it took and the bytes it wrote (libdeflater's wrapper
/// does not say how much input a member took).
fn gunzip_member(blob: &[u8], out: &mut [u8]) -> Option<(usize, usize)> {
    // SAFETY: the decompressor is allocated and freed here, used once in
    // between; the input and output pointers and lengths come from live
    // slices, and libdeflate writes at most `out.len()` bytes.
    unsafe {
        let d = libdeflate_sys::libdeflate_alloc_decompressor();
        if d.is_null() {
            return None;
        }
        let (mut taken, mut written) = (0usize, 0usize);
        let r = libdeflate_sys::libdeflate_gzip_decompress_ex(
            d,
            blob.as_ptr().cast(),
            blob.len(),
            out.as_mut_ptr().cast(),
            out.len(),
            &mut taken,
            &mut written,
        );
        libdeflate_sys::libdeflate_free_decompressor(d);
        (r == libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS).then_some((taken, written))
    }
}

/// Wraps `r` in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = br.fill_buf()?.to_vec();
    Ok(if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(br))
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(br)?)
    } else {
        Box::new(br)
    })
}

fn corrupt(e: io::Error) -> ApplyError {
    match e.kind() {
        io::ErrorKind::InvalidData
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::Other => ApplyError::Corrupt(e.to_string()),
        _ => ApplyError::Io(e),
    }
}

/// Applies the layer read from `layer` onto `target`.
pub fn apply(target: &Target, layer: impl Read) -> Result<Applied, ApplyError> {
    let plain = decompress(layer).map_err(corrupt)?;
    let mut hashed = Hashing {
        inner: plain,
        hasher: Algorithm::Sha256.hasher(),
        n: 0,
    };
    let root = Root::open(&target.dir)?;
    let mut x = Extractor {
        root,
        target,
        created: HashSet::new(),
        dir_times: Vec::new(),
        entries: 0,
        buffer: None,
    };
    {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            x.entry(entry)?;
        }
    }
    // The tar's end-of-archive padding belongs to the diff ID too.
    io::copy(&mut hashed, &mut io::sink()).map_err(corrupt)?;
    x.finish()?;
    Ok(Applied {
        diff_id: hashed.hasher.finish(),
        size: hashed.n,
        entries: x.entries,
    })
}

/// Applies an uncompressed layer held in memory: file contents are written
/// straight from the buffer (no copy through a reader), entries are skipped by
/// seeking, and the diff ID is hashed on a second thread meanwhile.
pub fn apply_plain(target: &Target, plain: &[u8]) -> Result<Applied, ApplyError> {
    std::thread::scope(|s| {
        let hash = s.spawn(|| Digest::of(Algorithm::Sha256, plain));
        let root = Root::open(&target.dir)?;
        let mut x = Extractor {
            root,
            target,
            created: HashSet::new(),
            dir_times: Vec::new(),
            entries: 0,
            buffer: Some(plain),
        };
        let mut archive = tar::Archive::new(io::Cursor::new(plain));
        for entry in archive.entries_with_seek().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            x.entry(entry)?;
        }
        x.finish()?;
        let diff_id = hash
            .join()
            .map_err(|_| ApplyError::Corrupt("hashing the layer failed".into()))?;
        Ok(Applied {
            diff_id,
            size: plain.len() as u64,
            entries: x.entries,
        })
    })
}

mod extract;

use extract::Extractor;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn one_member_is_read_whole_and_several_are_left_to_the_stream() {
        let a: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
        assert_eq!(gunzip_whole(&gzip(&a)), Some(a.clone()));
        // Two members of the same size: the trailer's size fits the first,
        // which must not pass for the whole.
        let b = vec![7u8; 512];
        let mut two = gzip(&a);
        two.extend(gzip(&b));
        assert_eq!(gunzip_whole(&two), None);
        let mut all = Vec::new();
        decompress(&two[..]).unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, [a, b].concat());
    }
}
