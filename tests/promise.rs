//! The promise — every object the upgrade paused is unpaused in the end, and nothing a person
//! or another tool paused is ever unpaused by us — in the cases an outside review found broken
//! (issue 12): lost answers while pausing, merged and taken-over ledgers, shared ownership, the
//! explicit keep-paused intent, unmarked ledgers, races between record and restore, admission
//! denials. Each test failed on the code before its fix.

mod support;

use std::time::Duration;

use fault_proxy::Faults;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::*;

const MARK: &str = "/metadata/annotations/pause-ledger.io~1paused-by";

async fn record(kubeconfig: &std::path::Path, ns: &str, upgrade: &str, extra: &[&str]) -> Run {
    let ledger = format!("{ns}/pause-ledger");
    let mut args = vec!["record", "--ledger", &ledger, "--upgrade", upgrade, "--namespace", ns, "-o", "json"];
    args.extend_from_slice(extra);
    run_as(kubeconfig, &args).await
}

/// Send a JSON Patch as `manager` (how another tool, or an earlier pause-ledger, wrote).
async fn json_patch_as(path: &str, patch: &Value, manager: &str) {
    let access = pause_ledger::api::Access::new(admin(), Duration::from_secs(10));
    access.json_patch(path, path, patch, manager, false).await.expect("json patch");
}

fn outcome_of(r: &Run, name: &str) -> String {
    r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["object"]["name"] == name)
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no entry {name}: {r:#?}"))
}

