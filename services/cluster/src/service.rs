//! molde's cluster.v1: what this node knows of its cluster.

use std::sync::Arc;

use molde_api::molde::services::cluster::v1 as api;
use molde_common::errdefs::Error;
use tonic::{Request, Response, Status};

use crate::Membership;

pub struct ClusterService {
    /// None when molded runs alone (no `--cluster`).
    pub membership: Option<Arc<Membership>>,
}

#[tonic::async_trait]
impl api::cluster_server::Cluster for ClusterService {
    async fn nodes(&self, _req: Request<api::NodesRequest>) -> Result<Response<api::NodesResponse>, Status> {
        let Some(m) = self.membership.clone() else {
            return Err(Error::FailedPrecondition(
                "this molded is not part of a cluster: start it with --cluster etcd=URL".into(),
            )
            .into());
        };
        let nodes = tokio::task::spawn_blocking({
            let m = m.clone();
            move || m.nodes()
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Unavailable(format!("the cluster's etcd is unreachable: {e}")))?;
        Ok(Response::new(api::NodesResponse {
            nodes: nodes
                .into_iter()
                .map(|n| api::Node {
                    name: n.name,
                    address: n.address,
                    version: n.version,
                    free_disk_bytes: n.free_disk_bytes,
                    images: n.images,
                    registered_unix: n.registered_unix,
                    refreshed_unix: n.refreshed_unix,
                })
                .collect(),
            self_name: m.name.clone(),
        }))
    }

    async fn revoke(
        &self,
        req: Request<api::RevokeRequest>,
    ) -> Result<Response<api::RevokeResponse>, Status> {
        let Some(m) = self.membership.clone() else {
            return Err(Error::FailedPrecondition(
                "this molded is not part of a cluster: start it with --cluster etcd=URL".into(),
            )
            .into());
        };
        let r = req.into_inner();
        if r.serial.is_empty() || !r.serial.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument(format!("serial {:?}: expected hex digits", r.serial)).into());
        }
        tokio::task::spawn_blocking(move || m.revoke(&r.name, &r.serial, r.not_after))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Unavailable(format!("the cluster's etcd is unreachable: {e}")))?;
        Ok(Response::new(api::RevokeResponse {}))
    }
}
