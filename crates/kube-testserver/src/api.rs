//! The HTTP side: routing, query parameters, LIST/GET/WATCH and writes, and
//! discovery, answering as the real API server does.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::resource::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{RequestRecord, Shared, Verb, lock};
use crate::status::ApiError;
use crate::store::{EventType, Preconditions, WriteMode, key_of};
use crate::watch::{self, Filter, Start, WatchSpec};

pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// The real server's default `maxRequestBodyBytes` (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// The Kubernetes version this server claims to be.
pub(crate) const KUBE_MAJOR: &str = "1";
pub(crate) const KUBE_MINOR: &str = "33";

#[derive(Debug, Clone, PartialEq)]
enum Route {
    Root,
    Version,
    Health,
    Api,
    Apis,
    GroupVersion {
        group: String,
        version: String,
    },
    Collection {
        kind: ResourceKind,
        namespace: Option<String>,
        watch_prefix: bool,
    },
    Object {
        kind: ResourceKind,
        namespace: Option<String>,
        name: String,
        watch_prefix: bool,
    },
    NotFound,
}

impl Route {
    fn parse(path: &str) -> Route {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segs.as_slice() {
            [] => Route::Root,
            ["version"] => Route::Version,
            ["healthz" | "livez" | "readyz", ..] => Route::Health,
            ["api"] => Route::Api,
            ["apis"] => Route::Apis,
            ["api", version, rest @ ..] => Route::resource("", version, rest),
            ["apis", group, version, rest @ ..] => Route::resource(group, version, rest),
            _ => Route::NotFound,
        }
    }

    fn resource(group: &str, version: &str, rest: &[&str]) -> Route {
        let served = ResourceKind::ALL
            .iter()
            .any(|k| k.group() == group && k.version() == version);
        if !served {
            return Route::NotFound;
        }
        let (watch_prefix, rest) = match rest {
            ["watch", tail @ ..] => (true, tail),
            _ => (false, rest),
        };
        let kind_at = |plural: &str| ResourceKind::from_path(group, version, plural);
        match rest {
            [] if !watch_prefix => Route::GroupVersion {
                group: group.to_string(),
                version: version.to_string(),
            },
            ["namespaces", ns, plural, tail @ ..] => match (kind_at(plural), tail) {
                (Some(kind), []) if kind.namespaced() => Route::Collection {
                    kind,
                    namespace: Some((*ns).to_string()),
                    watch_prefix,
                },
                (Some(kind), [name]) if kind.namespaced() => Route::Object {
                    kind,
                    namespace: Some((*ns).to_string()),
                    name: (*name).to_string(),
                    watch_prefix,
                },
                _ => Route::NotFound,
            },
            [plural] => match kind_at(plural) {
                Some(kind) => Route::Collection {
                    kind,
                    namespace: None,
                    watch_prefix,
                },
                None => Route::NotFound,
            },
            [plural, name] => match kind_at(plural) {
                Some(kind) if !kind.namespaced() => Route::Object {
                    kind,
                    namespace: None,
                    name: (*name).to_string(),
                    watch_prefix,
                },
                _ => Route::NotFound,
            },
            _ => Route::NotFound,
        }
    }

    fn kind_namespace(&self) -> (Option<ResourceKind>, Option<String>) {
        match self {
            Route::Collection {
                kind, namespace, ..
            }
            | Route::Object {
                kind, namespace, ..
            } => (Some(*kind), namespace.clone()),
            _ => (None, None),
        }
    }

    fn watch_prefix(&self) -> bool {
        matches!(
            self,
            Route::Collection {
                watch_prefix: true,
                ..
            } | Route::Object {
                watch_prefix: true,
                ..
            }
        )
    }
}

/// The list/watch query parameters (`metav1.ListOptions`).
#[derive(Debug, Clone, Default)]
struct Query {
    watch: bool,
    label_selector: String,
    field_selector: String,
    resource_version: String,
    resource_version_match: Option<String>,
    limit: Option<u64>,
    continue_token: String,
    timeout_seconds: Option<u64>,
    allow_watch_bookmarks: bool,
    send_initial_events: Option<bool>,
    dry_run: bool,
}

