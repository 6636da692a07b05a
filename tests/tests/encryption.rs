//! Encryption at rest with a real etcd, a real `skiff-apiserver`, the real `skiff-kms` plugin
//! and the real kubectl: what etcd holds, what clients read, key rotation and re-encryption,
//! configuration reload, the plugin going away and coming back, and values that cannot be
//! decrypted.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use etcd_client::Client;
use prost::Message;
use serde_json::Value;
use skiff_apiserver::encryption::kms::EncryptedObject;
use skiff_e2e::kms::KmsPlugin;
use skiff_e2e::{watch_events, ApiServer, Etcd};

const HEAD: &str = "kind: EncryptionConfiguration\napiVersion: apiserver.config.k8s.io/v1\n";
const KMS_PREFIX: &[u8] = b"k8s:enc:kms:v2:skiff:";

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Secrets through the plugin first, plaintext still readable.
fn kms_config(kms: &KmsPlugin) -> String {
    format!(
        "{HEAD}resources:
- resources: [secrets]
  providers:
  - kms:
      apiVersion: v2
      name: skiff
      endpoint: {}
      timeout: 3s
  - identity: {{}}
",
        kms.endpoint()
    )
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("encryption.yaml");
    let tmp = dir.join("encryption.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path.display().to_string()
}

async fn etcd_client(etcd: &Etcd) -> Client {
    Client::connect([etcd.endpoint.clone()], None)
        .await
        .unwrap()
}

/// The raw value etcd holds under `key`.
async fn raw(c: &mut Client, key: &str) -> Option<Vec<u8>> {
    let mut r = c.get(key, None).await.unwrap();
    r.take_kvs()
        .into_iter()
        .next()
        .map(|kv| kv.value().to_vec())
}

/// Every key and raw value under `prefix`.
async fn raw_all(c: &mut Client, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut r = c
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    r.take_kvs()
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect()
}

/// The key id a KMS v2 value in etcd was written under.
fn key_id(v: &[u8]) -> String {
    assert!(
        v.starts_with(KMS_PREFIX),
        "not a KMS v2 value: {}",
        String::from_utf8_lossy(v)
    );
    EncryptedObject::decode(&v[KMS_PREFIX.len()..])
        .unwrap()
        .key_id
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn start(etcd: &Etcd, flags: &[&str]) -> ApiServer {
    ApiServer::start_with(etcd, flags).await.unwrap()
}

/// Polls `path` until it answers `code`, for up to 20 s.
async fn wait_for_code(api: &ApiServer, path: &str, code: u16) -> bool {
    for _ in 0..200 {
        if get_raw(api, path).await.0 == code {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn get_raw(api: &ApiServer, path: &str) -> (u16, String) {
    let r = api
        .client()
        .unwrap()
        .get(api.url(path))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn kms_v2_keeps_secrets_unreadable_in_etcd_and_readable_through_the_api() {
    let etcd = Etcd::start().unwrap();
    let kms = KmsPlugin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &kms_config(&kms));
    let api = start(&etcd, &[&format!("--encryption-provider-config={config}")]).await;
    let k = api.kubectl();
    let mut c = etcd_client(&etcd).await;

    // A watch opened before the write sees it in plaintext.
    let watch = api
        .client()
        .unwrap()
        .get(api.url("/api/v1/namespaces/default/secrets?watch=1"))
        .send()
        .await
        .unwrap();
    let mut events = watch_events(watch);

    let secret = "hunter2-very-secret-value";
    k.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={secret}"),
    ]);
    let stored = raw(&mut c, "/registry/secrets/default/db").await.unwrap();
    assert!(
        stored.starts_with(KMS_PREFIX),
        "{}",
        String::from_utf8_lossy(&stored)
    );
    assert!(
        !contains(&stored, secret.as_bytes())
            && !contains(&stored, b64(secret.as_bytes()).as_bytes())
    );
    assert!(!contains(&stored, b"\"kind\""), "no JSON in clear");
    let o = EncryptedObject::decode(&stored[KMS_PREFIX.len()..]).unwrap();
    assert_eq!(o.key_id, kms.primary().unwrap());
    assert_eq!(
        o.encrypted_dek_source_type, 1,
        "an HKDF seed, as kube-apiserver writes"
    );

    let got = k.json(&["get", "secret", "db", "-o", "json"]);
    assert_eq!(got["data"]["password"], b64(secret.as_bytes()));
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.recv().await.expect("watch open");
            if e["object"]["metadata"]["name"] == "db" {
                return e;
            }
        }
    })
    .await
    .expect("the watch delivers the secret");
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["data"]["password"], b64(secret.as_bytes()));
    let listed = k.json(&["get", "secrets", "-o", "json"]);
    assert_eq!(
        listed["items"][0]["data"]["password"],
        b64(secret.as_bytes())
    );

    // Resources the configuration does not name are stored as they are.
    k.ok(&[
        "create",
        "configmap",
        "plain",
        "--from-literal=k=visible-value",
    ]);
    let cm = raw(&mut c, "/registry/configmaps/default/plain")
        .await
        .unwrap();
    assert!(cm.starts_with(b"{") && contains(&cm, b"visible-value"));

    // Health checks and metrics, under kube-apiserver's names.
    assert_eq!(
        get_raw(&api, "/readyz/kms-providers").await,
        (200, "ok".into())
    );
    assert_eq!(
        get_raw(&api, "/healthz/kms-providers").await,
        (200, "ok".into())
    );
    let (_, verbose) = get_raw(&api, "/readyz?verbose").await;
    assert!(verbose.contains("[+]kms-providers ok"), "{verbose}");
    let (_, livez) = get_raw(&api, "/livez?verbose").await;
    assert!(!livez.contains("kms"), "not a liveness check: {livez}");
    let (_, metrics) = get_raw(&api, "/metrics").await;
    for m in [
        "apiserver_storage_transformation_operations_total{resource=\"secrets\",transformation_type=\"to_storage\",transformer_prefix=\"k8s:enc:kms:v2:skiff:\",status=\"OK\"}",
        "apiserver_envelope_encryption_key_id_hash_total{transformation_type=\"to_storage\",provider_name=\"skiff\"",
        "apiserver_envelope_encryption_kms_operations_latency_seconds_count{provider_name=\"skiff\",method_name=\"/v2.KeyManagementService/Encrypt\",grpc_status_code=\"OK\"} 1",
    ] {
        assert!(metrics.contains(m), "{m} missing");
    }
}

