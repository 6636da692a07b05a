//! Label selectors (`metav1.LabelSelector`) matched against an object's labels, as
//! controllers, pod affinity and spreading use them, and node selector terms matched against a
//! node. The rules live in `skiff-rules`; the SDK re-exports them.

pub use skiff_rules::selector::{
    is_empty, matches, node_requirement, node_term_matches, pod_fits_node,
};
