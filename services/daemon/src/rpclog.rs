//! One debug line and one metrics observation per gRPC call served: its
//! method, its gRPC code (when the answer carries it in its headers, as
//! every failed unary call does; a stream's is in its trailers and counts as
//! Ok here) and how long the answer took; and the call's span (target
//! `molde_trace`, exported when `[tracing] otlp_endpoint` is set), a child
//! of the caller's span when the call carries trace context, the parent of
//! what serving it does. A tower layer around every server molded runs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

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
        let (service, rpc) = method.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
        let span = tracing::info_span!(
            target: molde_api::trace::TARGET,
            "rpc",
            otel.name = %method.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %rpc,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let _ = span.set_parent(molde_api::trace::extract(req.headers()));
        }
        // Made inside the span: a forwarded call carries it on.
        let answer = span.in_scope(|| self.inner.call(req));
        let current = span.clone();
        Box::pin(
            async move {
                let r = answer.await;
                // Ok unless the answer's headers carry a status (a failed unary call).
                let status = r
                    .as_ref()
                    .ok()
                    .and_then(|resp| resp.headers().get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0);
                let code = format!("{:?}", tonic::Code::from(status));
                crate::metrics::observe_rpc(&method, &code, started.elapsed().as_secs_f64());
                if !current.is_disabled() {
                    current.record("rpc.grpc.status_code", status as i64);
                    if status != 0 {
                        current.record("otel.status_code", "ERROR");
                    }
                }
                if tracing::enabled!(tracing::Level::DEBUG) {
                    tracing::debug!(
                        method = %method,
                        code = %code,
                        millis = started.elapsed().as_secs_f64() * 1000.0,
                        "rpc"
                    );
                }
                r
            }
            .instrument(span),
        )
    }
}
