//! Label selectors (`metav1.LabelSelector`) as pod affinity and spreading use them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` match `selector`: every `matchLabels` pair and every expression
/// (`In`, `NotIn`, `Exists`, `DoesNotExist`). An empty selector matches everything; an
/// absent one (`None`) matches nothing, as in Kubernetes.
pub fn matches(
    selector: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = selector else {
        return false;
    };
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let pairs_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v.as_str()));
    pairs_ok
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or(&[]);
            let v = get(&e.key);
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| values.iter().any(|x| x == v)),
                "NotIn" => !v.is_some_and(|v| values.iter().any(|x| x == v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pairs_and_expressions() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "front".into()),
        ]
        .into();
        assert!(matches(Some(&sel(json!({}))), Some(&labels)));
        assert!(!matches(None, Some(&labels)));
        assert!(matches(
            Some(&sel(json!({"matchLabels": {"app": "web"}}))),
            Some(&labels)
        ));
        assert!(!matches(
            Some(&sel(json!({"matchLabels": {"app": "db"}}))),
            Some(&labels)
        ));
        let e = |op: &str, vals: serde_json::Value| {
            sel(json!({"matchExpressions": [{"key": "tier", "operator": op, "values": vals}]}))
        };
        assert!(matches(
            Some(&e("In", json!(["front", "back"]))),
            Some(&labels)
        ));
        assert!(!matches(Some(&e("NotIn", json!(["front"]))), Some(&labels)));
        assert!(matches(Some(&e("Exists", json!([]))), Some(&labels)));
        assert!(!matches(Some(&e("DoesNotExist", json!([]))), Some(&labels)));
        assert!(matches(Some(&e("DoesNotExist", json!([]))), None));
    }
}
