//! How much a pod or container may carry, and how list answers stay within
//! what the kubelet can receive.
//!
//! The API server bounds an object's labels and annotations at 256 KiB
//! together; CRI does not, so a client could store megabytes per pod and
//! make every ListPodSandbox larger than the kubelet's 16 MiB message limit
//! (one such node then lists nothing). Pods and containers with more than
//! [`MAX_METADATA`] are refused with InvalidArgument; and a List whose answer
//! would still exceed [`LIST_BUDGET`] (110 pods of the largest allowed size
//! would) leaves out the largest labels and annotations that are not the
//! kubelet's own (`io.kubernetes.*`, `kubernetes.io/*`), marking the trimmed
//! items with [`TRIMMED`]. The Status calls always answer in full.

use std::collections::HashMap;

use molde_common::errdefs::Error;

/// Labels and annotations of one pod or container, keys and values together.
pub const MAX_METADATA: usize = 256 << 10;
/// The largest List answer: well inside the kubelet's 16 MiB.
pub const LIST_BUDGET: usize = 12 << 20;
/// The annotation a trimmed item carries: ask its Status for the whole.
pub const TRIMMED: &str = "io.molde.cri.list-trimmed";

fn size(m: &HashMap<String, String>) -> usize {
    m.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Refuses labels and annotations larger than [`MAX_METADATA`] together.
pub fn check_metadata(
    what: &str,
    labels: &HashMap<String, String>,
    annotations: &HashMap<String, String>,
) -> Result<(), Error> {
    let total = size(labels) + size(annotations);
    if total > MAX_METADATA {
        return Err(Error::InvalidArgument(format!(
            "{what}: labels and annotations take {total} bytes, more than the {MAX_METADATA} allowed"
        )));
    }
    Ok(())
}

fn the_kubelets(key: &str) -> bool {
    key.starts_with("io.kubernetes.") || key.contains("kubernetes.io/")
}

/// Trims the labels and annotations of `items` (each a pair of maps) until
/// `encoded_len()` of the whole answer fits [`LIST_BUDGET`]: first values of
/// more than 1 KiB that are not the kubelet's, then every one that is not.
pub fn trim_list<T>(
    answer: &mut T,
    encoded_len: impl Fn(&T) -> usize,
    maps: impl Fn(&mut T) -> Vec<(&mut HashMap<String, String>, &mut HashMap<String, String>)>,
) {
    for large_only in [true, false] {
        if encoded_len(answer) <= LIST_BUDGET {
            return;
        }
        for (labels, annotations) in maps(answer) {
            let before = labels.len() + annotations.len();
            for m in [&mut *labels, &mut *annotations] {
                m.retain(|k, v| k == TRIMMED || the_kubelets(k) || (large_only && k.len() + v.len() <= 1024));
            }
            if labels.len() + annotations.len() < before {
                annotations.insert(TRIMMED.to_string(), "true".to_string());
            }
        }
    }
    if encoded_len(answer) > LIST_BUDGET {
        tracing::warn!(
            bytes = encoded_len(answer),
            "a CRI list answer is over its budget after trimming"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1 as cri;
    use prost::Message;

    fn pod(i: usize, big: usize) -> cri::PodSandbox {
        cri::PodSandbox {
            id: format!("pod-{i}"),
            labels: [("io.kubernetes.pod.name".to_string(), format!("p{i}"))].into(),
            annotations: [
                ("big".to_string(), "x".repeat(big)),
                ("small".to_string(), "y".to_string()),
                ("kubernetes.io/config.hash".to_string(), "z".repeat(2000)),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn trim(items: Vec<cri::PodSandbox>) -> cri::ListPodSandboxResponse {
        let mut r = cri::ListPodSandboxResponse { items };
        trim_list(
            &mut r,
            |r| r.encoded_len(),
            |r| {
                r.items
                    .iter_mut()
                    .map(|p| (&mut p.labels, &mut p.annotations))
                    .collect()
            },
        );
        r
    }

    #[test]
    fn metadata_over_the_limit_is_refused() {
        let labels = HashMap::from([("a".to_string(), "x".repeat(MAX_METADATA / 2))]);
        let annotations = HashMap::from([("b".to_string(), "y".repeat(MAX_METADATA / 2))]);
        let e = check_metadata("pod p", &labels, &annotations).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("pod p"),
            "{e}"
        );
        assert!(check_metadata("pod p", &labels, &HashMap::new()).is_ok());
    }

    #[test]
    fn a_list_within_budget_is_left_alone() {
        let r = trim((0..3).map(|i| pod(i, 100_000)).collect());
        assert!(r.items.iter().all(|p| p.annotations["big"].len() == 100_000));
        assert!(r.items.iter().all(|p| !p.annotations.contains_key(TRIMMED)));
    }

    #[test]
    fn a_list_over_budget_loses_the_large_values_first_and_never_the_kubelets() {
        let r = trim((0..70).map(|i| pod(i, 250_000)).collect());
        assert_eq!(r.items.len(), 70);
        assert!(r.encoded_len() <= LIST_BUDGET);
        for p in &r.items {
            assert!(!p.annotations.contains_key("big"));
            assert_eq!(p.annotations["small"], "y");
            assert_eq!(p.annotations["kubernetes.io/config.hash"].len(), 2000);
            assert_eq!(p.annotations[TRIMMED], "true");
            assert!(p.labels.contains_key("io.kubernetes.pod.name"));
        }
    }
}
