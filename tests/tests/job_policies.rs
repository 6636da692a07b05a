//! A Job's policies as Kubernetes 1.33 runs them, on a real node (kubelet, containerd) with
//! `skiff-controller-manager` and the real `kubectl`: a `successPolicy` ending an Indexed Job
//! early (`SuccessCriteriaMet`, the other pods stopped, then `Complete`); a `podFailurePolicy`
//! that ignores a pod evicted through the eviction API (its `DisruptionTarget` condition) and
//! fails the job on an exit code (`FailureTarget`, then `Failed` with reason
//! `PodFailurePolicy`); `backoffLimitPerIndex` retrying each index on its own, `FailIndex`,
//! `status.failedIndexes`, and the `FailedIndexes` and `MaxFailedIndexesExceeded` ends. And
//! the validation and defaults of those fields, with Kubernetes' messages; and a running Job
//! deleted leaving no pod behind.

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::node::Node;
use skiff_e2e::{Cluster, Daemon, Kubectl};

/// A control plane with a scheduler, a controller manager and one real node.
struct Env {
    cm: Daemon,
    _scheduler: Daemon,
    node: Node,
    c: Cluster,
}

impl Env {
    async fn start() -> Env {
        let c = Cluster::start().await.unwrap();
        let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
        let scheduler = Daemon::start(
            "skiff-scheduler",
            &c.api,
            &["--port=0", "--leader-elect=false"],
        )
        .unwrap();
        let cm = Daemon::start(
            "skiff-controller-manager",
            &c.api,
            &["--port=0", "--leader-elect=false", "--kube-api-qps=0"],
        )
        .unwrap();
        Env {
            cm,
            _scheduler: scheduler,
            node,
            c,
        }
    }

    fn kubectl(&self) -> Kubectl {
        self.c.kubectl()
    }

    /// Waits (two minutes at most) until `f` holds for what `kubectl get WHAT -o json` prints.
    async fn until(&self, what: &[&str], f: impl Fn(&Value) -> bool) -> Value {
        let within = Duration::from_secs(120);
        self.kubectl()
            .get_until(within, what, f)
            .await
            .unwrap_or_else(|last| {
                panic!(
                    "{what:?} did not get there within {within:?}; last seen:\n{last:#}\n\
                     controller manager log:\n{}\nkubelet log:\n{}",
                    self.cm.log(),
                    self.node.kubelet.log()
                )
            })
    }

    /// A Job whose one container `main` runs `script` in the node's busybox.
    fn job(&self, name: &str, spec: Value, script: &str) -> Value {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": self.node.images.busybox,
                "command": ["sh", "-c", script]}]}});
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
    }

    /// The job's pods.
    fn pods(&self, job: &str) -> Vec<Value> {
        items(
            &self
                .kubectl()
                .json(&["get", "pods", "-l", &format!("job-name={job}")]),
        )
    }
}

