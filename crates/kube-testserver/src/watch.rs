//! WATCH: replay from history or initial events, then live events, bookmarks,
//! timeouts and abrupt drops, in the real server's newline-delimited JSON framing.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::resource::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{Shared, lock};
use crate::status::ApiError;
use crate::store::{EventType, StoredEvent, with_rv};

/// Which objects a LIST or WATCH is about, and how they are rendered.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub(crate) kind: ResourceKind,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    /// `Accept: ...;as=PartialObjectMetadata`: send only metadata.
    pub(crate) metadata_only: bool,
}

impl Filter {
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            let have = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            if have != ns {
                return false;
            }
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The object as sent in a watch event or GET: full with type meta, or a
    /// `meta.k8s.io/v1` `PartialObjectMetadata`.
    pub(crate) fn render(&self, obj: &Value) -> Value {
        if self.metadata_only {
            partial_metadata(obj)
        } else {
            obj.clone()
        }
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Value {
        let (kind, api_version) = if self.metadata_only {
            ("PartialObjectMetadata", "meta.k8s.io/v1")
        } else {
            (self.kind.kind(), self.kind.api_version())
        };
        let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": kind, "apiVersion": api_version, "metadata": metadata})
    }

    /// The event a watcher with this filter sees for a stored change, using
    /// the watch cache's rules: an update that makes an object stop matching
    /// is a `DELETED` (of the old state, at the new resourceVersion), one that
    /// makes it start matching is an `ADDED`.
    pub(crate) fn convert(&self, ev: &StoredEvent) -> Option<(EventType, Value)> {
        if ev.kind != self.kind {
            return None;
        }
        let cur = ev.ty != EventType::Deleted && self.matches(&ev.object);
        let old = ev.prev.as_deref().is_some_and(|p| self.matches(p));
        match (cur, old) {
            (true, false) => Some((EventType::Added, self.render(&ev.object))),
            (true, true) => Some((EventType::Modified, self.render(&ev.object))),
            (false, true) if ev.ty == EventType::Deleted => {
                Some((EventType::Deleted, self.render(&ev.object)))
            }
            (false, true) => {
                let prev = ev.prev.as_deref().map(|p| with_rv(p, ev.rv))?;
                Some((EventType::Deleted, self.render(&prev)))
            }
            (false, false) => None,
        }
    }
}

/// `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{...}}`
pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn line(ty: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// What a watch sends before live events.
pub(crate) enum Start {
    /// Replayed or synthetic events, then (for `sendInitialEvents=true`) the
    /// `k8s.io/initial-events-end` bookmark at `rv`.
    Events {
        events: Vec<(EventType, Value)>,
        initial_events_end: bool,
    },
    /// The requested resourceVersion is compacted: one `ERROR` event, then end.
    Expired(ApiError),
}

pub(crate) struct WatchSpec {
    pub(crate) filter: Filter,
    pub(crate) start: Start,
    /// Every change up to this resourceVersion is covered by `start`.
    pub(crate) start_rv: u64,
    pub(crate) rx: broadcast::Receiver<Arc<StoredEvent>>,
    pub(crate) bookmarks: bool,
    pub(crate) timeout: Option<Duration>,
}

pub(crate) type Chunk = Result<Bytes, io::Error>;

/// Counts an open watch for [`TestServer::open_watches`](crate::TestServer::open_watches).
struct OpenWatch {
    shared: Arc<Shared>,
    kind: ResourceKind,
}

impl OpenWatch {
    fn new(shared: Arc<Shared>, kind: ResourceKind) -> OpenWatch {
        *lock(&shared.open_watches).entry(kind).or_default() += 1;
        OpenWatch { shared, kind }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.shared.open_watches).get_mut(&self.kind) {
            *n = n.saturating_sub(1);
        }
    }
}

enum Exit {
    /// End the response cleanly (terminating chunk).
    Clean,
    /// Abort the connection without the terminating chunk.
    Abort,
    /// The client went away.
    Gone,
}

/// Runs one watch, writing newline-delimited events into `out` until the
/// timeout, a drop, or the client leaving.
pub(crate) async fn run(shared: Arc<Shared>, spec: WatchSpec, out: mpsc::Sender<Chunk>) {
    let _open = OpenWatch::new(shared.clone(), spec.filter.kind);
    let mut drops = shared.drop_watches.subscribe();
    let exit = stream_events(&shared, spec, &out, &mut drops).await;
    if let Exit::Abort = exit {
        let _ = out
            .send(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "watch dropped by the test server",
            )))
            .await;
    }
}

