//! containerd's events.v1: a bus in every molded process. Services publish to
//! it over gRPC (the runtime's container and task events); containerd clients
//! subscribe (`ctr events`), filtering on `topic` and `namespace`.

use molde_api::containerd::services::events::v1 as api;
use molde_meta::filter::{Fields, Filter};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct EventsService {
    bus: broadcast::Sender<api::Envelope>,
}

impl EventsService {
    pub fn new() -> Self {
        Self {
            bus: broadcast::channel(1024).0,
        }
    }
}

struct EnvelopeFields<'a>(&'a api::Envelope);

impl Fields for EnvelopeFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "topic" => Some(self.0.topic.clone()),
            "namespace" => Some(self.0.namespace.clone()),
            _ => None,
        }
    }
}

fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

type EnvelopeStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<api::Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl api::events_server::Events for EventsService {
    async fn publish(&self, req: Request<api::PublishRequest>) -> Result<Response<()>, Status> {
        let ns = molde_common::RequestContext::of(&req)
            .map_err(Status::from)?
            .namespace;
        let r = req.into_inner();
        if !r.topic.starts_with('/') {
            return Err(Status::invalid_argument(format!(
                "event topic {:?} must start with '/'",
                r.topic
            )));
        }
        let _ = self.bus.send(api::Envelope {
            timestamp: Some(now()),
            namespace: ns,
            topic: r.topic,
            event: r.event,
        });
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<api::ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("forward needs an envelope"))?;
        let _ = self.bus.send(env);
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        req: Request<api::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter =
            Filter::parse_all(&req.get_ref().filters).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stream = BroadcastStream::new(self.bus.subscribe()).filter_map(move |e| match e {
            Ok(env) if filter.matches(&EnvelopeFields(&env)) => Some(Ok(env)),
            // A subscriber that falls behind loses the oldest events, not the stream.
            _ => None,
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
