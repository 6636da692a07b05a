//! The configuration file, in the shape of kube-scheduler's `KubeSchedulerConfiguration`
//! (`kubescheduler.config.k8s.io/v1`): profiles, plugins enabled and disabled (per extension
//! point or `multiPoint`), score weights, `NodeResourcesFit`'s scoring strategy, and
//! `percentageOfNodesToScore`.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::framework::{Profile, Weighted};
use crate::plugins::image_locality::ImageLocality;
use crate::plugins::inter_pod_affinity::InterPodAffinity;
use crate::plugins::node_affinity::NodeAffinity;
use crate::plugins::node_name::NodeName;
use crate::plugins::node_ports::NodePorts;
use crate::plugins::node_resources::{
    NodeResourcesFit, NodeResourcesScore, ResourceWeight, Strategy,
};
use crate::plugins::node_unschedulable::NodeUnschedulable;
use crate::plugins::node_volume_limits::NodeVolumeLimits;
use crate::plugins::pod_topology_spread::PodTopologySpread;
use crate::plugins::taint_toleration::TaintToleration;
use crate::plugins::volume_binding::VolumeBinding;
use crate::plugins::volume_restrictions::VolumeRestrictions;
use crate::plugins::{Filter, Score};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid YAML of this shape.
    #[error("parsing the scheduler configuration: {0}")]
    Parse(#[from] serde_norway::Error),
    /// The file names something this scheduler does not have or accept.
    #[error("scheduler configuration: {0}")]
    Invalid(String),
}

/// `KubeSchedulerConfiguration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerConfig {
    /// `kubescheduler.config.k8s.io/v1` (also accepted when empty).
    #[serde(default)]
    pub api_version: String,
    /// `KubeSchedulerConfiguration`.
    #[serde(default)]
    pub kind: String,
    /// Leader election settings.
    #[serde(default)]
    pub leader_election: LeaderElection,
    /// How to reach the API server.
    #[serde(default)]
    pub client_connection: ClientConnection,
    /// The share of nodes to look at per pod (0: adaptive).
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
    /// The profiles; one `default-scheduler` profile when empty.
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
}

/// `leaderElection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LeaderElection {
    /// Whether to elect a leader.
    pub leader_elect: bool,
    /// Lease duration (`15s`).
    pub lease_duration: String,
    /// Renew deadline (`10s`).
    pub renew_deadline: String,
    /// Retry period (`2s`).
    pub retry_period: String,
    /// The lease's namespace.
    pub resource_namespace: String,
    /// The lease's name.
    pub resource_name: String,
}

impl Default for LeaderElection {
    fn default() -> Self {
        LeaderElection {
            leader_elect: true,
            lease_duration: "15s".into(),
            renew_deadline: "10s".into(),
            retry_period: "2s".into(),
            resource_namespace: "kube-system".into(),
            resource_name: "kube-scheduler".into(),
        }
    }
}

/// `clientConnection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientConnection {
    /// The kubeconfig file (the `--kubeconfig` flag wins).
    pub kubeconfig: String,
    /// Requests per second to the API server, on average (Kubernetes' default 50).
    pub qps: f32,
    /// Requests allowed at once above the average (Kubernetes' default 100).
    pub burst: u32,
}

impl Default for ClientConnection {
    fn default() -> Self {
        ClientConnection {
            kubeconfig: String::new(),
            qps: 50.0,
            burst: 100,
        }
    }
}

/// One profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileConfig {
    /// The name pods select it by.
    #[serde(default)]
    pub scheduler_name: Option<String>,
    /// Plugin sets per extension point.
    #[serde(default)]
    pub plugins: Plugins,
    /// Plugin arguments.
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
    /// Overrides the top-level `percentageOfNodesToScore`.
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
}

/// `plugins`: the extension points this scheduler has.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plugins {
    /// Applies to every extension point a plugin implements.
    #[serde(default)]
    pub multi_point: PluginSet,
    /// Filters.
    #[serde(default)]
    pub filter: PluginSet,
    /// Scores.
    #[serde(default)]
    pub score: PluginSet,
}

/// Enabled and disabled plugins (`name: "*"` disables all defaults).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PluginSet {
    /// Plugins to enable (with a score weight).
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    /// Plugins to disable.
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

/// A plugin by name, with its score weight.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PluginRef {
    /// The plugin's name.
    pub name: String,
    /// Its score weight (default: the plugin's default).
    #[serde(default)]
    pub weight: Option<i64>,
}

