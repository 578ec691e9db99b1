//! eStargz layers: a gzip layer that can be read in pieces.
//!
//! The layer is still one tar compressed with gzip, so any runtime extracts
//! it as it would any other; but its gzip members begin wherever a reader
//! may want to start: at the content of every regular file (and every chunk
//! of a large one), at the table of contents (TOC), and at the footer. The
//! TOC (`stargz.index.json`, the last tar entry) lists every entry with the
//! offset of its member and the digest of each chunk; the footer, a fixed
//! 51-byte empty member at the very end, says where the TOC begins. A lazy
//! reader fetches the footer, then the TOC (checked against the
//! `containerd.io/snapshot/stargz/toc.digest` annotation of the layer's
//! descriptor), then only the chunks it reads, each checked against its
//! `chunkDigest`. The format is the one stargz-snapshotter reads, written
//! from its published description (docs/lazy-pull.md).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The name of the TOC's tar entry.
pub const TOC_NAME: &str = "stargz.index.json";
/// The annotation of a layer descriptor that holds the TOC's digest.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The annotation of a layer descriptor with the layer's uncompressed size.
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// The footer's size: gzip header (10), XLEN (2), the extra field's
/// subfield header (4) and its 22 bytes ("%016xSTARGZ"), an empty stored
/// deflate block (5), the gzip trailer (8).
pub const FOOTER_SIZE: usize = 51;
/// The entry that ends the prioritized files.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// The entry that says there are no prioritized files.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// Regular files larger than this are split into chunks of this size.
pub const CHUNK_SIZE: u64 = 4 << 20;

/// The table of contents.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Toc {
    pub version: u32,
    pub entries: Vec<TocEntry>,
}

/// One tar entry, or one chunk of a regular file after its first.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct TocEntry {
    pub name: String,
    /// dir, reg, symlink, hardlink, char, block, fifo or chunk.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modtime: String,
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default)]
    pub mode: i64,
    #[serde(default)]
    pub uid: u64,
    #[serde(default)]
    pub gid: u64,
    #[serde(rename = "userName", default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    #[serde(rename = "groupName", default, skip_serializing_if = "String::is_empty")]
    pub group_name: String,
    #[serde(rename = "devMajor", default, skip_serializing_if = "is_zero")]
    pub dev_major: u64,
    #[serde(rename = "devMinor", default, skip_serializing_if = "is_zero")]
    pub dev_minor: u64,
    /// Extended attributes; values base64, as the format's JSON has them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// The digest of the whole file (on `reg` entries).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Where the gzip member with this file's (or chunk's) content begins.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub offset: i64,
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero_i64")]
    pub chunk_offset: i64,
    /// The chunk's uncompressed size; 0 on the last (or only) chunk.
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero_i64")]
    pub chunk_size: i64,
    #[serde(rename = "chunkDigest", default, skip_serializing_if = "String::is_empty")]
    pub chunk_digest: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// What converting a layer made.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The eStargz blob's digest and size.
    pub digest: String,
    pub size: u64,
    /// The digest of the uncompressed tar (the image config's diff ID).
    pub diff_id: String,
    pub uncompressed_size: u64,
    /// The digest of the TOC's JSON (the descriptor's annotation).
    pub toc_digest: String,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The blob as it is written: counted and hashed.
struct Blob<W: Write> {
    out: W,
    written: u64,
    hash: Sha256,
}

impl<W: Write> Blob<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.hash.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// The writer of an eStargz blob from a tar stream's bytes, member by
/// member: the current member is compressed in memory (at most one chunk
/// and the headers before it) and written out when the next one begins.
struct Writer<W: Write> {
    blob: Blob<W>,
    member: GzEncoder<Vec<u8>>,
    /// Where the current member begins in the blob.
    member_offset: u64,
    level: Compression,
    tar_hash: Sha256,
    tar_size: u64,
}

