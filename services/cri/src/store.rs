//! CRI's own records in the metadata store, under `/v1/cri/`: pods and
//! containers as the kubelet described them, and what molde made for them.
//! A container's running state is not here: the runtime keeps it.
//!
//! ```text
//! /v1/cri/sandboxes/<id>          SandboxRecord
//! /v1/cri/containers/<id>         ContainerRecord
//! /v1/cri/names/<kind>/<name>     the id that holds a name
//! /v1/cri/teardowns/<id>          a stopped pod's network, still to release
//! ```

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use molde_common::errdefs::Error;
use molde_meta::{Compare, Store, Txn, TxnOutcome};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use molde_meta::keys::cri::{CONTAINERS, SANDBOXES, TEARDOWNS};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    pub created_at: i64,
    pub ready: bool,
    /// The pinned network namespace; empty for a host-network pod.
    pub netns: String,
    /// Pinned IPC and UTS namespaces; empty where the pod uses the host's.
    pub ipc: String,
    pub uts: String,
    /// The init holding the pod's PID namespace (0: none).
    pub pid_init: i32,
    /// The pod's addresses, the first one primary.
    pub ips: Vec<String>,
    /// The network list the pod was attached with (as text, so DEL works
    /// after the config changed) and the CNI result.
    pub cni_list: String,
    pub cni_result: molde_common::cni::CniResult,
    /// What the pod's containers share: hostname, hosts, resolv.conf, shm.
    pub dir: String,
    pub runtime_handler: String,
    /// The pod's own user namespace (`hostUsers: false`), if it has one.
    #[serde(default)]
    pub userns: Option<crate::userns::PodUserns>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    pub created_at: i64,
    /// The image's id (its config digest) and a digest reference to it.
    pub image_id: String,
    pub image_ref: String,
    /// The log file (the pod's log directory joined with the container's log path).
    pub log_path: String,
    /// When StartContainer started it (0: not yet).
    #[serde(default)]
    pub started_at: i64,
    /// The image's StopSignal.
    #[serde(default)]
    pub stop_signal: String,
    /// The uid, gid and supplemental groups its process runs with, as
    /// ContainerStatus reports them (`user`).
    #[serde(default)]
    pub user: Option<(u32, u32, Vec<u32>)>,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

fn decode<T: DeserializeOwned>(key: &str, b: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

pub fn get<T: DeserializeOwned>(store: &dyn Store, prefix: &str, id: &str) -> Result<Option<T>, Error> {
    let key = format!("{prefix}{id}");
    match store.get(&key)? {
        Some(e) => Ok(Some(decode(&key, &e.value)?)),
        None => Ok(None),
    }
}

pub fn put<T: Serialize>(store: &dyn Store, prefix: &str, id: &str, rec: &T) -> Result<(), Error> {
    store.txn(Txn::new().put(format!("{prefix}{id}"), encode(rec)))?;
    Ok(())
}

pub fn delete(store: &dyn Store, prefix: &str, id: &str) -> Result<(), Error> {
    store.txn(Txn::new().delete(format!("{prefix}{id}")))?;
    Ok(())
}

/// Every record under `prefix`; a record that does not decode is logged and skipped.
pub fn list<T: DeserializeOwned>(store: &dyn Store, prefix: &str) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    for e in store.range(prefix)? {
        match decode(&e.key, &e.value) {
            Ok(r) => out.push(r),
            Err(err) => tracing::warn!(error = %err, "skipping a CRI record"),
        }
    }
    Ok(out)
}

/// Takes `name` for `id`: `None` when it is now `id`'s, else the id that
/// already holds it.
pub fn reserve(store: &dyn Store, kind: &str, name: &str, id: &str) -> Result<Option<String>, Error> {
    let key = molde_meta::keys::cri::name(kind, name);
    let out = store.txn(
        Txn::new()
            .when(Compare::absent(key.clone()))
            .put(key.clone(), id.as_bytes().to_vec()),
    )?;
    if out != TxnOutcome::CompareFailed {
        return Ok(None);
    }
    let holder = store
        .get(&key)?
        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
        .unwrap_or_default();
    Ok(Some(holder))
}

/// Gives a name back (only if `id` still holds it).
pub fn release(store: &dyn Store, kind: &str, name: &str, id: &str) -> Result<(), Error> {
    let key = molde_meta::keys::cri::name(kind, name);
    if store.get(&key)?.is_some_and(|e| e.value == id.as_bytes()) {
        store.txn(Txn::new().delete(key))?;
    }
    Ok(())
}
