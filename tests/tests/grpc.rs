//! The gRPC door, through the SDK and through raw stubs: every RPC, its errors, and the
//! rule that both doors share one implementation (what one writes, the other reads).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use serde_json::{json, Value};
use skiff_client::proto::resources_client::ResourcesClient;
use skiff_client::{
    Api, Client, Config, DeleteParams, Deleted, ListParams, Patch, PatchParams, PostParams,
    PropagationPolicy, WatchEvent, WatchParams,
};
use skiff_e2e::Cluster;

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

use skiff_e2e::configmap as cm;

fn client(c: &Cluster) -> Client {
    Client::from_kubeconfig(&c.api.kubeconfig).unwrap()
}

#[tokio::test]
async fn crud_over_grpc_shares_state_with_rest() {
    let c = Cluster::start().await.unwrap();
    let client = client(&c);
    // Standard gRPC health checking answers for the whole server and each service.
    let cfg = Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let channel = tonic::transport::Channel::from_shared(c.api.url(""))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(cfg.ca_pem.unwrap())),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "skiff.v1.Resources"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    let v = client.version().await.unwrap();
    assert_eq!(v.major, "1");
    assert!(v.git_version.contains("skiff"), "{v:?}");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("web-1"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.resource_version.is_some());
    assert_eq!(meta.namespace.as_deref(), Some("default"));

    // REST sees what gRPC wrote, and the other way round.
    let rest = c.kubectl().json(&["get", "pod", "web-1", "-o", "json"]);
    assert_eq!(rest["metadata"]["uid"].as_str(), meta.uid.as_deref());
    c.kubectl()
        .ok(&["create", "configmap", "from-rest", "--from-literal=a=b"]);
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let from_rest = cms.get("from-rest").await.unwrap();
    assert_eq!(from_rest.data.unwrap()["a"], "b");

    // get / get_opt / list with selectors and pagination.
    assert_eq!(pods.get("web-1").await.unwrap().metadata.uid, meta.uid);
    assert!(pods.get_opt("nope").await.unwrap().is_none());
    for i in 2..=5 {
        pods.create(&PostParams::default(), &pod(&format!("web-{i}")))
            .await
            .unwrap();
    }
    let mut other = pod("db");
    other.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
    pods.create(&PostParams::default(), &other).await.unwrap();
    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 5);
    let page1 = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page1.items.len(), 2);
    assert_eq!(page1.remaining_item_count, Some(4));
    let token = page1.continue_token.clone().expect("more pages");
    let page2 = pods
        .list(&ListParams {
            limit: 10,
            continue_token: Some(token),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page2.items.len(), 4);
    assert_eq!(page2.resource_version, page1.resource_version);
    let by_field = pods
        .list(&ListParams::default().fields("metadata.name=db"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    let everywhere: Api<Pod> = Api::all(client.clone());
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        6
    );

    // replace: conditional on the resourceVersion.
    let mut cur = cms.get("from-rest").await.unwrap();
    cur.data = Some([("a".to_string(), "c".to_string())].into());
    let replaced = cms
        .replace("from-rest", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_eq!(replaced.data.as_ref().unwrap()["a"], "c");
    let stale = cms
        .replace("from-rest", &PostParams::default(), &cur)
        .await
        .unwrap_err();
    assert!(stale.is_conflict(), "{stale}");
    let a = stale.api().unwrap();
    assert_eq!((a.code, a.reason.as_str()), (409, "Conflict"));
    assert!(
        a.message.contains("the object has been modified"),
        "{}",
        a.message
    );

    // replace_status changes only the status; replace keeps it.
    let mut p = pods.get("web-1").await.unwrap();
    p.status =
        Some(serde_json::from_value(json!({"phase": "Running", "podIP": "10.0.0.9"})).unwrap());
    p.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
    let st = pods
        .replace_status("web-1", &PostParams::default(), &p)
        .await
        .unwrap();
    assert_eq!(
        st.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(st.spec.as_ref().unwrap().active_deadline_seconds, None);

    // Every patch type.
    let merged = cms
        .patch(
            "from-rest",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"m": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data.as_ref().unwrap()["m"], "1");
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/j", "value": "2"}])).unwrap();
    let jpatched = cms
        .patch(
            "from-rest",
            &PatchParams::default(),
            &Patch::<Value>::Json(jp),
        )
        .await
        .unwrap();
    assert_eq!(jpatched.data.as_ref().unwrap()["j"], "2");
    let sm = pods
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}),
            ),
        )
        .await
        .unwrap();
    let containers = &sm.spec.as_ref().unwrap().containers;
    assert_eq!(
        (containers.len(), containers[0].image.as_deref()),
        (1, Some("busybox:2"))
    );
    let applied = cms
        .patch(
            "applied",
            &PatchParams::apply("grpc-test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["x"], "1");
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .map(|m| (m.manager.clone().unwrap(), m.operation.clone().unwrap()))
        .collect();
    assert_eq!(
        managers,
        vec![("grpc-test".to_string(), "Apply".to_string())]
    );
    let conflict = cms
        .patch(
            "applied",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "2"}})),
        )
        .await
        .unwrap_err();
    assert!(conflict.is_conflict(), "{conflict}");
    let forced = cms
        .patch(
            "applied",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["x"], "2");
    let status_patch = pods
        .patch_status(
            "web-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        status_patch.status.unwrap().phase.as_deref(),
        Some("Succeeded")
    );

    // Bind: once.
    pods.bind("web-3", "node-a").await.unwrap();
    let bound = pods.get("web-3").await.unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("node-a"));
    let again = pods.bind("web-3", "node-b").await.unwrap_err();
    assert!(again.is_conflict(), "{again}");
    assert!(again
        .api()
        .unwrap()
        .message
        .contains("already assigned to node \"node-a\""));
    let missing = pods.bind("ghost", "node-a").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");

    // Delete: preconditions, grace, dry run, propagation.
    let wrong_uid = pods
        .delete(
            "web-4",
            &DeleteParams {
                precondition_uid: Some("not-the-uid".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(wrong_uid.is_conflict(), "{wrong_uid}");
    let dry = pods
        .delete(
            "web-4",
            &DeleteParams {
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(dry, Deleted::Gone(_)));
    assert!(pods.get_opt("web-4").await.unwrap().is_some());
    // A pod on a node is deleted gracefully: it stays, terminating.
    match pods
        .delete("web-3", &DeleteParams::default())
        .await
        .unwrap()
    {
        Deleted::Pending(p) => assert!(p.metadata.deletion_timestamp.is_some()),
        Deleted::Gone(_) => panic!("a bound pod is deleted gracefully"),
    }
    match pods
        .delete(
            "web-3",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap()
    {
        Deleted::Gone(p) => assert_eq!(p.metadata.name.as_deref(), Some("web-3")),
        Deleted::Pending(_) => panic!("grace 0 deletes at once"),
    }
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let fg = deps
        .delete(
            "d",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    match fg {
        Deleted::Pending(d) => assert!(d
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())),
        Deleted::Gone(_) => panic!("foreground deletion waits for dependents"),
    }

    // Cluster-scoped kinds.
    let nodes: Api<Node> = Api::cluster(client.clone());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": "node-a"}})).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let nss: Api<Namespace> = Api::cluster(client);
    assert!(nss.get("kube-system").await.is_ok());
}

#[tokio::test]
async fn grpc_errors_carry_kubernetes_status() {
    // A small watch cache window, so an old resourceVersion is soon out of it.
    let etcd = skiff_e2e::Etcd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "t0ken-abc,alice,1001,\"dev\"\n").unwrap();
    let api = skiff_e2e::ApiServer::start_with(
        &etcd,
        &[
            "--watch-cache-size=10",
            &format!("--token-auth-file={}", tokens.display()),
        ],
    )
    .await
    .unwrap();
    let c = Cluster { api, etcd };
    let client = client(&c);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    let first_rv = first.metadata.resource_version.unwrap();

    let dup = cms
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap_err();
    assert!(dup.is_already_exists(), "{dup}");
    let a = dup.api().unwrap();
    assert_eq!((a.code, a.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(a.status.as_ref().unwrap()["details"]["name"], "a");

    let nf = cms.get("zzz").await.unwrap_err();
    assert!(nf.is_not_found());
    assert_eq!(nf.api().unwrap().message, "configmaps \"zzz\" not found");

    // Validation failures: InvalidArgument with the field causes.
    let bad = cm("Not_A_Name", "1");
    let inv = cms.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(inv.is_invalid(), "{inv}");
    let a = inv.api().unwrap();
    assert_eq!((a.code, a.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        a.status.as_ref().unwrap()["details"]["causes"][0]["field"],
        "metadata.name"
    );

    // Strict field validation refuses unknown fields.
    let mut raw = ResourcesClient::new(
        tonic::transport::Channel::from_shared(c.api.url(""))
            .unwrap()
            .tls_config(tls(&c))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let cm_ref = || skiff_client::proto::ResourceRef {
        group: String::new(),
        version: "v1".into(),
        resource: "configmaps".into(),
        namespace: "default".into(),
    };
    let strict = raw
        .create(skiff_client::proto::CreateRequest {
            resource: Some(cm_ref()),
            object: Some(skiff_client::proto::Object {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                json: br#"{"metadata":{"name":"s"},"bogus":1}"#.to_vec().into(),
            }),
            options: Some(skiff_client::proto::WriteOptions {
                field_validation: skiff_client::proto::FieldValidation::Strict as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(strict.code(), tonic::Code::InvalidArgument, "{strict:?}");
    assert!(strict.message().contains("bogus"), "{}", strict.message());

    // Malformed envelopes and unknown resources.
    let junk = raw
        .create(skiff_client::proto::CreateRequest {
            resource: Some(cm_ref()),
            object: Some(skiff_client::proto::Object {
                json: b"{not json".to_vec().into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(junk.code(), tonic::Code::InvalidArgument);
    let unknown = raw
        .list(skiff_client::proto::ListRequest {
            resource: Some(skiff_client::proto::ResourceRef {
                version: "v1".into(),
                resource: "widgets".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let bad_selector = raw
        .list(skiff_client::proto::ListRequest {
            resource: Some(cm_ref()),
            label_selector: "a in (".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_selector.code(), tonic::Code::InvalidArgument);
    let no_patch_type = raw
        .patch(skiff_client::proto::PatchRequest {
            resource: Some(cm_ref()),
            name: "a".into(),
            patch: b"{}".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_patch_type.code(), tonic::Code::InvalidArgument);

    // Without credentials: system:anonymous, refused (PermissionDenied); a bad token is
    // Unauthenticated.
    let mut cfg = Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    cfg.identity = None;
    let anonymous: Api<ConfigMap> = Api::namespaced(Client::new(cfg).unwrap(), "default");
    let err = anonymous.get("a").await.unwrap_err();
    assert_eq!(err.api().unwrap().grpc_code, tonic::Code::PermissionDenied);
    assert_eq!(
        err.api().unwrap().message,
        r#"configmaps "a" is forbidden: User "system:anonymous" cannot get resource "configmaps" in API group "" in the namespace "default""#
    );
    c.kubectl().ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
    ]);
    let mut cfg = Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    cfg.identity = None;
    cfg.token = Some("t0ken-abc".into());
    let with_token: Api<ConfigMap> = Api::namespaced(Client::new(cfg.clone()).unwrap(), "default");
    assert_eq!(with_token.get("a").await.unwrap().data.unwrap()["k"], "1");
    cfg.token = Some("wrong".into());
    let bad_token: Api<ConfigMap> = Api::namespaced(Client::new(cfg).unwrap(), "default");
    let err = bad_token.get("a").await.unwrap_err();
    assert_eq!(err.api().unwrap().grpc_code, tonic::Code::Unauthenticated);
    assert_eq!(err.api().unwrap().code, 401);

    // A watch from a resourceVersion the server no longer holds: OutOfRange (410 Gone).
    for i in 0..30 {
        cms.create(&PostParams::default(), &cm(&format!("churn-{i}"), "1"))
            .await
            .unwrap();
    }
    let w = cms.watch(&WatchParams::default(), &first_rv).await;
    let gone = match w {
        Err(e) => e,
        Ok(mut s) => s.next().await.unwrap().unwrap_err(),
    };
    assert!(gone.is_gone(), "{gone}");
    assert_eq!(gone.api().unwrap().code, 410);

    // Creating in a namespace being deleted: FailedPrecondition.
    c.kubectl().ok(&["create", "namespace", "doomed"]);
    let in_doomed: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    in_doomed
        .create(&PostParams::default(), &cm("x", "1"))
        .await
        .unwrap();
    let mut fin = cm("held", "1");
    fin.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    in_doomed
        .create(&PostParams::default(), &fin)
        .await
        .unwrap();
    c.kubectl()
        .ok(&["delete", "namespace", "doomed", "--wait=false"]);
    let err = in_doomed
        .create(&PostParams::default(), &cm("late", "1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.api().unwrap().grpc_code,
        tonic::Code::FailedPrecondition,
        "{err}"
    );
    assert_eq!(err.api().unwrap().code, 403);
    in_doomed
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();

    // Nothing bad input did changed the stored object.
    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["k"], "1");
}

fn tls(c: &Cluster) -> tonic::transport::ClientTlsConfig {
    let cfg = Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let (cert, key) = cfg.identity.unwrap();
    tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cfg.ca_pem.unwrap()))
        .identity(tonic::transport::Identity::from_pem(cert, key))
}

#[tokio::test]
async fn watch_streams_events_and_bookmarks() {
    let c = Cluster::start().await.unwrap();
    let client = client(&c);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("before", "0"))
        .await
        .unwrap();
    let listed = cms.list(&ListParams::default()).await.unwrap();

    // From the list's version: only later changes, in order.
    let wp = WatchParams {
        bookmarks: true,
        ..Default::default()
    };
    let mut s = Box::pin(cms.watch(&wp, &listed.resource_version).await.unwrap());
    cms.create(&PostParams::default(), &cm("w", "1"))
        .await
        .unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(o) => seen.push(("ADDED", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.metadata.name.unwrap())),
            WatchEvent::Bookmark { .. } => {}
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED", "w".to_string()),
            ("MODIFIED", "w".into()),
            ("DELETED", "w".into())
        ]
    );

    // Initial events, then a bookmark marking their end; one object by name.
    let wp = WatchParams {
        bookmarks: true,
        send_initial_events: true,
        name: Some("before".into()),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let events: Vec<_> = cms.watch(&wp, "").await.unwrap().collect::<Vec<_>>().await;
    let first = events.first().unwrap().as_ref().unwrap();
    assert!(matches!(first, WatchEvent::Added(o) if o.metadata.name.as_deref() == Some("before")));
    assert!(events.iter().any(|e| matches!(
        e,
        Ok(WatchEvent::Bookmark {
            initial_events_end: true,
            ..
        })
    )));
    // The stream ended by itself at its timeout.
    assert!(events.iter().all(|e| e.is_ok()));
}

/// Creates, reads, lists and deletes one object of `K` through the SDK.
async fn round_trip<K: skiff_client::Object>(api: Api<K>, body: Value) {
    let obj: K = serde_json::from_value(body).unwrap();
    let name = obj.metadata().name.clone().unwrap();
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", K::KIND));
    assert!(created.metadata().uid.is_some(), "{}", K::KIND);
    let got = api.get(&name).await.unwrap();
    assert_eq!(got.metadata().uid, created.metadata().uid, "{}", K::KIND);
    let listed = api
        .list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "{}", K::KIND);
    api.delete(
        &name,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Namespaces finish deleting in the background (their contents go first).
    let mut gone = false;
    for _ in 0..100 {
        if api.get_opt(&name).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "{} deleted", K::KIND);
}

#[tokio::test]
async fn every_served_type_round_trips_through_the_sdk() {
    use k8s_openapi::api::apps::v1::{DaemonSet, ReplicaSet};
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Endpoints, Event, Secret, Service, ServiceAccount};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::scheduling::v1::PriorityClass;

    let c = Cluster::start().await.unwrap();
    let cl = client(&c);
    let template = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let job_template =
        json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}});
    let ns = |n: &str| json!({"metadata": {"name": n}});
    round_trip::<Namespace>(Api::cluster(cl.clone()), ns("t-ns")).await;
    round_trip::<Node>(Api::cluster(cl.clone()), ns("t-node")).await;
    round_trip::<PriorityClass>(
        Api::cluster(cl.clone()),
        json!({"metadata": {"name": "t-pc"}, "value": 1000}),
    )
    .await;
    let d = "default";
    round_trip::<Pod>(
        Api::namespaced(cl.clone(), d),
        serde_json::to_value(pod("t-pod")).unwrap(),
    )
    .await;
    round_trip::<ConfigMap>(Api::namespaced(cl.clone(), d), ns("t-cm")).await;
    round_trip::<Secret>(
        Api::namespaced(cl.clone(), d),
        json!({"metadata": {"name": "t-secret"}, "stringData": {"k": "v"}}),
    )
    .await;
    round_trip::<ServiceAccount>(Api::namespaced(cl.clone(), d), ns("t-sa")).await;
    round_trip::<Service>(
        Api::namespaced(cl.clone(), d),
        json!({"metadata": {"name": "t-svc"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    round_trip::<Endpoints>(Api::namespaced(cl.clone(), d), ns("t-ep")).await;
    round_trip::<EndpointSlice>(
        Api::namespaced(cl.clone(), d),
        json!({"metadata": {"name": "t-eps"}, "addressType": "IPv4", "endpoints": []}),
    )
    .await;
    round_trip::<Event>(Api::namespaced(cl.clone(), d), json!({"metadata": {"name": "t-ev"}, "involvedObject": {"kind": "Pod", "name": "x", "namespace": d}, "reason": "Test"})).await;
    round_trip::<Lease>(Api::namespaced(cl.clone(), d), ns("t-lease")).await;
    let sel = json!({"matchLabels": {"a": "b"}});
    round_trip::<Deployment>(
        Api::namespaced(cl.clone(), d),
        json!({"metadata": {"name": "t-dep"}, "spec": {"selector": sel, "template": template}}),
    )
    .await;
    round_trip::<ReplicaSet>(
        Api::namespaced(cl.clone(), d),
        json!({"metadata": {"name": "t-rs"}, "spec": {"selector": sel, "template": template}}),
    )
    .await;
    round_trip::<DaemonSet>(
        Api::namespaced(cl.clone(), d),
        json!({"metadata": {"name": "t-ds"}, "spec": {"selector": sel, "template": template}}),
    )
    .await;
    round_trip::<Job>(
        Api::namespaced(cl.clone(), d),
        json!({"metadata": {"name": "t-job"}, "spec": {"template": job_template}}),
    )
    .await;
    round_trip::<CronJob>(Api::namespaced(cl.clone(), d), json!({"metadata": {"name": "t-cj"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": job_template}}}})).await;
}

#[tokio::test]
async fn client_limits_its_rate_and_counts_its_requests() {
    let c = Cluster::start().await.unwrap();
    let mut cfg = Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    cfg.qps = 5.0;
    cfg.burst = 1;
    let client = Client::new(cfg).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let start = std::time::Instant::now();
    for _ in 0..6 {
        cms.get_opt("x").await.unwrap();
    }
    // One request at once, then one every 200 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "6 requests at 5/s took {:?}",
        start.elapsed()
    );
    let mut registry = prometheus_client::registry::Registry::default();
    client.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("skiff_client_requests_total{")
                && l.contains("verb=\"get\"")
                && l.contains("code=\"NotFound\"")
        })
        .unwrap_or_else(|| panic!("no request counter in:\n{text}"));
    assert!(line.ends_with(" 6"), "{line}");
    assert!(text.contains("skiff_client_rate_limited_total 5"), "{text}");
}
