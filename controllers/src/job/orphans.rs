//! Pods that still carry the job-tracking finalizer with no running Job left to count them —
//! their Job deleted (kubectl's default background deletion leaves them to the garbage
//! collector, which deletes them), finished, or never theirs — lose the finalizer so they can
//! go, as Kubernetes' Job controller releases its orphans.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use skiff_client::informer::Informer;
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, Client};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{finished, release, tracked, CONTROLLER_NAME};
use crate::owners;

/// How long a release that failed waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Watches pods (and Jobs going away) until `shutdown`, releasing orphaned pods.
pub fn run(client: Client, pods: Informer<Pod>, jobs: Informer<Job>, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel::<ObjectKey>();
    let store = pods.store();
    let job_store = jobs.store();
    {
        let (tx, store) = (tx.clone(), store.clone());
        crate::spawn_each(pods.subscribe(), shutdown.clone(), move |c| match c {
            Change::Applied(p) if tracked(&p) => {
                let _ = tx.send(ObjectKey::of(p.as_ref()));
            }
            Change::Resynced => {
                for p in store.state().iter().filter(|p| tracked(p)) {
                    let _ = tx.send(ObjectKey::of(p.as_ref()));
                }
            }
            _ => {}
        });
    }
    {
        let (tx, store) = (tx.clone(), store.clone());
        crate::spawn_each(jobs.subscribe(), shutdown.clone(), move |c| {
            let job = match c {
                Change::Deleted(j) => j,
                Change::Applied(j) if finished(&j).is_some() => j,
                _ => return,
            };
            let uid = job.metadata.uid.clone().unwrap_or_default();
            for p in store.by_index(owners::CONTROLLER_INDEX, &uid) {
                if tracked(&p) {
                    let _ = tx.send(ObjectKey::of(p.as_ref()));
                }
            }
        });
    }
    tokio::spawn(async move {
        loop {
            let key = tokio::select! {
                _ = shutdown.cancelled() => return,
                k = rx.recv() => match k {
                    Some(k) => k,
                    None => return,
                },
            };
            let Some(pod) = store.get(&key) else { continue };
            if !tracked(&pod) {
                continue;
            }
            let outcome = match orphaned(&client, &job_store, &pod).await {
                Ok(false) => Ok(()),
                Ok(true) => {
                    let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
                    release(&api, &pod).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                tracing::warn!(pod = %key, error = %e, "releasing an orphaned job pod");
                let tx = tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RETRY).await;
                    let _ = tx.send(key);
                });
            }
        }
    });
}

/// Whether no running Job of this controller counts `pod`: it has no controller, or its
/// controlling Job is gone or finished. A Job not in the cache is asked of the server before
/// the pod is judged (the cache may not show a Job just created).
async fn orphaned(
    client: &Client,
    jobs: &Store<Job>,
    pod: &Arc<Pod>,
) -> Result<bool, skiff_client::Error> {
    let Some(r) = owners::controller_of(&pod.metadata) else {
        return Ok(true);
    };
    if r.kind != "Job" || r.api_version != "batch/v1" {
        // Someone else's pod: its finalizer is not ours to take.
        return Ok(false);
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let job = match jobs.get(&ObjectKey::new(&ns, &r.name)) {
        Some(j) if j.metadata.uid.as_deref() == Some(r.uid.as_str()) => Some(j),
        _ => Api::<Job>::namespaced(client.clone(), &ns)
            .get_opt(&r.name)
            .await?
            .filter(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str()))
            .map(Arc::new),
    };
    Ok(match job {
        None => true,
        Some(j) => {
            let external = j
                .spec
                .as_ref()
                .and_then(|s| s.managed_by.as_deref())
                .is_some_and(|m| m != CONTROLLER_NAME);
            !external && finished(&j).is_some()
        }
    })
}
