//! `[tracing] otlp_endpoint`: OpenTelemetry traces exported over OTLP/gRPC
//! (opentelemetry-otlp's tonic exporter, batched), through the `tracing`
//! spans molded opens with target [`molde_api::trace::TARGET`]: one per RPC
//! served (`rpclog.rs`), its parent the caller's (W3C trace context in the
//! request's metadata), and the work beneath it. Each process is a
//! resource of its own: `service.name` molded, `molde.services` what it
//! hosts, `service.instance.id` its socket.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};

use crate::config::Config;

/// The exporter and the tracer the log's OTel layer uses; kept to flush at
/// exit. Must be made inside the runtime the exporter's channel runs on.
pub fn provider(cfg: &Config) -> anyhow::Result<Option<SdkTracerProvider>> {
    let t = &cfg.tracing;
    if t.otlp_endpoint.is_empty() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&t.otlp_endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| anyhow::anyhow!("[tracing] otlp_endpoint {}: {e}", t.otlp_endpoint))?;
    let hosted: Vec<&str> = crate::config::SERVICES
        .iter()
        .copied()
        .filter(|s| cfg.hosts(s))
        .collect();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("molded")
        .with_attributes([
            KeyValue::new("service.version", crate::info::VERSION),
            KeyValue::new("service.instance.id", cfg.address.clone()),
            KeyValue::new(
                "molde.services",
                if hosted.is_empty() {
                    "front".to_string()
                } else {
                    hosted.join(",")
                },
            ),
        ])
        .build();
    // Spans leave within half a second: traces show while the work goes on.
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_millis(500))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch)
                .build(),
        )
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            t.sampling_ratio,
        ))))
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(Some(provider))
}

/// The layer that turns molded's trace spans into OpenTelemetry spans.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("molded"))
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(molde_api::trace::TARGET, tracing::Level::INFO),
        )
}