/// `pluginConfig` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct PluginConfig {
    /// The plugin's name.
    pub name: String,
    /// Its arguments.
    #[serde(default)]
    pub args: serde_json::Value,
}

const FILTERS: &[&str] = &[
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "VolumeRestrictions",
    "NodeVolumeLimits",
    "VolumeBinding",
    "PodTopologySpread",
    "InterPodAffinity",
];

/// kube-scheduler's default `VolumeBindingArgs.bindTimeoutSeconds`.
pub const DEFAULT_BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// `VolumeBindingArgs.bindTimeoutSeconds`: how long PreBind waits for the claims to bind.
fn bind_timeout(args: Option<&serde_json::Value>) -> Result<Duration, ConfigError> {
    match args.and_then(|a| a.get("bindTimeoutSeconds")) {
        None | Some(serde_json::Value::Null) => Ok(DEFAULT_BIND_TIMEOUT),
        Some(v) => match v.as_i64() {
            Some(s) if s >= 0 => Ok(Duration::from_secs(s as u64)),
            _ => Err(ConfigError::Invalid(format!(
                "VolumeBinding: bindTimeoutSeconds: Invalid value: {v}: invalid BindTimeoutSeconds, should not be a negative value"
            ))),
        },
    }
}

/// Score plugins with kube-scheduler's default weights.
const SCORES: &[(&str, i64)] = &[
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("NodeResourcesFit", 1),
    ("ImageLocality", 1),
];

/// Parses a Kubernetes duration such as `15s`, `1m30s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    skiff_rules::duration::parse(s).map_err(|e| ConfigError::Invalid(e.to_string()))
}

impl SchedulerConfig {
    /// Reads a configuration file's text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let c: SchedulerConfig = serde_norway::from_str(text)?;
        if !c.api_version.is_empty() && c.api_version != "kubescheduler.config.k8s.io/v1" {
            return Err(ConfigError::Invalid(format!(
                "apiVersion {:?} is not supported (use kubescheduler.config.k8s.io/v1)",
                c.api_version
            )));
        }
        if !c.kind.is_empty() && c.kind != "KubeSchedulerConfiguration" {
            return Err(ConfigError::Invalid(format!(
                "kind {:?} is not KubeSchedulerConfiguration",
                c.kind
            )));
        }
        if let Some(p) = c.percentage_of_nodes_to_score.filter(|p| *p > 100) {
            return Err(ConfigError::Invalid(format!(
                "percentageOfNodesToScore: Invalid value: {p}: not in valid range [0-100]"
            )));
        }
        Ok(c)
    }

    /// Builds the profiles (one `default-scheduler` profile when none are listed).
    pub fn profiles(&self) -> Result<Vec<Profile>, ConfigError> {
        let defaults = [ProfileConfig::default()];
        let list: &[ProfileConfig] = if self.profiles.is_empty() {
            &defaults
        } else {
            &self.profiles
        };
        let mut names = std::collections::HashSet::new();
        let mut out = Vec::new();
        for p in list {
            let profile = build(p, self.percentage_of_nodes_to_score.unwrap_or(0))?;
            if !names.insert(profile.scheduler_name.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "profiles: duplicate schedulerName {:?}",
                    profile.scheduler_name
                )));
            }
            out.push(profile);
        }
        Ok(out)
    }
}

/// Which plugins a point ends up with: defaults minus disabled (`*`: all) plus enabled.
fn resolve(
    defaults: &[(&str, i64)],
    points: &[&PluginSet],
) -> Result<Vec<(String, i64)>, ConfigError> {
    let mut list: Vec<(String, i64)> = defaults.iter().map(|(n, w)| (n.to_string(), *w)).collect();
    for set in points {
        for d in &set.disabled {
            if d.name == "*" {
                list.clear();
            } else {
                list.retain(|(n, _)| *n != d.name);
            }
        }
    }
    for set in points {
        for e in &set.enabled {
            let weight = e
                .weight
                .or_else(|| defaults.iter().find(|(n, _)| *n == e.name).map(|(_, w)| *w))
                .unwrap_or(1);
            if weight < 0 {
                return Err(ConfigError::Invalid(format!(
                    "plugin {}: weight must not be negative",
                    e.name
                )));
            }
            list.retain(|(n, _)| *n != e.name);
            list.push((e.name.clone(), weight));
        }
    }
    Ok(list)
}

