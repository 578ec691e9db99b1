//! Labels on records, and how field masks update them.

use std::collections::BTreeMap;

use crate::InvalidArgument;

pub type Labels = BTreeMap<String, String>;

// The label and annotation names molde's services agree on, in one place.

/// Keeps a record from garbage collection (containerd's).
pub const GC_ROOT: &str = "containerd.io/gc.root";
/// An RFC 3339 time after which a lease (or ingest) may be collected.
pub const GC_EXPIRE: &str = "containerd.io/gc.expire";
/// Prefix of labels naming content a record holds (`…content.config`, `…content.l.N`, `…content.m.N`).
pub const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Prefix of labels naming the snapshot a config holds, per snapshotter (`…snapshot.overlayfs`).
pub const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";
/// A layer blob's diff ID.
pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Prefix of labels recording the repository a blob came from, per registry.
pub const DISTRIBUTION_SOURCE: &str = "containerd.io/distribution.source.";
/// On an active snapshot: the parent it takes at commit (see the snapshotter).
pub const SNAPSHOT_PARENT: &str = "molde.io/snapshot.parent";
/// A container record's systemd scope unit (`cri-molde-<id>.scope`) and the
/// slice it goes in: the systemd cgroup driver (the runtime's `systemd.rs`).
pub const SYSTEMD_UNIT: &str = "io.molde.systemd.unit";
pub const SYSTEMD_SLICE: &str = "io.molde.systemd.slice";
/// The tag of an image in an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// containerd's limit on one label: key and value together.
pub const MAX_LABEL: usize = 4096;

/// molde's limit on all the labels of one record, keys and values summed: a
/// record must fit, many times over, in a gRPC message (4 MiB by default) of
/// a List. An image of 127 layers needs about 13 KiB.
pub const MAX_LABELS_TOTAL: usize = 64 << 10;

/// Applies a field mask to labels: `labels` replaces them all, `labels.<key>`
/// sets or (when absent from `new`) removes one key. Other paths are ignored.
/// The result must be within the limits (`validate`).
pub fn apply_mask(old: &mut Labels, new: &Labels, paths: &[String]) -> Result<(), InvalidArgument> {
    for p in paths {
        if p == "labels" {
            *old = new.clone();
        } else if let Some(k) = p.strip_prefix("labels.") {
            match new.get(k) {
                Some(v) => old.insert(k.to_string(), v.clone()),
                None => old.remove(k),
            };
        }
    }
    validate(old)
}

/// Checks a label set against containerd's limit on one key and value
/// together, and molde's on the whole set.
pub fn validate(labels: &Labels) -> Result<(), InvalidArgument> {
    let mut total = 0;
    for (k, v) in labels {
        if k.is_empty() {
            return Err(InvalidArgument("label key must not be empty".into()));
        }
        if k.len() + v.len() > MAX_LABEL {
            let shown: String = k.chars().take(64).collect();
            return Err(InvalidArgument(format!(
                "label {shown:?}: key and value exceed {MAX_LABEL} bytes"
            )));
        }
        total += k.len() + v.len();
    }
    if total > MAX_LABELS_TOTAL {
        return Err(InvalidArgument(format!(
            "labels: {} labels of {total} bytes in all, over the limit of {MAX_LABELS_TOTAL} bytes for one record",
            labels.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_sets_and_removes_keys() {
        let mut old = Labels::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
        let new = Labels::from([("a".into(), "9".into())]);
        apply_mask(&mut old, &new, &["labels.a".into(), "labels.b".into()]).unwrap();
        assert_eq!(old, Labels::from([("a".into(), "9".into())]));
        apply_mask(&mut old, &Labels::new(), &["labels".into()]).unwrap();
        assert!(old.is_empty());
    }

    #[test]
    fn oversized_labels_are_refused() {
        assert!(validate(&Labels::from([("k".into(), "v".repeat(5000))])).is_err());
        assert!(validate(&Labels::from([(String::new(), "v".into())])).is_err());
    }

    #[test]
    fn labels_added_one_by_one_stop_at_the_total() {
        let mut rec = Labels::new();
        let mut refused = None;
        for i in 0..100 {
            let one = Labels::from([(format!("k{i}"), "v".repeat(4000))]);
            if let Err(e) = apply_mask(&mut rec, &one, &[format!("labels.k{i}")]) {
                refused = Some((i, e.0));
                break;
            }
        }
        let (i, msg) = refused.expect("refused before 100");
        assert_eq!(i, 16, "{msg}");
        assert!(msg.contains("65536"), "{msg}");
    }
}
