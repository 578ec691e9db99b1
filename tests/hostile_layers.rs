//! Hostile and broken layers applied by molde's extractor: whatever a tar says,
//! nothing is written outside the snapshot directory. Each attack is its own test.
//! (Run as root, as the daemon does: ownership and device nodes are applied.)

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use molde_snapshotter::apply::{self, ApplyError, Target, Whiteouts};
use molde_tests::image::{Entry, gzip, tar, zstd};
use molde_tests::{files_under, sha256};

/// A snapshot directory and an outside directory next to it with a victim file.
struct Scene {
    _tmp: tempfile::TempDir,
    snap: PathBuf,
    outside: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let snap = tmp.path().join("snap");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"untouched").unwrap();
        Scene {
            _tmp: tmp,
            snap,
            outside,
        }
    }

    fn apply(&self, mode: Whiteouts, layer: &[u8]) -> Result<apply::Applied, ApplyError> {
        apply::apply(
            &Target {
                dir: self.snap.clone(),
                whiteouts: mode,
                lowers: Vec::new(),
            },
            layer,
        )
    }

    /// Nothing outside the snapshot changed: the victim is intact and alone,
    /// and the temp dir holds only `snap/` and `outside/`.
    fn assert_outside_untouched(&self) {
        assert_eq!(std::fs::read(self.outside.join("victim")).unwrap(), b"untouched");
        assert_eq!(
            std::fs::metadata(self.outside.join("victim")).unwrap().nlink(),
            1,
            "no hardlink to the victim"
        );
        let outside: Vec<_> = files_under(&self.outside);
        assert_eq!(outside, vec![self.outside.join("victim")], "nothing new outside");
        let parent = self.snap.parent().unwrap();
        let mut top: Vec<_> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        top.sort();
        assert_eq!(top, ["outside", "snap"]);
    }

    fn abs(&self, p: &str) -> String {
        format!("{}/{p}", self.outside.display())
    }
}

#[test]
fn dotdot_paths_land_inside() {
    let s = Scene::new();
    let layer = tar(&[
        Entry::RawFile(b"../escaped".to_vec(), b"x".to_vec()),
        Entry::RawFile(b"a/../../../outside/victim".to_vec(), b"overwritten?".to_vec()),
    ]);
    s.apply(Whiteouts::Overlay, &layer).unwrap();
    s.assert_outside_untouched();
    assert_eq!(std::fs::read(s.snap.join("escaped")).unwrap(), b"x");
    assert_eq!(
        std::fs::read(s.snap.join("outside/victim")).unwrap(),
        b"overwritten?"
    );
}

#[test]
fn absolute_paths_land_inside() {
    let s = Scene::new();
    let name = s.abs("victim");
    let layer = tar(&[Entry::RawFile(name.clone().into_bytes(), b"pwned".to_vec())]);
    s.apply(Whiteouts::Overlay, &layer).unwrap();
    s.assert_outside_untouched();
    assert_eq!(
        std::fs::read(s.snap.join(name.trim_start_matches('/'))).unwrap(),
        b"pwned"
    );
}

#[test]
fn absolute_symlink_pointing_out_then_file_through_it() {
    let s = Scene::new();
    let layer = tar(&[
        Entry::Symlink("abs".into(), s.outside.display().to_string()),
        Entry::RawFile(b"abs/victim".to_vec(), b"pwned".to_vec()),
    ]);
    // The link resolves inside the snapshot, where its target does not exist:
    // the layer is refused, naming the entry, and nothing reaches outside.
    let err = s.apply(Whiteouts::Overlay, &layer).unwrap_err();
    assert!(err.to_string().contains("abs/victim"), "{err}");
    s.assert_outside_untouched();
}

#[test]
fn relative_symlink_pointing_out_then_file_through_it() {
    let s = Scene::new();
    let layer = tar(&[
        Entry::Symlink("rel".into(), "../../..".into()),
        Entry::RawFile(b"rel/planted".to_vec(), b"planted".to_vec()),
        Entry::Symlink("sub".into(), "../outside".into()),
        Entry::Dir("outside", 0o755),
        Entry::RawFile(b"sub/victim".to_vec(), b"pwned".to_vec()),
    ]);
    s.apply(Whiteouts::Overlay, &layer).unwrap();
    s.assert_outside_untouched();
    assert_eq!(
        std::fs::read(s.snap.join("planted")).unwrap(),
        b"planted",
        "'rel' resolves to the snapshot root"
    );
    assert_eq!(
        std::fs::read(s.snap.join("outside/victim")).unwrap(),
        b"pwned",
        "'sub' resolves inside too"
    );
}

