//! Split mode: a service hosted by another molded, forwarded request by request.
//!
//! The forwarder does not decode messages; it hands each HTTP/2 request, with
//! its metadata (namespace, lease), to a channel to the remote service and
//! streams the response back, so every RPC shape (unary and streaming) works.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use molde_api::client::Address;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

/// Forwards every call of one gRPC service to a remote address.
#[derive(Clone)]
pub struct Forward<N> {
    channel: Channel,
    address: String,
    _name: std::marker::PhantomData<N>,
}

impl<N> Forward<N> {
    pub fn new(addr: &Address) -> Self {
        Self {
            channel: molde_api::client::channel(addr),
            address: addr.to_string(),
            _name: std::marker::PhantomData,
        }
    }
}

/// Names a forwarded service (gRPC routes by the service's full name).
pub trait ServiceName: Clone + Send + Sync + 'static {
    const NAME: &'static str;
}

impl<N: ServiceName> NamedService for Forward<N> {
    const NAME: &'static str = N::NAME;
}

impl<N: ServiceName> Service<http::Request<Body>> for Forward<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The forwarded call is a child of the span serving it here.
        molde_api::trace::inject(req.headers_mut());
        let channel = self.channel.clone();
        let address = self.address.clone();
        Box::pin(async move {
            match channel.oneshot(req).await {
                Ok(resp) => Ok(resp),
                Err(e) => Ok(tonic::Status::unavailable(format!(
                    "{} service at {address} is unreachable: {e}",
                    N::NAME
                ))
                .into_http()),
            }
        })
    }
}

macro_rules! service_names {
    ($($ty:ident => $name:literal),* $(,)?) => {
        $(
            #[derive(Clone)]
            pub struct $ty;
            impl ServiceName for $ty {
                const NAME: &'static str = $name;
            }
        )*
    };
}

service_names! {
    ContentName => "containerd.services.content.v1.Content",
    ImagesName => "containerd.services.images.v1.Images",
    LeasesName => "containerd.services.leases.v1.Leases",
    NamespacesName => "containerd.services.namespaces.v1.Namespaces",
    GcName => "molde.services.gc.v1.GC",
    SnapshotsName => "containerd.services.snapshots.v1.Snapshots",
    DiffName => "containerd.services.diff.v1.Diff",
    TransferName => "molde.services.transfer.v1.Transfer",
    ContainersName => "containerd.services.containers.v1.Containers",
    TasksName => "containerd.services.tasks.v1.Tasks",
    RuntimeName => "molde.services.runtime.v1.Runtime",
    EventsName => "containerd.services.events.v1.Events",
    BuilderName => "molde.services.builder.v1.Builder",
}
