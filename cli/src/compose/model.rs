//! A compose file as molde reads it: the Compose Specification's common
//! subset, parsed with serde_yaml_ng, `${VAR:-default}` interpolated from the
//! environment and the project's `.env`, short and long syntaxes brought to
//! one shape.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

/// The files tried, in order, when no `-f` is given.
pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum StrOrList {
    Str(String),
    List(Vec<String>),
}

impl StrOrList {
    /// A command: a list as it is, a string split as a shell splits words
    /// (not run by a shell, as compose does it).
    pub fn words(&self, what: &str) -> Result<Vec<String>> {
        match self {
            StrOrList::List(l) => Ok(l.clone()),
            StrOrList::Str(s) => shlex::split(s).ok_or_else(|| anyhow!("{what} {s:?}: unbalanced quotes")),
        }
    }

    pub fn list(&self) -> Vec<String> {
        match self {
            StrOrList::List(l) => l.clone(),
            StrOrList::Str(s) => vec![s.clone()],
        }
    }
}

/// `KEY: value` maps and `KEY=value` lists (environment, labels, args).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MapOrList {
    Map(BTreeMap<String, Option<Value>>),
    List(Vec<String>),
}

impl MapOrList {
    /// The pairs; a key without a value takes it from `env` (as compose's
    /// `environment: [KEY]` does), or is left out.
    pub fn pairs(&self, env: &HashMap<String, String>) -> Vec<(String, String)> {
        match self {
            MapOrList::Map(m) => m
                .iter()
                .filter_map(|(k, v)| match v {
                    Some(v) => Some((k.clone(), scalar(v))),
                    None => env.get(k).map(|e| (k.clone(), e.clone())),
                })
                .collect(),
            MapOrList::List(l) => l
                .iter()
                .filter_map(|item| match item.split_once('=') {
                    Some((k, v)) => Some((k.to_string(), v.to_string())),
                    None => env.get(item).map(|e| (item.clone(), e.clone())),
                })
                .collect(),
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Build {
    Context(String),
    Full {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dockerfile: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        args: Option<MapOrList>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Port {
    Number(u32),
    Short(String),
    Long {
        target: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        published: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_ip: Option<String>,
    },
}

impl Port {
    /// As `-p` takes it: `[IP:][HOST:]CONTAINER[/PROTO]`.
    pub fn flag(&self) -> String {
        match self {
            Port::Number(n) => n.to_string(),
            Port::Short(s) => s.clone(),
            Port::Long {
                target,
                published,
                protocol,
                host_ip,
            } => {
                let mut s = String::new();
                if let Some(ip) = host_ip {
                    s.push_str(&format!("{ip}:"));
                }
                if let Some(p) = published {
                    s.push_str(&format!("{}:", scalar(p)));
                }
                s.push_str(&target.to_string());
                if let Some(p) = protocol {
                    s.push_str(&format!("/{p}"));
                }
                s
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Mount {
    Short(String),
    Long {
        #[serde(rename = "type", default = "volume_type")]
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        target: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        read_only: bool,
    },
}

fn volume_type() -> String {
    "volume".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ServiceNetwork {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Networks {
    List(Vec<String>),
    Map(BTreeMap<String, Option<ServiceNetwork>>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dependency {
    #[serde(default = "started")]
    pub condition: String,
}

fn started() -> String {
    "service_started".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Dependency>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<StrOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Deploy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// One service. Keys molde does not know are kept in `other` and named
/// in a warning, never silently dropped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Service {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<StrOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<StrOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<MapOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<StrOrList>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<StrOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Networks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<DependsOn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<MapOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_open: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<StrOrList>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct VolumeDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<MapOrList>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NetworkDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct File {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    services: BTreeMap<String, Value>,
    #[serde(default)]
    volumes: BTreeMap<String, Option<VolumeDef>>,
    #[serde(default)]
    networks: BTreeMap<String, Option<NetworkDef>>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// A loaded project: its name, folder, services, and the volumes and
/// networks it declares (by their names in the file; `volume_name` and
/// `network_name` give their names in molded).
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub name: String,
    #[serde(skip)]
    pub dir: PathBuf,
    pub services: BTreeMap<String, Service>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkDef>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeDef>,
    /// The environment interpolation and `environment: [KEY]` read from.
    #[serde(skip)]
    pub env: HashMap<String, String>,
}

/// Reads `.env`-style KEY=VALUE lines (comments, blank lines, `export`,
/// quotes around the value).
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
            {
                &v[1..v.len() - 1]
            } else {
                v
            };
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
/// `${VAR?message}`, `${VAR:+alt}`, `$VAR` and `$$`, as compose reads them.
/// An unset variable without a default is empty, with a warning.
pub fn interpolate(s: &str, env: &HashMap<String, String>, warnings: &mut Vec<String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| anyhow!("{s:?}: `${{` without its `}}`"))?;
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            if name.is_empty() {
                bail!("{s:?}: ${{{expr}}} names no variable");
            }
            let value = env.get(name);
            let set_nonempty = value.is_some_and(|v| !v.is_empty());
            let text = if let Some(def) = op.strip_prefix(":-") {
                if set_nonempty {
                    value.cloned().unwrap_or_default()
                } else {
                    interpolate(def, env, warnings)?
                }
            } else if let Some(def) = op.strip_prefix('-') {
                match value {
                    Some(v) => v.clone(),
                    None => interpolate(def, env, warnings)?,
                }
            } else if let Some(msg) = op.strip_prefix(":?") {
                if !set_nonempty {
                    bail!("required variable {name} is missing a value: {msg}");
                }
                value.cloned().unwrap_or_default()
            } else if let Some(msg) = op.strip_prefix('?') {
                value
                    .cloned()
                    .ok_or_else(|| anyhow!("required variable {name} is missing a value: {msg}"))?
            } else if let Some(alt) = op.strip_prefix(":+") {
                if set_nonempty {
                    interpolate(alt, env, warnings)?
                } else {
                    String::new()
                }
            } else if let Some(alt) = op.strip_prefix('+') {
                if value.is_some() {
                    interpolate(alt, env, warnings)?
                } else {
                    String::new()
                }
            } else if op.is_empty() {
                value.cloned().unwrap_or_else(|| {
                    warnings.push(format!("the {name} variable is not set; it is an empty string"));
                    String::new()
                })
            } else {
                bail!("{s:?}: ${{{expr}}} is not an interpolation molde knows");
            };
            out.push_str(&text);
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                out.push('$');
                continue;
            }
            let name = &rest[..end];
            rest = &rest[end..];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => warnings.push(format!("the {name} variable is not set; it is an empty string")),
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_value(v: &mut Value, env: &HashMap<String, String>, warnings: &mut Vec<String>) -> Result<()> {
    match v {
        Value::String(s) => *s = interpolate(s, env, warnings)?,
        Value::Sequence(seq) => {
            for x in seq {
                interpolate_value(x, env, warnings)?;
            }
        }
        Value::Mapping(m) => {
            for (_, x) in m.iter_mut() {
                interpolate_value(x, env, warnings)?;
            }
        }
        Value::Tagged(t) => interpolate_value(&mut t.value, env, warnings)?,
        _ => {}
    }
    Ok(())
}

/// Merges a later file into an earlier one: top-level maps key by key,
/// a service's keys replacing the earlier file's.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let top = matches!(k.as_str(), Some("services" | "volumes" | "networks"));
                match b.get_mut(&k) {
                    Some(existing) if top => {
                        if let (Value::Mapping(e), Value::Mapping(n)) = (existing, v.clone()) {
                            for (sk, sv) in n {
                                match (e.get_mut(&sk), sv) {
                                    (Some(Value::Mapping(old)), Value::Mapping(new)) => {
                                        for (kk, vv) in new {
                                            old.insert(kk, vv);
                                        }
                                    }
                                    (_, sv) => {
                                        e.insert(sk, sv);
                                    }
                                }
                            }
                        }
                    }
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A service's settings; when they do not fit, the error names the
/// service and the key (serde's own message for an untagged enum names neither).
fn service(name: &str, v: &Value) -> Result<Service> {
    match serde_yaml_ng::from_value::<Service>(v.clone()) {
        Ok(s) => Ok(s),
        Err(e) => {
            if let Value::Mapping(m) = v {
                for (k, val) in m {
                    let mut one = serde_yaml_ng::Mapping::new();
                    one.insert(k.clone(), val.clone());
                    if let Err(e) = serde_yaml_ng::from_value::<Service>(Value::Mapping(one)) {
                        let key = k.as_str().unwrap_or("?");
                        bail!(
                            "service {name}: {key}: {}",
                            e.to_string().replace("untagged enum ", "")
                        );
                    }
                }
            }
            bail!("service {name}: {e}")
        }
    }
}

/// A project name as compose makes one: lower case, `[a-z0-9_-]`.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    s.trim_start_matches(['_', '-']).to_string()
}

impl Project {
    /// Loads the files (`-f`, else the first default file in the current
    /// folder), with the project's `.env` and the process environment.
    pub fn load(files: &[PathBuf], name: Option<&str>) -> Result<(Project, Vec<String>)> {
        let files: Vec<PathBuf> = if files.is_empty() {
            let found = DEFAULT_FILES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    anyhow!(
                        "no compose file here: give -f FILE, or write one of {}",
                        DEFAULT_FILES.join(", ")
                    )
                })?;
            vec![found]
        } else {
            files.to_vec()
        };
        let first = std::fs::canonicalize(&files[0])
            .with_context(|| format!("compose file {}", files[0].display()))?;
        let dir = first.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut env: HashMap<String, String> = match std::fs::read_to_string(dir.join(".env")) {
            Ok(t) => parse_env_file(&t).into_iter().collect(),
            Err(_) => HashMap::new(),
        };
        env.extend(std::env::vars());
        let mut warnings = Vec::new();
        let mut doc = Value::Mapping(Default::default());
        for f in &files {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading compose file {}", f.display()))?;
            let mut v: Value = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("compose file {} is not valid YAML", f.display()))?;
            interpolate_value(&mut v, &env, &mut warnings)
                .with_context(|| format!("compose file {}", f.display()))?;
            merge(&mut doc, v);
        }
        let file: File =
            serde_yaml_ng::from_value(doc).with_context(|| format!("compose file {}", files[0].display()))?;
        let mut services = BTreeMap::new();
        for (name, v) in &file.services {
            let svc = service(name, v).with_context(|| format!("compose file {}", files[0].display()))?;
            services.insert(name.clone(), svc);
        }
        for k in file.other.keys() {
            if k != "version" && !k.starts_with("x-") {
                warnings.push(format!("top-level key {k:?} is not supported; ignored"));
            }
        }
        for (s, svc) in &services {
            for k in svc.other.keys() {
                if !k.starts_with("x-") {
                    warnings.push(format!("service {s}: key {k:?} is not supported; ignored"));
                }
            }
        }
        let name = match name
            .map(str::to_string)
            .or_else(|| std::env::var("COMPOSE_PROJECT_NAME").ok())
            .or(file.name.clone())
        {
            Some(n) => n,
            None => dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let name = sanitize(&name);
        if name.is_empty() {
            bail!("the project has no usable name: give -p NAME");
        }
        let project = Project {
            name,
            dir,
            services,
            networks: file
                .networks
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
            volumes: file
                .volumes
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
            env,
        };
        project.check()?;
        Ok((project, warnings))
    }

    /// What a file can get wrong that would only show halfway through `up`.
    fn check(&self) -> Result<()> {
        if self.services.is_empty() {
            bail!("the compose file defines no services");
        }
        for (name, s) in &self.services {
            if s.image.is_none() && s.build.is_none() {
                bail!("service {name} has neither image nor build");
            }
            for dep in self.dependencies(name) {
                if !self.services.contains_key(&dep.0) {
                    bail!(
                        "service {name} depends on {}, which the file does not define",
                        dep.0
                    );
                }
            }
            for n in self.service_networks(name) {
                if n.0 != "default" && !self.networks.contains_key(&n.0) {
                    bail!(
                        "service {name} uses network {}, which the file does not declare under networks",
                        n.0
                    );
                }
            }
            for m in &s.volumes {
                if let Some(v) = self.named_volume(m)
                    && !self.volumes.contains_key(&v)
                {
                    bail!("service {name} mounts volume {v}, which the file does not declare under volumes");
                }
            }
        }
        self.order(&self.services.keys().cloned().collect::<Vec<_>>())?;
        Ok(())
    }

    /// A service's dependencies with their conditions.
    pub fn dependencies(&self, service: &str) -> Vec<(String, String)> {
        match self.services.get(service).and_then(|s| s.depends_on.as_ref()) {
            None => Vec::new(),
            Some(DependsOn::List(l)) => l.iter().map(|d| (d.clone(), started())).collect(),
            Some(DependsOn::Map(m)) => m.iter().map(|(d, c)| (d.clone(), c.condition.clone())).collect(),
        }
    }

    /// `services` and what they depend on, dependencies first; a cycle is an error.
    pub fn order(&self, services: &[String]) -> Result<Vec<String>> {
        fn visit(
            p: &Project,
            s: &str,
            seen: &mut Vec<String>,
            path: &mut Vec<String>,
            out: &mut Vec<String>,
        ) -> Result<()> {
            if out.iter().any(|o| o == s) {
                return Ok(());
            }
            if path.iter().any(|x| x == s) {
                bail!(
                    "services depend on each other in a circle: {} -> {s}",
                    path.join(" -> ")
                );
            }
            if !p.services.contains_key(s) {
                bail!("no such service: {s}");
            }
            path.push(s.to_string());
            for (d, _) in p.dependencies(s) {
                visit(p, &d, seen, path, out)?;
            }
            path.pop();
            seen.push(s.to_string());
            out.push(s.to_string());
            Ok(())
        }
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for s in services {
            visit(self, s, &mut seen, &mut Vec::new(), &mut out)?;
        }
        Ok(out)
    }

    /// The networks a service is on (name in the file, its settings);
    /// `default` when it names none.
    pub fn service_networks(&self, service: &str) -> Vec<(String, ServiceNetwork)> {
        match self.services.get(service).and_then(|s| s.networks.as_ref()) {
            None => vec![("default".into(), ServiceNetwork::default())],
            Some(Networks::List(l)) => l.iter().map(|n| (n.clone(), ServiceNetwork::default())).collect(),
            Some(Networks::Map(m)) => m
                .iter()
                .map(|(n, c)| (n.clone(), c.clone().unwrap_or_default()))
                .collect(),
        }
    }

    /// A network's name in molded: `PROJECT_NAME`, its `name:`, or as is when external.
    pub fn network_name(&self, net: &str) -> String {
        match self.networks.get(net) {
            Some(d) if d.name.is_some() => d.name.clone().unwrap_or_default(),
            Some(d) if d.external => net.to_string(),
            _ => format!("{}_{net}", self.name),
        }
    }

    /// A volume's name in molded, as `network_name` for networks.
    pub fn volume_name(&self, vol: &str) -> String {
        match self.volumes.get(vol) {
            Some(d) if d.name.is_some() => d.name.clone().unwrap_or_default(),
            Some(d) if d.external => vol.to_string(),
            _ => format!("{}_{vol}", self.name),
        }
    }

    /// The named volume a mount uses (its name in the file), if it is one.
    pub fn named_volume(&self, m: &Mount) -> Option<String> {
        let source = match m {
            Mount::Short(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                if parts.len() < 2 {
                    return None;
                }
                parts[0].to_string()
            }
            Mount::Long { kind, source, .. } if kind == "volume" => source.clone()?,
            Mount::Long { .. } => return None,
        };
        let is_path = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
        (!is_path && !source.is_empty()).then_some(source)
    }

    /// The image a service runs: its `image`, else `PROJECT-SERVICE` (what
    /// `build` tags).
    pub fn image(&self, service: &str) -> String {
        self.services
            .get(service)
            .and_then(|s| s.image.clone())
            .unwrap_or_else(|| format!("{}-{service}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn interpolation_as_compose_reads_it() {
        let e = env(&[("TAG", "1.2"), ("EMPTY", "")]);
        let mut w = Vec::new();
        let i = |s: &str, w: &mut Vec<String>| interpolate(s, &e, w).unwrap();
        assert_eq!(i("app:${TAG}", &mut w), "app:1.2");
        assert_eq!(i("app:$TAG-x", &mut w), "app:1.2-x");
        assert_eq!(i("${MISSING:-dflt}", &mut w), "dflt");
        assert_eq!(i("${EMPTY:-dflt}", &mut w), "dflt");
        assert_eq!(i("${EMPTY-dflt}", &mut w), "");
        assert_eq!(i("${TAG:+set}", &mut w), "set");
        assert_eq!(i("cost $$5", &mut w), "cost $5");
        assert!(w.is_empty());
        assert_eq!(i("${NOPE}", &mut w), "");
        assert_eq!(w.len(), 1);
        let err = interpolate("${NEED:?give NEED}", &e, &mut w)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NEED") && err.contains("give NEED"), "{err}");
    }

    #[test]
    fn env_files_read_as_docker_reads_them() {
        let m = parse_env_file("# c\nA=1\nexport B=\"two words\"\n\nC='x=y'\n");
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "x=y");
    }

    #[test]
    fn dependency_order_and_cycles() {
        let doc = "services:\n  web: {image: a, depends_on: [api]}\n  api: {image: a, depends_on: {db: {condition: service_healthy}}}\n  db: {image: a}\n";
        let file: File = serde_yaml_ng::from_str(doc).unwrap();
        let p = Project {
            name: "p".into(),
            dir: PathBuf::from("/"),
            services: file
                .services
                .iter()
                .map(|(k, v)| (k.clone(), service(k, v).unwrap()))
                .collect(),
            networks: BTreeMap::new(),
            volumes: BTreeMap::new(),
            env: HashMap::new(),
        };
        assert_eq!(p.order(&["web".into()]).unwrap(), ["db", "api", "web"]);
        assert_eq!(
            p.dependencies("api"),
            [("db".to_string(), "service_healthy".to_string())]
        );
        let mut cyclic = p.clone();
        cyclic.services.get_mut("db").unwrap().depends_on = Some(DependsOn::List(vec!["web".into()]));
        assert!(
            cyclic
                .order(&["web".into()])
                .unwrap_err()
                .to_string()
                .contains("circle")
        );
    }
}
