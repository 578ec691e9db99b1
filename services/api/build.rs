//! Generates servers and clients for every .proto under the repository's proto/.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: one build
    // cache serves clones of the repository at other paths.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "containerd/types/descriptor.proto",
        "containerd/types/platform.proto",
        "containerd/types/mount.proto",
        "containerd/types/metrics.proto",
        "containerd/cgroups/v1/metrics.proto",
        "containerd/cgroups/v2/metrics.proto",
        "containerd/types/task/task.proto",
        "google/rpc/status.proto",
        "containerd/services/content/v1/content.proto",
        "containerd/services/images/v1/images.proto",
        "containerd/services/leases/v1/leases.proto",
        "containerd/services/namespaces/v1/namespace.proto",
        "containerd/services/version/v1/version.proto",
        "containerd/services/introspection/v1/introspection.proto",
        "containerd/services/snapshots/v1/snapshots.proto",
        "containerd/services/diff/v1/diff.proto",
        "containerd/services/containers/v1/containers.proto",
        "containerd/services/tasks/v1/tasks.proto",
        "containerd/services/events/v1/events.proto",
        "containerd/events/events.proto",
        "molde/gc/v1/gc.proto",
        "molde/transfer/v1/transfer.proto",
        "molde/runtime/v1/runtime.proto",
        "molde/builder/v1/builder.proto",
        "molde/cluster/v1/cluster.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Blob bytes stay reference-counted slices of the receive buffer: no copy per chunk.
        .bytes(".containerd.services.content.v1.WriteContentRequest.data")
        .bytes(".containerd.services.content.v1.ReadContentResponse.data")
        .bytes(".molde.services.transfer.v1.ArchiveChunk.data")
        .bytes(".molde.services.transfer.v1.ImportRequest.data")
        .compile_protos(&paths, &[root])?;
    Ok(())
}