/// Go's `strconv.ParseBool`, which the real server uses for query booleans.
fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid value for {name}: {v:?}: strconv.ParseBool: parsing {v:?}: invalid syntax"
        ))),
    }
}

fn parse_uint(name: &str, v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid value for {name}: {v:?}: must be a non-negative integer"
        ))
    })
}

impl Query {
    fn parse(raw: &str) -> Result<Query, ApiError> {
        let mut q = Query::default();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            match k.as_ref() {
                "watch" => q.watch = parse_bool("watch", &v)?,
                "labelSelector" => q.label_selector = v.into_owned(),
                "fieldSelector" => q.field_selector = v.into_owned(),
                "resourceVersion" => q.resource_version = v.into_owned(),
                "resourceVersionMatch" => {
                    q.resource_version_match = Some(v.into_owned()).filter(|s| !s.is_empty());
                }
                "limit" => q.limit = Some(parse_uint("limit", &v)?).filter(|l| *l > 0),
                "continue" => q.continue_token = v.into_owned(),
                "timeoutSeconds" => {
                    // 0 means "the server's default", as in the real server.
                    q.timeout_seconds = Some(parse_uint("timeoutSeconds", &v)?).filter(|t| *t > 0);
                }
                "allowWatchBookmarks" => {
                    q.allow_watch_bookmarks = parse_bool("allowWatchBookmarks", &v)?;
                }
                "sendInitialEvents" => {
                    q.send_initial_events = Some(parse_bool("sendInitialEvents", &v)?);
                }
                "dryRun" => q.dry_run = !v.is_empty(),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// A `resourceVersion` parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rv {
    Unset,
    Zero,
    At(u64),
}

fn parse_rv(s: &str) -> Result<Rv, ApiError> {
    match s {
        "" => Ok(Rv::Unset),
        "0" => Ok(Rv::Zero),
        _ => s.parse::<u64>().map(Rv::At).map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resource version {s:?}: must be a decimal integer"
            ))
        }),
    }
}

/// Whether the client asked for `PartialObjectMetadata` (`kube`'s
/// `metadata_watcher` / `list_metadata`). `406` if nothing acceptable is offered.
fn metadata_only(req: &Request<Incoming>) -> Result<bool, ApiError> {
    let Some(accept) = req.headers().get(hyper::header::ACCEPT) else {
        return Ok(false);
    };
    let accept = accept.to_str().unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(false);
    }
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !matches!(media, "application/json" | "*/*" | "application/*") {
            continue;
        }
        let as_param = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim() == "as")
            .map(|(_, v)| v.trim().to_string());
        match as_param.as_deref() {
            None => return Ok(false),
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") => return Ok(true),
            Some(_) => {}
        }
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        format!(
            "only the following media types are accepted: application/json, application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1 (got {accept:?})"
        ),
    ))
}

pub(crate) fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

