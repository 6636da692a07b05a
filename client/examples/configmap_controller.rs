//! A small controller: keeps the annotation `example.com/keys` of every ConfigMap equal to
//! the number of keys in its data. Shows the runner: shared informer, work queue,
//! requeue on failure, graceful shutdown on Ctrl-C.
//!
//! ```text
//! cargo run -p skiff-client --example configmap_controller -- --namespace default
//! ```

use std::sync::Arc;

use clap::Parser;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use skiff_client::controller::{self, Action, Controller};
use skiff_client::informer::InformerFactory;
use skiff_client::reflector::ObjectKey;
use skiff_client::{Api, Client, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// The kubeconfig to use.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
}

const ANNOTATION: &str = "example.com/keys";

async fn reconcile(
    client: Client,
    key: ObjectKey,
    cm: Option<Arc<ConfigMap>>,
) -> Result<Action, skiff_client::Error> {
    let Some(cm) = cm else {
        return Ok(Action::Done); // deleted: nothing to keep up to date
    };
    let want = cm.data.as_ref().map_or(0, |d| d.len()).to_string();
    let have = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION));
    if have != Some(&want) {
        let api: Api<ConfigMap> = Api::namespaced(client, &key.namespace);
        let patch = json!({"metadata": {"annotations": {ANNOTATION: want}}});
        api.patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        println!("{key}: {ANNOTATION}={want}");
    }
    Ok(Action::Done)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::from_kubeconfig_or_default(args.kubeconfig.as_deref())?;
    let shutdown = CancellationToken::new();
    let factory = InformerFactory::new(client.clone(), shutdown.clone());
    let controller = Controller::new(
        factory.informer::<ConfigMap>(),
        controller::Config::default(),
    );
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    controller
        .run(move |key, cm| reconcile(client.clone(), key, cm), shutdown)
        .await;
    Ok(())
}