#[tokio::test]
async fn without_a_configuration_there_is_no_kms_check() {
    let etcd = Etcd::start().unwrap();
    let api = start(&etcd, &[]).await;
    assert_eq!(get_raw(&api, "/readyz/kms-providers").await.0, 404);
    let mut c = etcd_client(&etcd).await;
    api.kubectl()
        .ok(&["create", "secret", "generic", "s", "--from-literal=a=b"]);
    assert!(raw(&mut c, "/registry/secrets/default/s")
        .await
        .unwrap()
        .starts_with(b"{"));
}

#[tokio::test]
async fn local_providers_write_their_prefixes_and_read_back() {
    let etcd = Etcd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{HEAD}resources:
- resources: [secrets]
  providers: [{{aescbc: {{keys: [{{name: cbckey, secret: {k32}}}]}}}}]
- resources: [configmaps]
  providers: [{{secretbox: {{keys: [{{name: boxkey, secret: {k32}}}]}}}}]
- resources: ['*.apps']
  providers: [{{aesgcm: {{keys: [{{name: gcmkey, secret: {k16}}}]}}}}]
",
            k32 = b64(&[7u8; 32]),
            k16 = b64(&[9u8; 16]),
        ),
    );
    let api = start(&etcd, &[&format!("--encryption-provider-config={config}")]).await;
    let k = api.kubectl();
    let mut c = etcd_client(&etcd).await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=k=secret-value",
    ]);
    k.ok(&["create", "configmap", "cm", "--from-literal=k=config-value"]);
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=registry.local/web:1",
    ]);
    for (key, prefix, clear) in [
        (
            "/registry/secrets/default/s",
            "k8s:enc:aescbc:v1:cbckey:",
            b64(b"secret-value"),
        ),
        (
            "/registry/configmaps/default/cm",
            "k8s:enc:secretbox:v1:boxkey:",
            "config-value".into(),
        ),
        (
            "/registry/deployments/default/web",
            "k8s:enc:aesgcm:v1:gcmkey:",
            "registry.local/web:1".into(),
        ),
    ] {
        let v = raw(&mut c, key).await.unwrap();
        assert!(
            v.starts_with(prefix.as_bytes()),
            "{key}: {}",
            String::from_utf8_lossy(&v)
        );
        assert!(
            !contains(&v, clear.as_bytes()),
            "{key} holds its data in clear"
        );
    }
    assert_eq!(
        k.json(&["get", "secret", "s", "-o", "json"])["data"]["k"],
        b64(b"secret-value")
    );
    assert_eq!(
        k.json(&["get", "configmap", "cm", "-o", "json"])["data"]["k"],
        "config-value"
    );
    let d = k.json(&["get", "deployment", "web", "-o", "json"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/web:1"
    );
    // Namespaces (no rule names them) stay plain.
    assert!(raw(&mut c, "/registry/namespaces/default")
        .await
        .unwrap()
        .starts_with(b"{"));
}

