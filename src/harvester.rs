//! Is a Harvester upgrade still running? Harvester resumes its charts only once its upgrade
//! completed, failed or was deleted; unpausing them while it runs brings back the very race the
//! pause prevents. The current upgrade is the `upgrades.harvesterhci.io` in `harvester-system`
//! labelled `harvesterhci.io/latestUpgrade=true`; it runs while its `Completed` condition is
//! `Unknown` (harvester `pkg/webhook/resources/machine/validator.go`), or not set yet.

use serde_json::Value;

use crate::api::{Target, object_path, urlencode};
use crate::context::Context;
use crate::retry::Failure;

/// The Upgrade API.
pub const UPGRADE_API_VERSION: &str = "harvesterhci.io/v1beta1";
/// Where Upgrades live.
pub const UPGRADE_NAMESPACE: &str = "harvester-system";
/// The label of the current upgrade.
pub const LATEST_UPGRADE_LABEL: &str = "harvesterhci.io/latestUpgrade";
/// The label carrying the upgrade's phase.
pub const UPGRADE_STATE_LABEL: &str = "harvesterhci.io/upgradeState";

/// A Harvester upgrade that is still running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningUpgrade {
    /// `harvester-system/<name>`.
    pub name: String,
    /// Its phase label, if any.
    pub state: Option<String>,
}

/// Whether an `Upgrade` object is still running: `Completed` is neither True nor False.
pub fn is_running(upgrade: &Value) -> bool {
    let completed = upgrade
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Completed"))
        .and_then(|c| c["status"].as_str());
    !matches!(completed, Some("True" | "False"))
}

/// The running latest upgrade, if any. No Upgrade CRD, or no current Upgrade, means none.
pub async fn running_upgrade(ctx: &Context) -> Result<Option<RunningUpgrade>, Failure> {
    let Some(resolved) = ctx.resolve(UPGRADE_API_VERSION, "Upgrade").await? else {
        return Ok(None);
    };
    let path = format!(
        "{}?labelSelector={}",
        object_path(UPGRADE_API_VERSION, &resolved.plural, Some(UPGRADE_NAMESPACE), None),
        urlencode(&format!("{LATEST_UPGRADE_LABEL}=true"))
    );
    let list = ctx
        .list_in(&ctx.budget(), &Target { name: format!("Harvester Upgrades in {UPGRADE_NAMESPACE}"), path })
        .await?;
    Ok(list.get("items").and_then(Value::as_array).into_iter().flatten().find(|u| is_running(u)).map(|u| {
        let text = |p: &str| u.pointer(p).and_then(Value::as_str).map(str::to_string);
        RunningUpgrade {
            name: format!("{UPGRADE_NAMESPACE}/{}", text("/metadata/name").unwrap_or_default()),
            state: u
                .pointer("/metadata/labels")
                .and_then(|l| l.get(UPGRADE_STATE_LABEL))
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn running_until_completed_is_true_or_false() {
        let with = |s: &str| json!({"status": {"conditions": [{"type": "Completed", "status": s}]}});
        assert!(is_running(&with("Unknown")));
        assert!(is_running(&json!({"metadata": {"name": "hvst-upgrade-x"}})), "just created");
        assert!(!is_running(&with("True")));
        assert!(!is_running(&with("False")));
    }
}
