//! An operator for a custom resource, `Widget` (`example.skiff.dev/v1`): each Widget gets a
//! ConfigMap of the same name holding its message `spec.replicas` times. The ConfigMap names
//! the Widget as its controlling owner, so deleting the Widget deletes it (the garbage
//! collector does); the Widget's status (`observedGeneration`, `ready`, a `Ready` condition)
//! is written through the status subresource.
//!
//! On start it creates the CustomResourceDefinition when it is missing and waits until it is
//! established. It stops cleanly on SIGTERM or Ctrl-C, letting running reconciles finish.
//!
//! ```text
//! cargo run -p skiff-client --example widget_operator
//! cargo run -p skiff-client --example widget_operator -- --print-crd | kubectl apply -f -
//! kubectl apply -f - <<EOF
//! apiVersion: example.skiff.dev/v1
//! kind: Widget
//! metadata: {name: hello}
//! spec: {replicas: 3, message: hi}
//! EOF
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use skiff_client::controller::{self, Action, Controller, WorkQueue};
use skiff_client::crd::CustomResourceExt;
use skiff_client::events::Recorder;
use skiff_client::informer::{Informer, InformerFactory};
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::watcher::{self, Event};
use skiff_client::{Api, Client, Patch, PatchParams, PostParams, Resource};
use tokio_util::sync::CancellationToken;

/// What a Widget should be.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WidgetSpec {
    /// How many times the ConfigMap repeats the message (0 or more).
    pub replicas: i32,
    /// The message.
    pub message: String,
}

/// What the operator last made of a Widget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,
    /// Whether the ConfigMap holds what the spec asks for.
    pub ready: bool,
    /// The `Ready` condition, with the reason when not ready.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

skiff_client::custom_resource! {
    /// A message the operator keeps in a ConfigMap.
    pub struct Widget {
        group: "example.skiff.dev",
        version: "v1",
        plural: "widgets",
        scope: Namespaced,
        spec: WidgetSpec,
        status: WidgetStatus,
    }
}

/// The field manager of the operator's writes, and the `managed-by` label of its ConfigMaps.
const MANAGER: &str = "widget-operator";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

#[derive(Parser)]
struct Args {
    /// The kubeconfig to use.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Only Widgets in this namespace (all namespaces when not given).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Widgets reconciled at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Print the CustomResourceDefinition as JSON and exit.
    #[arg(long)]
    print_crd: bool,
}

/// What every reconcile shares.
struct Ctx {
    client: Client,
    config_maps: Store<ConfigMap>,
    events: Recorder,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_crd {
        println!("{}", serde_json::to_string_pretty(&Widget::crd()?)?);
        return Ok(());
    }
    let client = Client::from_kubeconfig_or_default(args.kubeconfig.as_deref())?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));

    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = ensure_crd(&client) => r?,
    }
    println!("the CustomResourceDefinition is established");

    let factory = InformerFactory::new(client.clone(), shutdown.clone());
    let ns = args.namespace.as_deref();
    let widgets: Informer<Widget> = factory.informer_with(
        ns,
        watcher::Config::default().strip_managed_fields(),
        HashMap::new(),
    );
    let config_maps: Informer<ConfigMap> = factory.informer_with(
        ns,
        watcher::Config::default()
            .labels(&format!("{MANAGED_BY}={MANAGER}"))
            .strip_managed_fields(),
        HashMap::new(),
    );
    let controller = Controller::new(
        widgets,
        controller::Config {
            concurrency: args.concurrency,
            ..Default::default()
        },
    );
    // A change to a ConfigMap (edited, deleted by hand) brings its Widget back to the queue.
    tokio::spawn(requeue_owners(
        config_maps.clone(),
        controller.store(),
        controller.queue(),
        shutdown.clone(),
    ));
    config_maps.store().wait_until_ready().await;
    let ctx = Arc::new(Ctx {
        events: Recorder::new(client.clone(), MANAGER, MANAGER),
        config_maps: config_maps.store(),
        client,
    });
    println!("reconciling widgets");
    controller
        .run(
            move |key, widget| reconcile(ctx.clone(), key, widget),
            shutdown,
        )
        .await;
    println!("stopped");
    Ok(())
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    shutdown.cancel();
}

/// Creates the Widget CustomResourceDefinition unless it exists, then waits until the API
/// server reports it `Established` (serving the resource).
async fn ensure_crd(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = Widget::crd()?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    if crds.get_opt(&name).await?.is_none() {
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => println!("created the CustomResourceDefinition {name}"),
            // Another replica was quicker.
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e).context("creating the CustomResourceDefinition"),
        }
    }
    let events = watcher::watcher(
        crds,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    );
    futures::pin_mut!(events);
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    loop {
        let ev = tokio::select! {
            _ = &mut deadline => anyhow::bail!("the CustomResourceDefinition {name} is not established after 60s"),
            ev = events.next() => ev,
        };
        match ev {
            Some(Ok(Event::Apply(c) | Event::InitApply(c))) if established(&c) => return Ok(()),
            Some(Err(e)) => eprintln!("watching the CustomResourceDefinition: {e}"),
            Some(Ok(_)) => {}
            None => anyhow::bail!("the CustomResourceDefinition watch ended"),
        }
    }
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Feeds the queue with the Widget that owns each changed ConfigMap.
async fn requeue_owners(
    config_maps: Informer<ConfigMap>,
    widgets: Store<Widget>,
    queue: Arc<WorkQueue<ObjectKey>>,
    shutdown: CancellationToken,
) {
    let changes = config_maps.subscribe();
    futures::pin_mut!(changes);
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = changes.next() => c,
        };
        match change {
            Some(Change::Applied(cm) | Change::Deleted(cm)) => {
                let ns = cm.metadata.namespace.clone().unwrap_or_default();
                for owner in cm.metadata.owner_references.iter().flatten() {
                    if owner.api_version == Widget::api_version(&()) && owner.kind == "Widget" {
                        queue.add(ObjectKey::new(&ns, &owner.name));
                    }
                }
            }
            Some(Change::Resynced) => widgets.keys().into_iter().for_each(|k| queue.add(k)),
            None => return,
        }
    }
}

