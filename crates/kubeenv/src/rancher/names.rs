//! Object names Rancher derives.

use sha2::{Digest, Sha256};

/// `capr.MaxHelmReleaseNameLength` (rancher `pkg/capr/common.go`): the Bundle name limit.
pub const MAX_HELM_RELEASE_NAME_LENGTH: usize = 53;

/// The Bundle Rancher generates for ManagedChart `chart`:
/// `capr.SafeConcatName(capr.MaxHelmReleaseNameLength, "mcc", mcc.Name)`
/// (rancher `pkg/controllers/provisioningv2/managedchart/managedchart.go`).
pub fn bundle_name(chart: &str) -> String {
    safe_concat_name(MAX_HELM_RELEASE_NAME_LENGTH, &["mcc", chart])
}

/// rancher `pkg/capr/common.go` `SafeConcatName`: the parts joined with `-`; when longer than
/// `max_length`, truncated and suffixed with a short sha256 of the full name, so the result is at
/// most `max_length` long.
///
/// Works on bytes like the Go original (Kubernetes names are ASCII).
pub fn safe_concat_name(max_length: usize, parts: &[&str]) -> String {
    const HASH_LENGTH: usize = 6;
    let full = parts.join("-");
    let bytes = full.as_bytes();
    if bytes.len() <= max_length {
        return full;
    }
    if max_length == 0 {
        return String::new();
    }
    if max_length <= 5 {
        return String::from_utf8_lossy(&bytes[..max_length]).into_owned();
    }
    let digest: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    // Upstream checks the character where the cut would fall: when it is a valid trailing
    // character one more byte of the name is kept and the hash is one hex digit shorter.
    let trailing = max_length.saturating_sub(HASH_LENGTH + 1);
    let c = bytes[trailing];
    if c.is_ascii_lowercase() || c.is_ascii_digit() {
        let remaining = String::from_utf8_lossy(&bytes[..max_length - HASH_LENGTH]);
        let hash = &digest[..HASH_LENGTH - 1];
        if remaining.is_empty() {
            return hash.to_string();
        }
        return format!("{remaining}-{hash}");
    }
    format!("{}-{}", String::from_utf8_lossy(&bytes[..trailing]), &digest[..HASH_LENGTH])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed with Python's hashlib from the Go algorithm, independently of
    // this code.
    #[test]
    fn short_names_are_joined() {
        assert_eq!(bundle_name("harvester"), "mcc-harvester");
        let exactly = "a".repeat(49);
        assert_eq!(bundle_name(&exactly), format!("mcc-{exactly}"));
    }

    #[test]
    fn long_names_get_a_hash_suffix() {
        assert_eq!(bundle_name(&"a".repeat(50)), "mcc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-83fd2");
        assert_eq!(
            bundle_name("rancher-monitoring-crd-with-a-very-long-name-for-tests"),
            "mcc-rancher-monitoring-crd-with-a-very-long-nam-56e69"
        );
    }

    #[test]
    fn a_cut_at_a_dash_keeps_six_hash_digits() {
        let name = format!("{}-{}", "a".repeat(42), "b".repeat(10));
        let got = bundle_name(&name);
        assert_eq!(got, "mcc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-969ea6");
        assert_eq!(got.len(), MAX_HELM_RELEASE_NAME_LENGTH);
    }

    #[test]
    fn tiny_limits_truncate() {
        assert_eq!(safe_concat_name(0, &["abc", "def"]), "");
        assert_eq!(safe_concat_name(4, &["abc", "def"]), "abc-");
    }
}
