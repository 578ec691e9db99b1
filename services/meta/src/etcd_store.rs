//! The etcd backend of [`Store`], for the records a cluster shares, and the
//! leases its nodes keep (a key bound to a lease goes when its holder stops
//! renewing it).
//!
//! etcd's client is async; the trait is not. Requests run on a runtime of
//! the store's own (one thread), and a caller waits for its answer, so the
//! store can be used from any thread, inside another runtime or not.

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    PutOptions, TxnOp, WatchOptions,
};

use crate::{Compare, Entry, Event, MetaError, Op, Result, Store, Txn, TxnOutcome};

/// How long one request to etcd may take before it counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The most operations etcd takes in one transaction (its `--max-txn-ops`
/// default).
pub const TXN_OPS: usize = 128;

/// How to reach etcd besides its endpoints: TLS (a CA to verify it, a
/// client certificate and key for `--client-cert-auth`) and a user with
/// its password (etcd's auth). All empty: plain `http://`.
#[derive(Debug, Clone, Default)]
pub struct EtcdAccess {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl EtcdAccess {
    fn options(&self) -> Result<ConnectOptions> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| MetaError::Backend(format!("etcd TLS: {}: {e}", p.display())))
        };
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if self.ca.is_some() || self.cert.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            }
            match (&self.cert, &self.key) {
                (Some(c), Some(k)) => tls = tls.identity(etcd_client::Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => {
                    return Err(MetaError::Backend(
                        "etcd TLS: a client certificate and its key go together".into(),
                    ));
                }
            }
            opts = opts.with_tls(tls);
        }
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => opts = opts.with_user(u.clone(), p.clone()),
            (None, None) => {}
            _ => {
                return Err(MetaError::Backend(
                    "etcd auth: a user and its password go together".into(),
                ));
            }
        }
        Ok(opts)
    }
}

pub struct EtcdStore {
    client: Client,
    handle: tokio::runtime::Handle,
    endpoints: Vec<String>,
}

fn backend(endpoints: &[String]) -> impl Fn(etcd_client::Error) -> MetaError + '_ {
    move |e| MetaError::Backend(format!("etcd at {}: {e}", endpoints.join(",")))
}

