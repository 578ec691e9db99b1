//! Trace context in gRPC metadata (W3C `traceparent`/`tracestate`), so one
//! request's spans form one trace across processes: the CLI, the front and
//! the split-mode services, cluster peers. Every request built with
//! [`crate::client::request`] carries the context of the span it is made
//! in; a server takes its RPC span's parent from [`extract`]. Both go
//! through OpenTelemetry's global propagator, which molded sets only when
//! it exports traces (`[tracing] otlp_endpoint`): otherwise nothing is
//! added and nothing read.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of the spans molded exports; other targets stay in
/// the log.
pub const TARGET: &str = "molde_trace";

struct Headers<'a>(&'a mut http::HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct ReadHeaders<'a>(&'a http::HeaderMap);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Adds the current span's context to outgoing headers.
pub fn inject(headers: &mut http::HeaderMap) {
    let span = tracing::Span::current();
    if span.is_none() {
        return;
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Headers(headers)));
}

/// Adds the current span's context to a request's metadata.
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    if tracing::Span::current().is_none() {
        return;
    }
    let mut headers = std::mem::take(metadata).into_headers();
    inject(&mut headers);
    *metadata = tonic::metadata::MetadataMap::from_headers(headers);
}

/// The context a caller sent, for the span that serves it.
pub fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&ReadHeaders(headers)))
}