/// Waits until a new secret is written under `want` (the server polls its plugin).
async fn wait_for_key_id(k: &skiff_e2e::Kubectl, c: &mut Client, want: &str, api: &ApiServer) {
    for i in 0..80 {
        let name = format!("probe-{i}");
        k.ok(&["create", "secret", "generic", &name, "--from-literal=a=b"]);
        let v = raw(c, &format!("/registry/secrets/default/{name}"))
            .await
            .unwrap();
        k.ok(&["delete", "secret", &name]);
        if key_id(&v) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("writes never moved to key {want}; log:\n{}", api.log());
}

#[tokio::test]
async fn rotation_reencryption_and_removing_the_old_key() {
    let etcd = Etcd::start().unwrap();
    let kms = KmsPlugin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &kms_config(&kms));
    let mut api = start(&etcd, &[&format!("--encryption-provider-config={config}")]).await;
    let k = api.kubectl();
    let mut c = etcd_client(&etcd).await;
    k.ok(&["create", "namespace", "other"]);
    for (ns, name) in [("default", "a"), ("default", "b"), ("other", "c")] {
        k.ok(&[
            "create",
            "secret",
            "generic",
            name,
            "-n",
            ns,
            &format!("--from-literal=v=value-{name}"),
        ]);
    }
    let old = kms.primary().unwrap();
    let all = raw_all(&mut c, "/registry/secrets/").await;
    assert!(all.iter().all(|(_, v)| key_id(v) == old));

    let status = kms.command(&["status"]).unwrap();
    assert!(status.contains(&old) && status.contains('*'), "{status}");
    let new = kms.command(&["rotate"]).unwrap();
    assert_ne!(new, old);
    assert_eq!(kms.primary().unwrap(), new);
    wait_for_key_id(&k, &mut c, &new, &api).await;
    // Values under the old key still read.
    assert_eq!(
        k.json(&["get", "secret", "a", "-o", "json"])["data"]["v"],
        b64(b"value-a")
    );

    // Re-encrypt as Kubernetes documents it: replace every secret with itself.
    let listed = k.ok(&["get", "secrets", "-A", "-o", "json"]);
    k.ok_input(&["replace", "-f", "-"], &listed);
    let all = raw_all(&mut c, "/registry/secrets/").await;
    assert_eq!(all.len(), 3);
    for (key, v) in &all {
        assert_eq!(key_id(v), new, "{key} is still under the old key");
    }

    // The old key goes; a fresh server (no cached data keys) reads everything.
    kms.command(&["remove-key", &old]).unwrap();
    let refused = kms.command(&["remove-key", &new]).unwrap_err().to_string();
    assert!(refused.contains("primary"), "{refused}");
    tokio::time::sleep(Duration::from_millis(1500)).await; // the plugin re-reads its keys each second
    api.restart().await.unwrap();
    let k = api.kubectl();
    for (ns, name) in [("default", "a"), ("default", "b"), ("other", "c")] {
        let s = k.json(&["get", "secret", name, "-n", ns, "-o", "json"]);
        assert_eq!(s["data"]["v"], b64(format!("value-{name}").as_bytes()));
    }
}

