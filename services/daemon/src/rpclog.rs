//! One debug line and one metrics observation per gRPC call served: its
//! method, its gRPC code (when the answer carries it in its headers, as
//! every failed unary call does; a stream's is in its trailers and counts as
//! Ok here) and how long the answer took. A tower layer around every server
//! molded runs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

#[derive(Clone, Copy, Default)]
pub struct RpcLog;

/// What `Server::builder().layer(RpcLog)` stacks.
pub type Layers = tower::layer::util::Stack<RpcLog, tower::layer::util::Identity>;

impl<S> Layer<S> for RpcLog {
    type Service = Logged<S>;

    fn layer(&self, inner: S) -> Logged<S> {
        Logged { inner }
    }
}

#[derive(Clone)]
pub struct Logged<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for Logged<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let started = Instant::now();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let r = answer.await;
            let code = r
                .as_ref()
                .ok()
                .and_then(|resp| resp.headers().get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(|c| format!("{:?}", tonic::Code::from(c)))
                .unwrap_or_else(|| "Ok".into());
            crate::metrics::observe_rpc(&method, &code, started.elapsed().as_secs_f64());
            if tracing::enabled!(tracing::Level::DEBUG) {
                tracing::debug!(
                    method = %method,
                    code = %code,
                    millis = started.elapsed().as_secs_f64() * 1000.0,
                    "rpc"
                );
            }
            r
        })
    }
}