impl EtcdStore {
    /// A store on the etcd cluster at `endpoints` (`http://HOST:PORT`). An
    /// etcd that is down now fails requests, not this call, and is used as
    /// soon as it is back.
    pub fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        Self::connect_with(endpoints, &EtcdAccess::default())
    }

    /// A store on etcd at `endpoints` (`http://` or `https://`), reached
    /// as `access` says.
    pub fn connect_with(endpoints: &[String], access: &EtcdAccess) -> Result<EtcdStore> {
        let opts = access.options()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("etcd".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for etcd");
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            })
            .map_err(|e| MetaError::Backend(format!("etcd: starting its thread: {e}")))?;
        let handle = rx
            .recv()
            .map_err(|_| MetaError::Backend("etcd: its thread died".into()))?;
        let eps = endpoints.to_vec();
        let client = run(&handle, async move { Client::connect(eps, Some(opts)).await })
            .and_then(|r| r)
            .map_err(backend(endpoints))?;
        Ok(EtcdStore {
            client,
            handle,
            endpoints: endpoints.to_vec(),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T> {
        run(&self.handle, async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
                Ok(r) => r,
                Err(_) => Err(etcd_client::Error::InvalidArgs("no answer within 5s".into())),
            }
        })
        .and_then(|r| r)
        .map_err(backend(&self.endpoints))
    }

    /// A lease of `ttl`; keys put under it go when it expires.
    pub fn grant(&self, ttl: Duration) -> Result<i64> {
        let mut c = self.client.lease_client();
        let secs = ttl.as_secs().max(1) as i64;
        self.call(async move { c.grant(secs, None).await.map(|r| r.id()) })
    }

    /// Renews a lease once; false when etcd no longer knows it (expired).
    pub fn keep_alive(&self, lease: i64) -> Result<bool> {
        let mut c = self.client.lease_client();
        self.call(async move {
            let renew = async {
                let (mut keeper, mut responses) = c.keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(responses.message().await?.is_some_and(|r| r.ttl() > 0))
            };
            match renew.await {
                // etcd says so of a lease that expired or was revoked.
                Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => Ok(false),
                other => other,
            }
        })
    }

    /// Puts a key bound to a lease.
    pub fn put_leased(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<()> {
        let mut c = self.client.kv_client();
        let key = key.to_string();
        self.call(async move {
            c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
                .map(|_| ())
        })
    }

    /// Puts many keys bound to a lease, `TXN_OPS` to a transaction (etcd
    /// commits each transaction as one entry: a node publishing a thousand
    /// keys writes eight entries, not a thousand). Returns how many were put
    /// before an error, if one came.
    pub fn put_leased_many(&self, entries: &[(String, Vec<u8>)], lease: i64) -> (usize, Result<()>) {
        let mut done = 0;
        for chunk in entries.chunks(TXN_OPS) {
            let mut c = self.client.kv_client();
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), Some(PutOptions::new().with_lease(lease))))
                .collect();
            if let Err(e) =
                self.call(async move { c.txn(etcd_client::Txn::new().and_then(ops)).await.map(|_| ()) })
            {
                return (done, Err(e));
            }
            done += chunk.len();
        }
        (done, Ok(()))
    }

    /// Creates `key` bound to `lease` if no key of that name exists; whether
    /// it did.
    pub fn claim(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<bool> {
        let mut c = self.client.kv_client();
        let key = key.to_string();
        self.call(async move {
            let txn = etcd_client::Txn::new()
                .when([EtcdCompare::mod_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.as_str(),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            c.txn(txn).await.map(|r| r.succeeded())
        })
    }

    /// Ends a lease now, and the keys bound to it.
    pub fn revoke(&self, lease: i64) -> Result<()> {
        let mut c = self.client.lease_client();
        self.call(async move { c.revoke(lease).await.map(|_| ()) })
    }
}

/// Runs `f` on the store's runtime and waits for it from this thread.
fn run<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::result::Result<T, etcd_client::Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .map_err(|_| etcd_client::Error::InvalidArgs("the etcd runtime stopped".into()))
}

fn entry(kv: &etcd_client::KeyValue) -> Entry {
    Entry {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision() as u64,
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let mut c = self.client.kv_client();
        let key = key.to_string();
        self.call(async move { c.get(key, None).await.map(|r| r.kvs().first().map(entry)) })
    }

    fn range(&self, prefix: &str) -> Result<Vec<Entry>> {
        let mut c = self.client.kv_client();
        let prefix = prefix.to_string();
        self.call(async move {
            let opts = GetOptions::new()
                .with_prefix()
                .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Ascend);
            c.get(prefix, Some(opts))
                .await
                .map(|r| r.kvs().iter().map(entry).collect())
        })
    }

    fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let mut c = self.client.kv_client();
        self.call(async move {
            let compares: Vec<EtcdCompare> = txn
                .compares
                .iter()
                .map(|Compare::ModRevision(k, rev)| {
                    EtcdCompare::mod_revision(k.as_str(), CompareOp::Equal, *rev as i64)
                })
                .collect();
            let ops: Vec<TxnOp> = txn
                .ops
                .into_iter()
                .map(|op| match op {
                    Op::Put(k, v) => TxnOp::put(k, v, None),
                    Op::Delete(k) => TxnOp::delete(k, None),
                    Op::DeletePrefix(p) => TxnOp::delete(p, Some(DeleteOptions::new().with_prefix())),
                })
                .collect();
            let r = c
                .txn(etcd_client::Txn::new().when(compares).and_then(ops))
                .await?;
            Ok(if r.succeeded() {
                TxnOutcome::Committed {
                    revision: r.header().map(|h| h.revision() as u64).unwrap_or(0),
                }
            } else {
                TxnOutcome::CompareFailed
            })
        })
    }

    fn watch(&self, prefix: &str) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut c = self.client.watch_client();
        let prefix = prefix.to_string();
        // Returns once etcd has the watch: a write made after this call is seen.
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<()>(1);
        self.handle.spawn(async move {
            let Ok(mut stream) = c.watch(prefix, Some(WatchOptions::new().with_prefix())).await else {
                let _ = ready_tx.send(());
                return;
            };
            // etcd's first answer says the watch is created.
            let mut next = stream.message().await;
            let _ = ready_tx.send(());
            while let Ok(Some(resp)) = next {
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let e = match ev.event_type() {
                        EventType::Put => Event::Put(entry(kv)),
                        EventType::Delete => Event::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            revision: kv.mod_revision() as u64,
                        },
                    };
                    if tx.send(e).is_err() {
                        return;
                    }
                }
                next = stream.message().await;
            }
        });
        let _ = ready_rx.recv_timeout(REQUEST_TIMEOUT);
        rx
    }
}