#[tokio::test]
async fn a_reloaded_configuration_takes_a_new_key_without_restart() {
    let etcd = Etcd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (b64(&[1u8; 32]), b64(&[2u8; 32]));
    let one = format!(
        "{HEAD}resources:\n- resources: [secrets]\n  providers: [{{aescbc: {{keys: [{{name: key1, secret: {k1}}}]}}}}]\n"
    );
    let config = write_config(dir.path(), &one);
    let api = start(
        &etcd,
        &[
            &format!("--encryption-provider-config={config}"),
            "--encryption-provider-config-automatic-reload",
        ],
    )
    .await;
    let k = api.kubectl();
    let mut c = etcd_client(&etcd).await;
    // With automatic reload the kms-providers check is there even without KMS.
    assert_eq!(
        get_raw(&api, "/readyz/kms-providers").await,
        (200, "ok".into())
    );
    k.ok(&["create", "secret", "generic", "old", "--from-literal=v=1"]);
    assert!(raw(&mut c, "/registry/secrets/default/old")
        .await
        .unwrap()
        .starts_with(b"k8s:enc:aescbc:v1:key1:"));

    // key2 added and made primary, key1 kept for reading.
    write_config(
        dir.path(),
        &format!(
            "{HEAD}resources:\n- resources: [secrets]\n  providers: [{{aescbc: {{keys: [{{name: key2, secret: {k2}}}, {{name: key1, secret: {k1}}}]}}}}]\n"
        ),
    );
    let mut moved = false;
    for n in 0..80 {
        let name = format!("new-{n}");
        k.ok(&["create", "secret", "generic", &name, "--from-literal=v=2"]);
        let v = raw(&mut c, &format!("/registry/secrets/default/{name}"))
            .await
            .unwrap();
        if v.starts_with(b"k8s:enc:aescbc:v1:key2:") {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(moved, "the new key was not picked up; log:\n{}", api.log());
    assert_eq!(
        k.json(&["get", "secret", "old", "-o", "json"])["data"]["v"],
        b64(b"1")
    );
    let listed = k.ok(&["get", "secrets", "-o", "json"]);
    k.ok_input(&["replace", "-f", "-"], &listed);
    for (key, v) in raw_all(&mut c, "/registry/secrets/").await {
        assert!(
            v.starts_with(b"k8s:enc:aescbc:v1:key2:"),
            "{key} not re-encrypted"
        );
    }
    let (_, metrics) = get_raw(&api, "/metrics").await;
    assert!(
        metrics.contains(
            "apiserver_encryption_config_controller_automatic_reloads_total{status=\"success\""
        ),
        "{metrics}"
    );

    // A bad file: logged, counted, and the configuration in force stays.
    write_config(dir.path(), &format!("{HEAD}resources:\n- resources: [secrets]\n  providers: [{{aescbc: {{keys: [{{name: short, secret: {}}}]}}}}]\n", b64(b"short")));
    let mut failed = false;
    for _ in 0..100 {
        if get_raw(&api, "/metrics")
            .await
            .1
            .contains("automatic_reloads_total{status=\"failure\"")
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(failed, "the bad file was not reported; log:\n{}", api.log());
    assert!(api.log().contains("secret is not of the expected length"));
    k.ok(&["create", "secret", "generic", "after", "--from-literal=v=3"]);
    assert!(raw(&mut c, "/registry/secrets/default/after")
        .await
        .unwrap()
        .starts_with(b"k8s:enc:aescbc:v1:key2:"));
}

#[tokio::test]
async fn the_plugin_stopped_and_restarted() {
    let etcd = Etcd::start().unwrap();
    let mut kms = KmsPlugin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &kms_config(&kms));
    let api = start(&etcd, &[&format!("--encryption-provider-config={config}")]).await;
    let k = api.kubectl();
    let mut c = etcd_client(&etcd).await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "before",
        "--from-literal=v=kept",
    ]);

    kms.stop();
    assert!(
        wait_for_code(&api, "/readyz/kms-providers", 500).await,
        "/readyz/kms-providers did not fail"
    );
    assert_eq!(get_raw(&api, "/readyz").await.0, 500);
    let err = k.fails(&[
        "create",
        "secret",
        "generic",
        "during",
        "--from-literal=v=lost",
    ]);
    assert!(
        err.contains("InternalError") || err.contains("Internal error"),
        "{err}"
    );
    assert!(err.contains("kms provider \"skiff\""), "{err}");
    assert!(
        raw(&mut c, "/registry/secrets/default/during")
            .await
            .is_none(),
        "nothing written unencrypted"
    );
    // Reads of values whose data key is cached go on; resources without encryption write.
    assert_eq!(
        k.json(&["get", "secret", "before", "-o", "json"])["data"]["v"],
        b64(b"kept")
    );
    k.ok(&["create", "configmap", "still", "--from-literal=k=v"]);

    kms.restart().unwrap();
    assert!(
        wait_for_code(&api, "/readyz/kms-providers", 200).await,
        "the plugin was not noticed back; log:\n{}\nplugin:\n{}",
        api.log(),
        kms.log()
    );
    k.ok(&[
        "create",
        "secret",
        "generic",
        "after",
        "--from-literal=v=ok",
    ]);
    assert!(raw(&mut c, "/registry/secrets/default/after")
        .await
        .unwrap()
        .starts_with(KMS_PREFIX));
}