fn json_response(status: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(full_body(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// Answers one HTTP request and records it.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let route = Route::parse(&path);
    let query = Query::parse(&raw_query);
    let watching = route.watch_prefix() || query.as_ref().is_ok_and(|q| q.watch);
    let verb = match (&route, &method) {
        (Route::Collection { .. } | Route::Object { .. }, &Method::GET) if watching => Verb::Watch,
        (Route::Collection { .. }, &Method::GET) => Verb::List,
        (Route::Object { .. }, &Method::GET) => Verb::Get,
        (Route::Collection { .. }, &Method::POST) => Verb::Create,
        (Route::Object { .. }, &Method::PUT) => Verb::Update,
        (Route::Object { .. }, &Method::PATCH) => Verb::Patch,
        (Route::Object { .. }, &Method::DELETE) => Verb::Delete,
        _ => Verb::Other,
    };
    let (kind, namespace) = route.kind_namespace();
    let faulted = kind.and_then(|k| shared.faulted(k, verb, &raw_query));
    let response = if shared.unavailable.load(Ordering::SeqCst) || faulted == Some(false) {
        error_response(&ApiError::unavailable())
    } else if let (Some(true), Some(k)) = (faulted, kind) {
        error_response(&ApiError::forbidden(k, verb, namespace.as_deref()))
    } else {
        let result = match query {
            Ok(q) => dispatch(&shared, req, route, verb, q).await,
            Err(e) => Err(e),
        };
        result.unwrap_or_else(|e| error_response(&e))
    };
    shared.record(RequestRecord {
        method: method.to_string(),
        path,
        query: raw_query,
        verb,
        kind,
        namespace,
        status: response.status().as_u16(),
    });
    response
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    route: Route,
    verb: Verb,
    q: Query,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    if q.dry_run
        && matches!(
            verb,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
        )
    {
        return Err(ApiError::bad_request(
            "dryRun is not supported by kube-testserver",
        ));
    }
    match route {
        Route::NotFound => Err(ApiError::no_route()),
        _ if method != Method::GET && verb == Verb::Other => {
            Err(ApiError::method_not_allowed(method.as_str()))
        }
        Route::Root => Ok(json_response(200, &root_paths())),
        Route::Version => Ok(json_response(200, &version_info())),
        Route::Health => {
            let mut r = Response::new(full_body("ok"));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Ok(r)
        }
        Route::Api => Ok(json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            }),
        )),
        Route::Apis => Ok(json_response(200, &api_groups())),
        Route::GroupVersion { group, version } => {
            Ok(json_response(200, &api_resources(&group, &version)))
        }
        Route::Collection {
            kind, namespace, ..
        } => match verb {
            Verb::Watch => {
                let meta = metadata_only(&req)?;
                start_watch(shared, kind, namespace, None, &q, meta)
            }
            Verb::List => {
                let meta = metadata_only(&req)?;
                list(shared, kind, namespace, &q, meta)
            }
            Verb::Create => {
                let body = read_body(req).await?;
                create(shared, kind, namespace, body)
            }
            _ => Err(ApiError::method_not_allowed(method.as_str())),
        },
        Route::Object {
            kind,
            namespace,
            name,
            ..
        } => match verb {
            Verb::Watch => {
                let meta = metadata_only(&req)?;
                start_watch(shared, kind, namespace, Some(name), &q, meta)
            }
            Verb::Get => {
                let meta = metadata_only(&req)?;
                get(shared, kind, namespace, &name, meta)
            }
            Verb::Update => {
                let body = read_body(req).await?;
                update(shared, kind, namespace, &name, body)
            }
            Verb::Patch => {
                let content_type = req
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let body = read_body(req).await?;
                patch(shared, kind, namespace, &name, &content_type, body)
            }
            Verb::Delete => {
                let body = read_body(req).await?;
                delete(shared, kind, namespace, &name, &body)
            }
            _ => Err(ApiError::method_not_allowed(method.as_str())),
        },
    }
}

// ---- discovery ---------------------------------------------------------

fn root_paths() -> Value {
    let mut paths = vec![
        "/api".to_string(),
        "/api/v1".to_string(),
        "/apis".to_string(),
        "/healthz".to_string(),
        "/livez".to_string(),
        "/readyz".to_string(),
        "/version".to_string(),
    ];
    for k in ResourceKind::ALL {
        if !k.group().is_empty() {
            paths.push(format!("/apis/{}", k.group()));
            paths.push(k.group_version_path());
        }
    }
    paths.sort();
    paths.dedup();
    json!({ "paths": paths })
}

pub(crate) fn version_info() -> Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "emulationMajor": KUBE_MAJOR,
        "emulationMinor": KUBE_MINOR,
        "minCompatibilityMajor": KUBE_MAJOR,
        "minCompatibilityMinor": "32",
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0+kube-testserver"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": format!("{}/{arch}", std::env::consts::OS),
    })
}

