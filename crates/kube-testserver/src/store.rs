//! The object store: one global resourceVersion counter, current objects, and a
//! bounded event history, modelled on etcd plus the API server's watch cache.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::resource::ResourceKind;
use crate::status::ApiError;

/// Current objects of one type, keyed like etcd keys: `namespace/name` for
/// namespaced types, `name` for cluster-scoped ones. Iteration order is the
/// order of a real LIST (and of its pages).
pub(crate) type ObjectMap = BTreeMap<String, Arc<Value>>;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `ADDED`
    Added,
    /// `MODIFIED`
    Modified,
    /// `DELETED`
    Deleted,
}

impl EventType {
    /// The wire name, as in the `type` field of a watch event.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to live watches.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub(crate) rv: u64,
    pub(crate) kind: ResourceKind,
    pub(crate) ty: EventType,
    /// The object after the change; for `Deleted`, the last state stamped with
    /// the deletion's resourceVersion (as etcd reports it).
    pub(crate) object: Arc<Value>,
    /// The object before the change (`None` for `Added`).
    pub(crate) prev: Option<Arc<Value>>,
}

/// How a write treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Create or replace, ignoring any `resourceVersion` in the object.
    Upsert,
    /// Create; fail if the object exists (`POST`).
    Create,
    /// Replace; fail if the object is missing, or if `expect_rv` is given and
    /// differs from the stored one (`PUT` optimistic concurrency).
    Update { expect_rv: Option<u64> },
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WriteError {
    Invalid(String),
    AlreadyExists,
    NotFound,
    Conflict(String),
}

impl WriteError {
    pub(crate) fn to_api(&self, kind: ResourceKind, name: &str) -> ApiError {
        match self {
            WriteError::Invalid(m) => {
                ApiError::invalid(format!("{} \"{name}\" is invalid: {m}", kind.kind()))
            }
            WriteError::AlreadyExists => ApiError::already_exists(kind, name),
            WriteError::NotFound => ApiError::object_not_found(kind, name),
            WriteError::Conflict(why) => ApiError::conflict(kind, name, why),
        }
    }
}

/// Preconditions of a delete (`DeleteOptions.preconditions`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Preconditions {
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
}

pub(crate) struct Store {
    rv: u64,
    objects: HashMap<ResourceKind, ObjectMap>,
    history: VecDeque<Arc<StoredEvent>>,
    /// Watches and exact reads are possible from any resourceVersion `>= compact_rev`.
    compact_rev: u64,
    history_limit: usize,
    rng: u64,
    tx: broadcast::Sender<Arc<StoredEvent>>,
}

pub(crate) fn object_key(kind: ResourceKind, namespace: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("{namespace}/{name}")
    } else {
        name.to_string()
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub(crate) fn key_of(kind: ResourceKind, obj: &Value) -> String {
    object_key(
        kind,
        meta_str(obj, "namespace").unwrap_or(""),
        meta_str(obj, "name").unwrap_or(""),
    )
}

/// Sets `metadata.resourceVersion` on a copy of `obj`.
pub(crate) fn with_rv(obj: &Value, rv: u64) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    o
}

/// `now` in the API server's `metav1.Time` format (`2006-01-02T15:04:05Z`).
pub(crate) fn now_timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secs = i64::try_from(secs).unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .ok()
        .and_then(|ts| k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", ts).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Checks a name the way `path.IsValidPathSegmentName` does, which every
/// resource's validation applies; type-specific DNS rules are not enforced.
fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("metadata.name: Required value: name or generateName is required".into());
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('%') {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: may not be '.' or '..' and may not contain '/' or '%'"
        ));
    }
    if name.len() > 253 {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: must be no more than 253 characters"
        ));
    }
    Ok(())
}