impl<W: Write> Writer<W> {
    fn new(out: W, level: Compression) -> Writer<W> {
        Writer {
            blob: Blob {
                out,
                written: 0,
                hash: Sha256::new(),
            },
            member: GzEncoder::new(Vec::new(), level),
            member_offset: 0,
            level,
            tar_hash: Sha256::new(),
            tar_size: 0,
        }
    }

    /// Uncompressed tar bytes into the current member.
    fn tar(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tar_hash.update(bytes);
        self.tar_size += bytes.len() as u64;
        self.member.write_all(bytes)
    }

    /// Ends the current member and begins another; its offset.
    fn new_member(&mut self) -> io::Result<u64> {
        let done = std::mem::replace(&mut self.member, GzEncoder::new(Vec::new(), self.level)).finish()?;
        self.blob.put(&done)?;
        self.member_offset = self.blob.written;
        Ok(self.member_offset)
    }

    /// A regular file's content, chunked, each chunk in a member of its own;
    /// its TOC entries (the `reg` one first) with their offsets and digests.
    fn content(&mut self, mut first: TocEntry, data: &mut dyn Read, size: u64) -> io::Result<Vec<TocEntry>> {
        let mut entries = Vec::new();
        let mut whole = Sha256::new();
        let mut done = 0u64;
        let mut buf = vec![0u8; CHUNK_SIZE.min(size) as usize];
        while done < size {
            let n = (size - done).min(CHUNK_SIZE) as usize;
            data.read_exact(&mut buf[..n])?;
            let offset = self.new_member()?;
            self.tar(&buf[..n])?;
            whole.update(&buf[..n]);
            let mut e = if done == 0 {
                std::mem::take(&mut first)
            } else {
                TocEntry {
                    name: first_name(&entries),
                    kind: "chunk".into(),
                    ..Default::default()
                }
            };
            e.offset = offset as i64;
            e.chunk_offset = done as i64;
            // The last (or only) chunk's size is 0: it runs to the file's end.
            e.chunk_size = if done + (n as u64) < size { n as i64 } else { 0 };
            e.chunk_digest = sha256(&buf[..n]);
            entries.push(e);
            done += n as u64;
        }
        entries[0].digest = format!("sha256:{}", hex::encode(whole.finalize()));
        self.tar(&vec![0u8; padding(size)])?;
        Ok(entries)
    }

    /// The TOC as the last tar entry, the end of the tar, and the footer.
    fn finish(mut self, toc: &Toc) -> io::Result<Converted> {
        let json = serde_json::to_vec(toc).map_err(io::Error::other)?;
        let toc_offset = self.new_member()?;
        let mut h = tar::Header::new_ustar();
        h.set_path(TOC_NAME)?;
        h.set_size(json.len() as u64);
        h.set_mode(0o444);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.tar(h.as_bytes())?;
        self.tar(&json)?;
        self.tar(&vec![0u8; padding(json.len() as u64)])?;
        self.tar(&[0u8; 1024])?;
        let last = std::mem::replace(&mut self.member, GzEncoder::new(Vec::new(), self.level)).finish()?;
        self.blob.put(&last)?;
        self.blob.put(&footer(toc_offset))?;
        self.blob.out.flush()?;
        Ok(Converted {
            digest: format!("sha256:{}", hex::encode(self.blob.hash.finalize())),
            size: self.blob.written,
            diff_id: format!("sha256:{}", hex::encode(self.tar_hash.finalize())),
            uncompressed_size: self.tar_size,
            toc_digest: sha256(&json),
        })
    }
}

fn first_name(entries: &[TocEntry]) -> String {
    entries.first().map(|e| e.name.clone()).unwrap_or_default()
}

fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// The 51-byte footer that points at the TOC's member.
pub fn footer(toc_offset: u64) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    // gzip header: magic, deflate, FEXTRA, no mtime, no extra flags, OS unknown.
    f[..10].copy_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff]);
    f[10..12].copy_from_slice(&26u16.to_le_bytes());
    f[12..14].copy_from_slice(b"SG");
    f[14..16].copy_from_slice(&22u16.to_le_bytes());
    f[16..38].copy_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    // An empty, final, stored deflate block; then CRC32 and size, both 0.
    f[38..43].copy_from_slice(&[1, 0, 0, 0xff, 0xff]);
    f
}