/// What a reconcile fails with: the API's errors, retried with back-off.
type Error = skiff_client::Error;

/// Brings one Widget's ConfigMap and status in line with its spec.
async fn reconcile(
    ctx: Arc<Ctx>,
    key: ObjectKey,
    widget: Option<Arc<Widget>>,
) -> Result<Action, Error> {
    // Deleted: the garbage collector removes the ConfigMap, which the Widget owns.
    let Some(widget) = widget else {
        return Ok(Action::Done);
    };
    if widget.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let Some(owner) = widget.controller_owner_ref(&()) else {
        return Ok(Action::Done);
    };
    let spec = &widget.spec;
    let (ready, reason, message) = if spec.replicas < 0 {
        (
            false,
            "InvalidSpec",
            format!("spec.replicas must be 0 or more, not {}", spec.replicas),
        )
    } else {
        let existing = ctx.config_maps.get(&key);
        // The ConfigMap informer sees only the operator's ConfigMaps: one it cannot see may
        // still exist, made by someone else, and is then left alone.
        let want = desired_data(spec);
        let up_to_date = existing.as_ref().is_some_and(|cm| {
            cm.data.as_ref() == Some(&want)
                && cm
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == owner.uid)
        });
        if up_to_date {
            (true, "ConfigMapReady", ready_message(&key, spec))
        } else {
            match apply_config_map(&ctx.client, &key, &owner, want).await? {
                Applied::Yes => {
                    ctx.events.normal(
                        widget.object_ref(&()),
                        "ConfigMapApplied",
                        "Reconcile",
                        format!("ConfigMap {} holds the message", key.name),
                    );
                    println!("{key}: ConfigMap applied");
                    (true, "ConfigMapReady", ready_message(&key, spec))
                }
                Applied::NotOurs => (
                    false,
                    "ConfigMapExists",
                    format!("ConfigMap {} exists and is not this Widget's", key.name),
                ),
            }
        }
    };
    write_status(&ctx.client, &key, &widget, ready, reason, &message).await?;
    Ok(Action::Done)
}

fn ready_message(key: &ObjectKey, spec: &WidgetSpec) -> String {
    format!(
        "ConfigMap {} holds the message {} time(s)",
        key.name, spec.replicas
    )
}

/// The ConfigMap data a spec asks for.
fn desired_data(spec: &WidgetSpec) -> BTreeMap<String, String> {
    let copies = usize::try_from(spec.replicas).unwrap_or(0);
    BTreeMap::from([
        ("message".to_string(), spec.message.clone()),
        ("replicas".to_string(), spec.replicas.to_string()),
        (
            "lines".to_string(),
            vec![spec.message.as_str(); copies].join("\n"),
        ),
    ])
}

/// What [`apply_config_map`] did.
enum Applied {
    Yes,
    /// A ConfigMap of that name exists and the Widget does not own it: left alone.
    NotOurs,
}

/// Creates or updates the Widget's ConfigMap by server-side apply, unless a ConfigMap of that
/// name exists that the Widget does not own.
async fn apply_config_map(
    client: &Client,
    key: &ObjectKey,
    owner: &OwnerReference,
    data: BTreeMap<String, String>,
) -> Result<Applied, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &key.namespace);
    if let Some(cm) = api.get_opt(&key.name).await? {
        let ours = cm
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == owner.uid);
        if !ours {
            return Ok(Applied::NotOurs);
        }
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "labels": {MANAGED_BY: MANAGER},
            "ownerReferences": [owner],
        },
        "data": data,
    });
    api.patch(
        &key.name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(Applied::Yes)
}

/// Writes the Widget's status through the status subresource, unless it already says this.
/// The condition's `lastTransitionTime` moves only when its status changes.
async fn write_status(
    client: &Client,
    key: &ObjectKey,
    widget: &Widget,
    ready: bool,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let generation = widget.metadata.generation;
    let old = widget.status.clone().unwrap_or_default();
    let old_ready = old.conditions.iter().find(|c| c.type_ == "Ready");
    let status_word = if ready { "True" } else { "False" };
    let condition = Condition {
        type_: "Ready".into(),
        status: status_word.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: match old_ready {
            Some(c) if c.status == status_word => c.last_transition_time.clone(),
            _ => skiff_client::time::now_time(),
        },
    };
    let new = WidgetStatus {
        observed_generation: generation,
        ready,
        conditions: old
            .conditions
            .iter()
            .filter(|c| c.type_ != "Ready")
            .cloned()
            .chain([condition])
            .collect(),
    };
    if new == old {
        return Ok(());
    }
    let api: Api<Widget> = Api::namespaced(client.clone(), &key.namespace);
    api.patch_status(
        &key.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": new})),
    )
    .await?;
    Ok(())
}
