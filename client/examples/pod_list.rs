//! Lists the pods of a namespace, like `kubectl get pods`, over gRPC.
//!
//! ```text
//! cargo run -p skiff-client --example pod_list -- --namespace default
//! ```
//! The kubeconfig comes from `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`.

use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use skiff_client::{Api, Client, ListParams};

#[derive(Parser)]
struct Args {
    /// The kubeconfig to use.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The namespace; all namespaces when omitted.
    #[arg(long, short)]
    namespace: Option<String>,
    /// Only pods matching this label selector.
    #[arg(long, short = 'l')]
    selector: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::from_kubeconfig_or_default(args.kubeconfig.as_deref())?;
    let pods: Api<Pod> = match &args.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let lp = ListParams {
        label_selector: args.selector,
        ..Default::default()
    };
    println!("{:<20} {:<32} {:<10} NODE", "NAMESPACE", "NAME", "PHASE");
    for p in pods.list(&lp).await?.items {
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        println!(
            "{:<20} {:<32} {:<10} {}",
            p.metadata.namespace.unwrap_or_default(),
            p.metadata.name.unwrap_or_default(),
            phase.unwrap_or_else(|| "-".into()),
            node.unwrap_or_else(|| "<none>".into())
        );
    }
    Ok(())
}
