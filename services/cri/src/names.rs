//! Names the kubelet's objects are known by, and ids given by prefix.

use k8s_cri::v1::{ContainerMetadata, PodSandboxMetadata};
use molde_common::errdefs::Error;

/// A pod's unique name: `name_namespace_uid_attempt`, as containerd makes it.
pub fn sandbox_name(m: &PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// A container's unique name within its pod.
pub fn container_name(c: &ContainerMetadata, s: &PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}_{}", c.name, s.name, s.namespace, s.uid, c.attempt)
}

/// The one id of `ids` that is `want` or starts with it.
pub fn resolve<'a>(ids: impl Iterator<Item = &'a str>, want: &str, what: &str) -> Result<String, Error> {
    if want.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} id is empty")));
    }
    let matches: Vec<&str> = ids.filter(|id| id.starts_with(want)).collect();
    if let Some(exact) = matches.iter().find(|id| **id == want) {
        return Ok(exact.to_string());
    }
    match matches.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(Error::NotFound(format!("{what} {want:?}"))),
        _ => Err(Error::InvalidArgument(format!(
            "{what} id {want:?} is ambiguous: {} match",
            matches.len()
        ))),
    }
}

/// Checks metadata every object needs.
pub fn check_sandbox_metadata(m: Option<&PodSandboxMetadata>) -> Result<&PodSandboxMetadata, Error> {
    let m = m.ok_or_else(|| Error::InvalidArgument("the pod sandbox config has no metadata".into()))?;
    if m.name.is_empty() {
        return Err(Error::InvalidArgument(
            "the pod sandbox metadata has no name".into(),
        ));
    }
    // They become CNI_ARGS, whose format has no escaping; Kubernetes never
    // sends either character in them.
    for (field, value) in [("name", &m.name), ("namespace", &m.namespace), ("uid", &m.uid)] {
        if value.contains([';', '=']) {
            return Err(Error::InvalidArgument(format!(
                "the pod sandbox metadata's {field} {value:?} may not contain ';' or '='"
            )));
        }
    }
    Ok(m)
}

pub fn check_container_metadata(m: Option<&ContainerMetadata>) -> Result<&ContainerMetadata, Error> {
    let m = m.ok_or_else(|| Error::InvalidArgument("the container config has no metadata".into()))?;
    if m.name.is_empty() {
        return Err(Error::InvalidArgument(
            "the container metadata has no name".into(),
        ));
    }
    Ok(m)
}

/// Whether `labels` has every key and value of `selector`.
pub fn selected(
    labels: &std::collections::HashMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_by_unique_prefix() {
        let ids = ["abc1", "abd2", "xyz"];
        assert_eq!(resolve(ids.iter().copied(), "abc", "pod").unwrap(), "abc1");
        assert_eq!(resolve(ids.iter().copied(), "xyz", "pod").unwrap(), "xyz");
        assert!(resolve(ids.iter().copied(), "ab", "pod").is_err());
        assert!(
            resolve(ids.iter().copied(), "q", "pod")
                .unwrap_err()
                .is_not_found()
        );
        assert!(resolve(ids.iter().copied(), "", "pod").is_err());
    }

    #[test]
    fn names_join_the_metadata() {
        let s = PodSandboxMetadata {
            name: "web".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            attempt: 2,
        };
        assert_eq!(sandbox_name(&s), "web_default_u1_2");
        let c = ContainerMetadata {
            name: "nginx".into(),
            attempt: 0,
        };
        assert_eq!(container_name(&c, &s), "nginx_web_default_u1_0");
    }
}
