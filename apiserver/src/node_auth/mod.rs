//! Node identities: the Node authorizer (what a kubelet may read and write, from the pods bound
//! to its node), and bootstrap tokens (how a node without a certificate yet authenticates to
//! ask for one).
//!
//! A node is a user `system:node:NAME` in the group `system:nodes`, as Kubernetes' node
//! identifier reads it; the NodeRestriction admission plugin uses the same reading.

pub mod authorizer;
pub mod bootstrap;
mod references;
pub mod rules;

pub use authorizer::{NodeAuthorizer, PodIndex};
pub use bootstrap::BootstrapTokens;
pub use references::{references_any, Kind};

use crate::auth::UserInfo;

/// The group every node is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The user name prefix of nodes.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// Whether `user` is a node, and if so its node name (empty when the user is in
/// `system:nodes` but its name names no node).
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authn::user;

    #[test]
    fn nodes_are_named_users_in_the_nodes_group() {
        assert_eq!(
            node_identity(&user("system:node:n1", &["system:nodes"])),
            Some("n1")
        );
        assert_eq!(node_identity(&user("system:node:n1", &[])), None);
        assert_eq!(node_identity(&user("alice", &["system:nodes"])), None);
        assert_eq!(
            node_identity(&user("system:node:", &["system:nodes"])),
            Some("")
        );
    }
}
