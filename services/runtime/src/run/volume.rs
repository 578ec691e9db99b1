//! runtime.v1 volumes: create, inspect, list, remove, prune. Which
//! containers use a volume comes from their records (the `-v` entries a
//! container was created with), in every namespace: volumes are the host's.

use std::collections::BTreeMap;

use super::*;
use crate::volumes::{self, Volumes};

impl RuntimeService {
    fn volumes(&self) -> Volumes {
        Volumes::new(&self.volumes)
    }

    /// Volume name → the containers (`ns/id`) whose records name it.
    pub(crate) fn volume_users(&self) -> BTreeMap<String, Vec<String>> {
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (ns, c) in self.all_records() {
            for v in run_request(&c).volumes {
                if let Some((src, _)) = v.split_once(':')
                    && !src.starts_with('/')
                {
                    users
                        .entry(src.to_string())
                        .or_default()
                        .push(format!("{ns}/{}", c.id));
                }
            }
        }
        users
    }

    fn volume_api(
        &self,
        v: volumes::Volume,
        users: &BTreeMap<String, Vec<String>>,
        size: bool,
    ) -> api::Volume {
        api::Volume {
            mountpoint: self.volumes().data(&v.name).display().to_string(),
            used_by: users.get(&v.name).cloned().unwrap_or_default(),
            size: if size { self.volumes().size(&v.name) } else { 0 },
            name: v.name,
            driver: v.driver,
            labels: v.labels.into_iter().collect(),
            created_at: v.created_at,
            anonymous: v.anonymous,
        }
    }

    pub(super) fn create_volume(&self, r: api::CreateVolumeRequest) -> Result<api::Volume, Error> {
        if !r.driver.is_empty() && r.driver != volumes::DRIVER {
            return Err(Error::InvalidArgument(format!(
                "volume driver {:?}: molde has the {:?} driver only",
                r.driver,
                volumes::DRIVER
            )));
        }
        let name = if r.name.is_empty() {
            uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
        } else {
            r.name
        };
        let labels: molde_common::labels::Labels = r.labels.clone().into_iter().collect();
        molde_common::labels::validate(&labels)?;
        let (v, made) = self
            .volumes()
            .create(&name, r.labels.into_iter().collect(), false)?;
        if made {
            tracing::info!(volume = %name, "volume created");
        }
        Ok(self.volume_api(v, &self.volume_users(), false))
    }

    pub(super) fn inspect_volume(&self, name: &str) -> Result<api::Volume, Error> {
        let v = self
            .volumes()
            .get(name)?
            .ok_or_else(|| Error::NotFound(format!("volume {name:?}")))?;
        Ok(self.volume_api(v, &self.volume_users(), true))
    }

    pub(super) fn list_volumes(&self, r: api::ListVolumesRequest) -> Result<Vec<api::Volume>, Error> {
        let users = self.volume_users();
        Ok(self
            .volumes()
            .list()?
            .into_iter()
            .filter(|v| !r.dangling || !users.contains_key(&v.name))
            .map(|v| self.volume_api(v, &users, r.sizes))
            .collect())
    }

    pub(super) fn remove_volume(&self, name: &str, force: bool) -> Result<(), Error> {
        if let Some(users) = self.volume_users().get(name) {
            return Err(Error::FailedPrecondition(format!(
                "volume {name:?} is in use by container{} {}: remove {} first",
                if users.len() > 1 { "s" } else { "" },
                users.join(", "),
                if users.len() > 1 { "them" } else { "it" }
            )));
        }
        match self.volumes().remove(name) {
            Err(e) if force && e.is_not_found() => Ok(()),
            Err(e) => Err(e),
            Ok(()) => {
                tracing::info!(volume = %name, "volume removed");
                Ok(())
            }
        }
    }

    /// Removes the volumes no container uses: anonymous ones, or all with `all`.
    pub(super) fn prune_volumes(&self, all: bool) -> Result<api::PruneVolumesResponse, Error> {
        let users = self.volume_users();
        let mut out = api::PruneVolumesResponse::default();
        for v in self.volumes().list()? {
            if users.contains_key(&v.name) || !(all || v.anonymous) {
                continue;
            }
            let size = self.volumes().size(&v.name);
            self.volumes().remove(&v.name)?;
            out.reclaimed_bytes += size;
            out.removed.push(v.name);
        }
        Ok(out)
    }
}
