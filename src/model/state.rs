//! Replicated administrative state: target groups, deployments (approvals)
//! and declines, as bundles carry it (`state.json`) and as a replica takes
//! it from its upstream. `store::state` applies it; this module only says
//! what it is.

use serde::{Deserialize, Serialize};

/// Groups, removed groups, deployments and declines of one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub groups: Vec<GroupRecord>,
    pub removed_groups: Vec<String>,
    pub deployments: Vec<DeploymentRecord>,
    pub declined: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRecord {
    pub id: String,
    pub name: String,
    pub parent_id: Option<String>,
}

/// A deployment (MS-WSUSSS's Deployment table row), live or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRecord {
    pub deployment_id: String,
    pub update_id: String,
    pub revision: i32,
    pub group_id: String,
    pub action: String,
    pub admin_name: String,
    pub deadline: Option<String>,
    pub go_live: String,
    pub download_priority: i64,
    pub is_assigned: bool,
    pub removed: bool,
}

/// What applying a [`State`] changed (import plans and sync reports both
/// carry these counts, flattened into their JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateChanges {
    pub groups_added: u64,
    pub groups_changed: u64,
    pub groups_removed: u64,
    pub deployments_created: u64,
    pub deployments_changed: u64,
    pub deployments_removed: u64,
    pub updates_declined: u64,
}

impl std::ops::AddAssign for StateChanges {
    fn add_assign(&mut self, o: StateChanges) {
        self.groups_added += o.groups_added;
        self.groups_changed += o.groups_changed;
        self.groups_removed += o.groups_removed;
        self.deployments_created += o.deployments_created;
        self.deployments_changed += o.deployments_changed;
        self.deployments_removed += o.deployments_removed;
        self.updates_declined += o.updates_declined;
    }
}
