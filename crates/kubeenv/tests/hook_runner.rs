//! The hook runner (TEST DOUBLE of the kubelet and the Job controller) against the real API
//! server of the selected Kubernetes version: every outcome it writes must pass that server's
//! Job status validation, and the conditions must say what the Job controller would say.
//! Host binaries stand in for an image's entrypoint (`true`, `false`, `sleep`).

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use pause_ledger_kubeenv::ControlPlane;
use pause_ledger_kubeenv::hook_runner::{HookRunner, ImageConfig};
use serde_json::{Value, json};

/// An image whose ENTRYPOINT is `/entrypoint`, run as uid/gid 65532.
fn image() -> ImageConfig {
    ImageConfig::parse("FROM scratch\nUSER 65532:65532\nENTRYPOINT [\"/entrypoint\"]\n").unwrap()
}

/// Runs one Job (`spec` merged into a minimal hardened one) with `binary` as the entrypoint and
/// returns the finished Job and how many pods ran.
async fn run(prefix: &str, binary: &str, spec: Value) -> (Job, usize) {
    let cp = ControlPlane::shared().unwrap();
    let ns = cp.namespace(prefix).await.unwrap();
    let client = cp.admin_client().unwrap();
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "runner"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns).create(&PostParams::default(), &sa).await.unwrap();
    let runner = HookRunner::start(client.clone(), &ns, image(), Path::new(binary), cp.server_url(), cp.ca_pem())
        .expect("the runner starts (as root)");
    let mut job = json!({
        "metadata": {"name": "job"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "serviceAccountName": "runner",
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": "example.invalid/x"}],
            }},
        },
    });
    merge(&mut job["spec"], spec);
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    jobs.create(&PostParams::default(), &serde_json::from_value(job).unwrap()).await.unwrap();
    for _ in 0..600 {
        let j = jobs.get("job").await.unwrap();
        if condition(&j, "Complete").is_some() || condition(&j, "Failed").is_some() {
            runner.assert_no_errors();
            return (j, runner.executions_of("job").len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{ns}: the Job did not finish; runner errors: {:?}", runner.errors());
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// (reason, message) of a true condition.
fn condition(job: &Job, kind: &str) -> Option<(String, String)> {
    let c = job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind && c.status == "True")?;
    Some((c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_pod_completes_the_job() {
    let (job, pods) = run("runner-ok", "/bin/true", json!({})).await;
    assert_eq!(pods, 1);
    let status = job.status.as_ref().unwrap();
    assert_eq!((status.succeeded, status.active.unwrap_or(0)), (Some(1), 0));
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    assert_eq!(condition(&job, "SuccessCriteriaMet").unwrap().0, "CompletionsReached");
    assert_eq!(condition(&job, "Complete").unwrap().0, "CompletionsReached");
    assert!(condition(&job, "Failed").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_fast_exit_code_fails_the_job_by_pod_failure_policy() {
    let policy = json!({"podFailurePolicy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [1]}},
    ]}, "backoffLimit": 3});
    let (job, pods) = run("runner-failfast", "/bin/false", policy).await;
    assert_eq!(pods, 1, "no retry");
    let (reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(reason, "PodFailurePolicy");
    assert!(message.contains("failed with exit code 1 matching FailJob rule at index 0"), "{message}");
    assert_eq!(condition(&job, "FailureTarget").unwrap().0, "PodFailurePolicy");
    assert_eq!(job.status.unwrap().failed, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_failures_are_retried_then_exceed_the_backoff_limit() {
    let (job, pods) = run("runner-backoff", "/bin/false", json!({"backoffLimit": 1})).await;
    assert_eq!(pods, 2, "one retry");
    let (reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    );
    assert_eq!(job.status.unwrap().failed, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_deadline_stops_the_pod_and_fails_the_job() {
    let spec = json!({"activeDeadlineSeconds": 2, "template": {"spec": {"containers": [
        {"name": "main", "image": "example.invalid/x", "args": ["60"]},
    ]}}});
    let started = std::time::Instant::now();
    let (job, pods) = run("runner-deadline", "/bin/sleep", spec).await;
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(pods, 1);
    let (reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("DeadlineExceeded", "Job was active longer than specified deadline")
    );
}
