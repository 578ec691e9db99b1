//! Publishing events to events.v1 (containers, tasks, images, networks,
//! volumes), with containerd's payload types where containerd has them (so
//! `ctr events` decodes them). Publishing never blocks or fails an
//! operation: events are best effort, as in containerd.

use crate::context::namespaced;
use molde_api::containerd::services::events::v1::{PublishRequest, events_client::EventsClient};
use prost::Message;
use tonic::transport::Channel;

#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    /// Publishes `event` (of containerd type `type_name`) under `topic`.
    pub fn publish(&self, ns: &str, topic: &str, type_name: &str, event: impl Message) {
        self.publish_as(ns, topic, &format!("containerd.events.{type_name}"), event)
    }

    /// Publishes `event` whose type URL is `type_url` (molde's own events).
    pub fn publish_as(&self, ns: &str, topic: &str, type_url: &str, event: impl Message) {
        let req = namespaced(
            ns,
            PublishRequest {
                topic: topic.to_string(),
                event: Some(prost_types::Any {
                    type_url: type_url.to_string(),
                    value: event.encode_to_vec(),
                }),
            },
        );
        let mut client = EventsClient::new(self.channel.clone());
        tokio::spawn(async move {
            if let Err(e) = client.publish(req).await {
                tracing::debug!(error = %e.message(), "event not published");
            }
        });
    }
}