fn api_groups() -> Value {
    let mut groups: Vec<&str> = ResourceKind::ALL
        .iter()
        .map(|k| k.group())
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn api_resources(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = ResourceKind::ALL
        .iter()
        .filter(|k| k.group() == group && k.version() == version)
        .map(|k| {
            json!({
                "name": k.plural(),
                "singularName": k.singular(),
                "namespaced": k.namespaced(),
                "kind": k.kind(),
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortNames": k.short_names(),
            })
        })
        .collect();
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

// ---- reads -------------------------------------------------------------

fn filter_for(
    kind: ResourceKind,
    namespace: Option<String>,
    q: &Query,
    name: Option<&str>,
    metadata_only: bool,
) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(&q.label_selector).map_err(ApiError::bad_request)?;
    let mut fields =
        FieldSelector::parse(&q.field_selector, kind).map_err(ApiError::bad_request)?;
    if let Some(name) = name {
        fields = fields.and(FieldSelector::with_name(name));
    }
    Ok(Filter {
        kind,
        namespace,
        labels,
        fields,
        metadata_only,
    })
}

/// The continue token: base64 (URL-safe, unpadded) JSON of the snapshot
/// resourceVersion and the key to start after, in the real server's format.
fn encode_continue(rv: u64, start: &str) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(bad());
    }
    let rv = v
        .get("rv")
        .and_then(Value::as_u64)
        .filter(|r| *r > 0)
        .ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, start.to_string()))
}