/// Where the TOC's member begins, from a blob's last 51 bytes; None when
/// they are no eStargz footer.
pub fn toc_offset(footer: &[u8]) -> Option<u64> {
    if footer.len() != FOOTER_SIZE
        || footer[..4] != [0x1f, 0x8b, 8, 4]
        || footer[10..16] != [26, 0, b'S', b'G', 22, 0]
        || &footer[32..38] != b"STARGZ"
    {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&footer[16..32]).ok()?, 16).ok()
}

/// The TOC from the bytes of its member (from its offset to the footer):
/// its JSON and the digest of that JSON.
pub fn read_toc(member: &[u8]) -> io::Result<(Toc, String)> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(member));
    let mut entries = tar.entries()?;
    let mut e = entries
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the TOC's member holds no tar entry"))??;
    if e.path()?.to_string_lossy() != TOC_NAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the TOC's member holds {:?}, not {TOC_NAME}", e.path()?),
        ));
    }
    let mut json = Vec::new();
    e.read_to_end(&mut json)?;
    let toc = serde_json::from_slice(&json)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, format!("{TOC_NAME}: {err}")))?;
    Ok((toc, sha256(&json)))
}

/// What the pseudo-entries before an entry (PAX records, GNU long names)
/// said about it.
#[derive(Default)]
struct Pending {
    name: Option<String>,
    link: Option<String>,
    xattrs: BTreeMap<String, String>,
    size: Option<u64>,
}

/// Parses a PAX extended header's records ("LEN key=value\n").
fn pax_records(data: &[u8], into: &mut Pending) {
    use base64::Engine;
    let mut rest = data;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&b| b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if len <= sp + 1 || len > rest.len() {
            break;
        }
        let record = &rest[sp + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            match key {
                b"path" => into.name = Some(String::from_utf8_lossy(value).into_owned()),
                b"linkpath" => into.link = Some(String::from_utf8_lossy(value).into_owned()),
                b"size" => into.size = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()),
                k if k.starts_with(b"SCHILY.xattr.") => {
                    into.xattrs.insert(
                        String::from_utf8_lossy(&k[b"SCHILY.xattr.".len()..]).into_owned(),
                        base64::engine::general_purpose::STANDARD.encode(value),
                    );
                }
                _ => {}
            }
        }
        rest = &rest[len..];
    }
}

fn trim_name(name: &str) -> String {
    let n = name.trim_start_matches("./").trim_start_matches('/');
    n.to_string()
}

