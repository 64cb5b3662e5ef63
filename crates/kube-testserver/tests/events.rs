//! Events in both of their forms (issue 21): what a controller writes through kube-rs's
//! `Recorder` (`events.k8s.io/v1`, a create and then merge patches for its series) is what
//! `kubectl get events` and `kubectl describe` read (`core/v1`), selected by the fields they
//! send; and the real kubectl reads it.

mod common;

use std::process::Command;

use common::{client, service};
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event as Publish, EventType, Recorder, Reporter};
use kube_testserver::{ResourceKind, ServerConfig, TestServer};

fn reference(svc: &Service) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: svc.metadata.name.clone(),
        namespace: svc.metadata.namespace.clone(),
        uid: svc.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

fn deleted(note: &str) -> Publish {
    Publish {
        type_: EventType::Normal,
        reason: "StaleFlowsDeleted".into(),
        note: Some(note.into()),
        action: "DeleteFlows".into(),
        secondary: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_event_is_read_in_both_forms_and_selected_by_field() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web = services
        .create(&PostParams::default(), &service("default", "web", 80, &[]))
        .await
        .expect("web");
    let db = services
        .create(&PostParams::default(), &service("default", "db", 5432, &[]))
        .await
        .expect("db");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ctreap.io/agent".into(),
            instance: Some("node-1".into()),
        },
    );
    // Twice for web (the second is a series patch), once for db.
    for note in ["backend 10.0.0.1:8080 left: 12 flows deleted", "again"] {
        recorder
            .publish(&deleted(note), &reference(&web))
            .await
            .expect("publish web");
    }
    recorder
        .publish(&deleted("db's"), &reference(&db))
        .await
        .expect("publish db");

    // core/v1, as kubectl reads them.
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let sel = format!(
        "involvedObject.kind=Service,involvedObject.name=web,involvedObject.namespace=default,involvedObject.uid={}",
        web.metadata.uid.as_deref().expect("uid")
    );
    let got = core
        .list(&ListParams::default().fields(&sel))
        .await
        .expect("core list");
    assert_eq!(got.items.len(), 1, "{:?}", got.items);
    let e = &got.items[0];
    assert_eq!(e.reason.as_deref(), Some("StaleFlowsDeleted"));
    assert_eq!(
        e.message.as_deref(),
        Some("backend 10.0.0.1:8080 left: 12 flows deleted")
    );
    assert_eq!(e.reporting_component.as_deref(), Some("ctreap.io/agent"));
    assert_eq!(e.reporting_instance.as_deref(), Some("node-1"));
    assert_eq!(
        e.series.as_ref().and_then(|s| s.count),
        Some(2),
        "the repeat is a series"
    );
    assert_eq!(
        core.list(&ListParams::default())
            .await
            .expect("all")
            .items
            .len(),
        2
    );

    // events.k8s.io/v1, by its own field names.
    let new: Api<Event> = Api::namespaced(client.clone(), "default");
    let got = new
        .list(
            &ListParams::default().fields("regarding.name=db,reportingController=ctreap.io/agent"),
        )
        .await
        .expect("events.k8s.io list");
    assert_eq!(got.items.len(), 1);
    assert_eq!(got.items[0].note.as_deref(), Some("db's"));
    // One object: the same resourceVersion in both forms.
    let name = got.items[0].metadata.name.clone().expect("name");
    let twin = core.get(&name).await.expect("core get");
    assert_eq!(
        twin.metadata.resource_version,
        got.items[0].metadata.resource_version
    );

    // A field neither form has is refused as the real server refuses it.
    let err = core
        .list(&ListParams::default().fields("regarding.name=web"))
        .await
        .expect_err("not a core/v1 field");
    assert!(
        err.to_string()
            .contains("field label not supported: regarding.name"),
        "{err}"
    );
    assert!(server.request_count(ResourceKind::Event, kube_testserver::Verb::Patch) >= 1);
}

/// The real `kubectl` (Debian's package; `scripts/test` installs it) reads an Event the way
/// operators do: `kubectl get events --field-selector involvedObject.name=...` and the Events
/// section of `kubectl describe service`.
#[test]
fn kubectl_reads_the_event_of_a_service() {
    let kubectl = which("kubectl").unwrap_or_else(|| {
        panic!("kubectl is not installed: `scripts/test` installs it (apt-get install kubectl)")
    });
    let server =
        TestServer::try_start_background_with(ServerConfig::default()).expect("testserver");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let web = server
        .apply(&service("default", "web", 80, &[]))
        .expect("web");
    let uid = web.metadata.uid.clone().expect("uid");
    server
        .apply_json(serde_json::json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.17f0c0ffee", "namespace": "default"},
            "eventTime": "2026-12-05T10:00:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2026-12-05T10:01:00.000000Z"},
            "reportingController": "ctreap.io/agent", "reportingInstance": "node-1",
            "action": "DeleteFlows", "reason": "StaleFlowsDeleted", "type": "Normal",
            "regarding": {"apiVersion": "v1", "kind": "Service", "namespace": "default",
                          "name": "web", "uid": uid},
            "note": "backend 10.0.0.1:8080 left: 12 flows deleted"
        }))
        .expect("event");
    let run = |args: &[&str]| -> String {
        let out = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("running kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let got = run(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.name=web",
        "-o",
        "jsonpath={range .items[*]}{.reason}|{.message}|{.series.count}{\"\\n\"}{end}",
    ]);
    assert_eq!(
        got.trim(),
        "StaleFlowsDeleted|backend 10.0.0.1:8080 left: 12 flows deleted|3"
    );
    let none = run(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.name=db",
        "-o",
        "name",
    ]);
    assert_eq!(none.trim(), "", "another object's selector selects nothing");
    let described = run(&["describe", "service", "web", "-n", "default"]);
    assert!(
        described.contains("StaleFlowsDeleted")
            && described.contains("backend 10.0.0.1:8080 left: 12 flows deleted"),
        "kubectl describe shows no Event:\n{described}"
    );
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(bin))
        .find(|p| p.is_file())
}