/// LIST, with the real server's resourceVersion semantics: unset is a
/// consistent read of the latest state; `0` and `NotOlderThan` serve the
/// latest state too (this store is never stale); `Exact` serves the state
/// at that resourceVersion, or `410 Expired` if compacted. Pages are cut
/// from one snapshot, as etcd does, so a continue token outliving the
/// history also gets `410`.
fn list(
    shared: &Arc<Shared>,
    kind: ResourceKind,
    namespace: Option<String>,
    q: &Query,
    metadata_only: bool,
) -> Result<Response<Body>, ApiError> {
    let filter = filter_for(kind, namespace, q, None, metadata_only)?;
    if q.send_initial_events.is_some() {
        return Err(ApiError::invalid(
            "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list",
        ));
    }
    let rv = parse_rv(&q.resource_version)?;
    let exact = match q.resource_version_match.as_deref() {
        None => false,
        Some(_) if rv == Rv::Unset => {
            return Err(ApiError::invalid(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        Some("NotOlderThan") => false,
        Some("Exact") if rv == Rv::Zero => {
            return Err(ApiError::invalid(
                "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        Some("Exact") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""
            )));
        }
    };
    let (at, start) = if q.continue_token.is_empty() {
        (None, None)
    } else {
        if rv != Rv::Unset && rv != Rv::Zero {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (at, start) = decode_continue(&q.continue_token)?;
        (Some(at), Some(start))
    };

    // The real server may return fewer items than `limit` (with a continue token);
    // `TestServer::set_list_page_limit` makes this one do so, even without a `limit`.
    let page_limit = shared.list_page_limit.load(Ordering::SeqCst);
    let limit = match (q.limit, page_limit) {
        (l, 0) => l,
        (None, p) => Some(p),
        (Some(l), p) => Some(l.min(p)),
    };
    let mut items = Vec::new();
    let mut next_start = None;
    let mut remaining = 0u64;
    let list_rv = {
        let store = lock(&shared.store);
        let current = store.rv();
        let at = match (at, rv) {
            (Some(at), _) => Some(at),
            (None, Rv::At(n)) if exact => Some(n),
            (None, Rv::At(n)) if n > current => return Err(ApiError::too_large(n, current)),
            _ => None,
        };
        // remainingItemCount is sent only without selectors; with them, the page ends at the
        // first match past the limit. (Counting with the filter made a paginated list of N
        // objects cost N^2 / limit filter calls.)
        let selectors = !(filter.labels.is_empty() && filter.fields.is_empty());
        let visit = |key: &str, obj: &Arc<Value>| {
            let full = limit.is_some_and(|l| items.len() as u64 >= l);
            if full && next_start.is_some() && filter.namespace.is_none() {
                remaining += 1; // every object of the kind matches
                return true;
            }
            if !filter.matches(obj) {
                return true;
            }
            if full {
                if next_start.is_none() {
                    next_start = Some(key.to_owned());
                }
                remaining += 1;
                return !selectors;
            }
            items.push(obj.clone());
            true
        };
        match store.range_at(kind, at, start.as_deref(), visit) {
            Ok(rv) => rv,
            Err(e) if e.code == 410 && start.is_some() => {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            Err(e) => return Err(e),
        }
    };

    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), Value::String(list_rv.to_string()));
    if next_start.is_some()
        && let Some(last) = items.last()
    {
        // Start after the last returned key, as the real token does ("key\0").
        let after = format!("{}\u{0}", key_of(kind, last));
        metadata.insert(
            "continue".into(),
            Value::String(encode_continue(list_rv, &after)),
        );
        if filter.labels.is_empty() && filter.fields.is_empty() {
            metadata.insert("remainingItemCount".into(), Value::from(remaining));
        }
    }
    let items: Vec<Value> = items
        .iter()
        .map(|o| {
            if metadata_only {
                watch::partial_metadata(o)
            } else {
                // Items of a real list carry no kind/apiVersion.
                let mut o = (**o).clone();
                if let Some(m) = o.as_object_mut() {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
                o
            }
        })
        .collect();
    let (list_kind, api_version) = if metadata_only {
        ("PartialObjectMetadataList", "meta.k8s.io/v1")
    } else {
        (kind.list_kind(), kind.api_version())
    };
    Ok(json_response(
        200,
        &json!({
            "kind": list_kind,
            "apiVersion": api_version,
            "metadata": metadata,
            "items": items,
        }),
    ))
}

fn get(
    shared: &Arc<Shared>,
    kind: ResourceKind,
    namespace: Option<String>,
    name: &str,
    metadata_only: bool,
) -> Result<Response<Body>, ApiError> {
    let obj = lock(&shared.store)
        .get(kind, namespace.as_deref().unwrap_or(""), name)
        .ok_or_else(|| ApiError::object_not_found(kind, name))?;
    let out = if metadata_only {
        watch::partial_metadata(&obj)
    } else {
        (*obj).clone()
    };
    Ok(json_response(200, &out))
}

/// WATCH, with the real server's starting points: `resourceVersion` unset or
/// `0` starts with synthetic `ADDED` events for the current state; `N`
/// replays every change after `N` from the history (or sends one `ERROR`
/// event with `410 Expired` if compacted); `sendInitialEvents=true` sends the
/// current state and then a `BOOKMARK` annotated `k8s.io/initial-events-end`.
fn start_watch(
    shared: &Arc<Shared>,
    kind: ResourceKind,
    namespace: Option<String>,
    name: Option<String>,
    q: &Query,
    metadata_only: bool,
) -> Result<Response<Body>, ApiError> {
    let filter = filter_for(kind, namespace, q, name.as_deref(), metadata_only)?;
    match (q.send_initial_events, q.resource_version_match.as_deref()) {
        (Some(_), Some("NotOlderThan")) | (None, None) => {}
        (Some(_), _) => {
            return Err(ApiError::invalid(
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
    }
    if q.send_initial_events == Some(true) && !q.allow_watch_bookmarks {
        return Err(ApiError::invalid(
            "allowWatchBookmarks: Forbidden: allowWatchBookmarks must be true when sendInitialEvents is set",
        ));
    }
    let rv = parse_rv(&q.resource_version)?;

    let (start, start_rv, rx) = {
        let store = lock(&shared.store);
        let current = store.rv();
        let current_state = |store: &crate::store::Store| -> Vec<(EventType, Value)> {
            store
                .objects(kind)
                .map(|m| {
                    m.values()
                        .filter(|o| filter.matches(o))
                        .map(|o| (EventType::Added, filter.render(o)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let start = match (q.send_initial_events, rv) {
            (Some(true), rv) => {
                if let Rv::At(n) = rv
                    && n > current
                {
                    return Err(ApiError::too_large(n, current));
                }
                Start::Events {
                    events: current_state(&store),
                    initial_events_end: true,
                }
            }
            (Some(false), Rv::Unset | Rv::Zero) => Start::Events {
                events: Vec::new(),
                initial_events_end: false,
            },
            (None, Rv::Unset | Rv::Zero) => Start::Events {
                events: current_state(&store),
                initial_events_end: false,
            },
            (_, Rv::At(n)) => match store.events_since(kind, n) {
                Ok(events) => Start::Events {
                    events: events.iter().filter_map(|e| filter.convert(e)).collect(),
                    initial_events_end: false,
                },
                Err(e) if e.code == 410 => Start::Expired(e),
                Err(e) => return Err(e),
            },
        };
        // Subscribing under the store lock: no change falls between the
        // replay above and the live events.
        (start, current, store.subscribe())
    };

    let spec = WatchSpec {
        filter,
        start,
        start_rv,
        rx,
        bookmarks: q.allow_watch_bookmarks,
        timeout: q.timeout_seconds.map(Duration::from_secs),
    };
    let (tx, mut out_rx) = mpsc::channel::<watch::Chunk>(256);
    tokio::spawn(watch::run(shared.clone(), spec, tx));
    let frames = futures::stream::poll_fn(move |cx| out_rx.poll_recv(cx))
        .map(|chunk| chunk.map(Frame::data));
    let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    Ok(r)
}

// ---- writes ------------------------------------------------------------

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_BODY}"),
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// Checks a request body against the URL, as the real server's decoding and
/// `BeforeCreate`/`BeforeUpdate` do, and fills in namespace and name from it.
fn prepare(
    kind: ResourceKind,
    namespace: Option<&str>,
    name: Option<&str>,
    mut body: Value,
) -> Result<Value, ApiError> {
    let Some(o) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    if let Some(av) = o.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
        && av != kind.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            kind.api_version()
        )));
    }
    if let Some(k) = o.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != kind.kind()
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            kind.kind()
        )));
    }
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    let Some(meta) = meta.as_object_mut() else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    if kind.namespaced() {
        let Some(ns) = namespace else {
            return Err(ApiError::method_not_allowed("POST"));
        };
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), Value::from(ns));
            }
            Some(have) if have != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(name) = name {
        match meta.get("name").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("name".into(), Value::from(name));
            }
            Some(have) if have != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({have}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(body)
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn body_rv(v: &Value) -> Result<Option<u64>, ApiError> {
    match v
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}"))),
    }
}