#[test]
fn file_replacing_a_symlink_does_not_write_through_it() {
    let s = Scene::new();
    let layer = tar(&[
        Entry::Symlink("victim".into(), s.abs("victim")),
        Entry::File("victim".into(), b"replaced".to_vec(), 0o644),
    ]);
    s.apply(Whiteouts::Overlay, &layer).unwrap();
    s.assert_outside_untouched();
    let md = std::fs::symlink_metadata(s.snap.join("victim")).unwrap();
    assert!(md.is_file());
    assert_eq!(std::fs::read(s.snap.join("victim")).unwrap(), b"replaced");
}

#[test]
fn hardlinks_to_outside_are_refused() {
    for target in [
        |s: &Scene| s.abs("victim").into_bytes(),
        |_: &Scene| b"../outside/victim".to_vec(),
    ] {
        let s = Scene::new();
        let layer = tar(&[Entry::RawHardlink(b"stolen".to_vec(), target(&s))]);
        let err = s.apply(Whiteouts::Overlay, &layer).unwrap_err();
        assert!(matches!(err, ApplyError::LinkTarget { .. }), "{err}");
        assert!(
            err.to_string().contains("stolen"),
            "the error names the entry: {err}"
        );
        s.assert_outside_untouched();
    }
}

#[test]
fn hardlink_through_a_symlink_to_outside_is_refused() {
    let s = Scene::new();
    let layer = tar(&[
        Entry::Symlink("door".into(), s.outside.display().to_string()),
        Entry::Hardlink("stolen".into(), "door/victim".into()),
    ]);
    assert!(s.apply(Whiteouts::Overlay, &layer).is_err());
    s.assert_outside_untouched();
}

