//! Reading layer blobs from the content service.
//!
//! The slow path streams a blob over content.v1 `Read`; when the content
//! service runs in the same process (or shares the host and its root), the
//! named fast path opens the committed blob file directly. Both check the
//! namespace first with content.v1 `Info`: a blob another namespace holds is
//! not this namespace's to read.

use std::io::{self, Read};
use std::path::PathBuf;

use bytes::Bytes;
use futures::StreamExt;
use molde_api::containerd::services::content::v1::{
    InfoRequest, ReadContentRequest, content_client::ContentClient,
};
use molde_common::Digest;
use molde_common::context::namespaced;
use tonic::transport::Channel;

use crate::error::{Result, SnapshotError};

#[derive(Clone)]
pub struct ContentAccess {
    channel: Channel,
    /// The content service's root (holding `blobs/`), when it is on this host.
    local_root: Option<PathBuf>,
}

impl ContentAccess {
    pub fn new(channel: Channel, local_root: Option<PathBuf>) -> Self {
        Self { channel, local_root }
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The size of a blob this namespace holds.
    pub async fn size(&self, ns: &str, digest: &Digest) -> Result<i64> {
        let info = ContentClient::new(self.channel.clone())
            .info(namespaced(
                ns,
                InfoRequest {
                    digest: digest.to_string(),
                },
            ))
            .await
            .map_err(SnapshotError::from)?
            .into_inner()
            .info
            .unwrap_or_default();
        Ok(info.size)
    }

    /// The blob's bytes: the committed file itself on the fast path, else a
    /// blocking reader of a content.v1 Read stream.
    pub async fn open(&self, ns: &str, digest: &Digest) -> Result<Blob> {
        self.size(ns, digest).await?;
        if let Some(root) = &self.local_root {
            let p = root
                .join("blobs")
                .join(digest.algorithm().name())
                .join(digest.hex());
            if let Ok(f) = std::fs::File::open(&p) {
                return Ok(Blob::File(f));
            }
        }
        let mut stream = ContentClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .read(namespaced(
                ns,
                ReadContentRequest {
                    digest: digest.to_string(),
                    offset: 0,
                    size: 0,
                },
            ))
            .await
            .map_err(SnapshotError::from)?
            .into_inner();
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Bytes>>(8);
        tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                let item = m
                    .map(|m| m.data)
                    .map_err(|s| io::Error::other(s.message().to_string()));
                let stop = item.is_err();
                if tx.send(item).is_err() || stop {
                    return;
                }
            }
        });
        Ok(Blob::Stream(Box::new(ChannelReader {
            rx,
            cur: Bytes::new(),
        })))
    }
}

/// A layer blob to apply.
pub enum Blob {
    File(std::fs::File),
    Stream(Box<dyn Read + Send>),
}

/// Reads the chunks a task receives from a Read stream.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.cur = chunk?,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}