fn create(
    shared: &Arc<Shared>,
    kind: ResourceKind,
    namespace: Option<String>,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let obj = prepare(kind, namespace.as_deref(), None, parse_json(&body)?)?;
    let name = name_of(&obj);
    let stored = lock(&shared.store)
        .write(kind, obj, WriteMode::Create)
        .map_err(|e| e.to_api(kind, &name))?;
    Ok(json_response(201, &stored))
}

fn update(
    shared: &Arc<Shared>,
    kind: ResourceKind,
    namespace: Option<String>,
    name: &str,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let obj = prepare(kind, namespace.as_deref(), Some(name), parse_json(&body)?)?;
    let expect_rv = body_rv(&obj)?;
    let stored = lock(&shared.store)
        .write(kind, obj, WriteMode::Update { expect_rv })
        .map_err(|e| e.to_api(kind, name))?;
    Ok(json_response(200, &stored))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// PATCH: JSON merge patch; strategic merge patch approximated as a JSON
/// merge patch (lists are replaced, not merged by key); server-side apply
/// approximated as create-or-merge (no field ownership or managedFields).
fn patch(
    shared: &Arc<Shared>,
    kind: ResourceKind,
    namespace: Option<String>,
    name: &str,
    content_type: &str,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let apply = match content_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => false,
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => true,
        _ => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
                ),
            ));
        }
    };
    let patch = if apply {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v,
            Err(_) => {
                let text = std::str::from_utf8(&body)
                    .map_err(|_| ApiError::bad_request("the apply patch is not UTF-8"))?;
                serde_saphyr::from_str::<Value>(text).map_err(|e| {
                    ApiError::bad_request(format!("the apply patch is not valid YAML: {e}"))
                })?
            }
        }
    } else {
        parse_json(&body)?
    };
    if !patch.is_object() {
        return Err(ApiError::bad_request("the patch must be a JSON object"));
    }
    let ns = namespace.as_deref().unwrap_or("");
    let mut store = lock(&shared.store);
    let existing = store.get(kind, ns, name);
    let (obj, mode) = match existing {
        Some(existing) => {
            let mut merged = (*existing).clone();
            merge_patch(&mut merged, &patch);
            let expect_rv = body_rv(&patch)?;
            (merged, WriteMode::Update { expect_rv })
        }
        None if apply => (patch, WriteMode::Create),
        None => return Err(ApiError::object_not_found(kind, name)),
    };
    let obj = prepare(kind, namespace.as_deref(), Some(name), obj)?;
    let stored = store
        .write(kind, obj, mode)
        .map_err(|e| e.to_api(kind, name))?;
    Ok(json_response(200, &stored))
}

