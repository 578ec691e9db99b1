//! Image names as docker spells them short: `busybox` is
//! `docker.io/library/busybox:latest`; and the limits the distribution spec
//! puts on them.

use crate::errdefs::Error;

/// The longest repository name, registry host included (the distribution
/// spec's and docker's limit).
pub const MAX_NAME: usize = 255;
/// The longest tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub const MAX_TAG: usize = 128;

/// Checks an image name (`[registry/]repository[:tag][@digest]`, or any name
/// an image record may carry) against the distribution spec's limits: what
/// no registry could hold, and no table could show, is refused here.
pub fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("image name is required".into()));
    }
    let shown = || {
        let s: String = name.chars().take(80).collect();
        if s.len() < name.len() {
            format!("{s:?}…")
        } else {
            format!("{s:?}")
        }
    };
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidArgument(format!(
            "image name {}: contains {c:?}",
            shown()
        )));
    }
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    if let Some(d) = digest {
        d.parse::<crate::Digest>()
            .map_err(|e| Error::InvalidArgument(format!("image name {}: digest: {e}", shown())))?;
    }
    let (repo, tag) = match rest.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (rest, None),
    };
    if repo.len() > MAX_NAME {
        return Err(Error::InvalidArgument(format!(
            "image name {}: the repository name is {} characters, over the limit of {MAX_NAME}",
            shown(),
            repo.len()
        )));
    }
    if let Some(t) = tag {
        let ok = t.len() <= MAX_TAG
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "image name {}: tag must be 1 to {MAX_TAG} of [A-Za-z0-9_.-], not starting with '.' or '-'",
                shown()
            )));
        }
    }
    Ok(())
}

/// The full name of an image reference: registry, repository and tag (or digest).
pub fn normalize(name: &str) -> String {
    let (repo, tag) = match name.rsplit_once('@') {
        Some((r, d)) => (r.to_string(), format!("@{d}")),
        None => match name.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), format!(":{t}")),
            _ => (name.to_string(), ":latest".to_string()),
        },
    };
    let first = repo.split('/').next().unwrap_or("");
    let has_registry =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repo = if has_registry {
        repo
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{repo}{tag}")
}

#[cfg(test)]
mod tests {
    use super::{check_name, normalize};

    #[test]
    fn names_within_the_distribution_limits() {
        for ok in [
            "docker.io/library/busybox:latest",
            "127.0.0.1:5000/app:1.2-rc_3",
            "localhost/app",
            "ghcr.io/o/a@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(check_name(ok).is_ok(), "{ok}: {:?}", check_name(ok));
        }
        let long = format!("localhost/{}", "a".repeat(100_000));
        let err = check_name(&long).unwrap_err().to_string();
        assert!(err.contains("over the limit of 255") && err.len() < 300, "{err}");
        assert!(check_name(&format!("localhost/a:{}", "t".repeat(129))).is_err());
        assert!(check_name("localhost/a:-x").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("app@sha256:short").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn names_normalise_like_docker() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("user/app:1"), "docker.io/user/app:1");
        assert_eq!(normalize("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(normalize("localhost/app:2"), "localhost/app:2");
        assert_eq!(normalize("ghcr.io/o/a@sha256:ab"), "ghcr.io/o/a@sha256:ab");
    }
}