fn strategy(args: Option<&serde_json::Value>) -> Result<NodeResourcesScore, ConfigError> {
    let mut s = NodeResourcesScore::default();
    let Some(st) = args.and_then(|a| a.get("scoringStrategy")) else {
        return Ok(s);
    };
    if let Some(resources) = st.get("resources").and_then(|r| r.as_array()) {
        s.resources = resources
            .iter()
            .map(|r| ResourceWeight {
                name: r["name"].as_str().unwrap_or("").to_string(),
                weight: r["weight"].as_i64().unwrap_or(1),
            })
            .collect();
    }
    s.strategy = match st.get("type").and_then(|t| t.as_str()).unwrap_or("LeastAllocated") {
        "LeastAllocated" => Strategy::LeastAllocated,
        "MostAllocated" => Strategy::MostAllocated,
        "RequestedToCapacityRatio" => {
            let shape = st
                .pointer("/requestedToCapacityRatio/shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| {
                    ConfigError::Invalid(
                        "NodeResourcesFit: RequestedToCapacityRatio needs requestedToCapacityRatio.shape".into(),
                    )
                })?;
            Strategy::RequestedToCapacityRatio(
                shape
                    .iter()
                    .map(|p| (p["utilization"].as_i64().unwrap_or(0), p["score"].as_i64().unwrap_or(0)))
                    .collect(),
            )
        }
        other => {
            return Err(ConfigError::Invalid(format!(
                "NodeResourcesFit: scoringStrategy.type: Unsupported value: {other:?}: supported values: \"LeastAllocated\", \"MostAllocated\", \"RequestedToCapacityRatio\""
            )))
        }
    };
    Ok(s)
}

