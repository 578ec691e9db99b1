//! Registry credentials in `~/.docker/config.json`, as docker reads and writes
//! them: in `auths`, or through a credential helper (`credHelpers` for one
//! registry, `credsStore` for all), the `docker-credential-NAME` programs that
//! speak get/store/erase with JSON on stdin and stdout.

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

/// The credential helper that keeps `registry`'s credentials, if one does.
fn helper(cfg: &Value, registry: &str) -> Option<String> {
    let k = key(registry);
    cfg.get("credHelpers")
        .and_then(|h| h.get(&k).or_else(|| h.get(registry)))
        .or_else(|| cfg.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Runs `docker-credential-NAME ACTION` with `input` on its stdin.
fn run_helper(name: &str, action: &str, input: &[u8]) -> Result<std::process::Output> {
    use std::io::Write;
    let program = format!("docker-credential-{name}");
    let mut child = std::process::Command::new(&program)
        .arg(action)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "running credential helper {program} (named in {})",
                config_path().display()
            )
        })?;
    child.stdin.take().expect("piped").write_all(input)?;
    Ok(child.wait_with_output()?)
}

fn helper_failed(name: &str, action: &str, out: &std::process::Output) -> anyhow::Error {
    let msg = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .trim()
    .to_string();
    anyhow::anyhow!("credential helper docker-credential-{name} {action} failed: {msg}")
}

/// Every registry with stored credentials, with them.
pub fn all() -> Result<Vec<(String, (String, String))>> {
    let cfg = load()?;
    let mut out = Vec::new();
    let mut keys: Vec<String> = ["auths", "credHelpers"]
        .iter()
        .filter_map(|f| cfg.get(f).and_then(Value::as_object))
        .flat_map(|a| a.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    for k in &keys {
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
    if let Some(h) = helper(&cfg, registry) {
        let out = run_helper(&h, "get", key(registry).as_bytes())?;
        if !out.status.success() {
            // docker's helpers say so when they hold nothing for the registry.
            if String::from_utf8_lossy(&out.stdout).contains("credentials not found") {
                return Ok(None);
            }
            return Err(helper_failed(&h, "get", &out));
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("docker-credential-{h} get: its answer is not JSON"))?;
        return Ok(match (v["Username"].as_str(), v["Secret"].as_str()) {
            (Some(u), Some(p)) if !p.is_empty() => Some((u.to_string(), p.to_string())),
            _ => None,
        });
    }
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

/// Stores credentials: with the registry's helper when it has one (the
/// config then keeps only an empty entry, as docker's does), else in `auths`.
/// Says where they went.
pub fn store(registry: &str, user: &str, password: &str) -> Result<String> {
    let mut cfg = load()?;
    if !cfg.get("auths").is_some_and(Value::is_object) {
        cfg["auths"] = json!({});
    }
    if let Some(h) = helper(&cfg, registry) {
        let input = json!({"ServerURL": key(registry), "Username": user, "Secret": password});
        let out = run_helper(&h, "store", input.to_string().as_bytes())?;
        if !out.status.success() {
            return Err(helper_failed(&h, "store", &out));
        }
        cfg["auths"][key(registry)] = json!({});
        write(&cfg)?;
        return Ok(format!("credential helper docker-credential-{h}"));
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    cfg["auths"][key(registry)] = json!({ "auth": auth });
    Ok(write(&cfg)?.display().to_string())
}

pub fn remove(registry: &str) -> Result<bool> {
    let mut cfg = load()?;
    let mut erased = false;
    if let Some(h) = helper(&cfg, registry) {
        let out = run_helper(&h, "erase", key(registry).as_bytes())?;
        if !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("credentials not found") {
            return Err(helper_failed(&h, "erase", &out));
        }
        erased = out.status.success();
    }
    let removed = cfg
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .map(|a| a.remove(&key(registry)).is_some())
        .unwrap_or(false);
    if removed {
        write(&cfg)?;
    }
    Ok(removed || erased)
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
