//! An OpenTelemetry collector for tests: the OTLP/gRPC trace service
//! (opentelemetry-proto's), on a free loopback port, keeping every span it
//! is sent with its resource's attributes, so a test can follow parent
//! links across the processes that exported them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// One span as received.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    /// Hex, as W3C trace context writes them; the parent is empty for a root.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    /// The exporting process's resource (`service.name`, `service.instance.id`, ...).
    pub resource: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Span>>>);

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| map(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(Span {
                        name: s.name.clone(),
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent_span_id: hex::encode(&s.parent_span_id),
                        attributes: map(&s.attributes),
                        resource: resource.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running collector; stops when dropped.
pub struct Collector {
    /// `http://127.0.0.1:PORT`, what `[tracing] otlp_endpoint` takes.
    pub endpoint: String,
    received: Received,
    _rt: tokio::runtime::Runtime,
}

impl Collector {
    pub fn start() -> Collector {
        Collector::start_on("127.0.0.1")
    }

    /// A collector listening on `ip` (a test LAN's gateway, for molded
    /// processes in the LAN's hosts).
    pub fn start_on(ip: &str) -> Collector {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let received = Received::default();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(format!("{ip}:0")))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let svc = TraceServiceServer::new(received.clone());
        rt.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Collector {
            endpoint,
            received,
            _rt: rt,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.received.0.lock().unwrap().clone()
    }

    /// Waits (up to `secs`) until the spans received satisfy `done`; them.
    pub fn wait_for(&self, secs: u64, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        for _ in 0..secs * 10 {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what} within {secs}s; received: {:#?}", self.spans());
    }
}