/// The names listed in the ledger's `entries` and `pausedBefore`, via `validate -o json`.
async fn ledger_lists(ns: &str) -> (Vec<String>, String) {
    let yaml = ledger_data(ns, "pause-ledger").await["ledger.yaml"].clone();
    let file = std::env::temp_dir().join(format!("pl-promise-{ns}.yaml"));
    std::fs::write(&file, &yaml).unwrap();
    let v = run(&["validate", file.to_str().unwrap(), "-o", "json"]).await;
    assert_eq!(v.code, 0, "the written ledger is invalid: {v:#?}\n{yaml}");
    let names = v.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["object"]["name"].as_str().unwrap().to_string())
        .collect();
    (names, yaml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_keeps_its_own_pauses_when_answers_are_lost() {
    let ns = namespace("lost-answers").await;
    let names: Vec<String> = (0..30).map(|i| format!("c-{i:02}")).collect();
    create_charts(&ns, &names).await;
    // Every other managedcharts request is applied by the server and its answer thrown away.
    let (proxy, kubeconfig) = proxied(Faults {
        seed: 12,
        reset_after_forward_rate: 0.4,
        path_filter: Some("managedcharts".into()),
        ..Default::default()
    });
    let mut args: Vec<&str> = vec!["--max-attempts", "40", "--concurrency", "4"];
    args.extend(names.iter().map(String::as_str));
    let r = record(&kubeconfig, &ns, "up-lost", &args).await;
    assert!(proxy.stats().resets_after_forward > 5, "no answers were lost: {:?}", proxy.stats());
    // Whatever record said, every chart that carries our mark is listed for restore.
    let (listed, yaml) = ledger_lists(&ns).await;
    for n in &names {
        let c = chart(&ns, n).await;
        if c.pointer(MARK) == Some(&json!("up-lost")) {
            assert!(listed.contains(n), "{n} carries our mark but is not in the ledger's entries:\n{yaml}\n{r:#?}");
        }
    }
    assert!(!yaml.contains("pausedBefore"), "nothing was paused before the upgrade:\n{yaml}");
    let restored = restore(&format!("{ns}/pause-ledger"), &[]).await;
    assert_eq!(restored.code, 0, "{restored:#?}");
    assert_eq!(count_paused(&ns).await, 0, "pauses were lost: {restored:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merging_keeps_each_entrys_rule_and_writes_a_valid_ledger() {
    // Onto a minimal, unmarked ledger without an upgrade id (a script paused with kubectl).
    let ns = namespace("merge-unmarked").await;
    for n in ["a", "b", "c"] {
        create_chart(&ns, n).await;
    }
    set_paused_by_hand(&ns, "a", true).await;
    set_paused_by_hand(&ns, "b", true).await;
    write_ledger(&ns, "pause-ledger", &[("charts", "a b"), ("namespace", &ns)]).await;
    let r = record(cp().kubeconfig_path(), &ns, "up-2", &["--on-existing", "merge", "c"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    let (listed, yaml) = ledger_lists(&ns).await;
    assert_eq!(listed, ["a", "b", "c"], "{yaml}");
    assert!(yaml.contains("upgrade: up-2"), "new pauses need an id to mark with:\n{yaml}");
    assert_eq!(yaml.matches("ownership: unmarked").count(), 2, "the script's entries stay unmarked:\n{yaml}");
    let restored = restore(&format!("{ns}/pause-ledger"), &[]).await;
    assert_eq!(restored.code, 0, "{restored:#?}");
    assert!(restored.outcomes().values().all(|o| o == "restored"), "{restored:#?}");

    // Onto a marked ledger written with another field manager. `f` is listed there but
    // running again (restored by hand) when this record pauses it: its entry must follow our
    // rule, or restore reads our own pause as a re-pause by hand and leaves it paused.
    let ns = namespace("merge-manager").await;
    for n in ["d", "e", "f"] {
        create_chart(&ns, n).await;
    }
    let d = serde_json::to_value(charts(&ns).get("d").await.unwrap()).unwrap();
    let field = pause_ledger::kinds::FieldPath::parse("spec.paused").unwrap();
    let patch = pause_ledger::ownership::pause_patch(&d, &field, "up-1").unwrap().unwrap();
    json_patch_as(&format!("/apis/management.cattle.io/v3/namespaces/{ns}/managedcharts/d"), &patch, "upgrade-tool")
        .await;
    let ledger = format!(
        "version: pause-ledger/v1\nupgrade: up-1\npausedAt: 2026-11-27T10:00:00Z\nfieldManager: upgrade-tool\nentries:\n  - namespace: {ns}\n    name: d\n  - namespace: {ns}\n    name: f\n"
    );
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &ledger)]).await;
    let r = record(cp().kubeconfig_path(), &ns, "up-2", &["--on-existing", "merge", "e", "f"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(outcome_of(&r, "f"), "paused", "{r:#?}");
    let (_, yaml) = ledger_lists(&ns).await;
    assert_eq!(yaml.matches("fieldManager: upgrade-tool").count(), 1, "only d keeps its field manager:\n{yaml}");
    let restored = restore(&format!("{ns}/pause-ledger"), &[]).await;
    assert_eq!(restored.code, 0, "{restored:#?}");
    for n in ["d", "e", "f"] {
        assert_eq!(restored.outcomes()[n], "restored", "{n}: {restored:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_over_reports_what_it_could_not_remark_and_loses_nothing() {
    let ns = namespace("take-over").await;
    create_chart(&ns, "x").await;
    pause_as_upgrade(&ns, "x", "up-1").await;
    // A CronJob paused by up-1, which the recording ServiceAccount may read but not patch.
    let cron = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("batch", "v1", "CronJob"), "cronjobs");
    let cronjobs: Api<DynamicObject> = Api::namespaced_with(admin(), &ns, &cron);
    let cj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "suspend": false, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}},
    }))
    .unwrap();
    cronjobs.create(&PostParams::default(), &cj).await.unwrap();
    let current = serde_json::to_value(cronjobs.get("nightly").await.unwrap()).unwrap();
    let field = pause_ledger::kinds::FieldPath::parse("spec.suspend").unwrap();
    let patch = pause_ledger::ownership::pause_patch(&current, &field, "up-1").unwrap().unwrap();
    json_patch_as(&format!("/apis/batch/v1/namespaces/{ns}/cronjobs/nightly"), &patch, "pause-ledger").await;
    let ledger = format!(
        "version: pause-ledger/v1\nupgrade: up-1\npausedAt: 2026-11-27T10:00:00Z\nentries:\n  - namespace: {ns}\n    name: x\n  - apiVersion: batch/v1\n    kind: CronJob\n    namespace: {ns}\n    name: nightly\n"
    );
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &ledger)]).await;
    create_chart(&ns, "y").await;
    let sa = service_account_with(
        &ns,
        "recorder",
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            {"apiGroups": ["management.cattle.io"], "resources": ["managedcharts"], "verbs": ["get", "patch"]},
            {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get"]},
        ]),
    )
    .await;
    let r = record(&sa, &ns, "up-2", &["--on-existing", "take-over", "y"]).await;
    assert_eq!(r.code, 3, "a mark not taken over is reported: {r:#?}");
    assert_eq!(outcome_of(&r, "x"), "taken-over");
    assert_eq!(outcome_of(&r, "nightly"), "not-taken-over");
    assert_eq!(chart(&ns, "x").await.pointer(MARK), Some(&json!("up-2")));
    let (listed, yaml) = ledger_lists(&ns).await;
    assert_eq!(listed, ["x", "nightly", "y"], "{yaml}");
    assert!(yaml.contains("upgrade: up-1"), "the CronJob keeps its old mark in the ledger:\n{yaml}");
    let restored = restore(&format!("{ns}/pause-ledger"), &[]).await;
    assert_eq!(restored.code, 0, "{restored:#?}");
    assert!(restored.outcomes().values().all(|o| o == "restored"), "{restored:#?}");
    let suspended = serde_json::to_value(cronjobs.get("nightly").await.unwrap()).unwrap();
    assert_eq!(suspended.pointer("/spec/suspend"), Some(&json!(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_ownership_and_keep_paused_stay_paused() {
    let ns = namespace("shared").await;
    for n in ["applied", "kept", "ours"] {
        create_chart(&ns, n).await;
    }
    let r = record(cp().kubeconfig_path(), &ns, "up-1", &["applied", "kept", "ours"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    // A GitOps tool server-side-applies paused: true during the upgrade: it co-owns the field.
    let apply = json!({"apiVersion": "management.cattle.io/v3", "kind": "ManagedChart",
        "metadata": {"name": "applied", "namespace": ns}, "spec": {"paused": true}});
    charts(&ns).patch("applied", &PatchParams::apply("admin"), &Patch::Apply(apply)).await.unwrap();
    // An administrator says "keep this paused".
    charts(&ns)
        .patch(
            "kept",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"pause-ledger.io/keep-paused": "true"}}})),
        )
        .await
        .unwrap();
    let restored = restore(&format!("{ns}/pause-ledger"), &[]).await;
    assert_eq!(restored.code, 0, "{restored:#?}");
    let o = restored.outcomes();
    assert_eq!((o["applied"].as_str(), o["kept"].as_str(), o["ours"].as_str()), ("not-ours", "not-ours", "restored"));
    assert!(paused(&ns, "applied").await && paused(&ns, "kept").await && !paused(&ns, "ours").await);
    let applied = chart(&ns, "applied").await;
    let managers: Vec<&str> =
        applied["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert!(managers.contains(&"admin"), "the admin's ownership is intact: {managers:?}");
    let detail = |n: &str| {
        restored.json()["entries"].as_array().unwrap().iter().find(|e| e["object"]["name"] == n).unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(detail("applied").contains("also owned by admin"), "{}", detail("applied"));
    assert!(detail("kept").contains("keep-paused"), "{}", detail("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmarked_ledger_never_restores_twice_and_hooks_can_refuse_it() {
    let ns = namespace("unmarked").await;
    create_chart(&ns, "a").await;
    set_paused_by_hand(&ns, "a", true).await;
    write_ledger(&ns, "pause-ledger", &[("charts", "a"), ("namespace", &ns)]).await;
    let ledger = format!("{ns}/pause-ledger");
    // What the chart's hooks do: unmarked ledgers refused, nothing patched.
    let before = versions(&ns, &["a"]).await;
    let refused = restore(&ledger, &["--allow-unmarked=false"]).await;
    assert_eq!(refused.code, 4, "{refused:#?}");
    assert!(refused.stderr.contains("unmarked"), "{}", refused.stderr);
    assert_eq!(versions(&ns, &["a"]).await, before);

    // Allowed: restored once; an administrator's pause in the settle window stays.
    let child = command(cp().kubeconfig_path(), &["restore", "--ledger", &ledger, "-o", "json", "--settle", "6s"])
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "first restore", || async { !paused(&ns, "a").await }).await;
    charts(&ns)
        .patch(
            "a",
            &PatchParams { field_manager: Some("admin".into()), ..Default::default() },
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["entries"][0]["outcome"], "repaused", "{report}");
    assert!(paused(&ns, "a").await, "an administrator's fresh pause was undone");
}

/// Charts `<prefix>-00`..`<prefix>-29`, recorded as `upgrade` one at a time through a slowing
/// proxy: returned once that record has written its intent and is still pausing (the proxy,
/// which must outlive it, and the record process).
async fn record_in_intent_phase(
    ns: &str,
    prefix: &str,
    upgrade: &str,
) -> (fault_proxy::FaultProxy, tokio::process::Child) {
    let names: Vec<String> = (0..30).map(|i| format!("{prefix}-{i:02}")).collect();
    create_charts(ns, &names).await;
    let (proxy, slow) = slowed("managedcharts");
    let ledger = format!("{ns}/pause-ledger");
    let mut args = vec!["record", "--ledger", &ledger, "--upgrade", upgrade, "--namespace", ns, "--concurrency", "1"];
    args.extend(names.iter().map(String::as_str));
    let child = command(&slow, &args).spawn().unwrap();
    eventually(Duration::from_secs(30), "the intent", || async {
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin(), ns);
        api.get_opt("pause-ledger")
            .await
            .ok()
            .flatten()
            .is_some_and(|c| c.data.unwrap_or_default().contains_key("intent.yaml"))
    })
    .await;
    assert!(count_paused(ns).await < names.len(), "record finished already; nothing proven");
    (proxy, child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_waits_for_a_record_still_in_its_intent_phase() {
    let ns = namespace("intent").await;
    let (_proxy, recording) = record_in_intent_phase(&ns, "i", "up-i").await;
    let r = restore(&format!("{ns}/pause-ledger"), &[]).await;
    let rec = recording.wait_with_output().await.unwrap();
    assert_eq!(rec.status.code(), Some(0), "{}", String::from_utf8_lossy(&rec.stderr));
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("waiting for it"), "{}", r.stderr);
    assert_eq!(count_paused(&ns).await, 0, "restore ran during the intent phase and missed pauses: {r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_record_waits_for_one_still_in_its_intent_phase() {
    // Found by the randomized histories (seed 310): a second record wrote over the first's
    // intent, a restore then found the first's entries running and wrote "done", and the
    // first's later pauses stayed paused for good.
    let ns = namespace("intent-2").await;
    create_chart(&ns, "late").await;
    let (_proxy, first) = record_in_intent_phase(&ns, "j", "up-j").await;
    let ledger = format!("{ns}/pause-ledger");
    let second = record(cp().kubeconfig_path(), &ns, "up-j", &["late"]).await;
    let first = first.wait_with_output().await.unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(second.code, 0, "{second:#?}");
    assert!(second.stderr.contains("waiting for it"), "{}", second.stderr);
    let (listed, yaml) = ledger_lists(&ns).await;
    assert_eq!(listed.len(), 31, "{yaml}");
    let r = restore(&ledger, &[]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(count_paused(&ns).await, 0, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_is_never_written_over_a_newer_ledger() {
    let ns = namespace("newer").await;
    let (names, ledger) = seed_paused(&ns, "n", 30).await;
    create_chart(&ns, "late").await;
    let (_proxy, slow) = slowed("managedcharts");
    let restoring =
        command(&slow, &["restore", "--ledger", &ledger, "-o", "json", "--concurrency", "1"]).spawn().unwrap();
    eventually(Duration::from_secs(30), "restore under way", || async { count_paused(&ns).await < names.len() }).await;
    // The same upgrade records one more chart: the ledger now holds 31 entries.
    let more = record(cp().kubeconfig_path(), &ns, UPGRADE, &["late"]).await;
    assert_eq!(more.code, 0, "{more:#?}");
    let out = restoring.wait_with_output().await.unwrap();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(r.code, 3, "{r:#?}");
    assert!(r.json()["message"].as_str().unwrap().contains("the ledger changed"), "{r:#?}");
    assert!(paused(&ns, "late").await);
    assert!(
        !ledger_data(&ns, "pause-ledger").await.contains_key("status.yaml"),
        "a status of the old ledger was written"
    );
    let again = restore(&ledger, &[]).await;
    assert_eq!(again.code, 0, "{again:#?}");
    assert_eq!(count_paused(&ns).await, 0);
    assert!(ledger_data(&ns, "pause-ledger").await["status.yaml"].contains("state: done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_denial_fails_the_entry_and_is_not_called_missing_rbac() {
    let ns = namespace("denied").await;
    for n in ["frozen", "free"] {
        create_chart(&ns, n).await;
        pause_as_upgrade(&ns, n, UPGRADE).await;
    }
    charts(&ns)
        .patch("frozen", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"frozen": "true"}}})))
        .await
        .unwrap();
    // A ValidatingAdmissionPolicy (no webhook server needed) denying updates of frozen charts.
    let vap = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy"),
        "validatingadmissionpolicies",
    );
    let binding = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding"),
        "validatingadmissionpolicybindings",
    );
    let name = format!("freeze-{ns}");
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["management.cattle.io"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["managedcharts"]}]},
            "validations": [{"expression": "!has(oldObject.metadata.labels) || !('frozen' in oldObject.metadata.labels)",
                "message": "frozen by the change board"}],
        },
    }))
    .unwrap();
    Api::<DynamicObject>::all_with(admin(), &vap).create(&PostParams::default(), &policy).await.unwrap();
    let bound: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}},
    }))
    .unwrap();
    Api::<DynamicObject>::all_with(admin(), &binding).create(&PostParams::default(), &bound).await.unwrap();
    // Policies take effect a moment after they are created.
    eventually(Duration::from_secs(30), "the policy in force", || async {
        let dry = PatchParams { dry_run: true, ..Default::default() };
        charts(&ns).patch("frozen", &dry, &Patch::Merge(json!({"metadata": {"labels": {"probe": "x"}}}))).await.is_err()
    })
    .await;
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &full_ledger(&ns, &["frozen", "free"]))]).await;
    let r = restore(&format!("{ns}/pause-ledger"), &[]).await;
    assert_eq!(r.code, 3, "a denial is a failed entry (3), not missing RBAC (5): {r:#?}");
    let frozen =
        r.json()["entries"].as_array().unwrap().iter().find(|e| e["object"]["name"] == "frozen").unwrap().clone();
    assert_eq!(frozen["outcome"], "failed", "{frozen}");
    assert!(frozen["error"].as_str().unwrap().contains("frozen by the change board"), "{frozen}");
    assert!(!frozen["error"].as_str().unwrap().contains("RBAC"), "{frozen}");
    assert_eq!(r.outcomes()["free"], "restored");
    Api::<DynamicObject>::all_with(admin(), &binding).delete(&name, &Default::default()).await.unwrap();
    Api::<DynamicObject>::all_with(admin(), &vap).delete(&name, &Default::default()).await.unwrap();
}