fn delete(
    shared: &Arc<Shared>,
    kind: ResourceKind,
    namespace: Option<String>,
    name: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let mut pre = Preconditions::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let opts = parse_json(body)?;
        let p = opts.get("preconditions");
        let field = |f: &str| {
            p.and_then(|p| p.get(f))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        pre.uid = field("uid");
        pre.resource_version = field("resourceVersion");
    }
    let deleted = lock(&shared.store)
        .remove(kind, namespace.as_deref().unwrap_or(""), name, &pre)
        .map_err(|e| e.to_api(kind, name))?;
    Ok(json_response(200, &deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let svc = ResourceKind::Service;
        assert_eq!(
            Route::parse("/api/v1/services"),
            Route::Collection {
                kind: svc,
                namespace: None,
                watch_prefix: false
            }
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/ns/services/web"),
            Route::Object {
                kind: svc,
                namespace: Some("ns".into()),
                name: "web".into(),
                watch_prefix: false
            }
        );
        assert_eq!(
            Route::parse("/apis/discovery.k8s.io/v1/watch/namespaces/ns/endpointslices"),
            Route::Collection {
                kind: ResourceKind::EndpointSlice,
                namespace: Some("ns".into()),
                watch_prefix: true
            }
        );
        assert_eq!(
            Route::parse("/api/v1/nodes/n1"),
            Route::Object {
                kind: ResourceKind::Node,
                namespace: None,
                name: "n1".into(),
                watch_prefix: false
            }
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/kube-system"),
            Route::Object {
                kind: ResourceKind::Namespace,
                namespace: None,
                name: "kube-system".into(),
                watch_prefix: false
            }
        );
        for bad in [
            "/api/v1/services/web",
            "/api/v1/namespaces/ns/nodes",
            "/api/v1/namespaces/ns/services/web/status",
            "/api/v2/services",
            "/apis/apps/v1/deployments",
            "/foo",
            "/api/v1/widgets",
        ] {
            assert_eq!(Route::parse(bad), Route::NotFound, "{bad}");
        }
    }

    #[test]
    fn queries() {
        let q = Query::parse("&watch=1&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=12&labelSelector=a%3Db")
            .expect("parse");
        assert!(q.watch && q.allow_watch_bookmarks);
        assert_eq!(q.timeout_seconds, Some(290));
        assert_eq!(q.resource_version, "12");
        assert_eq!(q.label_selector, "a=b");
        for bad in [
            "watch=yes",
            "limit=-1",
            "limit=x",
            "timeoutSeconds=1.5",
            "sendInitialEvents=maybe",
        ] {
            assert!(Query::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_rv("").expect("unset"), Rv::Unset);
        assert_eq!(parse_rv("0").expect("zero"), Rv::Zero);
        assert_eq!(parse_rv("17").expect("n"), Rv::At(17));
        assert_eq!(parse_rv("abc").expect_err("bad").code, 400);
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "ns/web\u{0}");
        assert_eq!(
            decode_continue(&t).expect("decode"),
            (42, "ns/web\u{0}".to_string())
        );
        assert_eq!(decode_continue("!!!").expect_err("bad").code, 400);
        assert_eq!(decode_continue("e30").expect_err("empty object").code, 400);
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }
}