fn build(p: &ProfileConfig, pct: u32) -> Result<Profile, ConfigError> {
    let args: HashMap<&str, &serde_json::Value> = p
        .plugin_config
        .iter()
        .map(|c| (c.name.as_str(), &c.args))
        .collect();
    let ipa = InterPodAffinity;
    let filter_defaults: Vec<(&str, i64)> = FILTERS.iter().map(|n| (*n, 0)).collect();
    let mut filters: Vec<Box<dyn Filter>> = Vec::new();
    let mut volume_binding = None;
    for (name, _) in resolve(
        &filter_defaults,
        &[&p.plugins.multi_point, &p.plugins.filter],
    )? {
        filters.push(match name.as_str() {
            "NodeUnschedulable" => Box::new(NodeUnschedulable),
            "NodeName" => Box::new(NodeName),
            "TaintToleration" => Box::new(TaintToleration),
            "NodeAffinity" => Box::new(NodeAffinity),
            "NodePorts" => Box::new(NodePorts),
            "NodeResourcesFit" => Box::new(NodeResourcesFit),
            "PodTopologySpread" => Box::new(PodTopologySpread),
            "InterPodAffinity" => Box::new(ipa.clone()),
            "VolumeRestrictions" => Box::new(VolumeRestrictions),
            "NodeVolumeLimits" => Box::new(NodeVolumeLimits),
            "VolumeBinding" => {
                volume_binding = Some(bind_timeout(args.get("VolumeBinding").copied())?);
                Box::new(VolumeBinding)
            }
            // Score-only plugins enabled through multiPoint have no filter.
            "ImageLocality" => continue,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "filter plugin {other:?} does not exist"
                )))
            }
        });
    }
    let mut scores = Vec::new();
    for (name, weight) in resolve(SCORES, &[&p.plugins.multi_point, &p.plugins.score])? {
        let plugin: Box<dyn Score> = match name.as_str() {
            "TaintToleration" => Box::new(TaintToleration),
            "NodeAffinity" => Box::new(NodeAffinity),
            "PodTopologySpread" => Box::new(PodTopologySpread),
            "InterPodAffinity" => Box::new(ipa.clone()),
            "NodeResourcesFit" => Box::new(strategy(args.get("NodeResourcesFit").copied())?),
            "ImageLocality" => Box::new(ImageLocality),
            // Filter-only plugins enabled through multiPoint have no score.
            "NodeUnschedulable" | "NodeName" | "NodePorts" | "VolumeRestrictions"
            | "NodeVolumeLimits" | "VolumeBinding" => continue,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "score plugin {other:?} does not exist"
                )))
            }
        };
        scores.push(Weighted { plugin, weight });
    }
    for name in args.keys() {
        if !FILTERS.contains(name)
            && !SCORES.iter().any(|(n, _)| n == name)
            && *name != "DefaultPreemption"
        {
            return Err(ConfigError::Invalid(format!(
                "pluginConfig: plugin {name:?} does not exist"
            )));
        }
    }
    let pct = p.percentage_of_nodes_to_score.unwrap_or(pct);
    Ok(Profile {
        scheduler_name: p
            .scheduler_name
            .clone()
            .unwrap_or_else(|| "default-scheduler".into()),
        filters,
        scores,
        percentage_of_nodes_to_score: pct,
        volume_binding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles(yaml: &str) -> Result<Vec<Profile>, ConfigError> {
        SchedulerConfig::from_yaml(yaml)?.profiles()
    }

    fn score_names(p: &Profile) -> Vec<(&'static str, i64)> {
        p.scores
            .iter()
            .map(|w| (w.plugin.name(), w.weight))
            .collect()
    }

    #[test]
    fn defaults_are_kube_schedulers() {
        let p = &profiles("{}").unwrap()[0];
        assert_eq!(p.scheduler_name, "default-scheduler");
        assert_eq!(p.filters.len(), FILTERS.len());
        assert_eq!(score_names(p)[0], ("TaintToleration", 3));
        let c = SchedulerConfig::from_yaml("{}").unwrap();
        assert!(c.leader_election.leader_elect);
        assert_eq!(
            parse_duration(&c.leader_election.lease_duration).unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(
            (c.client_connection.qps, c.client_connection.burst),
            (50.0, 100)
        );
        let c = SchedulerConfig::from_yaml("clientConnection: {qps: 2000, burst: 4000}").unwrap();
        assert_eq!(
            (c.client_connection.qps, c.client_connection.burst),
            (2000.0, 4000)
        );
    }

    #[test]
    fn volume_binding_waits_bind_timeout_seconds() {
        let p = &profiles("{}").unwrap()[0];
        assert_eq!(p.volume_binding, Some(DEFAULT_BIND_TIMEOUT));
        let p = &profiles(
            "profiles: [{pluginConfig: [{name: VolumeBinding, args: {bindTimeoutSeconds: 30}}]}]",
        )
        .unwrap()[0];
        assert_eq!(p.volume_binding, Some(Duration::from_secs(30)));
        let off = &profiles("profiles: [{plugins: {filter: {disabled: [{name: VolumeBinding}]}}}]")
            .unwrap()[0];
        assert_eq!(off.volume_binding, None);
        let Err(e) = profiles(
            "profiles: [{pluginConfig: [{name: VolumeBinding, args: {bindTimeoutSeconds: -1}}]}]",
        ) else {
            panic!("a negative bindTimeoutSeconds was accepted");
        };
        assert!(
            e.to_string().contains("should not be a negative value"),
            "{e}"
        );
    }

    #[test]
    fn binpack_profile_with_weights_and_disabled_plugins() {
        let ps = profiles(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
profiles:
- schedulerName: binpack
  plugins:
    score:
      disabled: [{name: ImageLocality}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources: [{name: cpu, weight: 2}, {name: memory, weight: 1}]
- schedulerName: bare
  plugins:
    multiPoint:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit}]
"#,
        )
        .unwrap();
        assert_eq!(ps[0].scheduler_name, "binpack");
        assert_eq!(ps[0].percentage_of_nodes_to_score, 30);
        let names = score_names(&ps[0]);
        assert!(names.contains(&("NodeResourcesFit", 5)));
        assert!(!names.iter().any(|(n, _)| *n == "ImageLocality"));
        assert_eq!(ps[1].filters.len(), 1);
        assert_eq!(score_names(&ps[1]), vec![("NodeResourcesFit", 1)]);
    }

    #[test]
    fn mistakes_are_named() {
        let e = |y: &str| profiles(y).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e("profiles: [{plugins: {score: {enabled: [{name: Nope}]}}}]")
                .contains("\"Nope\" does not exist")
        );
        assert!(e("profiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: Random}}}]}]")
            .contains("Unsupported value: \"Random\""));
        assert!(e("apiVersion: v2\n").contains("not supported"));
        assert!(e("percentageOfNodesToScore: 120\n").contains("[0-100]"));
        assert!(e("profiles: [{schedulerName: a}, {schedulerName: a}]").contains("duplicate"));
        assert!(
            e("profiles: [{pluginConfig: [{name: Bogus}]}]").contains("\"Bogus\" does not exist")
        );
        assert!(e("profiles: {oops").contains("parsing"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }
}