/// Converts a layer's uncompressed tar stream to an eStargz blob written to
/// `out`. Every header and pseudo-entry of the input is kept as it was, so
/// the layer's files are the same; a no-prefetch landmark comes first.
pub fn convert(input: impl Read, out: impl Write, level: Compression) -> io::Result<Converted> {
    let mut w = Writer::new(out, level);
    let mut toc = Toc {
        version: 1,
        entries: Vec::new(),
    };
    // The landmark: no prioritized files.
    let mut h = tar::Header::new_ustar();
    h.set_path(NO_PREFETCH_LANDMARK)?;
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    w.tar(h.as_bytes())?;
    let landmark = TocEntry {
        name: NO_PREFETCH_LANDMARK.into(),
        kind: "reg".into(),
        size: 1,
        mode: 0o644,
        ..Default::default()
    };
    toc.entries.extend(w.content(landmark, &mut &[0xfu8][..], 1)?);

    let mut archive = tar::Archive::new(input);
    let entries = archive.entries()?.raw(true);
    let mut pending = Pending::default();
    for entry in entries {
        let mut entry = entry?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let size = header.entry_size()?;
        match kind {
            tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                let mut data = Vec::with_capacity(size as usize);
                (&mut entry).take(size).read_to_end(&mut data)?;
                match kind {
                    tar::EntryType::XHeader => pax_records(&data, &mut pending),
                    tar::EntryType::GNULongName => {
                        pending.name = Some(
                            String::from_utf8_lossy(data.split(|&b| b == 0).next().unwrap_or(&[]))
                                .into_owned(),
                        )
                    }
                    _ => {
                        pending.link = Some(
                            String::from_utf8_lossy(data.split(|&b| b == 0).next().unwrap_or(&[]))
                                .into_owned(),
                        )
                    }
                }
                w.tar(header.as_bytes())?;
                w.tar(&data)?;
                w.tar(&vec![0u8; padding(size)])?;
                continue;
            }
            tar::EntryType::XGlobalHeader => {
                let mut data = Vec::with_capacity(size as usize);
                (&mut entry).take(size).read_to_end(&mut data)?;
                w.tar(header.as_bytes())?;
                w.tar(&data)?;
                w.tar(&vec![0u8; padding(size)])?;
                continue;
            }
            _ => {}
        }
        let p = std::mem::take(&mut pending);
        let name = match p.name {
            Some(n) => n,
            None => String::from_utf8_lossy(&header.path_bytes()).into_owned(),
        };
        let link = match p.link {
            Some(l) => l,
            None => header
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default(),
        };
        let size = p.size.unwrap_or(size);
        let e = TocEntry {
            name: trim_name(&name),
            kind: match kind {
                tar::EntryType::Directory => "dir",
                tar::EntryType::Symlink => "symlink",
                tar::EntryType::Link => "hardlink",
                tar::EntryType::Char => "char",
                tar::EntryType::Block => "block",
                tar::EntryType::Fifo => "fifo",
                _ => "reg",
            }
            .into(),
            size: if kind.is_file() || kind == tar::EntryType::Continuous {
                size
            } else {
                0
            },
            modtime: header
                .mtime()
                .ok()
                .and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            link_name: if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                trim_link(&link, kind)
            } else {
                String::new()
            },
            mode: header.mode().unwrap_or(0) as i64,
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            user_name: header.username().ok().flatten().unwrap_or_default().to_string(),
            group_name: header.groupname().ok().flatten().unwrap_or_default().to_string(),
            dev_major: header.device_major().ok().flatten().unwrap_or(0) as u64,
            dev_minor: header.device_minor().ok().flatten().unwrap_or(0) as u64,
            xattrs: p.xattrs,
            ..Default::default()
        };
        w.tar(header.as_bytes())?;
        if (kind.is_file() || kind == tar::EntryType::Continuous) && size > 0 {
            toc.entries.extend(w.content(e, &mut entry, size)?);
        } else {
            // Anything else carries no content the TOC points into (a
            // hard link's data, if any, is kept as it came).
            let mut rest = Vec::new();
            (&mut entry).take(size).read_to_end(&mut rest)?;
            w.tar(&rest)?;
            w.tar(&vec![0u8; padding(rest.len() as u64)])?;
            toc.entries.push(e);
        }
    }
    w.finish(&toc)
}

