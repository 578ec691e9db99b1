//! containerd's version.v1 and introspection.v1, served by every molded process.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use molde_api::containerd::services::introspection::v1 as intro;
use molde_api::containerd::services::version::v1 as version;
use molde_meta::filter::{Fields, Filter};
use tonic::{Request, Response, Status};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = match option_env!("MOLDE_REVISION") {
    Some(r) => r,
    None => "unknown",
};

#[derive(Clone)]
pub struct VersionService;

#[tonic::async_trait]
impl version::version_server::Version for VersionService {
    async fn version(&self, _req: Request<()>) -> Result<Response<version::VersionResponse>, Status> {
        Ok(Response::new(version::VersionResponse {
            version: VERSION.to_string(),
            revision: REVISION.to_string(),
        }))
    }
}

/// One service this process hosts or forwards, as introspection reports it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub kind: &'static str,
    pub id: &'static str,
    pub exports: HashMap<String, String>,
}

#[derive(Clone)]
pub struct IntrospectionService {
    pub uuid: String,
    pub plugins: Vec<PluginInfo>,
}

struct PluginFields<'a>(&'a intro::Plugin);

impl Fields for PluginFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "type" => Some(self.0.r#type.clone()),
            "id" => Some(self.0.id.clone()),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl intro::introspection_server::Introspection for IntrospectionService {
    async fn plugins(
        &self,
        req: Request<intro::PluginsRequest>,
    ) -> Result<Response<intro::PluginsResponse>, Status> {
        let filter =
            Filter::parse_all(&req.get_ref().filters).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let plugins = self
            .plugins
            .iter()
            .map(|p| intro::Plugin {
                r#type: p.kind.to_string(),
                id: p.id.to_string(),
                exports: p.exports.clone(),
                ..Default::default()
            })
            .filter(|p| filter.matches(&PluginFields(p)))
            .collect();
        Ok(Response::new(intro::PluginsResponse { plugins }))
    }

    async fn server(&self, _req: Request<()>) -> Result<Response<intro::ServerResponse>, Status> {
        let pidns = std::fs::metadata("/proc/self/ns/pid")
            .map(|m| m.ino())
            .unwrap_or(0);
        Ok(Response::new(intro::ServerResponse {
            uuid: self.uuid.clone(),
            pid: std::process::id() as u64,
            pidns,
            deprecations: Vec::new(),
        }))
    }

    async fn plugin_info(
        &self,
        req: Request<intro::PluginInfoRequest>,
    ) -> Result<Response<intro::PluginInfoResponse>, Status> {
        let r = req.get_ref();
        let p = self
            .plugins
            .iter()
            .find(|p| p.kind == r.r#type && p.id == r.id)
            .ok_or_else(|| Status::not_found(format!("plugin {}.{}", r.r#type, r.id)))?;
        Ok(Response::new(intro::PluginInfoResponse {
            plugin: Some(intro::Plugin {
                r#type: p.kind.to_string(),
                id: p.id.to_string(),
                exports: p.exports.clone(),
                ..Default::default()
            }),
            extra: None,
        }))
    }
}

/// The daemon's identity, kept across restarts in `<root>/uuid`.
pub fn load_uuid(root: &std::path::Path) -> anyhow::Result<String> {
    let p = root.join("uuid");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&p, &id)?;
    Ok(id)
}