impl Store {
    pub(crate) fn new(history_limit: usize, channel_capacity: usize) -> Store {
        let (tx, _) = broadcast::channel(channel_capacity.max(16));
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
            ^ (u64::from(std::process::id()) << 32);
        Store {
            rv: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            compact_rev: 1,
            history_limit: history_limit.max(1),
            rng: seed,
            tx,
        }
    }

    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    pub(crate) fn compact_rev(&self) -> u64 {
        self.compact_rev
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.tx.subscribe()
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn new_uid(&mut self) -> String {
        let a = self.next_random();
        let b = self.next_random();
        // Random (version 4, variant 1) UUID, like the real server's.
        let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
        let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    fn generate_suffix(&mut self) -> String {
        // The alphabet of the real server's name generator (no vowels, no confusables).
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| {
                let i = (self.next_random() % ALPHABET.len() as u64) as usize;
                char::from(ALPHABET[i])
            })
            .collect()
    }

    pub(crate) fn objects(&self, kind: ResourceKind) -> Option<&ObjectMap> {
        self.objects.get(&kind)
    }

    pub(crate) fn get(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        self.objects
            .get(&kind)?
            .get(&object_key(kind, namespace, name))
            .cloned()
    }

    /// Brings `obj` into canonical shape for `kind`: typed meta set, metadata
    /// an object, name present, namespace defaulted or cleared.
    fn normalize(&mut self, kind: ResourceKind, obj: Value) -> Result<Map<String, Value>, String> {
        let Value::Object(mut o) = obj else {
            return Err("the object must be a JSON object".into());
        };
        o.insert("kind".into(), Value::from(kind.kind()));
        o.insert("apiVersion".into(), Value::from(kind.api_version()));
        let meta = o
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if meta.is_null() {
            *meta = Value::Object(Map::new());
        }
        let Some(meta) = meta.as_object_mut() else {
            return Err("metadata: must be an object".into());
        };
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !prefix.is_empty() {
                let generated = format!("{prefix}{}", self.generate_suffix());
                let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) else {
                    return Err("metadata: must be an object".into());
                };
                meta.insert("name".into(), Value::String(generated));
            }
        }
        let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err("metadata: must be an object".into());
        };
        validate_name(meta.get("name").and_then(Value::as_str).unwrap_or(""))?;
        if kind.namespaced() {
            let ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if ns.is_empty() {
                meta.insert("namespace".into(), Value::from("default"));
            } else {
                validate_name(&ns).map_err(|e| e.replace("metadata.name", "metadata.namespace"))?;
            }
        } else {
            meta.remove("namespace");
        }
        Ok(o)
    }

    /// Creates or replaces an object, bumping the global resourceVersion and
    /// emitting `ADDED`/`MODIFIED`. A replace that changes nothing but
    /// `resourceVersion` is a no-op, as in the real server (no new
    /// resourceVersion, no event).
    pub(crate) fn write(
        &mut self,
        kind: ResourceKind,
        obj: Value,
        mode: WriteMode,
    ) -> Result<Arc<Value>, WriteError> {
        let mut o = self.normalize(kind, obj).map_err(WriteError::Invalid)?;
        let key = key_of(kind, &Value::Object(o.clone()));
        let existing = self.objects.get(&kind).and_then(|m| m.get(&key)).cloned();
        match (&existing, mode) {
            (Some(_), WriteMode::Create) => return Err(WriteError::AlreadyExists),
            (None, WriteMode::Update { .. }) => return Err(WriteError::NotFound),
            (
                Some(old),
                WriteMode::Update {
                    expect_rv: Some(want),
                },
            ) => {
                let have = meta_str(old, "resourceVersion").unwrap_or("");
                if have != want.to_string() {
                    return Err(WriteError::Conflict(
                        "the object has been modified; please apply your changes to the latest version and try again".into(),
                    ));
                }
            }
            _ => {}
        }
        let meta = o
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| WriteError::Invalid("metadata: must be an object".into()))?;
        match &existing {
            Some(old) => {
                let old_uid = meta_str(old, "uid").unwrap_or("");
                let new_uid = meta.get("uid").and_then(Value::as_str).unwrap_or("");
                if mode != WriteMode::Upsert && !new_uid.is_empty() && new_uid != old_uid {
                    return Err(WriteError::Invalid(format!(
                        "metadata.uid: Invalid value: {new_uid:?}: field is immutable"
                    )));
                }
                // Update keeps identity and creation time, as BeforeUpdate does.
                for f in ["uid", "creationTimestamp"] {
                    match old.get("metadata").and_then(|m| m.get(f)) {
                        Some(v) => meta.insert(f.into(), v.clone()),
                        None => meta.remove(f),
                    };
                }
                let old_rv = meta_str(old, "resourceVersion").unwrap_or("").to_string();
                meta.insert("resourceVersion".into(), Value::String(old_rv));
                if Value::Object(o.clone()) == **old {
                    return Ok(old.clone());
                }
            }
            None => {
                if meta
                    .get("uid")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    let uid = self.new_uid();
                    let meta = o
                        .get_mut("metadata")
                        .and_then(Value::as_object_mut)
                        .ok_or_else(|| WriteError::Invalid("metadata: must be an object".into()))?;
                    meta.insert("uid".into(), Value::String(uid));
                }
                let meta = o
                    .get_mut("metadata")
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| WriteError::Invalid("metadata: must be an object".into()))?;
                if meta
                    .get("creationTimestamp")
                    .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
                {
                    meta.insert("creationTimestamp".into(), Value::String(now_timestamp()));
                }
            }
        }
        self.rv += 1;
        let stored = Arc::new(with_rv(&Value::Object(o), self.rv));
        self.objects
            .entry(kind)
            .or_default()
            .insert(key, stored.clone());
        let ty = if existing.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(kind, ty, stored.clone(), existing);
        if let Some(twin) = kind.twin() {
            // The other form of the same object, at the same resourceVersion.
            let other = Arc::new(crate::event::convert(&stored, twin));
            let key = key_of(twin, &other);
            let prev = self
                .objects
                .entry(twin)
                .or_default()
                .insert(key, other.clone());
            self.record(twin, ty, other, prev);
        }
        Ok(stored)
    }

    /// Deletes an object immediately (no finalizers, no grace period),
    /// bumping the resourceVersion and emitting `DELETED` with the last state.
    pub(crate) fn remove(
        &mut self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<Arc<Value>, WriteError> {
        let key = object_key(kind, namespace, name);
        let Some(old) = self.objects.get(&kind).and_then(|m| m.get(&key)).cloned() else {
            return Err(WriteError::NotFound);
        };
        if let Some(uid) = &pre.uid {
            let have = meta_str(&old, "uid").unwrap_or("");
            if uid != have {
                return Err(WriteError::Conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                )));
            }
        }
        if let Some(rv) = &pre.resource_version {
            let have = meta_str(&old, "resourceVersion").unwrap_or("");
            if rv != have {
                return Err(WriteError::Conflict(format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                )));
            }
        }
        if let Some(m) = self.objects.get_mut(&kind) {
            m.remove(&key);
        }
        self.rv += 1;
        let deleted = Arc::new(with_rv(&old, self.rv));
        self.record(kind, EventType::Deleted, deleted.clone(), Some(old));
        if let Some(twin) = kind.twin() {
            let key = object_key(twin, namespace, name);
            if let Some(prev) = self.objects.get_mut(&twin).and_then(|m| m.remove(&key)) {
                let last = Arc::new(with_rv(&prev, self.rv));
                self.record(twin, EventType::Deleted, last, Some(prev));
            }
        }
        Ok(deleted)
    }

    fn record(
        &mut self,
        kind: ResourceKind,
        ty: EventType,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        let ev = Arc::new(StoredEvent {
            rv: self.rv,
            kind,
            ty,
            object,
            prev,
        });
        self.history.push_back(ev.clone());
        self.trim();
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(ev);
    }

    fn trim(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(ev) = self.history.pop_front() {
                self.compact_rev = ev.rv;
            }
        }
    }

    pub(crate) fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
        self.trim();
    }

    /// Compacts all history. Like the real API server's compactor, which
    /// writes its `compact_rev_key` in etcd before compacting, this advances
    /// the revision by one; every resourceVersion older than the returned one
    /// is then expired for watches and exact reads.
    pub(crate) fn compact(&mut self) -> u64 {
        self.rv += 1;
        self.history.clear();
        self.compact_rev = self.rv;
        self.rv
    }

    /// The events of `kind` after `from`, for resuming a watch; `410` if the
    /// history no longer reaches back that far, `504` if `from` is in the future.
    pub(crate) fn events_since(
        &self,
        kind: ResourceKind,
        from: u64,
    ) -> Result<Vec<Arc<StoredEvent>>, ApiError> {
        if from > self.rv {
            return Err(ApiError::too_large(from, self.rv));
        }
        if from < self.compact_rev {
            return Err(ApiError::too_old(from, self.compact_rev));
        }
        let start = self.history.partition_point(|e| e.rv <= from);
        Ok(self
            .history
            .range(start..)
            .filter(|e| e.kind == kind)
            .cloned()
            .collect())
    }

    /// The objects of `kind` as they were at resourceVersion `at` (current
    /// state if `None`), rebuilt by undoing retained history, as an etcd read
    /// at a past revision would return them.
    #[cfg(test)]
    pub(crate) fn snapshot(
        &self,
        kind: ResourceKind,
        at: Option<u64>,
    ) -> Result<(u64, ObjectMap), ApiError> {
        let mut map = ObjectMap::new();
        let at = self.range_at(kind, at, None, |k, v| {
            map.insert(k.to_owned(), v.clone());
            true
        })?;
        Ok((at, map))
    }

    /// Visits the objects of `kind` with keys from `start` on, in key order,
    /// as they were at resourceVersion `at` (current state if `None`): an etcd
    /// range read at a past revision. `visit` returns false to stop. Returns
    /// the revision read. Costs what is visited plus the history after `at`,
    /// never a copy of the store (a paginated list of N objects used to cost
    /// N per page).
    pub(crate) fn range_at(
        &self,
        kind: ResourceKind,
        at: Option<u64>,
        start: Option<&str>,
        mut visit: impl FnMut(&str, &Arc<Value>) -> bool,
    ) -> Result<u64, ApiError> {
        let at = at.unwrap_or(self.rv);
        if at > self.rv {
            return Err(ApiError::too_large(at, self.rv));
        }
        if at < self.rv && at < self.compact_rev {
            return Err(ApiError::too_old(at, self.compact_rev));
        }
        // Key -> its object at `at` (None: created since), for every key written since.
        let mut undo: BTreeMap<String, Option<Arc<Value>>> = BTreeMap::new();
        for ev in self.history.iter().rev().take_while(|e| e.rv > at) {
            if ev.kind == kind {
                undo.insert(key_of(kind, &ev.object), ev.prev.clone());
            }
        }
        let empty = ObjectMap::new();
        let current = self.objects.get(&kind).unwrap_or(&empty);
        let from = || match start {
            Some(s) => (std::ops::Bound::Included(s), std::ops::Bound::Unbounded),
            None => (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
        };
        let mut cur = current.range::<str, _>(from()).peekable();
        let mut old = undo.range::<str, _>(from()).peekable();
        loop {
            let (key, obj): (&str, Option<&Arc<Value>>) = match (cur.peek(), old.peek()) {
                (None, None) => break,
                (Some(&(k, v)), None) => {
                    cur.next();
                    (k, Some(v))
                }
                (None, Some(&(k, v))) => {
                    old.next();
                    (k, v.as_ref())
                }
                (Some(&(kc, vc)), Some(&(ko, vo))) => match kc.cmp(ko) {
                    std::cmp::Ordering::Less => {
                        cur.next();
                        (kc, Some(vc))
                    }
                    std::cmp::Ordering::Greater => {
                        old.next();
                        (ko, vo.as_ref())
                    }
                    std::cmp::Ordering::Equal => {
                        cur.next();
                        old.next();
                        (ko, vo.as_ref())
                    }
                },
            };
            if let Some(obj) = obj
                && !visit(key, obj)
            {
                break;
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, port: u16) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"ports": [{"port": port}]}})
    }

    #[test]
    fn write_stamps_and_bumps() {
        let mut s = Store::new(100, 16);
        let a = s
            .write(ResourceKind::Service, svc("a", 80), WriteMode::Upsert)
            .expect("create");
        assert_eq!(meta_str(&a, "resourceVersion"), Some("2"));
        assert!(meta_str(&a, "uid").is_some_and(|u| u.len() == 36));
        assert!(meta_str(&a, "creationTimestamp").is_some_and(|t| t.ends_with('Z')));
        assert_eq!(a["kind"], "Service");
        // No-op replace: same RV, no event.
        let same = s
            .write(ResourceKind::Service, svc("a", 80), WriteMode::Upsert)
            .expect("noop");
        assert_eq!(meta_str(&same, "resourceVersion"), Some("2"));
        assert_eq!(s.rv(), 2);
        let b = s
            .write(ResourceKind::Service, svc("a", 81), WriteMode::Upsert)
            .expect("update");
        assert_eq!(meta_str(&b, "resourceVersion"), Some("3"));
        assert_eq!(meta_str(&b, "uid"), meta_str(&a, "uid"));
        let ev = s.events_since(ResourceKind::Service, 1).expect("history");
        assert_eq!(
            ev.iter().map(|e| e.ty).collect::<Vec<_>>(),
            [EventType::Added, EventType::Modified]
        );
    }

    #[test]
    fn snapshot_rebuilds_past_state_and_expires() {
        let mut s = Store::new(100, 16);
        s.write(ResourceKind::Service, svc("a", 80), WriteMode::Upsert)
            .expect("a");
        let rv_a = s.rv();
        s.write(ResourceKind::Service, svc("b", 80), WriteMode::Upsert)
            .expect("b");
        s.write(ResourceKind::Service, svc("a", 90), WriteMode::Upsert)
            .expect("a2");
        s.remove(ResourceKind::Service, "ns", "b", &Preconditions::default())
            .expect("del b");
        let (_, past) = s.snapshot(ResourceKind::Service, Some(rv_a)).expect("past");
        assert_eq!(past.len(), 1);
        assert_eq!(past["ns/a"]["spec"]["ports"][0]["port"], 80);
        let (_, now) = s.snapshot(ResourceKind::Service, None).expect("now");
        assert_eq!(now["ns/a"]["spec"]["ports"][0]["port"], 90);
        let c = s.compact();
        assert_eq!(
            s.snapshot(ResourceKind::Service, Some(rv_a))
                .expect_err("expired")
                .code,
            410
        );
        assert_eq!(
            s.events_since(ResourceKind::Service, c - 1)
                .expect_err("old")
                .code,
            410
        );
        assert!(
            s.events_since(ResourceKind::Service, c)
                .expect("at")
                .is_empty()
        );
        assert_eq!(
            s.events_since(ResourceKind::Service, c + 5)
                .expect_err("future")
                .code,
            504
        );
    }

    #[test]
    fn bounded_history_compacts() {
        let mut s = Store::new(2, 16);
        for i in 0..5 {
            s.write(
                ResourceKind::Node,
                json!({"metadata": {"name": format!("n{i}")}}),
                WriteMode::Upsert,
            )
            .expect("node");
        }
        assert_eq!(s.compact_rev(), s.rv() - 2);
        assert!(s.events_since(ResourceKind::Node, s.rv() - 2).is_ok());
        assert!(s.events_since(ResourceKind::Node, s.rv() - 3).is_err());
    }

    #[test]
    fn create_update_preconditions() {
        let mut s = Store::new(10, 16);
        let a = s
            .write(ResourceKind::Service, svc("a", 80), WriteMode::Create)
            .expect("create");
        assert_eq!(
            s.write(ResourceKind::Service, svc("a", 80), WriteMode::Create),
            Err(WriteError::AlreadyExists)
        );
        assert_eq!(
            s.write(
                ResourceKind::Service,
                svc("zz", 80),
                WriteMode::Update { expect_rv: None }
            ),
            Err(WriteError::NotFound)
        );
        let rv: u64 = meta_str(&a, "resourceVersion")
            .and_then(|r| r.parse().ok())
            .expect("rv");
        assert!(matches!(
            s.write(
                ResourceKind::Service,
                svc("a", 81),
                WriteMode::Update {
                    expect_rv: Some(rv + 7)
                }
            ),
            Err(WriteError::Conflict(_))
        ));
        s.write(
            ResourceKind::Service,
            svc("a", 81),
            WriteMode::Update {
                expect_rv: Some(rv),
            },
        )
        .expect("update");
        let gen_name = s
            .write(
                ResourceKind::Node,
                json!({"metadata": {"generateName": "node-", "namespace": "x"}}),
                WriteMode::Create,
            )
            .expect("generateName");
        assert!(meta_str(&gen_name, "name").is_some_and(|n| n.len() == 10));
        assert!(meta_str(&gen_name, "namespace").is_none());
        assert!(matches!(
            s.write(
                ResourceKind::Node,
                json!({"metadata": {}}),
                WriteMode::Create
            ),
            Err(WriteError::Invalid(_))
        ));
        assert!(matches!(
            s.write(ResourceKind::Node, json!([1]), WriteMode::Create),
            Err(WriteError::Invalid(_))
        ));
    }
}