/// A hard link names an entry of the layer (trimmed as names are); a
/// symlink's target is kept as written.
fn trim_link(link: &str, kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Link => trim_name(link),
        _ => link.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_mode(0o755);
        d.set_size(0);
        b.append_data(&mut d, "etc/", &[][..]).unwrap();
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o640);
            h.set_uid(7);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        b.append_link(&mut l, "etc/link", "../target").unwrap();
        b.into_inner().unwrap()
    }

    fn files_of(tar_bytes: impl Read) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect()
    }

    #[test]
    fn a_converted_layer_is_the_same_tar_to_any_gzip_reader_with_a_toc_and_a_footer() {
        let big: Vec<u8> = (0..(CHUNK_SIZE * 2 + 1000)).map(|i| (i % 251) as u8).collect();
        let long = format!("usr/{}/file", "deep/".repeat(40));
        let input = layer(&[
            ("etc/hostname", b"box\n".to_vec()),
            ("big.bin", big.clone()),
            (&long, b"x".to_vec()),
            ("empty", Vec::new()),
        ]);
        let mut blob = Vec::new();
        let c = convert(&input[..], &mut blob, Compression::fast()).unwrap();
        assert_eq!(c.size, blob.len() as u64);
        assert_eq!(c.digest, sha256(&blob));

        // Any gzip reader: the input's entries, then the landmark's, the TOC's.
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(c.diff_id, sha256(&plain));
        assert_eq!(c.uncompressed_size, plain.len() as u64);
        let got = files_of(&plain[..]);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                NO_PREFETCH_LANDMARK,
                "etc/",
                "etc/hostname",
                "big.bin",
                long.as_str(),
                "empty",
                "etc/link",
                TOC_NAME
            ]
        );
        assert_eq!(files_of(&input[..]), got[1..got.len() - 1].to_vec());

        // The footer points at the TOC, whose digest is the annotation's.
        let offset = toc_offset(&blob[blob.len() - FOOTER_SIZE..]).expect("a footer");
        let (toc, digest) = read_toc(&blob[offset as usize..blob.len() - FOOTER_SIZE]).unwrap();
        assert_eq!(digest, c.toc_digest);
        assert_eq!(toc.version, 1);

        // Every chunk is a gzip member at its offset, with its digest.
        let member = |at: i64| {
            let mut d = flate2::read::GzDecoder::new(&blob[at as usize..]);
            let mut out = Vec::new();
            d.read_to_end(&mut out).unwrap();
            out
        };
        let hostname = toc.entries.iter().find(|e| e.name == "etc/hostname").unwrap();
        assert_eq!(
            (hostname.kind.as_str(), hostname.size, hostname.uid, hostname.mode),
            ("reg", 4, 7, 0o640)
        );
        assert!(member(hostname.offset).starts_with(b"box\n"));
        assert_eq!(hostname.chunk_digest, sha256(b"box\n"));
        let chunks: Vec<&TocEntry> = toc.entries.iter().filter(|e| e.name == "big.bin").collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].kind, "reg");
        assert_eq!(chunks[0].digest, sha256(&big));
        let mut joined = Vec::new();
        for ch in &chunks {
            let size = if ch.chunk_size == 0 {
                big.len() as i64 - ch.chunk_offset
            } else {
                ch.chunk_size
            };
            let data = &member(ch.offset)[..size as usize];
            assert_eq!(ch.chunk_digest, sha256(data), "chunk at {}", ch.chunk_offset);
            assert_eq!(ch.chunk_offset as usize, joined.len());
            joined.extend_from_slice(data);
        }
        assert_eq!(joined, big);
        assert!(toc.entries.iter().any(|e| e.name == long));
        let link = toc.entries.iter().find(|e| e.name == "etc/link").unwrap();
        assert_eq!(
            (link.kind.as_str(), link.link_name.as_str()),
            ("symlink", "../target")
        );
        let empty = toc.entries.iter().find(|e| e.name == "empty").unwrap();
        assert_eq!((empty.kind.as_str(), empty.offset), ("reg", 0));

        // Python's tarfile reads it as any .tar.gz.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("layer.tar.gz"), &blob).unwrap();
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import tarfile,sys\nt=tarfile.open(sys.argv[1],'r:gz')\nfor m in t: print(m.name, m.size)",
            ])
            .arg(d.path().join("layer.tar.gz"))
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.contains(&format!("big.bin {}", big.len())), "{listed}");
        assert!(listed.contains("etc/hostname 4"), "{listed}");
        assert!(listed.contains(&format!("{TOC_NAME} ")), "{listed}");
    }

    #[test]
    fn a_footer_reads_back_and_anything_else_is_no_footer() {
        let f = footer(0x1234_5678);
        assert_eq!(toc_offset(&f), Some(0x1234_5678));
        // It is an empty gzip member.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&f[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
        let mut bad = f;
        bad[33] = b'X';
        assert_eq!(toc_offset(&bad), None);
        assert_eq!(toc_offset(&f[1..]), None);
    }
}
