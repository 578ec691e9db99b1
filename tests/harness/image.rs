//! Test images built from scratch: OCI image layouts whose layers the tests
//! write entry by entry (busybox-static for a runnable rootfs).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::sha256;

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir(&'static str, u32),
    File(String, Vec<u8>, u32),
    Symlink(String, String),
    Hardlink(String, String),
    /// A raw tar name, written as is (for hostile layers: `../x`, `/abs`).
    RawFile(Vec<u8>, Vec<u8>),
    /// A raw hardlink whose target name is written as is.
    RawHardlink(Vec<u8>, Vec<u8>),
    CharDevice(String, u32, u32),
}

/// An uncompressed tar of `entries`, with fixed times and root ownership.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let header = |t: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(t);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    for e in entries {
        match e {
            Entry::Dir(p, mode) => {
                let mut h = header(tar::EntryType::Directory, 0, *mode);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Entry::File(p, data, mode) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, *mode);
                b.append_data(&mut h, p, data.as_slice()).unwrap();
            }
            Entry::Symlink(p, target) => {
                let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::Hardlink(p, target) => {
                let mut h = header(tar::EntryType::Link, 0, 0o644);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::RawFile(name, data) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
                raw_name(&mut h, name);
                b.append(&h, data.as_slice()).unwrap();
            }
            Entry::RawHardlink(name, target) => {
                let mut h = header(tar::EntryType::Link, 0, 0o644);
                raw_name(&mut h, name);
                let g = h.as_old_mut();
                g.linkname = [0; 100];
                g.linkname[..target.len()].copy_from_slice(target);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            Entry::CharDevice(p, major, minor) => {
                let mut h = header(tar::EntryType::Char, 0, 0o666);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn raw_name(h: &mut tar::Header, name: &[u8]) {
    let g = h.as_old_mut();
    g.name = [0; 100];
    g.name[..name.len()].copy_from_slice(name);
    h.set_cksum();
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// The entries of a minimal runnable rootfs: a static busybox and its applets.
pub fn busybox_rootfs() -> Vec<Entry> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed (/bin/busybox)");
    let mut v = vec![
        Entry::Dir("bin", 0o755),
        Entry::Dir("etc", 0o755),
        Entry::Dir("tmp", 0o1777),
        Entry::Dir("root", 0o700),
        Entry::File("bin/busybox".into(), busybox, 0o755),
        Entry::File(
            "etc/passwd".into(),
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
            0o644,
        ),
        Entry::File(
            "etc/group".into(),
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            0o644,
        ),
    ];
    for applet in [
        "sh",
        "echo",
        "ls",
        "cat",
        "true",
        "false",
        "sleep",
        "id",
        "env",
        "pwd",
        "mkdir",
        "rm",
        "touch",
        "wc",
        "head",
        "dd",
        "sha256sum",
    ] {
        v.push(Entry::Symlink(format!("bin/{applet}"), "busybox".into()));
    }
    v
}

/// Compression of a layer blob in a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A built layout: where it is and what it holds.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub manifest_digest: String,
    pub config_digest: String,
    /// (compressed digest, diff id) of each layer, bottom first.
    pub layers: Vec<(String, String)>,
}

fn write_blob(dir: &Path, data: &[u8]) -> String {
    let d = sha256(data);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::write(p, data).unwrap();
    d
}

/// Writes an OCI image layout with one image (tag `latest`) made of `layers`.
pub fn layout(dir: &Path, layers: &[Vec<u8>], compression: Compression, arch: &str) -> Layout {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descs = Vec::new();
    let mut ids = Vec::new();
    let mut digests = Vec::new();
    for l in layers {
        let (blob, mt) = match compression {
            Compression::None => (l.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip"),
            Compression::Zstd => (zstd(l), "application/vnd.oci.image.layer.v1.tar+zstd"),
        };
        let d = write_blob(dir, &blob);
        descs.push(json!({"mediaType": mt, "digest": d, "size": blob.len()}));
        ids.push(sha256(l));
        digests.push((d, sha256(l)));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .unwrap();
    let cd = write_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = write_blob(dir, &manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    Layout {
        dir: dir.to_path_buf(),
        manifest_digest: md,
        config_digest: cd,
        layers: digests,
    }
}

/// The host's architecture in OCI terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
