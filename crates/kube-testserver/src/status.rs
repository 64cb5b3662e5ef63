//! `Status` error bodies, shaped like the real API server's `metav1.Status`.

use serde_json::{Value, json};

use crate::resource::ResourceKind;
use crate::server::Verb;

/// An error answered to an HTTP client as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// `400 BadRequest`, for query parameters that do not parse.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// `422 Invalid`, for option combinations the real server's validation rejects.
    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "Invalid", message)
    }

    /// `404 NotFound` for a path that names no served collection.
    pub(crate) fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// `404 NotFound` for a missing object: `services "web" not found`.
    pub(crate) fn object_not_found(kind: ResourceKind, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified_resource()),
        )
        .with_details(details(kind, name))
    }

    /// `409 AlreadyExists` for a create of an existing object.
    pub(crate) fn already_exists(kind: ResourceKind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified_resource()),
        )
        .with_details(details(kind, name))
    }

    /// `409 Conflict` for an update with a stale `resourceVersion` or precondition.
    pub(crate) fn conflict(kind: ResourceKind, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                kind.qualified_resource()
            ),
        )
        .with_details(details(kind, name))
    }

    /// `410 Expired`: `too old resource version: N (M)`, as the watch cache says.
    pub(crate) fn too_old(requested: u64, oldest: u64) -> ApiError {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// `504 Timeout` for a resourceVersion newer than the store's, as the real
    /// server answers after waiting for its cache to catch up.
    pub(crate) fn too_large(requested: u64, current: u64) -> ApiError {
        ApiError::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
        .with_details(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        }))
    }

    /// `403 Forbidden`, as RBAC refuses a request, in the real server's words.
    pub(crate) fn forbidden(kind: ResourceKind, verb: Verb, namespace: Option<&str>) -> ApiError {
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"system:anonymous\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
                kind.qualified_resource(),
                verb.as_str(),
                kind.plural(),
                kind.group()
            ),
        )
        .with_details(json!({"kind": kind.plural(), "group": kind.group()}))
    }

    /// `503 ServiceUnavailable`, answered to everything while the server is set unavailable.
    pub(crate) fn unavailable() -> ApiError {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
    }

    pub(crate) fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )
    }

    /// The `Status` object.
    pub(crate) fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(d), Some(obj)) = (&self.details, v.as_object_mut()) {
            obj.insert("details".to_string(), d.clone());
        }
        v
    }
}

fn details(kind: ResourceKind, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": kind.plural()});
    if !kind.group().is_empty()
        && let Some(o) = d.as_object_mut()
    {
        o.insert("group".to_string(), Value::from(kind.group()));
    }
    d
}
