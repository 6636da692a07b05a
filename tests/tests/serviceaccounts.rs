//! ServiceAccount tokens end to end, with real etcd, skiff-apiserver, the controller manager
//! and kubectl: `kubectl create token`, the token as a credential (and every way it stops
//! being one: tampered, expired, another audience, its ServiceAccount or pod deleted), the
//! OIDC discovery documents an outside party verifies tokens with, and what the ServiceAccount
//! admission and the root-CA publisher give pods.
//!
//! These tests are about authentication and admission: they run with the authorizer that
//! allows every authenticated request. (Once RBAC is the default, they pass
//! `--authorization-mode=AlwaysAllow` for that.)

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{json, Value};
use skiff_e2e::{eventually, ApiServer, Daemon, Etcd, Kubectl};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// An API server with the ServiceAccount admission on, as kube-apiserver runs by default,
/// where every ServiceAccount may read (`view`), so that a token that authenticates is let in
/// and one that does not is 401.
async fn start() -> (Etcd, ApiServer) {
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start_with(&etcd, &["--enable-admission-plugins=ServiceAccount"])
        .await
        .unwrap();
    api.kubectl().ok(&[
        "create",
        "clusterrolebinding",
        "accounts-view",
        "--clusterrole=view",
        "--group=system:serviceaccounts",
    ]);
    (etcd, api)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn claims_of(token: &str) -> Value {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// Whether a request with only `token` (no client certificate) is let in.
async fn accepted(api: &ApiServer, token: &str) -> u16 {
    api.anonymous_client()
        .unwrap()
        .get(api.url("/api/v1/namespaces/default/configmaps"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls until a request with `token` answers `code`.
async fn until_status(api: &ApiServer, token: &str, code: u16) {
    for _ in 0..200 {
        if accepted(api, token).await == code {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("token never answered {code}\n{}", api.log());
}

fn create_token(k: &Kubectl, args: &[&str]) -> String {
    let mut a = vec!["create", "token"];
    a.extend_from_slice(args);
    k.ok(&a).trim().to_string()
}

/// The signing key the server generated into its data dir, as the JWT library takes it.
fn generated_key(api: &ApiServer) -> jsonwebtoken::EncodingKey {
    let pem = std::fs::read_to_string(api.data_dir.join("service-account.key")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    jsonwebtoken::EncodingKey::from_ec_der(&der)
}

#[tokio::test]
async fn tokens_authenticate_their_service_account_until_they_should_not() {
    let (_etcd, mut api) = start().await;
    let k = api.kubectl();
    k.ok(&["create", "serviceaccount", "bot"]);
    let sa = k.json(&["get", "serviceaccount", "bot"]);
    let sa_uid = sa["metadata"]["uid"].as_str().unwrap().to_string();

    // kubectl create token: a JWT naming the ServiceAccount, for the API's audience.
    let token = create_token(&k, &["bot"]);
    let c = claims_of(&token);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "system:serviceaccount:default:bot");
    assert_eq!(c["aud"], json!([ISSUER]));
    assert_eq!(
        c["kubernetes.io"],
        json!({"namespace": "default", "serviceaccount": {"name": "bot", "uid": sa_uid}})
    );
    let lifetime = c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 3600);
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let long = create_token(&k, &["bot", "--duration=2h"]);
    let c2 = claims_of(&long);
    assert_eq!(
        c2["exp"].as_i64().unwrap() - c2["iat"].as_i64().unwrap(),
        7200
    );

    // The token alone is a credential, through kubectl and a plain HTTPS client.
    assert_eq!(accepted(&api, &token).await, 200);
    k.ok(&["--token", &token, "get", "configmaps"]);

    // Tampered: another subject with the original signature.
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims_of(&token);
    forged["kubernetes.io"]["serviceaccount"]["name"] = json!("default");
    forged["sub"] = json!("system:serviceaccount:default:default");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(&serde_json::to_vec(&forged).unwrap()),
        parts[2]
    );
    assert_eq!(accepted(&api, &tampered).await, 401);
    let out = k.fails(&["--token", &tampered, "get", "configmaps"]);
    assert!(out.contains("Unauthorized"), "{out}");
    assert_eq!(accepted(&api, "not.a.jwt").await, 401);

    // Another audience: fine for that audience's verifier, not for the API.
    let vault = create_token(&k, &["bot", "--audience=vault"]);
    assert_eq!(claims_of(&vault)["aud"], json!(["vault"]));
    assert_eq!(accepted(&api, &vault).await, 401);

    // Expired, signed with the server's own key: refused; the same token unexpired works.
    let key = generated_key(&api);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = jsonwebtoken::decode_header(&token).unwrap().kid;
    let now = chrono::Utc::now().timestamp();
    let mut crafted = claims_of(&token);
    crafted["iat"] = json!(now - 7200);
    crafted["nbf"] = json!(now - 7200);
    crafted["exp"] = json!(now - 3600);
    let expired = jsonwebtoken::encode(&header, &crafted, &key).unwrap();
    assert_eq!(accepted(&api, &expired).await, 401);
    crafted["exp"] = json!(now + 3600);
    let fresh = jsonwebtoken::encode(&header, &crafted, &key).unwrap();
    assert_eq!(accepted(&api, &fresh).await, 200);
    // Another issuer, same key.
    crafted["iss"] = json!("https://elsewhere.example");
    let foreign = jsonwebtoken::encode(&header, &crafted, &key).unwrap();
    assert_eq!(accepted(&api, &foreign).await, 401);

    // Refused requests, in Kubernetes' words.
    let out = k.fails(&["create", "token", "bot", "--duration=5m"]);
    assert!(
        out.contains("may not specify a duration less than 10 minutes"),
        "{out}"
    );
    let out = k.fails(&["create", "token", "nobody"]);
    assert!(
        out.contains("serviceaccounts \"nobody\" not found"),
        "{out}"
    );

    // The key is kept: tokens survive a restart.
    api.restart().await.unwrap();
    assert_eq!(accepted(&api, &token).await, 200);

    // Deleting the ServiceAccount ends its tokens; a new one of the same name is another
    // account (another uid) and the old tokens stay dead.
    k.ok(&["delete", "serviceaccount", "bot"]);
    until_status(&api, &token, 401).await;
    k.ok(&["create", "serviceaccount", "bot"]);
    let again = create_token(&k, &["bot"]);
    assert_eq!(accepted(&api, &again).await, 200);
    assert_eq!(accepted(&api, &token).await, 401);
}

/// POSTs a TokenReview of `token` (for `audiences`, if any) as the admin, or as the bearer of
/// `caller`; answers the HTTP status and the body.
async fn review(
    api: &ApiServer,
    caller: Option<&str>,
    token: &str,
    audiences: &[&str],
) -> (u16, Value) {
    let mut spec = json!({"token": token});
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    let mut req = match caller {
        None => api.client(),
        Some(_) => api.anonymous_client(),
    }
    .unwrap()
    .post(api.url("/apis/authentication.k8s.io/v1/tokenreviews"));
    if let Some(t) = caller {
        req = req.bearer_auth(t);
    }
    let r = req
        .json(
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}),
        )
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn token_reviews_say_who_a_token_is_and_for_which_audiences() {
    let (_etcd, api) = start().await;
    let k = api.kubectl();
    k.ok(&["create", "serviceaccount", "bot"]);
    let token = create_token(&k, &["bot"]);

    // No audiences asked: checked against the API's own, which the answer names.
    let (code, r) = review(&api, None, &token, &[]).await;
    assert_eq!(code, 201, "{r}");
    let status = &r["status"];
    assert_eq!(status["authenticated"], true, "{r}");
    assert_eq!(
        status["user"]["username"],
        "system:serviceaccount:default:bot"
    );
    let groups = status["user"]["groups"].as_array().unwrap();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ] {
        assert!(groups.contains(&json!(g)), "{r}");
    }
    assert_eq!(status["audiences"], json!([ISSUER]), "{r}");

    // A token for another audience: valid for it, not for the API.
    let vault = create_token(&k, &["bot", "--audience=vault"]);
    let (_, r) = review(&api, None, &vault, &["vault"]).await;
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(r["status"]["audiences"], json!(["vault"]), "{r}");
    let (_, r) = review(&api, None, &vault, &[]).await;
    assert_eq!(r["status"]["authenticated"], false, "{r}");
    assert!(r["status"].get("audiences").is_none(), "{r}");

    // Not a token at all: not authenticated, with an error; no token: 400.
    let (code, r) = review(&api, None, "not.a.jwt", &[]).await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["status"]["authenticated"], false, "{r}");
    assert!(
        r["status"]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{r}"
    );
    let (code, r) = review(&api, None, "", &[]).await;
    assert_eq!(
        (code, r["reason"].as_str()),
        (400, Some("BadRequest")),
        "{r}"
    );

    // Reviewing tokens is a right of its own: the ServiceAccount (which may only view) is
    // refused, in kube-apiserver's words; a bad caller's token is 401.
    let (code, r) = review(&api, Some("not.a.jwt"), &token, &[]).await;
    assert_eq!(code, 401, "{r}");
    let (code, r) = review(&api, Some(&token), &token, &[]).await;
    assert_eq!(code, 403, "{r}");
    assert_eq!(
        r["message"],
        "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:default:bot\" \
         cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope",
    );
}

#[tokio::test]
async fn a_token_bound_to_a_pod_dies_with_the_pod() {
    let (_etcd, api) = start().await;
    let k = api.kubectl();
    k.ok(&["create", "serviceaccount", "worker"]);
    k.ok(&["create", "serviceaccount", "other"]);
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "job-1"},
        "spec": {"serviceAccountName": "worker", "automountServiceAccountToken": false,
                 "containers": [{"name": "c", "image": "busybox"}]}});
    k.ok_input(&["create", "-f", "-"], &pod.to_string());
    let pod_uid = k.json(&["get", "pod", "job-1"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    let token = create_token(
        &k,
        &[
            "worker",
            "--bound-object-kind=Pod",
            "--bound-object-name=job-1",
        ],
    );
    let c = claims_of(&token);
    assert_eq!(
        c["kubernetes.io"]["pod"],
        json!({"name": "job-1", "uid": pod_uid})
    );
    assert_eq!(accepted(&api, &token).await, 200);

    // A pod of another ServiceAccount, a missing pod, a kind that cannot be bound.
    let out = k.fails(&[
        "create",
        "token",
        "other",
        "--bound-object-kind=Pod",
        "--bound-object-name=job-1",
    ]);
    assert!(
        out.contains("cannot bind token for serviceaccount \"other\" to pod running with different serviceaccount name."),
        "{out}"
    );
    let out = k.fails(&[
        "create",
        "token",
        "worker",
        "--bound-object-kind=Pod",
        "--bound-object-name=ghost",
    ]);
    assert!(out.contains("pods \"ghost\" not found"), "{out}");

    // A secret-bound token lives as long as its secret.
    k.ok(&[
        "create",
        "secret",
        "generic",
        "ticket",
        "--from-literal=a=b",
    ]);
    let by_secret = create_token(
        &k,
        &[
            "worker",
            "--bound-object-kind=Secret",
            "--bound-object-name=ticket",
        ],
    );
    assert_eq!(accepted(&api, &by_secret).await, 200);
    k.ok(&["delete", "secret", "ticket"]);
    until_status(&api, &by_secret, 401).await;

    k.ok(&["delete", "pod", "job-1", "--grace-period=0", "--force"]);
    until_status(&api, &token, 401).await;
    // The ServiceAccount's unbound tokens are untouched.
    let plain = create_token(&k, &["worker"]);
    assert_eq!(accepted(&api, &plain).await, 200);
}

#[tokio::test]
async fn outside_verifiers_check_tokens_with_the_published_keys() {
    let (_etcd, api) = start().await;
    let k = api.kubectl();
    k.ok(&["create", "serviceaccount", "irsa"]);
    let token = create_token(&k, &["irsa", "--audience=sts.amazonaws.com"]);
    let http = api.client().unwrap();

    let resp = http
        .get(api.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["issuer"], ISSUER);
    assert_eq!(
        doc["jwks_uri"],
        format!("https://127.0.0.1:{}/openid/v1/jwks", api.port)
    );
    assert_eq!(doc["response_types_supported"], json!(["id_token"]));
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );

    let resp = http.get(api.url("/openid/v1/jwks")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/jwk-set+json");
    let set: jsonwebtoken::jwk::JwkSet = resp.json().await.unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwk = set.find(&kid).expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["sts.amazonaws.com"]);
    v.set_issuer(&[ISSUER]);
    let got = jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap();
    assert_eq!(got.claims["sub"], "system:serviceaccount:default:irsa");
    // The same verifier refuses a tampered token.
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims_of(&token);
    c["sub"] = json!("system:serviceaccount:kube-system:admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(&serde_json::to_vec(&c).unwrap()),
        parts[2]
    );
    assert!(jsonwebtoken::decode::<Value>(&tampered, &key, &v).is_err());

    // The gRPC door issues the same tokens (the SDK's TokenRequest), verified the same way.
    let client =
        skiff_client::Client::new(skiff_client::Config::from_kubeconfig(&api.kubeconfig).unwrap())
            .unwrap();
    let accounts: skiff_client::Api<ServiceAccount> =
        skiff_client::Api::namespaced(client, "default");
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["sts.amazonaws.com".into()],
            expiration_seconds: Some(900),
            ..Default::default()
        },
        ..Default::default()
    };
    let got: TokenRequest = accounts
        .create_subresource("token", "irsa", &skiff_client::PostParams::default(), &req)
        .await
        .unwrap();
    let status = got.status.unwrap();
    let by_grpc = jsonwebtoken::decode::<Value>(&status.token, &key, &v).unwrap();
    assert_eq!(by_grpc.claims["sub"], "system:serviceaccount:default:irsa");
    assert_eq!(
        by_grpc.claims["exp"].as_i64().unwrap() - by_grpc.claims["iat"].as_i64().unwrap(),
        900
    );
    let e = accounts
        .create_subresource::<_, TokenRequest>(
            "token",
            "nobody",
            &skiff_client::PostParams::default(),
            &req,
        )
        .await
        .unwrap_err();
    assert_eq!(e.api().map(|a| a.code), Some(404), "{e}");

    // Discovery lists the subresource kubectl create token calls.
    let core: Value = http
        .get(api.url("/api/v1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sub = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .expect("serviceaccounts/token in discovery")
        .clone();
    assert_eq!(sub["verbs"], json!(["create"]));
    assert_eq!(sub["kind"], "TokenRequest");
    assert_eq!(sub["group"], "authentication.k8s.io");
}

#[tokio::test]
async fn pods_get_their_service_account_and_its_token_volume() {
    let (_etcd, api) = start().await;
    let _cm = Daemon::start(
        "skiff-controller-manager",
        &api,
        &["--port=0", "--leader-elect=false"],
    )
    .unwrap();
    let k = api.kubectl();
    k.ok(&["create", "namespace", "team"]);
    let ca = std::fs::read_to_string(api.data_dir.join("ca.crt")).unwrap();

    // The controllers give the namespace its default ServiceAccount and the cluster CA.
    let published = eventually(Duration::from_secs(30), || {
        let r = k.run(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "team",
            "-o",
            "json",
        ]);
        r.status
            .success()
            .then(|| serde_json::from_str::<Value>(&r.stdout).unwrap())
    })
    .await
    .expect("kube-root-ca.crt in the new namespace");
    assert_eq!(published["data"], json!({"ca.crt": ca}));
    assert_eq!(
        published["metadata"]["annotations"]["kubernetes.io/description"],
        "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."
    );
    eventually(Duration::from_secs(30), || {
        k.run(&["get", "serviceaccount", "default", "-n", "team"])
            .status
            .success()
            .then_some(())
    })
    .await
    .expect("the default ServiceAccount");

    // Edited or deleted, the CA ConfigMap comes back.
    k.ok(&[
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "team",
        "--type=merge",
        "-p",
        r#"{"data":{"ca.crt":"forged"}}"#,
    ]);
    eventually(Duration::from_secs(30), || {
        let got = k.json(&["get", "configmap", "kube-root-ca.crt", "-n", "team"]);
        (got["data"]["ca.crt"] == ca.as_str()).then_some(())
    })
    .await
    .expect("the CA restored");
    k.ok(&["delete", "configmap", "kube-root-ca.crt", "-n", "team"]);
    eventually(Duration::from_secs(30), || {
        k.run(&["get", "configmap", "kube-root-ca.crt", "-n", "team"])
            .status
            .success()
            .then_some(())
    })
    .await
    .expect("the CA ConfigMap recreated");

    // A pod naming no ServiceAccount runs under `default` with the projected token volume.
    let pod = |name: &str, extra: Value| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"initContainers": [{"name": "init", "image": "busybox"}],
                     "containers": [{"name": "c", "image": "busybox"}]}});
        if let (Some(s), Some(e)) = (p["spec"].as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        p.to_string()
    };
    k.ok_input(&["create", "-f", "-"], &pod("plain", json!({})));
    let got = k.json(&["get", "pod", "plain", "-n", "team"]);
    let spec = &got["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");
    let vols = spec["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 1, "{spec}");
    let name = vols[0]["name"].as_str().unwrap();
    assert!(
        name.len() == "kube-api-access-".len() + 5 && name.starts_with("kube-api-access-"),
        "{name}"
    );
    assert_eq!(
        vols[0],
        json!({"name": name, "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420}})
    );
    let mount = json!([{"name": name, "readOnly": true,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]);
    assert_eq!(spec["containers"][0]["volumeMounts"], mount);
    assert_eq!(spec["initContainers"][0]["volumeMounts"], mount);

    // A ServiceAccount that does not exist: refused in Kubernetes' words.
    let r = k.run_with_input(
        &["create", "-f", "-"],
        &pod("lost", json!({"serviceAccountName": "ghost"})),
    );
    assert!(!r.status.success());
    let out = r.stderr;
    assert!(
        out.contains("pods \"lost\" is forbidden: error looking up service account team/ghost: serviceaccount \"ghost\" not found"),
        "{out}"
    );

    // automountServiceAccountToken: false on the pod, or on its ServiceAccount.
    k.ok_input(
        &["create", "-f", "-"],
        &pod("quiet", json!({"automountServiceAccountToken": false})),
    );
    let got = k.json(&["get", "pod", "quiet", "-n", "team"]);
    assert!(got["spec"].get("volumes").is_none(), "{got}");
    k.ok_input(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "silent", "namespace": "team"},
            "automountServiceAccountToken": false})
        .to_string(),
    );
    k.ok_input(
        &["create", "-f", "-"],
        &pod("hushed", json!({"serviceAccountName": "silent"})),
    );
    let got = k.json(&["get", "pod", "hushed", "-n", "team"]);
    assert!(got["spec"].get("volumes").is_none(), "{got}");
}
