//! Keeps an indexed cache of every pod through a shared informer and prints how many pods
//! each node runs whenever something changes.
//!
//! ```text
//! cargo run -p skiff-client --example pod_reflector
//! ```

use std::collections::HashMap;

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use skiff_client::informer::Informer;
use skiff_client::reflector::indexers;
use skiff_client::{watcher, Api, Client};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// The kubeconfig to use.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Only pods matching this label selector.
    #[arg(long, short = 'l')]
    selector: Option<String>,
    /// Keep metadata.managedFields in the cache (stripped by default).
    #[arg(long)]
    keep_managed_fields: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::from_kubeconfig_or_default(args.kubeconfig.as_deref())?;
    let shutdown = CancellationToken::new();
    let informer = Informer::spawn(
        Api::<Pod>::all(client),
        watcher::Config {
            label_selector: args.selector,
            strip_managed_fields: !args.keep_managed_fields,
            ..Default::default()
        },
        HashMap::from([("node".to_string(), indexers::pod_node_name())]),
        shutdown.clone(),
    );
    let store = informer.store();
    store.wait_until_ready().await;
    println!("cache ready: {} pods", store.len());
    let changes = informer.subscribe();
    futures::pin_mut!(changes);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            c = changes.next() => if c.is_none() { break },
        }
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for p in store.state() {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            *per_node
                .entry(node.unwrap_or_else(|| "<pending>".into()))
                .or_default() += 1;
        }
        println!("{per_node:?}");
    }
    shutdown.cancel();
    Ok(())
}
