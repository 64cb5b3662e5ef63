//! Per-object decoding for the watches.
//!
//! kube's watcher decodes a whole list body (or a watch event) into `K` at once: one object
//! that does not fit the API type (an EndpointSlice whose port is a string, written by a
//! buggy controller or an older apiserver's defaulting) fails the whole list, and the watch
//! retries it forever, so every deletion on the node stops while that object exists.
//! [`Decoded`] takes each object apart on its own: the watcher sees a `Decoded<K>` that is
//! either the object or [`Undecodable`], which keeps the object's name, namespace and
//! resourceVersion (the watcher needs the last to resume) and the decoder's message.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::build::SERVICE_NAME_LABEL;

/// One object of a list or watch event, decoded on its own.
#[derive(Clone, Debug)]
pub(crate) enum Decoded<K> {
    Ok(K),
    /// Boxed: rare, and larger than a compact object.
    Bad(Box<Undecodable>),
}

/// An object that is valid JSON but not a valid `K`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Undecodable {
    /// Only name, namespace, resourceVersion and the `kubernetes.io/service-name` label, read
    /// as plain strings.
    pub(crate) meta: ObjectMeta,
    /// serde's message, with the path and position of the offending field.
    pub(crate) error: String,
}

impl Undecodable {
    /// `namespace/name`, or `name` for a cluster-scoped object; `?` for what is missing.
    pub(crate) fn object(&self) -> String {
        object_of(self.meta.namespace.as_deref(), self.meta.name.as_deref())
    }

    /// The Service (namespace, name) the object is labelled for, as an EndpointSlice is.
    pub(crate) fn service(&self) -> Option<(String, String)> {
        let ns = self.meta.namespace.clone()?;
        let svc = self.meta.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        Some((ns, svc.clone()))
    }
}

/// `namespace/name`, or `name` for a cluster-scoped object; `?` for what is missing.
pub(crate) fn object_of(ns: Option<&str>, name: Option<&str>) -> String {
    let name = name.unwrap_or("?");
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

impl<K> Decoded<K> {
    pub(crate) fn map_ok<T>(self, f: impl FnOnce(K) -> T) -> Decoded<T> {
        match self {
            Decoded::Ok(k) => Decoded::Ok(f(k)),
            Decoded::Bad(b) => Decoded::Bad(b),
        }
    }
}

fn string_at(v: &Value, field: &str) -> Option<String> {
    v.get("metadata")?.get(field)?.as_str().map(str::to_owned)
}

fn service_label(v: &Value) -> Option<std::collections::BTreeMap<String, String>> {
    let svc = v
        .get("metadata")?
        .get("labels")?
        .get(SERVICE_NAME_LABEL)?
        .as_str()?;
    Some([(SERVICE_NAME_LABEL.to_owned(), svc.to_owned())].into())
}

/// The object as `K`, or, when it is not a valid `K`, as JSON. serde buffers an untagged
/// enum's input in its own form and tries the variants on that; inside a watch event (which
/// serde has buffered in that form already) the buffer is moved, not copied, so a good object
/// is decoded once, with no `Value` built on the way.
#[derive(Deserialize)]
#[serde(untagged)]
enum OkOrJson<K> {
    Ok(K),
    Json(Value),
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Decoded<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Not JSON at all is still an error of the whole body: nothing in it can be trusted.
        let v = match OkOrJson::<K>::deserialize(d)? {
            OkOrJson::Ok(k) => return Ok(Decoded::Ok(k)),
            OkOrJson::Json(v) => v,
        };
        // The untagged enum keeps no message: decode again for it (rare).
        match K::deserialize(&v) {
            Ok(k) => Ok(Decoded::Ok(k)),
            Err(e) => Ok(Decoded::Bad(Box::new(Undecodable {
                meta: ObjectMeta {
                    name: string_at(&v, "name"),
                    namespace: string_at(&v, "namespace"),
                    resource_version: string_at(&v, "resourceVersion"),
                    labels: service_label(&v),
                    ..ObjectMeta::default()
                },
                error: e.to_string(),
            }))),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Decoded<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Decoded::Ok(k) => k.meta(),
            Decoded::Bad(b) => &b.meta,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Decoded::Ok(k) => k.meta_mut(),
            Decoded::Bad(b) => &mut b.meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::core::ObjectList;
    use kube::core::WatchEvent;
    use serde_json::json;

    fn slice(name: &str, port: Value) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}],
            "ports": [{"port": port, "protocol": "UDP"}],
        })
    }

    #[test]
    fn one_bad_object_leaves_the_rest_of_the_list_decoded() {
        let body = json!({
            "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "9"},
            "items": [slice("a", json!(53)), slice("b", json!("53")), slice("c", json!(54))],
        });
        // The plain type fails the whole list: the behaviour this module exists to avoid.
        assert!(serde_json::from_value::<ObjectList<EndpointSlice>>(body.clone()).is_err());
        let list: ObjectList<Decoded<EndpointSlice>> = serde_json::from_value(body).unwrap();
        let names: Vec<_> = list
            .items
            .iter()
            .map(|d| match d {
                Decoded::Ok(s) => format!("ok {}", s.metadata.name.as_deref().unwrap()),
                Decoded::Bad(b) => format!("bad {}", b.object()),
            })
            .collect();
        assert_eq!(names, ["ok a", "bad ns/b", "ok c"]);
        let Decoded::Bad(b) = &list.items[1] else {
            unreachable!()
        };
        assert_eq!(b.meta.resource_version.as_deref(), Some("7"));
        assert!(b.error.contains("invalid type: string"), "{}", b.error);
    }

    #[test]
    fn a_bad_object_in_a_watch_event_keeps_its_resource_version() {
        let line = json!({"type": "MODIFIED", "object": slice("b", json!({"x": 1}))});
        let ev: WatchEvent<Decoded<EndpointSlice>> = serde_json::from_value(line).unwrap();
        let WatchEvent::Modified(d) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(d.meta().resource_version.as_deref(), Some("7"));
        assert!(matches!(d, Decoded::Bad(_)));
        // The object first, then the type: serde buffers the content; still per object.
        let text = format!(r#"{{"object":{},"type":"ADDED"}}"#, slice("c", json!("x")));
        let ev: WatchEvent<Decoded<EndpointSlice>> = serde_json::from_str(&text).unwrap();
        assert!(matches!(ev, WatchEvent::Added(Decoded::Bad(_))), "{ev:?}");
    }

    #[test]
    fn missing_metadata_is_named_with_question_marks() {
        let d: Decoded<EndpointSlice> = serde_json::from_value(json!({"endpoints": 5})).unwrap();
        let Decoded::Bad(b) = d else { panic!() };
        assert_eq!(b.object(), "?");
        assert_eq!(b.meta.resource_version, None);
    }
}
