//! `cluster-load ETCD_URL NODES IMAGES LAYERS SECONDS`: plays NODES molde
//! nodes against a real etcd, with the keys and the write pattern cluster
//! mode gives them (`services/cluster/src/membership.rs`): each node a lease
//! renewed every 2 s, its record rewritten every 8th renewal, and one index
//! key per blob it holds (IMAGES images of LAYERS layers, drawn from a
//! cluster-wide set of IMAGES × LAYERS blobs) bound to its lease. Prints, as
//! JSON: the keys etcd holds, its database size, the steady-state write and
//! renewal rates it sustained for SECONDS, and the latency of a renewal and
//! of the lookup a pull makes (who holds this blob).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, nodes, images, layers, seconds] = args.as_slice() else {
        eprintln!("usage: cluster-load ETCD_URL NODES IMAGES LAYERS SECONDS");
        std::process::exit(2);
    };
    let (nodes, images, layers, seconds): (usize, usize, usize, u64) = (
        nodes.parse().unwrap(),
        images.parse().unwrap(),
        layers.parse().unwrap(),
        seconds.parse().unwrap(),
    );
    let client = Client::connect([url.as_str()], None).await.expect("etcd");
    let blobs: Vec<String> = (0..images * layers)
        .map(|i| format!("sha256:{:064x}", i))
        .collect();
    let record = |n: usize| {
        format!(
            r#"{{"name":"node-{n}","address":"10.0.{}.{}:7443","version":"0.1.0","free_disk_bytes":100000000000,"images":{images},"registered_unix":0,"refreshed_unix":0}}"#,
            n / 250,
            n % 250
        )
    };

    // Registration: a lease, the record, every blob of the node's images.
    let started = Instant::now();
    let mut leases = Vec::with_capacity(nodes);
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..nodes {
        let mut c = client.clone();
        // Long enough to outlast the registration of every node here (real
        // nodes renew while they publish).
        let lease = c.lease_grant(3600, None).await.expect("a lease").id();
        leases.push(lease);
        let (record, blobs, sem) = (record(n), blobs.clone(), sem.clone());
        tasks.spawn(async move {
            let _p = sem.acquire().await;
            let opts = || Some(PutOptions::new().with_lease(lease));
            c.put(format!("/molde/nodes/node-{n}"), record, opts())
                .await
                .unwrap();
            // As membership publishes: TXN_OPS puts to a transaction.
            for chunk in blobs.chunks(molde_meta::TXN_OPS) {
                let ops: Vec<TxnOp> = chunk
                    .iter()
                    .map(|b| TxnOp::put(format!("/molde/blobs/{b}/node-{n}"), "default", opts()))
                    .collect();
                c.txn(Txn::new().and_then(ops)).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let register_secs = started.elapsed().as_secs_f64();

    // Steady state: renewals every 2 s, a record rewrite every 8th.
    let writes = Arc::new(AtomicU64::new(0));
    let renewals = Arc::new(AtomicU64::new(0));
    let renew_ms = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    for (n, lease) in leases.iter().copied().enumerate() {
        let mut c = client.clone();
        let (writes, renewals, renew_ms, record) =
            (writes.clone(), renewals.clone(), renew_ms.clone(), record(n));
        tasks.spawn(async move {
            // Spread the nodes over the 2 s period, as real ones are.
            tokio::time::sleep(Duration::from_millis((n as u64 * 2000) / nodes as u64)).await;
            let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.unwrap();
            let mut round = 0u32;
            while Instant::now() < deadline {
                let t = Instant::now();
                keeper.keep_alive().await.unwrap();
                answers.message().await.unwrap();
                renew_ms.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
                renewals.fetch_add(1, Ordering::Relaxed);
                round += 1;
                if round.is_multiple_of(8) {
                    c.put(
                        format!("/molde/nodes/node-{n}"),
                        record.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                    .await
                    .unwrap();
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(2).saturating_sub(t.elapsed())).await;
            }
        });
    }
    // Meanwhile, pulls asking who holds a blob.
    let mut c = client.clone();
    let mut lookup_ms = Vec::new();
    let mut i = 0usize;
    while Instant::now() < deadline {
        let t = Instant::now();
        let b = &blobs[i % blobs.len()];
        let r = c
            .get(
                format!("/molde/blobs/{b}/"),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        assert_eq!(r.kvs().len(), nodes);
        lookup_ms.push(t.elapsed().as_secs_f64() * 1e3);
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while tasks.join_next().await.is_some() {}
    let count = c
        .get("/molde/", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap()
        .count();
    let status = c.status().await.unwrap();
    let mut renew = renew_ms.lock().unwrap().clone();
    println!(
        "{}",
        serde_json::json!({
            "nodes": nodes, "images": images, "layers": layers,
            "keys": count,
            "db_bytes": status.db_size(),
            "register_seconds": register_secs,
            "register_puts_per_second": (nodes * (1 + blobs.len())) as f64 / register_secs,
            "steady_record_writes_per_second": writes.load(Ordering::Relaxed) as f64 / seconds as f64,
            "steady_renewals_per_second": renewals.load(Ordering::Relaxed) as f64 / seconds as f64,
            "renewal_ms_p50": percentile(&mut renew, 0.5),
            "renewal_ms_p99": percentile(&mut renew, 0.99),
            "holders_lookup_ms_p50": percentile(&mut lookup_ms, 0.5),
            "holders_lookup_ms_p99": percentile(&mut lookup_ms, 0.99),
        })
    );
}
