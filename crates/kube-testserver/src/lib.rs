//! A local Kubernetes API server for tests.
//!
//! No real API server can run in this project's test environment, so the
//! tests of `ctreap` talk to this one instead, through unmodified `kube`
//! clients (`Api`, `kube::runtime::watcher`, `reflector`) over plain HTTP on
//! `127.0.0.1`. It imitates the parts of the real API server's protocol that
//! list/watch clients depend on, including their error and re-list paths:
//!
//! - **Resources**: `core/v1` Services, Nodes, Pods and Namespaces,
//!   `discovery.k8s.io/v1` EndpointSlices, and Events in both of their forms
//!   (`events.k8s.io/v1`, which controllers write, and `core/v1`, which
//!   `kubectl get events` and `kubectl describe` read: one object, written
//!   through either and seen in both at the same resourceVersion, with the
//!   real field selectors, `involvedObject.name` and the like)
//!   ([`ResourceKind`]), at the real
//!   paths (`/api/v1/services`, `/api/v1/namespaces/{ns}/services/{name}`,
//!   `/apis/discovery.k8s.io/v1/endpointslices`, `/api/v1/nodes/{name}`, and
//!   the deprecated `/watch/` prefix), plus `GET /version`, `/healthz`, and
//!   discovery (`/api`, `/apis`, `/api/v1`, `/apis/discovery.k8s.io/v1`),
//!   which `kube`'s watcher does not need but `kubectl` does.
//! - **resourceVersion**: one global, increasing counter across all types,
//!   like etcd's revision; every write stamps it on the object. Creates set
//!   `uid` and `creationTimestamp`.
//! - **LIST** ("Efficient detection of changes", "Retrieving large results
//!   sets in chunks"): `labelSelector` (`=`, `==`, `!=`, exists, `!key`, `in`,
//!   `notin`, `<`, `>`), `fieldSelector` (`metadata.name`,
//!   `metadata.namespace` and the real per-type fields, `=`/`==`/`!=`),
//!   `limit` + opaque `continue` pages cut from one snapshot,
//!   `resourceVersion`/`resourceVersionMatch` (`Exact` reads a past state or
//!   answers `410 Expired`). Items omit `kind`/`apiVersion`, as the real
//!   server's do. `Accept: ...;as=PartialObjectMetadataList` is honoured.
//! - **WATCH**: chunked newline-delimited JSON events; replay from a bounded
//!   history after `resourceVersion=N`, `ERROR` with `410 Expired` ("too old
//!   resource version") once `N` is compacted, periodic `BOOKMARK`s for
//!   `allowWatchBookmarks=true`, `timeoutSeconds`, selectors (with the watch
//!   cache's rule that an update leaving the selection is a `DELETED`), and
//!   streaming lists (`sendInitialEvents=true` with
//!   `resourceVersionMatch=NotOlderThan`, ending the initial events with a
//!   bookmark annotated `k8s.io/initial-events-end`).
//! - **Writes** over HTTP: `POST`, `PUT` (optimistic concurrency on
//!   `resourceVersion`), `DELETE` (with preconditions), and `PATCH` (merge
//!   patch; strategic merge and server-side apply approximated as merge).
//! - **Errors**: `Status` bodies with the real reasons and codes: `400` for
//!   unparsable parameters, `404` for unknown paths and objects, `409`,
//!   `410`, `422` for option combinations the real server rejects, `503`
//!   while [`TestServer::set_unavailable`], or for the requests a [`Fault`] selects
//!   ([`TestServer::set_fault`]: one resource type, one verb, or the later pages of a
//!   paged list).
//!
//! Tests drive it through [`TestServer`]: change objects ([`TestServer::apply`],
//! [`TestServer::delete`]), inject failures ([`TestServer::compact`],
//! [`TestServer::drop_watches`], [`TestServer::set_unavailable`],
//! [`TestServer::set_fault`], [`TestServer::set_list_page_limit`],
//! [`TestServer::restart`]), write bursts ([`TestServer::apply_all`]), and observe requests
//! ([`TestServer::request_count`]).
//!
//! # Notes for test writers (how `kube` 5 behaves against it)
//!
//! - `watcher` opens its WATCH only when its stream is polled after
//!   `InitDone`; changes made before that are not lost, because the watch
//!   resumes from the LIST's resourceVersion and the history replays them.
//!   [`TestServer::wait_for_watches`] is only meaningful while something
//!   polls the stream (e.g. a spawned reflector).
//! - `kube::Client` retries `503`, `504` and `429` by default (up to 15
//!   times, exponential from 5 ms), so [`TestServer::set_unavailable`] shows up
//!   as slow requests, not errors; set `kube::Config::default_retry = false`
//!   to see the `503` itself.
//! - Always put a backoff on a spawned watcher (`.default_backoff()` or any
//!   `.backoff(..)`). Without one, once the client's runtime shuts down (for
//!   example when a test panics) every request fails synchronously and the
//!   watcher loops inside a single poll: the runtime never finishes shutting
//!   down and the test hangs while its memory grows if errors are collected.
//! - Periodic bookmarks move a watcher's resourceVersion forward even without
//!   changes to its type, so after [`TestServer::compact`] it may resume
//!   without a `410`. To force a re-list, use a server with
//!   [`ServerConfig::bookmark_interval`] `Duration::ZERO` (or call
//!   `compact()` and `drop_watches()` together and make a change in between
//!   that the watcher has not seen).
//!
//! Not imitated: authentication and authorization, admission, defaulting and
//! schema validation, finalizers and graceful deletion, subresources
//! (`/status`), `dryRun`, protobuf and CBOR, Table output, JSON Patch, field
//! managers, and watch-cache staleness (reads are always of the latest state).

mod api;
mod error;
mod event;
mod kubeconfig;
mod resource;
mod selector;
mod server;
mod status;
mod store;
mod watch;

pub use error::Error;
pub use kubeconfig::CONTEXT_NAME;
pub use resource::ResourceKind;
pub use server::{Fault, RequestRecord, ServerConfig, TestServer, Verb};
