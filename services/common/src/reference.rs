//! Image names as docker spells them short: `busybox` is
//! `docker.io/library/busybox:latest`.

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
    use super::normalize;

    #[test]
    fn names_normalise_like_docker() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("user/app:1"), "docker.io/user/app:1");
        assert_eq!(normalize("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(normalize("localhost/app:2"), "localhost/app:2");
        assert_eq!(normalize("ghcr.io/o/a@sha256:ab"), "ghcr.io/o/a@sha256:ab");
    }
}
