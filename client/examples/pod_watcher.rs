//! Follows pod changes with `watcher`: one line per event, resuming by itself after
//! disconnects and re-listing when its resourceVersion expires.
//!
//! ```text
//! cargo run -p skiff-client --example pod_watcher -- --namespace default
//! ```

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use skiff_client::watcher::{self, Event};
use skiff_client::{Api, Client};

#[derive(Parser)]
struct Args {
    /// The kubeconfig to use.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The namespace; all namespaces when omitted.
    #[arg(long, short)]
    namespace: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::from_kubeconfig_or_default(args.kubeconfig.as_deref())?;
    let pods: Api<Pod> = match &args.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let stream = watcher::watcher(pods, watcher::Config::default());
    futures::pin_mut!(stream);
    loop {
        let ev = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ev = stream.next() => ev,
        };
        match ev {
            Some(Ok(Event::Apply(p))) => println!("APPLY  {}", name(&p)),
            Some(Ok(Event::Delete(p))) => println!("DELETE {}", name(&p)),
            Some(Ok(Event::Init)) => println!("-- listing"),
            Some(Ok(Event::InitApply(p))) => println!("LISTED {}", name(&p)),
            Some(Ok(Event::InitDone)) => println!("-- listed; watching"),
            Some(Err(e)) => eprintln!("watch error (retrying): {e}"),
            None => return Ok(()),
        }
    }
}

fn name(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}
