//! Labels on records, and how field masks update them.

use std::collections::BTreeMap;

use crate::InvalidArgument;

pub type Labels = BTreeMap<String, String>;

/// Applies a field mask to labels: `labels` replaces them all, `labels.<key>`
/// sets or (when absent from `new`) removes one key. Other paths are ignored.
pub fn apply_mask(old: &mut Labels, new: &Labels, paths: &[String]) {
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
}

/// Checks a label set against containerd's limit on one key and value together.
pub fn validate(labels: &Labels) -> Result<(), InvalidArgument> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(InvalidArgument("label key must not be empty".into()));
        }
        if k.len() + v.len() > 4096 {
            return Err(InvalidArgument(format!(
                "label {k:?}: key and value exceed 4096 bytes"
            )));
        }
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
        apply_mask(&mut old, &new, &["labels.a".into(), "labels.b".into()]);
        assert_eq!(old, Labels::from([("a".into(), "9".into())]));
        apply_mask(&mut old, &Labels::new(), &["labels".into()]);
        assert!(old.is_empty());
    }

    #[test]
    fn oversized_labels_are_refused() {
        assert!(validate(&Labels::from([("k".into(), "v".repeat(5000))])).is_err());
        assert!(validate(&Labels::from([(String::new(), "v".into())])).is_err());
    }
}
