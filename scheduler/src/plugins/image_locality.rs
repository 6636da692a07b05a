//! `ImageLocality`: prefers nodes that already hold the pod's images, the more so for big
//! images and for images few nodes have (so pods do not all pile onto the one node that
//! pulled first), as kube-scheduler scores it.

use super::{Rate, Score, MAX_SCORE};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// The `ImageLocality` score.
pub struct ImageLocality;

const NAME: &str = "ImageLocality";
const MB: i64 = 1024 * 1024;
/// Below this much image already present, the score is 0.
const MIN_THRESHOLD: i64 = 23 * MB;
/// Per container: this much or more image present scores the maximum.
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// The names a node may list an image under: as written, and with `:latest` when untagged.
fn names(image: &str) -> [String; 2] {
    let last = image.rsplit('/').next().unwrap_or(image);
    let tagged = last.contains(':') || last.contains('@');
    [
        image.to_string(),
        if tagged {
            image.to_string()
        } else {
            format!("{image}:latest")
        },
    ]
}

fn images(pod: &PodInfo) -> Vec<&str> {
    pod.spec()
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .filter_map(|c| c.image.as_deref())
                .collect()
        })
        .unwrap_or_default()
}

fn size_on(node: &NodeInfo, image: &str) -> Option<i64> {
    names(image)
        .iter()
        .find_map(|n| node.images.get(n).copied())
}

impl Score for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score_for<'a>(&'a self, pod: &'a PodInfo, snap: &'a Snapshot) -> Option<Rate<'a>> {
        let imgs = images(pod);
        // Each image with the share of nodes that hold it; none held anywhere → all nodes
        // rate 0.
        let held: Vec<(&str, i64)> = imgs
            .iter()
            .map(|i| {
                let holders = names(i).iter().map(|n| snap.image_nodes(n)).max();
                (*i, i64::from(holders.unwrap_or(0)))
            })
            .collect();
        if held.iter().all(|(_, n)| *n == 0) {
            return None;
        }
        let nodes = snap.nodes.len().max(1) as i64;
        let max = MAX_CONTAINER_THRESHOLD * imgs.len().max(1) as i64;
        Some(Box::new(move |_, node| {
            let sum: i64 = held
                .iter()
                .filter(|(_, holders)| *holders > 0)
                .filter_map(|(i, holders)| Some(size_on(node, i)? * holders / nodes))
                .sum();
            let clamped = sum.clamp(MIN_THRESHOLD, max);
            MAX_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod, scores};
    use serde_json::json;

    #[test]
    fn nodes_holding_big_images_score_higher() {
        let nodes = vec![
            node(json!({"metadata": {"name": "a"}, "status": {"images": [
                {"names": ["registry.local/app:1"], "sizeBytes": 800 * MB}]}})),
            node(json!({"metadata": {"name": "b"}, "status": {"images": [
                {"names": ["registry.local/app:1"], "sizeBytes": 800 * MB},
                {"names": ["registry.local/side:latest"], "sizeBytes": 500 * MB}]}})),
            node(json!({"metadata": {"name": "c"}})),
        ];
        let p = pod(json!({"spec": {"containers": [
            {"name": "app", "image": "registry.local/app:1"},
            {"name": "side", "image": "registry.local/side"}]}}));
        let scores = scores(&ImageLocality, &p, &nodes);
        assert!(scores[1] > scores[0] && scores[0] > scores[2], "{scores:?}");
        assert_eq!(scores[2], 0);
    }
}
