//! Services and their EndpointSlices, watched together: what the service proxy and the
//! cluster DNS server both follow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio_util::sync::CancellationToken;

use crate::informer::Informer;
use crate::{watcher, Api, Client};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The slices of each service, by `(namespace, service name)`.
pub fn slices_by_service(
    slices: &[Arc<EndpointSlice>],
) -> HashMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        if let Some(name) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            by_service.entry((ns, name.as_str())).or_default().push(s);
        }
    }
    by_service
}

/// Informers on all Services and EndpointSlices, and their changes as one stream.
pub struct ServiceWatch {
    /// Every Service.
    pub services: Informer<Service>,
    /// Every EndpointSlice.
    pub slices: Informer<EndpointSlice>,
    changes: BoxStream<'static, ()>,
}

impl ServiceWatch {
    /// Starts both informers (managed fields dropped), until `shutdown`.
    pub fn spawn(client: Client, shutdown: CancellationToken) -> ServiceWatch {
        let services = Informer::spawn(
            Api::<Service>::all(client.clone()),
            watcher::Config::default().strip_managed_fields(),
            Default::default(),
            shutdown.clone(),
        );
        let slices = Informer::spawn(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default().strip_managed_fields(),
            Default::default(),
            shutdown,
        );
        let changes = futures::stream::select(
            services.subscribe().map(|_| ()),
            slices.subscribe().map(|_| ()),
        )
        .boxed();
        ServiceWatch {
            services,
            slices,
            changes,
        }
    }

    /// Waits until both have listed. (`&mut`: the change stream is not `Sync`, so a shared
    /// borrow held across this wait would make the caller's future not `Send`.)
    pub async fn ready(&mut self) {
        self.services.store().wait_until_ready().await;
        self.slices.store().wait_until_ready().await;
    }

    /// The current Services and EndpointSlices.
    pub fn state(&self) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
        (self.services.store().state(), self.slices.store().state())
    }

    /// Waits for a change; `false` once the informers have stopped.
    pub async fn changed(&mut self) -> bool {
        self.changes.next().await.is_some()
    }

    /// Takes along the changes that follow within `gap` of each other, so that changes that
    /// arrive together are handled together.
    pub async fn settle(&mut self, gap: Duration) {
        while let Ok(Some(_)) = tokio::time::timeout(gap, self.changes.next()).await {}
    }
}
