//! The two forms of an Event: `events.k8s.io/v1` (what controllers write: kube-rs's
//! `Recorder`, client-go's events library) and `core/v1` (what `kubectl get events` and
//! `kubectl describe` read). The real API server stores one object and serves both; here each
//! write of one form stores the other beside it, at the same resourceVersion, converted field by
//! field as `pkg/apis/events/v1` converts them.

use serde_json::{Map, Value};

use crate::ResourceKind;

/// The fields whose names differ: (`events.k8s.io/v1`, `core/v1`). Every other field
/// (`metadata`, `reason`, `type`, `action`, `eventTime`, `series`, `related`,
/// `reportingInstance`) has the same name and meaning in both.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// `obj`, an Event of either form, in the form of `to` ([`ResourceKind::Event`] or
/// [`ResourceKind::CoreEvent`]).
pub(crate) fn convert(obj: &Value, to: ResourceKind) -> Value {
    let Some(fields) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::with_capacity(fields.len());
    for (k, v) in fields {
        let name = match to {
            ResourceKind::CoreEvent => RENAMED
                .iter()
                .find(|(e, _)| e == k)
                .map_or(k.as_str(), |(_, c)| c),
            _ => RENAMED
                .iter()
                .find(|(_, c)| c == k)
                .map_or(k.as_str(), |(e, _)| e),
        };
        out.insert(name.to_owned(), v.clone());
    }
    out.insert("apiVersion".into(), to.api_version().into());
    out.insert("kind".into(), to.kind().into());
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_two_forms_convert_both_ways() {
        let new = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "eventTime": "2026-12-05T10:00:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2026-12-05T10:01:00.000000Z"},
            "reportingController": "ctreap.io/agent", "reportingInstance": "node-1",
            "action": "Delete", "reason": "StaleFlowsDeleted", "type": "Normal",
            "regarding": {"kind": "Service", "namespace": "default", "name": "web"},
            "note": "12 flows deleted"
        });
        let core = convert(&new, ResourceKind::CoreEvent);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "12 flows deleted");
        assert_eq!(core["reportingComponent"], "ctreap.io/agent");
        assert_eq!(core["series"]["count"], 3);
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(convert(&core, ResourceKind::Event), new);
    }
}
