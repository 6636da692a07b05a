//! Listing a resource known only by its group and plural name, as JSON: for callers that
//! handle objects of any type alike (a quota counting `count/widgets.example.com`), where
//! [`Api`](crate::Api) needs a Rust type.

use serde_json::Value;
use skiff_proto::v1 as pb;

use crate::api::{ListParams, ObjectList};
use crate::client::Client;
use crate::error::{Error, Result};

/// A resource by group, version and plural name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    /// The API group ("" for core).
    pub group: String,
    /// The version; empty for the one the server serves the resource at.
    pub version: String,
    /// The plural resource name (`widgets`).
    pub plural: String,
}

impl ResourceRef {
    /// A resource at whatever version the server serves it.
    pub fn any_version(group: &str, plural: &str) -> Self {
        ResourceRef {
            group: group.into(),
            version: String::new(),
            plural: plural.into(),
        }
    }
}

/// Lists one page of a resource's objects (in `namespace`, or all when `None`), as JSON.
pub async fn list(
    client: &Client,
    resource: &ResourceRef,
    namespace: Option<&str>,
    lp: &ListParams,
) -> Result<ObjectList<Value>> {
    let msg = pb::ListRequest {
        resource: Some(pb::ResourceRef {
            group: resource.group.clone(),
            version: resource.version.clone(),
            resource: resource.plural.clone(),
            namespace: namespace.unwrap_or("").to_string(),
        }),
        label_selector: lp.label_selector.clone().unwrap_or_default(),
        field_selector: lp.field_selector.clone().unwrap_or_default(),
        limit: i64::from(lp.limit),
        r#continue: lp.continue_token.clone().unwrap_or_default(),
        resource_version: lp.resource_version.clone().unwrap_or_default(),
        resource_version_match: String::new(),
    };
    let mut resources = client.resources();
    let request = client.request(msg, true);
    let call = async move { resources.list(request).await };
    let l = client
        .unary("list", &resource.plural, namespace.unwrap_or(""), call)
        .await?;
    let items = l
        .items
        .into_iter()
        .map(|o| {
            serde_json::from_slice(&o.json)
                .map_err(|e| Error::json(format!("decoding a {}", o.kind), e))
        })
        .collect::<Result<Vec<Value>>>()?;
    Ok(ObjectList {
        items,
        resource_version: l.resource_version,
        continue_token: Some(l.r#continue).filter(|c| !c.is_empty()),
        remaining_item_count: l.remaining_item_count,
    })
}

/// How many objects of a resource there are (in `namespace`, or all when `None`), read
/// page by page.
pub async fn count(
    client: &Client,
    resource: &ResourceRef,
    namespace: Option<&str>,
) -> Result<usize> {
    let mut lp = ListParams::default().limit(500);
    let mut n = 0;
    loop {
        let page = list(client, resource, namespace, &lp).await?;
        n += page.items.len();
        match page.continue_token {
            Some(c) => lp.continue_token = Some(c),
            None => return Ok(n),
        }
    }
}