#[tokio::test]
async fn an_undecryptable_value_fails_only_its_own_object() {
    let etcd = Etcd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{HEAD}resources:\n- resources: [secrets]\n  providers: [{{aesgcm: {{keys: [{{name: key1, secret: {}}}]}}}}]\n",
            b64(&[5u8; 32])
        ),
    );
    let api = start(&etcd, &[&format!("--encryption-provider-config={config}")]).await;
    let k = api.kubectl();
    let mut c = etcd_client(&etcd).await;
    k.ok(&["create", "secret", "generic", "good1", "--from-literal=v=1"]);
    // A value under a key name nobody has, and one that is garbage under the right name.
    c.put(
        "/registry/secrets/default/broken",
        b"k8s:enc:aesgcm:v1:lost:0123456789abcdefghijklmnopqrstuvwxyz".to_vec(),
        None,
    )
    .await
    .unwrap();
    c.put(
        "/registry/secrets/default/garbled",
        b"k8s:enc:aesgcm:v1:key1:0123456789abcdefghijklmnopqrstuvwxyz".to_vec(),
        None,
    )
    .await
    .unwrap();
    k.ok(&["create", "secret", "generic", "good2", "--from-literal=v=2"]);

    let err = k.fails(&["get", "secret", "broken"]);
    assert!(err.contains("/registry/secrets/default/broken"), "{err}");
    assert!(err.contains("no matching key was found"), "{err}");
    let (code, body) = get_raw(&api, "/api/v1/namespaces/default/secrets/garbled").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, body["reason"].as_str()),
        (500, Some("InternalError"))
    );
    assert!(
        body["message"].as_str().unwrap().contains("garbled"),
        "{body}"
    );

    // The list (from the watch cache, and from etcd with a limit) shows the others and warns.
    for args in [
        vec!["get", "secrets", "-o", "name"],
        vec!["get", "secrets", "-o", "name", "--chunk-size=1"],
    ] {
        let r = k.run(&args);
        assert!(r.status.success(), "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout.trim(), "secret/good1\nsecret/good2", "{args:?}");
        assert!(
            r.stderr.contains("Warning:")
                && r.stderr.contains("broken")
                && r.stderr.contains("garbled"),
            "{}",
            r.stderr
        );
    }
    // The watch cache carries on past it.
    k.ok(&["create", "secret", "generic", "good3", "--from-literal=v=3"]);
    assert!(k
        .ok(&["get", "secrets", "-o", "name"])
        .contains("secret/good3"));
    let (_, metrics) = get_raw(&api, "/metrics").await;
    assert!(metrics.contains("transformation_type=\"from_storage\",transformer_prefix=\"k8s:enc:aesgcm:v1:\",status=\"unknown-non-grpc\""), "{metrics}");
    assert!(api.log().contains("could not be read"));
    // Kubernetes' way out: DELETE with ignoreStoreReadErrorWithClusterBreakingPotential, for a
    // user who may `unsafe-delete-ignore-read-errors` (an ordinary delete cannot read it).
    assert!(k
        .fails(&["delete", "secret", "broken"])
        .contains("unable to transform key"));
    let unsafe_delete = |name: &str, query: &str, as_user: Option<&str>| {
        let mut r = api
            .client()
            .unwrap()
            .delete(api.url(&format!("/api/v1/namespaces/default/secrets/{name}{query}")))
            .json(
                &serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1",
                "ignoreStoreReadErrorWithClusterBreakingPotential": true}),
            );
        if let Some(u) = as_user {
            r = r.header("Impersonate-User", u);
        }
        async move {
            let resp = r.send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.json::<Value>().await.unwrap())
        }
    };
    k.ok(&[
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        "--user=alice",
    ]);
    for _ in 0..100 {
        if k.run(&["auth", "can-i", "delete", "secrets", "--as=alice"])
            .stdout
            .trim()
            == "yes"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = unsafe_delete("broken", "", Some("alice")).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not permitted to do \"unsafe-delete-ignore-read-errors\""),
        "{body}"
    );
    let (code, body) = unsafe_delete("good1", "", None).await;
    assert_eq!(
        code, 409,
        "a readable object goes through the ordinary delete: {body}"
    );
    let (code, _) = unsafe_delete("broken", "?dryRun=All", None).await;
    assert_eq!(code, 200);
    assert!(
        raw(&mut c, "/registry/secrets/default/broken")
            .await
            .is_some(),
        "a dry run deletes nothing"
    );
    for name in ["broken", "garbled"] {
        let (code, body) = unsafe_delete(name, "", None).await;
        assert_eq!(
            (code, body["status"].as_str()),
            (200, Some("Success")),
            "{body}"
        );
        assert!(raw(&mut c, &format!("/registry/secrets/default/{name}"))
            .await
            .is_none());
    }
    assert_eq!(unsafe_delete("broken", "", None).await.0, 404);
    let r = k.run(&["get", "secrets", "-o", "name"]);
    assert!(
        r.status.success() && !r.stderr.contains("Warning"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout.trim(), "secret/good1\nsecret/good2\nsecret/good3");
}

#[tokio::test]
async fn a_bad_configuration_refuses_to_start() {
    let etcd = Etcd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{HEAD}resources:\n- resources: [secrets]\n  providers: [{{aescbc: {{keys: [{{name: k, secret: {}}}]}}}}]\n",
            b64(b"12345678")
        ),
    );
    let err = ApiServer::start_with(&etcd, &[&format!("--encryption-provider-config={config}")])
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("resources[0].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 8, expected one of [16 24 32]"),
        "{err}"
    );
    let missing = ApiServer::start_with(
        &etcd,
        &["--encryption-provider-config=/nonexistent/enc.yaml"],
    )
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(
        missing.contains(
            "error reading encryption provider configuration file \"/nonexistent/enc.yaml\""
        ),
        "{missing}"
    );
    let no_file = ApiServer::start_with(&etcd, &["--encryption-provider-config-automatic-reload"])
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        no_file.contains("--encryption-provider-config"),
        "{no_file}"
    );
}