/// Waits for a file the test writes into the container, then exits with the code it holds.
const ON_SIGNAL: &str = "until [ -f /tmp/code ]; do sleep 1; done; exit $(cat /tmp/code)";

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn apply(k: &Kubectl, obj: &Value) {
    k.ok_input(&["apply", "-f", "-"], &obj.to_string());
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn index(p: &Value) -> &str {
    p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        .as_str()
        .unwrap_or("")
}

fn condition(j: &Value, t: &str) -> Option<Value> {
    j["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t && c["status"] == "True")
        .cloned()
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
}

/// The states of a job as `kubectl get job -w -o json` prints them.
struct Watch {
    child: std::process::Child,
    out: std::sync::Arc<parking_lot::Mutex<String>>,
}

impl Watch {
    /// Watches `job` (which must exist), once kubectl has printed its current state.
    async fn start(k: &Kubectl, job: &str) -> Watch {
        let mut child = k.spawn(&["get", "job", job, "-w", "-o", "json"]);
        let out = std::sync::Arc::new(parking_lot::Mutex::new(String::new()));
        let mut stdout = child.stdout.take().expect("piped");
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let started = skiff_e2e::eventually(Duration::from_secs(30), || {
            (!out.lock().is_empty()).then_some(())
        })
        .await;
        assert!(started.is_some(), "kubectl get -w printed nothing");
        Watch { child, out }
    }

    /// Every state printed so far.
    fn states(&self) -> Vec<Value> {
        let out = self.out.lock().clone();
        serde_json::Deserializer::from_str(&out)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_success_policy_completes_an_indexed_job_early() {
    let env = Env::start().await;
    let k = env.kubectl();
    // Index 0 is the leader: once it succeeds the job has done its work; the others would
    // run for five minutes.
    apply(
        &k,
        &env.job(
            "leader",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
                "successPolicy": {"rules": [{"succeededIndexes": "0"}]}}),
            "[ \"$JOB_COMPLETION_INDEX\" = 0 ] && exit 0; exec sleep 300",
        ),
    );
    let watch = Watch::start(&k, "leader").await;
    let out = k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/leader",
        "--timeout=120s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let j = k.json(&["get", "job", "leader"]);
    let met = condition(&j, "SuccessCriteriaMet").expect("SuccessCriteriaMet");
    let complete = condition(&j, "Complete").expect("Complete");
    for c in [&met, &complete] {
        assert_eq!(c["reason"], "SuccessPolicy", "{j:#}");
        assert_eq!(c["message"], "Matched rules at index 0", "{j:#}");
    }
    assert!(
        complete["lastTransitionTime"].as_str() >= met["lastTransitionTime"].as_str(),
        "{j:#}"
    );
    assert!(condition(&j, "Failed").is_none() && condition(&j, "FailureTarget").is_none());
    let st = &j["status"];
    assert_eq!(st["completedIndexes"], "0", "{j:#}");
    assert_eq!(st["succeeded"], 1, "{j:#}");
    assert!(st["active"].is_null(), "{j:#}");
    assert_eq!(st["terminating"], 0, "{j:#}");
    assert!(st["completionTime"].is_string(), "{j:#}");

    // The criteria were met while the other two pods were still stopping: Complete came
    // only once they had.
    let states = watch.states();
    let interim = states
        .iter()
        .find(|s| {
            condition(s, "SuccessCriteriaMet").is_some() && condition(s, "Complete").is_none()
        })
        .unwrap_or_else(|| {
            panic!("no state between SuccessCriteriaMet and Complete in {states:#?}")
        });
    assert!(
        interim["status"]["terminating"].as_i64().unwrap_or(0) > 0,
        "{interim:#}"
    );

    // Only the leader's pod is left, finished.
    let pods = env
        .until(&["pods", "-l", "job-name=leader"], |v| items(v).len() == 1)
        .await;
    let p = &items(&pods)[0];
    assert_eq!(index(p), "0");
    assert_eq!(p["status"]["phase"], "Succeeded");
    let row = k.ok(&["get", "job", "leader"]);
    let line = row.lines().nth(1).unwrap_or("");
    assert!(line.contains("Complete") && line.contains("1/3"), "{row}");
}

#[tokio::test]
async fn a_pod_failure_policy_ignores_evictions_and_fails_the_job_on_an_exit_code() {
    let env = Env::start().await;
    let k = env.kubectl();
    // No failure allowed; an eviction is not the pod's failure, exit code 42 is the job's.
    let policy = json!({"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}]});
    apply(
        &k,
        &env.job(
            "tolerant",
            json!({"backoffLimit": 0, "podFailurePolicy": policy}),
            ON_SIGNAL,
        ),
    );
    // The same job without the Ignore rule counts the eviction as a failure.
    apply(
        &k,
        &env.job(
            "strict",
            json!({"backoffLimit": 0, "podFailurePolicy": {"rules": [policy["rules"][1].clone()]}}),
            ON_SIGNAL,
        ),
    );
    let first = env
        .until(&["pods", "-l", "job-name=tolerant"], |v| {
            items(v).iter().any(running)
        })
        .await;
    let first = name(&items(&first)[0]);
    let strict = env
        .until(&["pods", "-l", "job-name=strict"], |v| {
            items(v).iter().any(running)
        })
        .await;
    let strict = name(&items(&strict)[0]);

    // Evicted through the eviction API: marked as disrupted, then deleted.
    for pod in [&first, &strict] {
        let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": "default"}});
        k.ok_input(
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
                "-f",
                "-",
            ],
            &eviction.to_string(),
        );
    }
    let p = k.json(&["get", "pod", &first]);
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "{p:#}");
    let c = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .cloned()
        .unwrap_or_else(|| panic!("no DisruptionTarget condition: {p:#}"));
    assert_eq!(c["status"], "True");
    assert_eq!(c["reason"], "EvictionByEvictionAPI");
    assert_eq!(c["message"], "Eviction API: evicting");

    // The strict job fails for it; the tolerant one replaces its pod, counting nothing.
    let j = env
        .until(&["job", "strict"], |j| condition(j, "Failed").is_some())
        .await;
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(
        condition(&j, "FailureTarget").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(j["status"]["failed"], 1, "{j:#}");
    let pods = env
        .until(&["pods", "-l", "job-name=tolerant"], |v| {
            items(v).iter().any(|p| running(p) && name(p) != first)
        })
        .await;
    let second = items(&pods)
        .into_iter()
        .find(|p| running(p) && name(p) != first)
        .unwrap();
    env.until(&["pods", "-l", "job-name=tolerant"], |v| {
        items(v).iter().all(|p| name(p) != first)
    })
    .await;
    let j = k.json(&["get", "job", "tolerant"]);
    assert!(j["status"]["failed"].is_null(), "{j:#}");
    assert!(condition(&j, "FailureTarget").is_none(), "{j:#}");
    assert_eq!(j["spec"]["podReplacementPolicy"], "Failed");
    assert_eq!(
        j["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
        "True"
    );

    // Exit code 42: the job fails by its policy, with Kubernetes' message.
    let (code, out) = env
        .node
        .exec_in(&second, &["sh", "-c", "echo 42 > /tmp/code"])
        .await;
    assert_eq!(code, 0, "{out}");
    let j = env
        .until(&["job", "tolerant"], |j| condition(j, "Failed").is_some())
        .await;
    let msg = format!(
        "Container main for pod default/{} failed with exit code 42 matching FailJob rule at index 1",
        name(&second)
    );
    for t in ["FailureTarget", "Failed"] {
        let c = condition(&j, t).unwrap();
        assert_eq!(c["reason"], "PodFailurePolicy", "{j:#}");
        assert_eq!(c["message"], msg.as_str(), "{j:#}");
    }
    assert_eq!(j["status"]["failed"], 1, "{j:#}");
    let events = k.json(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Job,involvedObject.name=tolerant,reason=PodFailurePolicy",
    ]);
    assert!(
        items(&events)
            .iter()
            .any(|e| e["type"] == "Warning" && e["message"] == msg.as_str()),
        "{events:#}"
    );
    assert!(k.ok(&["get", "job", "tolerant"]).contains("Failed"));
}

#[tokio::test]
async fn indexes_fail_on_their_own_back_off_limit() {
    let env = Env::start().await;
    let k = env.kubectl();
    // Index 1 fails every time (retried once), index 2 exits 7, which fails its index at
    // once; indexes 0 and 3 succeed.
    apply(
        &k,
        &env.job(
            "per-index",
            json!({"completions": 4, "parallelism": 4, "completionMode": "Indexed",
                "backoffLimitPerIndex": 1,
                "podFailurePolicy": {"rules": [
                    {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [7]}}]}}),
            "case $JOB_COMPLETION_INDEX in 1) exit 1;; 2) exit 7;; *) exit 0;; esac",
        ),
    );
    // Indexes 1 and 2 fail while 0 and 3 would run five minutes: more than one failed index
    // fails the job and stops them.
    apply(
        &k,
        &env.job(
            "at-most-one",
            json!({"completions": 4, "parallelism": 4, "completionMode": "Indexed",
                "backoffLimitPerIndex": 0, "maxFailedIndexes": 1}),
            "case $JOB_COMPLETION_INDEX in 1|2) exit 1;; *) exec sleep 300;; esac",
        ),
    );

    let j = env
        .until(&["job", "per-index"], |j| condition(j, "Failed").is_some())
        .await;
    for t in ["FailureTarget", "Failed"] {
        let c = condition(&j, t).unwrap_or_else(|| panic!("no {t}: {j:#}"));
        assert_eq!(c["reason"], "FailedIndexes", "{j:#}");
        assert_eq!(c["message"], "Job has failed indexes", "{j:#}");
    }
    let st = &j["status"];
    assert_eq!(st["failedIndexes"], "1,2", "{j:#}");
    assert_eq!(st["completedIndexes"], "0,3", "{j:#}");
    assert_eq!(st["succeeded"], 2, "{j:#}");
    assert_eq!(st["failed"], 3, "{j:#}");
    assert_eq!(j["spec"]["backoffLimit"], 2147483647, "{j:#}");
    let pods = env.pods("per-index");
    let of = |i: &str| -> Vec<&Value> { pods.iter().filter(|p| index(p) == i).collect() };
    assert_eq!(of("2").len(), 1, "FailIndex: not retried; {pods:#?}");
    let mut ones = of("1");
    assert_eq!(ones.len(), 2, "retried once; {pods:#?}");
    ones.sort_by_key(|p| {
        p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    for (p, count) in ones.iter().zip(["0", "1"]) {
        assert_eq!(
            p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"], count,
            "{p:#}"
        );
        assert_eq!(p["status"]["phase"], "Failed", "{p:#}");
    }
    assert!(pods.iter().all(|p| p["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|f| f.is_empty())));

    let j = env
        .until(&["job", "at-most-one"], |j| {
            condition(j, "Failed").is_some()
        })
        .await;
    for t in ["FailureTarget", "Failed"] {
        let c = condition(&j, t).unwrap_or_else(|| panic!("no {t}: {j:#}"));
        assert_eq!(c["reason"], "MaxFailedIndexesExceeded", "{j:#}");
        assert_eq!(
            c["message"], "Job has exceeded the specified maximal number of failed indexes",
            "{j:#}"
        );
    }
    assert_eq!(j["status"]["failedIndexes"], "1,2", "{j:#}");
    assert!(j["status"]["active"].is_null(), "{j:#}");
    assert_eq!(j["status"]["terminating"], 0, "{j:#}");
    // The running indexes were stopped before the job was marked Failed.
    assert!(env.pods("at-most-one").iter().all(|p| !running(p)));
}

/// What `kubectl apply` says of `job`.
fn refused(k: &Kubectl, job: &Value) -> String {
    let r = k.run_with_input(&["apply", "-f", "-"], &job.to_string());
    assert!(!r.status.success(), "accepted: {job:#}");
    r.stderr
}

fn job(name: &str, spec: Value, restart: &str) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": restart,
        "containers": [{"name": "main", "image": "busybox"}]}});
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn job_policies_are_validated_and_defaulted() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let indexed = |extra: Value| {
        let mut s = json!({"completions": 3, "completionMode": "Indexed"});
        for (key, v) in extra.as_object().unwrap() {
            s[key] = v.clone();
        }
        s
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"successPolicy": {"rules": [{"succeededCount": 1}]}}),
            "Never",
            "spec.successPolicy: Invalid value:",
        ),
        (
            indexed(json!({"successPolicy": {"rules": [{"succeededIndexes": "0-5"}]}})),
            "Never",
            "spec.successPolicy.rules[0].succeededIndexes: Invalid value: \"0-5\": error parsing succeededIndexes: too large index: \"5\"",
        ),
        (
            indexed(json!({"successPolicy": {"rules": [{"succeededIndexes": "2,1"}]}})),
            "Never",
            "error parsing succeededIndexes: non-increasing order, previous: 2, current: 1",
        ),
        (
            indexed(json!({"successPolicy": {"rules": [{"succeededCount": 4}]}})),
            "Never",
            "spec.successPolicy.rules[0].succeededCount: Invalid value: 4: must be less than or equal to 3 (the number of specified completions)",
        ),
        (
            indexed(json!({"successPolicy": {"rules": [{"succeededIndexes": "0-1", "succeededCount": 3}]}})),
            "Never",
            "spec.successPolicy.rules[0].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
        ),
        (
            indexed(json!({"successPolicy": {"rules": [{}]}})),
            "Never",
            "spec.successPolicy.rules[0]: Required value: at least one of succeededCount or succeededIndexes must be specified",
        ),
        (
            json!({"podFailurePolicy": {"rules": [{"action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget"}]}]}}),
            "OnFailure",
            "spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified",
        ),
        (
            json!({"podFailurePolicy": {"rules": [{"action": "FailIndex",
                "onExitCodes": {"operator": "In", "values": [1]}}]}}),
            "Never",
            "spec.podFailurePolicy.rules[0].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
        ),
        (
            json!({"podFailurePolicy": {"rules": [{"action": "Ignore",
                "onExitCodes": {"operator": "In", "values": [1]},
                "onPodConditions": [{"type": "DisruptionTarget"}]}]}}),
            "Never",
            "spec.podFailurePolicy.rules[0]: Invalid value: specifying both OnExitCodes and OnPodConditions is not supported",
        ),
        (
            json!({"podFailurePolicy": {"rules": [{"action": "Ignore"}]}}),
            "Never",
            "spec.podFailurePolicy.rules[0]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
        ),
        (
            json!({"podFailurePolicy": {"rules": [{"action": "Retry",
                "onExitCodes": {"operator": "In", "values": [0, 3, 1]}}]}}),
            "Never",
            "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
        ),
        (
            json!({"podFailurePolicy": {"rules": [{"action": "Count",
                "onExitCodes": {"operator": "In", "values": [3, 1]}}]}}),
            "Never",
            "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: []int32{3, 1}: must be ordered",
        ),
        (
            json!({"podFailurePolicy": {"rules": [{"action": "Retry",
                "onExitCodes": {"operator": "In", "values": [1]}}]}}),
            "Never",
            "spec.podFailurePolicy.rules[0].action: Unsupported value: \"Retry\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
        ),
        (
            json!({"podFailurePolicy": {"rules": [{"action": "Count",
                "onExitCodes": {"containerName": "other", "operator": "In", "values": [1]}}]}}),
            "Never",
            "spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: \"other\": must be one of the container or initContainer names in the pod template",
        ),
        (
            json!({"podFailurePolicy": {"rules": [{"action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "Maybe"}]}]}}),
            "Never",
            "spec.podFailurePolicy.rules[0].onPodConditions[0].status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\"",
        ),
        (
            json!({"podReplacementPolicy": "TerminatingOrFailed", "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}),
            "Never",
            "spec.podReplacementPolicy: Unsupported value: \"TerminatingOrFailed\": supported values: \"Failed\"",
        ),
        (
            json!({"maxFailedIndexes": 1, "completions": 3, "completionMode": "Indexed"}),
            "Never",
            "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified",
        ),
        (
            json!({"backoffLimitPerIndex": 1}),
            "Never",
            "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode",
        ),
        (
            indexed(json!({"backoffLimitPerIndex": 1, "maxFailedIndexes": 5})),
            "Never",
            "spec.maxFailedIndexes: Invalid value: 5: must be less than or equal to completions",
        ),
        (
            json!({}),
            "Always",
            "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
        ),
    ];
    for (n, (spec, restart, want)) in cases.into_iter().enumerate() {
        let j = job(&format!("bad-{n}"), spec, restart);
        let err = refused(&k, &j);
        assert!(err.contains(want), "case {n}: want {want:?} in:\n{err}");
    }

    // Defaults: no job-wide limit with a limit per index; only failed pods replaced under a
    // pod failure policy; a pattern's status True.
    apply(
        &k,
        &job(
            "per-index",
            indexed(json!({"backoffLimitPerIndex": 2,
                "successPolicy": {"rules": [{"succeededCount": 2}]}})),
            "Never",
        ),
    );
    let j = k.json(&["get", "job", "per-index"]);
    assert_eq!(j["spec"]["backoffLimit"], 2147483647, "{j:#}");
    assert_eq!(j["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
    apply(
        &k,
        &job(
            "policy",
            json!({"podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}),
            "Never",
        ),
    );
    let j = k.json(&["get", "job", "policy"]);
    assert_eq!(j["spec"]["backoffLimit"], 6);
    assert_eq!(j["spec"]["podReplacementPolicy"], "Failed");
    assert_eq!(
        j["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
        "True"
    );

    // The policies are fixed once the job exists.
    for (job, patch, field) in [
        (
            "per-index",
            r#"{"spec":{"successPolicy":{"rules":[{"succeededCount":1}]}}}"#,
            "spec.successPolicy",
        ),
        (
            "per-index",
            r#"{"spec":{"backoffLimitPerIndex":3}}"#,
            "spec.backoffLimitPerIndex",
        ),
        (
            "policy",
            r#"{"spec":{"podFailurePolicy":{"rules":[{"action":"Count","onExitCodes":{"operator":"In","values":[1]}}]}}}"#,
            "spec.podFailurePolicy",
        ),
    ] {
        let err = k.fails(&["patch", "job", job, "--type=merge", "-p", patch]);
        assert!(
            err.contains(&format!("{field}: Invalid value"))
                || err.contains(&format!("{field}: field is immutable")),
            "{err}"
        );
        assert!(err.contains("field is immutable"), "{err}");
    }
}

#[tokio::test]
async fn a_deleted_job_leaves_no_pods_behind() {
    let env = Env::start().await;
    let k = env.kubectl();
    apply(
        &k,
        &env.job(
            "forever",
            json!({"completions": 2, "parallelism": 2}),
            "exec sleep 300",
        ),
    );
    env.until(&["pods", "-l", "job-name=forever"], |v| {
        items(v).iter().filter(|p| running(p)).count() == 2
    })
    .await;
    // kubectl deletes in the background: the garbage collector deletes the pods, and the
    // job-tracking finalizer they carry comes off although no Job is left to count them.
    k.ok(&["delete", "job", "forever"]);
    env.until(&["pods", "-l", "job-name=forever"], |v| items(v).is_empty())
        .await;
}