#[test]
fn device_nodes_are_created_inside_only() {
    let s = Scene::new();
    let layer = tar(&[
        Entry::Dir("dev", 0o755),
        Entry::CharDevice("dev/null".into(), 1, 3),
        Entry::Symlink("out".into(), s.outside.display().to_string()),
        Entry::CharDevice("disk".into(), 8, 0),
    ]);
    s.apply(Whiteouts::Overlay, &layer).unwrap();
    s.assert_outside_untouched();
    let md = std::fs::symlink_metadata(s.snap.join("dev/null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), rustix_dev(1, 3));
    assert!(
        std::fs::symlink_metadata(s.snap.join("disk"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

fn rustix_dev(major: u64, minor: u64) -> u64 {
    // glibc's makedev layout
    ((major & 0xffff_f000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffff_ff00) << 12) | (minor & 0xff)
}

#[test]
fn whiteout_of_dotdot_is_refused() {
    let s = Scene::new();
    std::fs::write(s.snap.join("keep"), b"k").unwrap();
    for name in [".wh..", "sub/.wh.."] {
        let layer = tar(&[
            Entry::Dir("sub", 0o755),
            Entry::RawFile(name.as_bytes().to_vec(), Vec::new()),
        ]);
        for mode in [Whiteouts::Overlay, Whiteouts::Remove] {
            assert!(s.apply(mode, &layer).is_err(), "{name}");
            s.assert_outside_untouched();
            assert!(s.snap.join("keep").exists());
        }
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts_or_removals() {
    let s = Scene::new();
    let layer = tar(&[
        Entry::Dir("etc", 0o755),
        Entry::File("etc/.wh.group".into(), Vec::new(), 0o644),
        Entry::Dir("var", 0o755),
        Entry::File("var/.wh..wh..opq".into(), Vec::new(), 0o644),
        Entry::File("var/new".into(), b"n".to_vec(), 0o644),
    ]);
    s.apply(Whiteouts::Overlay, &layer).unwrap();
    let wh = std::fs::symlink_metadata(s.snap.join("etc/group")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a 0/0 char device is overlay's whiteout"
    );
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(s.snap.join("var"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");

    // Native: the whiteouts remove what lower layers put there.
    let n = Scene::new();
    std::fs::create_dir_all(n.snap.join("etc")).unwrap();
    std::fs::write(n.snap.join("etc/group"), b"g").unwrap();
    std::fs::create_dir_all(n.snap.join("var/old")).unwrap();
    n.apply(Whiteouts::Remove, &layer).unwrap();
    assert!(!n.snap.join("etc/group").exists());
    assert!(!n.snap.join("var/old").exists());
    assert_eq!(
        std::fs::read(n.snap.join("var/new")).unwrap(),
        b"n",
        "the opaque dir keeps this layer's own entries"
    );
}

#[test]
fn layer_xattrs_cannot_forge_overlay_metadata() {
    let s = Scene::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_pax_extensions([
        ("SCHILY.xattr.trusted.overlay.opaque", b"y".as_slice()),
        ("SCHILY.xattr.user.ok", b"1"),
    ])
    .unwrap();
    b.append_data(&mut h, "d", std::io::empty()).unwrap();
    let layer = b.into_inner().unwrap();
    s.apply(Whiteouts::Overlay, &layer).unwrap();
    let mut buf = [0u8; 8];
    assert!(rustix::fs::lgetxattr(s.snap.join("d"), "trusted.overlay.opaque", &mut buf).is_err());
}

#[test]
fn diff_id_is_the_uncompressed_digest_for_every_compression() {
    let layer = tar(&[
        Entry::Dir("a", 0o755),
        Entry::File("a/f".into(), b"data".repeat(10_000), 0o600),
    ]);
    for blob in [layer.clone(), gzip(&layer), zstd(&layer)] {
        let s = Scene::new();
        let applied = s.apply(Whiteouts::Overlay, &blob).unwrap();
        assert_eq!(applied.diff_id.to_string(), sha256(&layer));
        assert_eq!(applied.size, layer.len() as u64);
        let md = std::fs::metadata(s.snap.join("a/f")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!(md.mtime(), 1_700_000_000);
    }
}

#[test]
fn truncated_and_corrupt_compressed_layers_are_errors() {
    let layer = tar(&[Entry::File(
        "f".into(),
        (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect(),
        0o644,
    )]);
    let gz = gzip(&layer);
    let zs = zstd(&layer);
    let mut flipped = gz.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let mut zflipped = zs.clone();
    let zmid = zflipped.len() / 2;
    zflipped[zmid] ^= 0xff;
    for (what, blob) in [
        ("truncated gzip", gz[..gz.len() / 2].to_vec()),
        ("corrupt gzip", flipped),
        ("truncated zstd", zs[..zs.len() / 2].to_vec()),
        ("truncated tar", layer[..700].to_vec()),
    ] {
        let s = Scene::new();
        let err = s.apply(Whiteouts::Overlay, &blob).expect_err(what);
        assert!(matches!(err, ApplyError::Corrupt(_)), "{what}: {err:?}");
        s.assert_outside_untouched();
    }
    // zstd frames carry no checksum by default: a flipped byte may decode to
    // other bytes, which the diff ID then gives away (a pull compares it with the
    // image config and fails).
    let s = Scene::new();
    match s.apply(Whiteouts::Overlay, &zflipped) {
        Err(e) => assert!(matches!(e, ApplyError::Corrupt(_)), "{e:?}"),
        Ok(applied) => assert_ne!(applied.diff_id.to_string(), sha256(&layer)),
    }
    s.assert_outside_untouched();
}

#[test]
fn hardlink_to_a_lower_layer_file_is_copied_up() {
    let s = Scene::new();
    let lower = s.snap.parent().unwrap().join("lower");
    std::fs::create_dir_all(lower.join("bin")).unwrap();
    std::fs::write(lower.join("bin/tool"), b"tool").unwrap();
    let layer = tar(&[Entry::Hardlink("bin/alias".into(), "bin/tool".into())]);
    apply::apply(
        &Target {
            dir: s.snap.clone(),
            whiteouts: Whiteouts::Overlay,
            lowers: vec![lower.clone()],
        },
        layer.as_slice(),
    )
    .unwrap();
    assert_eq!(std::fs::read(s.snap.join("bin/alias")).unwrap(), b"tool");
    assert_eq!(
        std::fs::metadata(s.snap.join("bin/tool")).unwrap().ino(),
        std::fs::metadata(s.snap.join("bin/alias")).unwrap().ino()
    );
    assert_eq!(
        std::fs::metadata(lower.join("bin/tool")).unwrap().nlink(),
        1,
        "the lower layer is not linked to"
    );
    std::fs::remove_dir_all(&lower).unwrap();
}
