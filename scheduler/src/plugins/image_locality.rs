//! `ImageLocality`: prefers nodes that already hold the pod's images, the more so for big
//! images and for images few nodes have (so pods do not all pile onto the one node that
//! pulled first), as kube-scheduler scores it.

use std::collections::HashMap;

use super::{CycleState, Score, MAX_SCORE};
use crate::snapshot::{NodeInfo, PodInfo};

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

/// Image → on how many nodes.
struct Spread {
    holders: HashMap<String, usize>,
    nodes: usize,
}

impl Score for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(&self, pod: &PodInfo, nodes: &[NodeInfo], state: &mut CycleState) {
        let mut holders = HashMap::new();
        for image in images(pod) {
            let n = nodes.iter().filter(|n| size_on(n, image).is_some()).count();
            holders.insert(image.to_string(), n);
        }
        state.put(
            NAME,
            Spread {
                holders,
                nodes: nodes.len().max(1),
            },
        );
    }

    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(spread) = state.get::<Spread>(NAME) else {
            return 0;
        };
        let imgs = images(pod);
        let sum: i64 = imgs
            .iter()
            .filter_map(|i| {
                let size = size_on(node, i)?;
                let holders = *spread.holders.get(*i).unwrap_or(&1) as i64;
                Some(size * holders / spread.nodes as i64)
            })
            .sum();
        let max = MAX_CONTAINER_THRESHOLD * imgs.len().max(1) as i64;
        let clamped = sum.clamp(MIN_THRESHOLD, max);
        MAX_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
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
        let mut st = CycleState::default();
        ImageLocality.pre_score(&p, &nodes, &mut st);
        let scores: Vec<i64> = nodes
            .iter()
            .map(|n| ImageLocality.score(&st, &p, n))
            .collect();
        assert!(scores[1] > scores[0] && scores[0] > scores[2], "{scores:?}");
        assert_eq!(scores[2], 0);
    }
}
