//! The API server's proxies and streams on a real node (kubelet, containerd, CNI), with the
//! real `kubectl` and raw HTTPS/WebSocket clients: `pods/proxy`, `services/proxy` and
//! `nodes/proxy` (every method, query and body passed on, kube-apiserver's errors, RBAC on the
//! `proxy` subresources), and `exec`, `attach`, `port-forward` and `logs` over WebSocket as
//! kubectl 1.32 speaks them by default and over SPDY as it speaks them when told to.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use skiff_e2e::node::Node;
use skiff_e2e::{send, ApiServer, Cluster, Daemon, Kubectl};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

fn apply(k: &Kubectl, obj: &Value) {
    k.ok_input(&["apply", "-f", "-"], &obj.to_string());
}

/// Waits for pod `name` to be Ready; its JSON.
async fn ready(node: &Node, k: &Kubectl, name: &str) -> Value {
    node.wait_for(k, &format!("pod {name} Ready"), || {
        let p = k.get_opt(&["pod", name])?;
        let ready = p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(p)
    })
    .await
}

/// A busybox web server on 8080: `/` answers `hello`, `/cgi-bin/echo` answers what it was
/// asked (method, query, body, and the headers a proxy must or must not pass on).
fn web_pod(image: &str) -> Value {
    let script = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nX-Echo: yes\\r\\nAccess-Control-Allow-Origin: *\\r\\n\\r\\n'\necho method=$REQUEST_METHOD\necho query=$QUERY_STRING\necho auth=$HTTP_AUTHORIZATION\necho uri=$HTTP_X_FORWARDED_URI\necho host=$HTTP_HOST\n[ -n \"$CONTENT_LENGTH\" ] && echo body=$(head -c $CONTENT_LENGTH)\nexit 0\n";
    let moved = "#!/bin/sh\nprintf 'Status: 302 Found\\r\\nLocation: /elsewhere/\\r\\n\\r\\n'\n";
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": image,
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "ECHO", "value": script}, {"name": "MOVED", "value": moved}],
                "command": ["sh", "-c", "mkdir -p /www/cgi-bin && echo hello > /www/index.html && echo '<a href=\"/next/\">n</a><img src=\"x.png\">' > /www/page.html && printf '%s' \"$ECHO\" > /www/cgi-bin/echo && printf '%s' \"$MOVED\" > /www/cgi-bin/moved && chmod +x /www/cgi-bin/* && exec httpd -f -p 8080 -h /www"]}]}})
}

/// The `key=value` lines of an echo.
fn echoed(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
        .to_string()
}

const ALICE: &str = "alice-token-0123456789";

/// A kubeconfig for the token user alice.
fn alice_kubeconfig(api: &ApiServer, dir: &Path) -> PathBuf {
    let ca = std::fs::read(api.data_dir.join("ca.crt")).unwrap();
    let kc = skiff_rules::Kubeconfig::single("skiff", &api.url(""))
        .with_certificate_authority(&ca)
        .with_token(ALICE)
        .with_user_name("alice");
    let p = dir.join("alice.kubeconfig");
    std::fs::write(&p, kc.to_yaml().unwrap()).unwrap();
    p
}

