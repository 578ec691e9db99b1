//! Generated gRPC code: containerd's wire-compatible APIs and molde's own.
//!
//! Module paths follow the protobuf packages, so `containerd::services::content::v1`
//! is `containerd.services.content.v1` on the wire.

#![allow(clippy::all, missing_docs)]

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// containerd's cgroup metrics, carried in tasks.v1 Metrics' `Any`.
pub mod io {
    pub mod containerd {
        pub mod cgroups {
            pub mod v1 {
                tonic::include_proto!("io.containerd.cgroups.v1");
            }
            pub mod v2 {
                tonic::include_proto!("io.containerd.cgroups.v2");
            }
        }
    }
}

pub mod containerd {
    pub mod types {
        tonic::include_proto!("containerd.types");
    }
    /// containerd's event payloads (`containerd.events`).
    pub mod events {
        tonic::include_proto!("containerd.events");
    }
    /// containerd's `containerd.v1.types` package (task processes).
    pub mod v1 {
        pub mod types {
            tonic::include_proto!("containerd.v1.types");
        }
    }
    pub mod services {
        pub mod content {
            pub mod v1 {
                tonic::include_proto!("containerd.services.content.v1");
            }
        }
        pub mod images {
            pub mod v1 {
                tonic::include_proto!("containerd.services.images.v1");
            }
        }
        pub mod leases {
            pub mod v1 {
                tonic::include_proto!("containerd.services.leases.v1");
            }
        }
        pub mod namespaces {
            pub mod v1 {
                tonic::include_proto!("containerd.services.namespaces.v1");
            }
        }
        pub mod version {
            pub mod v1 {
                tonic::include_proto!("containerd.services.version.v1");
            }
        }
        pub mod snapshots {
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
        pub mod diff {
            pub mod v1 {
                tonic::include_proto!("containerd.services.diff.v1");
            }
        }
        pub mod containers {
            pub mod v1 {
                tonic::include_proto!("containerd.services.containers.v1");
            }
        }
        pub mod tasks {
            pub mod v1 {
                tonic::include_proto!("containerd.services.tasks.v1");
            }
        }
        pub mod events {
            pub mod v1 {
                tonic::include_proto!("containerd.services.events.v1");
            }
        }
        pub mod introspection {
            pub mod v1 {
                tonic::include_proto!("containerd.services.introspection.v1");
            }
        }
    }
}

pub mod molde {
    pub mod services {
        pub mod transfer {
            pub mod v1 {
                tonic::include_proto!("molde.services.transfer.v1");
            }
        }
        pub mod gc {
            pub mod v1 {
                tonic::include_proto!("molde.services.gc.v1");
            }
        }
        pub mod runtime {
            pub mod v1 {
                tonic::include_proto!("molde.services.runtime.v1");
            }
        }
        pub mod builder {
            pub mod v1 {
                tonic::include_proto!("molde.services.builder.v1");
            }
        }
        pub mod cluster {
            pub mod v1 {
                tonic::include_proto!("molde.services.cluster.v1");
            }
        }
    }
}

/// gRPC metadata key that selects the namespace, as containerd clients send it.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// A runtime.v1 `Run` whose container could not start says in this
/// trailer the status `molde run` exits with: 126 (the command cannot be
/// run), 127 (not found) or 125 (anything else), as docker's run does.
pub const EXIT_CODE_HEADER: &str = "molde-exit-code";

/// An events.v1 Subscribe with this header (Unix time in nanoseconds) gets
/// the past events since then first (`molde events --since`).
pub const EVENTS_SINCE_HEADER: &str = "molde-events-since";
/// gRPC metadata key that names the lease a request's new resources belong to.
pub const LEASE_HEADER: &str = "containerd-lease";
/// Namespace used when a request names none.
pub const DEFAULT_NAMESPACE: &str = "default";

pub mod client;
pub mod trace;
