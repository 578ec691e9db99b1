//! containerd's events.v1: a bus in every molded process. Services publish to
//! it over gRPC (container, task, image, network and volume events);
//! containerd clients subscribe (`ctr events`), filtering on `topic` and
//! `namespace`. The last HISTORY events are kept (in memory, as docker
//! keeps its own): a subscriber that sends the `molde-events-since` header
//! (Unix time in nanoseconds) gets those from then on first — `molde
//! events --since`.

use molde_api::containerd::services::events::v1 as api;
use molde_meta::filter::{Fields, Filter};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

/// How many past events are kept for `--since`.
const HISTORY: usize = 4096;
use molde_api::EVENTS_SINCE_HEADER as SINCE_HEADER;

#[derive(Clone)]
pub struct EventsService {
    bus: broadcast::Sender<api::Envelope>,
    history: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<api::Envelope>>>,
}

impl EventsService {
    pub fn new() -> Self {
        Self {
            bus: broadcast::channel(1024).0,
            history: Default::default(),
        }
    }

    fn send(&self, env: api::Envelope) {
        {
            let mut h = self.history.lock().expect("event history");
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(env.clone());
        }
        let _ = self.bus.send(env);
    }
}

fn nanos(t: Option<&prost_types::Timestamp>) -> i128 {
    t.map_or(0, |t| t.seconds as i128 * 1_000_000_000 + t.nanos as i128)
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
        self.send(api::Envelope {
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
        self.send(env);
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        req: Request<api::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let since = match req.metadata().get(SINCE_HEADER) {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.parse::<i128>().ok())
                    .ok_or_else(|| {
                        Status::invalid_argument(format!("{SINCE_HEADER}: Unix time in nanoseconds"))
                    })?,
            ),
            None => None,
        };
        let filter =
            Filter::parse_all(&req.get_ref().filters).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Subscribed before the history is read: nothing falls between.
        let live = self.bus.subscribe();
        let past: Vec<api::Envelope> = match since {
            Some(since) => self
                .history
                .lock()
                .expect("event history")
                .iter()
                .filter(|e| nanos(e.timestamp.as_ref()) >= since && filter.matches(&EnvelopeFields(e)))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        // What the history gave is not given again by the live stream.
        let last = past.last().map(|e| nanos(e.timestamp.as_ref()));
        let stream = tokio_stream::iter(past.into_iter().map(Ok)).chain(
            BroadcastStream::new(live).filter_map(move |e| match e {
                Ok(env)
                    if filter.matches(&EnvelopeFields(&env))
                        && last.is_none_or(|l| nanos(env.timestamp.as_ref()) > l) =>
                {
                    Some(Ok(env))
                }
                // A subscriber that falls behind loses the oldest events, not the stream.
                _ => None,
            }),
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