async fn send(
    out: &mpsc::Sender<Chunk>,
    drops: &mut tokio::sync::watch::Receiver<u64>,
    chunk: Bytes,
) -> Result<(), Exit> {
    tokio::select! {
        biased;
        _ = drops.changed() => Err(Exit::Abort),
        r = out.send(Ok(chunk)) => r.map_err(|_| Exit::Gone),
    }
}

async fn stream_events(
    shared: &Arc<Shared>,
    spec: WatchSpec,
    out: &mpsc::Sender<Chunk>,
    drops: &mut tokio::sync::watch::Receiver<u64>,
) -> Exit {
    let WatchSpec {
        filter,
        start,
        start_rv,
        mut rx,
        bookmarks,
        timeout,
    } = spec;
    match start {
        Start::Expired(err) => {
            return match send(out, drops, line("ERROR", &err.to_status())).await {
                Ok(()) => Exit::Clean,
                Err(e) => e,
            };
        }
        Start::Events {
            events,
            initial_events_end,
        } => {
            for (ty, obj) in events {
                if let Err(e) = send(out, drops, line(ty.as_str(), &obj)).await {
                    return e;
                }
            }
            if initial_events_end
                && let Err(e) = send(
                    out,
                    drops,
                    line("BOOKMARK", &filter.bookmark(start_rv, true)),
                )
                .await
            {
                return e;
            }
        }
    }

    let mut progress = start_rv;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut interval_rx = shared.bookmark_interval.subscribe();
    let mut next_bookmark = next_tick(*interval_rx.borrow_and_update());

    loop {
        let bookmark_at = if bookmarks { next_bookmark } else { None };
        tokio::select! {
            biased;
            _ = drops.changed() => return Exit::Abort,
            () = out.closed() => return Exit::Gone,
            () = sleep_until(deadline) => return Exit::Clean,
            _ = interval_rx.changed() => {
                next_bookmark = next_tick(*interval_rx.borrow_and_update());
            }
            () = sleep_until(bookmark_at) => {
                // Everything up to the store's current resourceVersion has been
                // broadcast already; forward what is still queued, then promise
                // that resourceVersion.
                let current = lock(&shared.store).rv();
                loop {
                    match rx.try_recv() {
                        Ok(ev) => {
                            progress = progress.max(ev.rv);
                            if let Some((ty, obj)) = filter.convert(&ev)
                                && let Err(e) = send(out, drops, line(ty.as_str(), &obj)).await
                            {
                                return e;
                            }
                        }
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(broadcast::error::TryRecvError::Lagged(_)) => return Exit::Clean,
                        Err(broadcast::error::TryRecvError::Closed) => return Exit::Clean,
                    }
                }
                progress = progress.max(current);
                if let Err(e) = send(out, drops, line("BOOKMARK", &filter.bookmark(progress, false))).await {
                    return e;
                }
                next_bookmark = next_tick(*interval_rx.borrow());
            }
            msg = rx.recv() => match msg {
                Ok(ev) => {
                    progress = progress.max(ev.rv);
                    if let Some((ty, obj)) = filter.convert(&ev)
                        && let Err(e) = send(out, drops, line(ty.as_str(), &obj)).await
                    {
                        return e;
                    }
                }
                // Too slow a consumer: the real server closes such watchers too;
                // the client resumes from its last resourceVersion.
                Err(broadcast::error::RecvError::Lagged(_)) => return Exit::Clean,
                Err(broadcast::error::RecvError::Closed) => return Exit::Clean,
            },
        }
    }
}

fn next_tick(interval: Duration) -> Option<Instant> {
    if interval.is_zero() {
        None
    } else {
        Some(Instant::now() + interval)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