#[tokio::test]
async fn proxies_reach_pods_services_and_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, format!("{ALICE},alice,1001\n")).unwrap();
    let c = Cluster::start_with(&[&format!("--token-auth-file={}", tokens.display())])
        .await
        .unwrap();
    let _cm = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &[
            "--port=0",
            "--leader-elect=false",
            "--controllers=endpointslice",
        ],
    )
    .unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    apply(&k, &web_pod(&node.images.busybox));
    apply(
        &k,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    );
    apply(
        &k,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lonely"},
            "spec": {"selector": {"app": "nobody"}, "ports": [{"name": "http", "port": 80}]}}),
    );
    // A pod bound to a node that does not exist never gets an IP.
    apply(
        &k,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere"},
            "spec": {"nodeName": "no-such-node", "containers": [{"name": "c", "image": "x"}]}}),
    );
    let pod = ready(&node, &k, "web").await;
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let base = "/api/v1/namespaces/default";

    // Pods: by port, by the first declared port, the root redirected to end with a slash.
    assert_eq!(
        k.ok(&["get", "--raw", &format!("{base}/pods/web:8080/proxy/")]),
        "hello\n"
    );
    assert_eq!(
        k.ok(&["get", "--raw", &format!("{base}/pods/web/proxy/")]),
        "hello\n"
    );
    assert_eq!(
        k.ok(&["get", "--raw", &format!("{base}/pods/http:web:8080/proxy")]),
        "hello\n"
    );
    let http = c.api.client().unwrap();
    let echo = |m: &str| {
        let m = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        http.request(
            m,
            c.api.url(&format!(
                "{base}/pods/web:8080/proxy/cgi-bin/echo?x=1&y=two%20words"
            )),
        )
    };
    // The query, method and body reach the pod; the answer comes back with its headers but
    // without CORS ones.
    let out = k.ok(&[
        "get",
        "--raw",
        &format!("{base}/pods/web:8080/proxy/cgi-bin/echo?x=1&y=two"),
    ]);
    assert_eq!(echoed(&out, "method"), "GET");
    assert_eq!(echoed(&out, "query"), "x=1&y=two");
    assert_eq!(
        echoed(&out, "uri"),
        format!("{base}/pods/web:8080/proxy/cgi-bin/echo")
    );
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, r#"{"posted":true}"#).unwrap();
    let path = format!("{base}/pods/web:8080/proxy/cgi-bin/echo");
    let body_arg = body_file.display().to_string();
    let out = k.ok(&["create", "--raw", &path, "-f", &body_arg]);
    assert_eq!(echoed(&out, "method"), "POST");
    // (kubectl streams a file of unknown length, which reaches the pod chunked, as through
    // kube-apiserver; busybox's CGI reads only bodies of known length.)
    let out = echo("POST")
        .body(r#"{"posted":true}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(echoed(&out, "body"), r#"{"posted":true}"#, "{out}");
    let out = k.ok(&["replace", "--raw", &path, "-f", &body_arg]);
    assert_eq!(echoed(&out, "method"), "PUT");
    let out = k.ok(&["delete", "--raw", &path]);
    assert_eq!(echoed(&out, "method"), "DELETE");
    for m in ["PATCH", "OPTIONS"] {
        let resp = echo(m).body("{}").send().await.unwrap();
        assert_eq!(resp.status(), 200, "{m}");
        assert_eq!(resp.headers()["x-echo"], "yes");
        assert!(!resp.headers().contains_key("access-control-allow-origin"));
        let text = resp.text().await.unwrap();
        assert_eq!(echoed(&text, "method"), m, "{text}");
        assert_eq!(echoed(&text, "query"), "x=1&y=two%20words");
        // As kube-apiserver, the target is asked for the host the client asked for.
        assert_eq!(echoed(&text, "host"), format!("127.0.0.1:{}", c.api.port));
    }
    let head = echo("HEAD").send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["x-echo"], "yes");
    // A redirect back into the pod goes through the proxy.
    let no_follow = reqwest::Client::builder()
        .tls_backend_preconfigured(skiff_e2e::tls_from_kubeconfig(&c.api.kubeconfig, true).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let moved = no_follow
        .get(
            c.api
                .url(&format!("{base}/pods/web:8080/proxy/cgi-bin/moved")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 302);
    assert_eq!(
        moved.headers()["location"],
        format!("{base}/pods/web:8080/proxy/elsewhere/").as_str()
    );
    let root = no_follow
        .get(c.api.url(&format!("{base}/pods/web:8080/proxy?a=b")))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 301);
    assert_eq!(
        root.headers()["location"],
        format!("{base}/pods/web:8080/proxy/?a=b").as_str()
    );

    // Links of a page into the pod go through the proxy; relative ones stay.
    assert_eq!(
        k.ok(&[
            "get",
            "--raw",
            &format!("{base}/pods/web:8080/proxy/page.html")
        ]),
        format!("<a href=\"{base}/pods/web:8080/proxy/next/\">n</a><img src=\"x.png\">\n")
    );

    // kube-apiserver's errors.
    let (code, status) = send(
        &http,
        reqwest::Method::GET,
        c.api.url(&format!("{base}/pods/web:9999/proxy/")),
        None,
    )
    .await;
    assert_eq!(code, 500, "{status}");
    assert_eq!(
        status["message"],
        format!("error trying to reach service: dial tcp {ip}:9999: connect: connection refused")
    );
    assert!(status.get("reason").is_none(), "{status}");
    // `https:` speaks TLS to the pod, which answers plain HTTP.
    let (code, status) = send(
        &http,
        reqwest::Method::GET,
        c.api.url(&format!("{base}/pods/https:web:8080/proxy/")),
        None,
    )
    .await;
    assert_eq!(code, 500, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("error trying to reach service: ")),
        "{status}"
    );
    let err = k.fails(&["get", "--raw", &format!("{base}/pods/a:b:c:d/proxy/")]);
    assert!(
        err.contains(r#"invalid pod request \"a:b:c:d\""#)
            || err.contains(r#"invalid pod request "a:b:c:d""#),
        "{err}"
    );
    let err = k.fails(&["get", "--raw", &format!("{base}/pods/nope/proxy/")]);
    assert!(err.contains(r#"pods "nope" not found"#), "{err}");
    let (code, status) = send(
        &http,
        reqwest::Method::GET,
        c.api.url(&format!("{base}/pods/nowhere:80/proxy/")),
        None,
    )
    .await;
    assert_eq!(
        (code, status["message"].as_str()),
        (400, Some("address not allowed"))
    );

    // Services: by port name or number, to a ready endpoint.
    let svc = |id: &str| format!("{base}/services/{id}/proxy/");
    let out = node
        .wait_for(&k, "the service's endpoints", || {
            let r = k.run(&["get", "--raw", &svc("web:http")]);
            r.status.success().then_some(r.stdout)
        })
        .await;
    assert_eq!(out, "hello\n");
    assert_eq!(k.ok(&["get", "--raw", &svc("web:80")]), "hello\n");
    assert!(k
        .ok(&["get", "--raw", &format!("{}page.html", svc("web:80"))])
        .starts_with(&format!("<a href=\"{base}/services/web:80/proxy/next/\">")));
    let out = k.ok(&[
        "get",
        "--raw",
        &format!("{base}/services/web:http/proxy/cgi-bin/echo?q=1"),
    ]);
    assert_eq!(
        (echoed(&out, "method"), echoed(&out, "query")),
        ("GET".to_string(), "q=1".to_string())
    );
    for (id, code, message) in [
        (
            "web:81",
            503,
            r#"no service port 81 found for service "web""#,
        ),
        ("web", 503, r#"no endpoints available for service "web""#),
        (
            "lonely:http",
            503,
            r#"no endpoints available for service "lonely""#,
        ),
        ("ghost:80", 404, r#"services "ghost" not found"#),
        ("ghost:http", 404, r#"endpoints "ghost" not found"#),
    ] {
        let (got, status) = send(&http, reqwest::Method::GET, c.api.url(&svc(id)), None).await;
        assert_eq!(
            (got, status["message"].as_str()),
            (code, Some(message)),
            "{id}: {status}"
        );
        if code == 503 {
            assert_eq!(status["reason"], "ServiceUnavailable");
        }
    }

    // Nodes: the kubelet, by name or with its own port.
    assert_eq!(
        k.ok(&["get", "--raw", "/api/v1/nodes/node-a/proxy/healthz"]),
        "ok"
    );
    let port = k.json(&["get", "node", "node-a"])["status"]["daemonEndpoints"]["kubeletEndpoint"]
        ["Port"]
        .as_i64()
        .unwrap();
    assert_eq!(
        k.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/node-a:{port}/proxy/healthz")
        ]),
        "ok"
    );
    let err = k.fails(&["get", "--raw", "/api/v1/nodes/ghost/proxy/healthz"]);
    assert!(err.contains(r#"nodes "ghost" not found"#), "{err}");

    // RBAC guards the proxy subresources: reading pods is not proxying to them.
    let alice = Kubectl::new(&alice_kubeconfig(&c.api, dir.path()));
    k.ok(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods,services",
    ]);
    k.ok(&[
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        "--user=alice",
    ]);
    alice.ok(&["get", "pod", "web"]);
    let err = alice.fails(&["get", "--raw", &format!("{base}/pods/web:8080/proxy/")]);
    assert!(
        err.contains(r#"pods "web:8080" is forbidden: User "alice" cannot get resource "pods/proxy" in API group "" in the namespace "default""#),
        "{err}"
    );
    let err = alice.fails(&["get", "--raw", &svc("web:http")]);
    assert!(
        err.contains(r#"cannot get resource "services/proxy""#),
        "{err}"
    );
    let err = alice.fails(&["get", "--raw", "/api/v1/nodes/node-a/proxy/healthz"]);
    assert!(
        err.contains(r#"cannot get resource "nodes/proxy" in API group "" at the cluster scope"#),
        "{err}"
    );
    k.ok(&[
        "create",
        "role",
        "proxier",
        "--verb=get",
        "--resource=pods/proxy",
    ]);
    k.ok(&[
        "create",
        "rolebinding",
        "proxier",
        "--role=proxier",
        "--user=alice",
    ]);
    let out = alice.ok(&[
        "get",
        "--raw",
        &format!("{base}/pods/web:8080/proxy/cgi-bin/echo"),
    ]);
    // The client's credentials stay with the API server.
    assert_eq!(
        (echoed(&out, "method"), echoed(&out, "auth")),
        ("GET".to_string(), String::new())
    );
    let err = alice.fails(&["create", "--raw", &path, "-f", &body_arg]);
    assert!(
        err.contains(r#"cannot create resource "pods/proxy""#),
        "{err}"
    );
    k.ok(&[
        "create",
        "clusterrolebinding",
        "alice-kubelet",
        "--clusterrole=system:kubelet-api-admin",
        "--user=alice",
    ]);
    assert_eq!(
        alice.ok(&["get", "--raw", "/api/v1/nodes/node-a/proxy/healthz"]),
        "ok"
    );
}

/// A pod with a web server (`main`) and a container reading its own stdin (`ticker`).
fn shell_pod(image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell"}, "spec": {
    "nodeName": "node-a", "terminationGracePeriodSeconds": 1,
    "containers": [
        {"name": "main", "image": image, "command": ["sh", "-c",
            "echo started; mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www"]},
        {"name": "ticker", "image": image, "stdin": true, "command": ["sh", "-c",
            "while read line; do echo got $line; done"]}
    ]}})
}

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().ok()?,
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The environment that makes kubectl speak SPDY (`false`) or WebSocket (its default).
fn env(websocket: bool) -> Vec<(&'static str, &'static str)> {
    let v = if websocket { "true" } else { "false" };
    vec![
        ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", v),
        ("KUBECTL_PORT_FORWARD_WEBSOCKETS", v),
    ]
}

/// A raw WebSocket client to the API server, as the admin.
async fn websocket(
    api: &ApiServer,
    path: &str,
    protocols: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        String,
    ),
    tungstenite::Error,
> {
    let mut tls = skiff_e2e::tls_from_kubeconfig(&api.kubeconfig, true).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api.port))
        .await
        .unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut req = format!("wss://127.0.0.1:{}{path}", api.port)
        .into_client_request()
        .unwrap();
    if !protocols.is_empty() {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await?;
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    Ok((ws, chosen))
}

/// Reads messages until the server closes: each message's bytes (text ones as sent).
async fn all_messages<S>(ws: &mut S) -> Vec<Vec<u8>>
where
    S: futures::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let mut out = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        match m {
            Message::Binary(b) => out.push(b.to_vec()),
            Message::Text(t) => out.push(t.as_bytes().to_vec()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn streams_work_over_websocket_and_spdy() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    apply(&k, &shell_pod(&node.images.busybox));
    ready(&node, &k, "shell").await;

    for websocket in [true, false] {
        let env = env(websocket);
        let how = if websocket { "websocket" } else { "spdy" };
        // -v=4 shows kubectl falling back from WebSocket to SPDY, which it must not need to.
        let r = k.run_env(
            &["-v=4", "exec", "shell", "-c", "main", "--", "echo", "hello"],
            &env,
        );
        assert!(r.status.success(), "{how}: {}", r.stderr);
        assert_eq!(r.stdout, "hello\n", "{how}");
        assert!(
            !r.stderr.to_lowercase().contains("fallback"),
            "{how}: {}",
            r.stderr
        );
        let r = k.run_env(
            &[
                "exec",
                "shell",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo to-stderr >&2; exit 3",
            ],
            &env,
        );
        assert_eq!(r.status.code(), Some(3), "{how}: {}", r.stderr);
        assert!(r.stderr.contains("to-stderr"), "{how}: {}", r.stderr);
        // Standard input, to its end: the command ends when its input does.
        let out = kubectl_input(
            &k,
            &["-v=4", "exec", "-i", "shell", "-c", "main", "--", "sh"],
            "echo from-stdin; hostname\n",
            &env,
        );
        assert_eq!(out.0, "from-stdin\nshell\n", "{how}: {}", out.1);
        assert!(
            !out.1.to_lowercase().contains("fallback"),
            "{how}: {}",
            out.1
        );
        let out = kubectl_input(
            &k,
            &["exec", "-i", "shell", "-c", "main", "--", "cat"],
            "abc",
            &env,
        );
        assert_eq!(out.0, "abc", "{how}: {}", out.1);
        let err = k.run_env(&["exec", "shell", "-c", "nope", "--", "true"], &env);
        assert!(
            err.stderr
                .contains("container nope is not valid for pod shell"),
            "{how}: {}",
            err.stderr
        );

        // Attach to the container's own stdin and stdout.
        let mut attach =
            k.spawn_interactive_env(&["-v=4", "attach", "-i", "shell", "-c", "ticker"], &env);
        let mut stdin = attach.stdin.take().unwrap();
        let stdout = attach.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let word = format!("word-{how}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while !got.iter().any(|l: &String| *l == format!("got {word}"))
            && std::time::Instant::now() < deadline
        {
            let _ = stdin.write_all(format!("{word}\n").as_bytes());
            let _ = stdin.flush();
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
                got.push(l);
            }
        }
        skiff_e2e::stop_child(&mut attach, Duration::from_secs(2));
        let mut attach_err = String::new();
        let _ = attach
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut attach_err);
        assert!(
            got.contains(&format!("got {word}")),
            "{how}: {got:?} {attach_err}"
        );
        assert!(
            !attach_err.to_lowercase().contains("fallback"),
            "{how}: {attach_err}"
        );

        // Port-forward.
        let port = skiff_e2e::free_port();
        let mut pf = k.spawn_interactive_env(
            &["-v=4", "port-forward", "pod/shell", &format!("{port}:8080")],
            &env,
        );
        let body = node
            .wait_for(&k, &format!("HTTP through port-forward ({how})"), || {
                http_get(port).filter(|b| b.contains("served"))
            })
            .await;
        assert!(body.contains(" 200 "), "{body}");
        // A second connection through the same forward.
        assert!(
            http_get(port).is_some_and(|b| b.contains("served")),
            "{how}"
        );
        skiff_e2e::stop_child(&mut pf, Duration::from_secs(2));
        let mut pf_err = String::new();
        let _ = pf.stderr.take().unwrap().read_to_string(&mut pf_err);
        assert!(
            !pf_err.to_lowercase().contains("fallback"),
            "{how}: {pf_err}"
        );
    }

    // Logs over a WebSocket: an empty message first, then the log, binary or base64.
    let path = "/api/v1/namespaces/default/pods/shell/log?container=main";
    for (protocol, base64) in [
        ("binary.k8s.io", false),
        ("base64.binary.k8s.io", true),
        ("", false),
    ] {
        let (mut ws, chosen) = websocket(&c.api, path, protocol).await.unwrap();
        assert_eq!(chosen, protocol);
        let messages = all_messages(&mut ws).await;
        assert_eq!(
            messages.first(),
            Some(&Vec::new()),
            "{protocol}: {messages:?}"
        );
        let mut log = Vec::new();
        for m in &messages {
            if base64 {
                use base64::Engine;
                log.extend(base64::engine::general_purpose::STANDARD.decode(m).unwrap());
            } else {
                log.extend_from_slice(m);
            }
        }
        assert_eq!(String::from_utf8_lossy(&log), "started\n", "{protocol}");
    }
    // Followed: a line written later arrives on the open socket.
    let (ws, _) = websocket(
        &c.api,
        "/api/v1/namespaces/default/pods/shell/log?container=ticker&follow=true",
        "binary.k8s.io",
    )
    .await
    .unwrap();
    let (_, mut rx) = ws.split();
    let r = k.run_with_input(&["attach", "-i", "shell", "-c", "ticker"], "late-line\n");
    let mut seen = String::new();
    while !seen.contains("got late-line") {
        match tokio::time::timeout(Duration::from_secs(30), rx.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => seen.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Ok(_))) => {}
            other => panic!("followed log ended: {other:?} {seen:?} {}", r.stderr),
        }
    }
    // Channel protocols are exec's, not the log's: refused as kube-apiserver refuses them.
    match websocket(&c.api, path, "v4.channel.k8s.io").await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("{:?}", other.map(|(_, p)| p)),
    }

    // exec over v5.channel.k8s.io by hand: the first empty message, stdout, stdin closed with
    // [255, 0], and the final status on channel 3.
    let (ws, chosen) = websocket(
        &c.api,
        "/api/v1/namespaces/default/pods/shell/exec?container=main&command=sh&command=-c&command=cat%3B%20echo%20done%3B%20exit%207&stdin=true&stdout=true&stderr=true",
        "v5.channel.k8s.io",
    )
    .await
    .unwrap();
    assert_eq!(chosen, "v5.channel.k8s.io");
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::binary(b"\x00piped ".to_vec()))
        .await
        .unwrap();
    tx.send(Message::binary(vec![255, 0])).await.unwrap();
    let messages = all_messages(&mut rx).await;
    assert_eq!(messages.first(), Some(&vec![1u8]), "{messages:?}");
    let stdout: Vec<u8> = messages
        .iter()
        .filter(|m| m.first() == Some(&1))
        .flat_map(|m| m[1..].to_vec())
        .collect();
    assert_eq!(String::from_utf8_lossy(&stdout), "piped done\n");
    let status: Value = messages
        .iter()
        .find(|m| m.first() == Some(&3))
        .map(|m| serde_json::from_slice(&m[1..]).unwrap())
        .expect("a status");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");

    // A terminal, resized through channel 4 before the command reads its size (which it
    // waits for: the resize stream may reach the runtime after the stdin one).
    let (ws, _) = websocket(
        &c.api,
        "/api/v1/namespaces/default/pods/shell/exec?container=main&command=sh&command=-c&command=read%20x%3B%20until%20s%3D%24%28stty%20size%202%3E%2Fdev%2Fnull%29%20%26%26%20%5B%20-n%20%22%24s%22%20%5D%20%26%26%20%5B%20%22%24s%22%20%21%3D%20%220%200%22%20%5D%3B%20do%20sleep%200.1%3B%20done%3B%20echo%20%22%24s%22&stdin=true&stdout=true&tty=true",
        "v5.channel.k8s.io",
    )
    .await
    .unwrap();
    let (mut tx, mut rx) = ws.split();
    let mut resize = vec![4u8];
    resize.extend_from_slice(br#"{"Width":100,"Height":40}"#);
    tx.send(Message::binary(resize)).await.unwrap();
    tx.send(Message::binary(b"\x00go\n".to_vec()))
        .await
        .unwrap();
    let messages = all_messages(&mut rx).await;
    let stdout: Vec<u8> = messages
        .iter()
        .filter(|m| m.first() == Some(&1))
        .flat_map(|m| m[1..].to_vec())
        .collect();
    assert!(
        String::from_utf8_lossy(&stdout).contains("40 100"),
        "{:?}",
        String::from_utf8_lossy(&stdout)
    );
    let status = messages.iter().find(|m| m.first() == Some(&3)).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&status[1..]).unwrap()["status"],
        "Success"
    );
}

/// Runs kubectl with `input` on its stdin: its stdout and stderr.
fn kubectl_input(
    k: &Kubectl,
    args: &[&str],
    input: &str,
    env: &[(&str, &str)],
) -> (String, String) {
    let r = k.run_input_env(args, input, env);
    (r.stdout, r.stderr)
}
