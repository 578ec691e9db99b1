//! Registry credentials in `~/.docker/config.json`, as docker reads and writes them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::{Value, json};

fn config_path() -> PathBuf {
    if let Ok(dir) = std::env::var("DOCKER_CONFIG") {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".docker/config.json")
}

fn load() -> Result<Value> {
    let p = config_path();
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// The key docker uses for a registry in `auths`.
fn key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/".into(),
        r => r.to_string(),
    }
}

/// The registry host of an image reference (docker.io when it names none).
pub fn registry_of(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

/// Every registry with stored credentials, with them.
pub fn all() -> Result<Vec<(String, (String, String))>> {
    let cfg = load()?;
    let mut out = Vec::new();
    for k in cfg
        .get("auths")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|a| a.keys())
    {
        let registry = if k == "https://index.docker.io/v1/" {
            "docker.io".to_string()
        } else {
            k.clone()
        };
        if let Some(c) = credentials(&registry)? {
            out.push((registry, c));
        }
    }
    Ok(out)
}

/// Stored credentials for `registry`, if any.
pub fn credentials(registry: &str) -> Result<Option<(String, String)>> {
    let cfg = load()?;
    let Some(entry) = cfg.get("auths").and_then(|a| a.get(key(registry))) else {
        return Ok(None);
    };
    if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .with_context(|| format!("credentials for {registry} in {}", config_path().display()))?;
        let s = String::from_utf8_lossy(&raw).into_owned();
        if let Some((u, p)) = s.split_once(':') {
            return Ok(Some((u.to_string(), p.to_string())));
        }
    }
    match (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) {
        (Some(u), Some(p)) => Ok(Some((u.to_string(), p.to_string()))),
        _ => Ok(None),
    }
}

pub fn store(registry: &str, user: &str, password: &str) -> Result<PathBuf> {
    let mut cfg = load()?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    if !cfg.get("auths").is_some_and(Value::is_object) {
        cfg["auths"] = json!({});
    }
    cfg["auths"][key(registry)] = json!({ "auth": auth });
    write(&cfg)
}

pub fn remove(registry: &str) -> Result<bool> {
    let mut cfg = load()?;
    let removed = cfg
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .map(|a| a.remove(&key(registry)).is_some())
        .unwrap_or(false);
    if removed {
        write(&cfg)?;
    }
    Ok(removed)
}

fn write(cfg: &Value) -> Result<PathBuf> {
    let p = config_path();
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(cfg)?)?;
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&tmp)?.permissions(), 0o600);
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&tmp, &p)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_of_references() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("ghcr.io/o/app"), "ghcr.io");
    }
}
