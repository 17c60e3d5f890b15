//! infra/template.yaml against the CloudFormation rules that `cfn-lint` does not check but a real deploy
//! enforces (each one broke, or would have broken, a first `sam deploy`), and the template's least-privilege
//! promises that are about resources rather than actions (the actions are checked in `iam.rs`).

use serde_yaml::Value;

mod iam;

pub fn root() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/..").to_string()
}

fn template_text() -> String {
    std::fs::read_to_string(format!("{}/infra/template.yaml", root())).expect("infra/template.yaml")
}

fn template() -> Value {
    serde_yaml::from_str(&template_text()).expect("template YAML parses")
}

fn s(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_default()
}

/// The value under a CloudFormation short-form tag (`!Ref X` -> ("!Ref", X)).
fn tagged(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => Some((t.tag.to_string(), &t.value)),
        _ => None,
    }
}

fn resources(t: &Value) -> Vec<(String, &Value)> {
    t["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .map(|(k, v)| (s(k), v))
        .collect()
}

/// A number property: a literal, or `!Ref` to a Number parameter (then its Default, MinValue, MaxValue).
fn number_range(t: &Value, v: &Value) -> (i64, i64, i64) {
    if let Some(n) = v.as_i64() {
        return (n, n, n);
    }
    let (tag, inner) = tagged(v).unwrap_or_else(|| panic!("not a number or !Ref: {v:?}"));
    assert_eq!(tag, "!Ref", "{v:?}");
    let p = &t["Parameters"][s(inner).as_str()];
    assert_eq!(s(&p["Type"]), "Number", "{inner:?}");
    let get = |k: &str| {
        p[k].as_i64()
            .unwrap_or_else(|| panic!("parameter {inner:?} needs {k}"))
    };
    (get("Default"), get("MinValue"), get("MaxValue"))
}

/// CloudFormation's AWS::S3::Bucket schema: a lifecycle rule needs at least one of these (a rule with only
/// `ExpiredObjectDeleteMarker` fails the create: cloudformation-coverage-roadmap #132), and S3 rejects
/// `ExpiredObjectDeleteMarker` next to a Days/Date expiration.
#[test]
fn lifecycle_rules_have_the_shape_cloudformation_accepts() {
    const ACTIONS: [&str; 9] = [
        "AbortIncompleteMultipartUpload",
        "ExpirationDate",
        "ExpirationInDays",
        "NoncurrentVersionExpiration",
        "NoncurrentVersionExpirationInDays",
        "NoncurrentVersionTransition",
        "NoncurrentVersionTransitions",
        "Transition",
        "Transitions",
    ];
    let t = template();
    let mut rules_seen = 0;
    let mut ids = std::collections::BTreeSet::new();
    for (name, res) in resources(&t) {
        if s(&res["Type"]) != "AWS::S3::Bucket" {
            continue;
        }
        let rules = res["Properties"]["LifecycleConfiguration"]["Rules"]
            .as_sequence()
            .expect("the bucket has lifecycle rules");
        for rule in rules {
            rules_seen += 1;
            let id = s(&rule["Id"]);
            assert!(!id.is_empty() && id.len() <= 255, "{name}: rule id {id:?}");
            assert!(ids.insert(id.clone()), "{name}: rule id {id} twice");
            let keys: Vec<String> = rule.as_mapping().expect("rule").keys().map(s).collect();
            assert!(
                keys.iter().any(|k| ACTIONS.contains(&k.as_str())),
                "{name}: rule {id} has none of {ACTIONS:?} (only {keys:?})"
            );
            if rule.get("ExpiredObjectDeleteMarker").is_some() {
                assert!(
                    rule.get("ExpirationInDays").is_none() && rule.get("ExpirationDate").is_none(),
                    "{name}: rule {id}: ExpiredObjectDeleteMarker with a Days/Date expiration"
                );
            }
            assert!(
                rule.get("Prefix").is_none() || rule.get("Filter").is_none(),
                "{name}: rule {id}: Prefix and Filter"
            );
            if let Some(n) = rule.get("NoncurrentVersionExpiration") {
                assert!(n["NoncurrentDays"].as_i64().unwrap_or(0) >= 1, "{id}");
            }
        }
    }
    assert!(rules_seen >= 3, "rules were read");
}

/// Limits a deploy hits and the linter does not: memory within what every account allows by default,
/// /tmp within Lambda's range, timeouts within Lambda's (and HTTP API's 30 s for API functions).
#[test]
fn function_sizes_fit_every_account() {
    let t = template();
    let mut functions = 0;
    for (name, res) in resources(&t) {
        if s(&res["Type"]) != "AWS::Serverless::Function" {
            continue;
        }
        functions += 1;
        let p = &res["Properties"];
        let (default, min, max) = number_range(&t, &p["MemorySize"]);
        // New accounts are often capped at 3,008 MB until a quota increase.
        assert!((128..=3008).contains(&default), "{name}: memory {default}");
        assert!(min >= 128 && max <= 10240, "{name}: memory range");
        let (default, min, max) = match p.get("EphemeralStorage") {
            Some(e) => number_range(&t, &e["Size"]),
            None => (512, 512, 512),
        };
        assert!(
            (512..=10240).contains(&default) && min >= 512 && max <= 10240,
            "{name}: ephemeral storage"
        );
        let timeout = p["Timeout"].as_i64().expect("literal Timeout");
        let api = p["Events"]
            .as_mapping()
            .is_some_and(|e| e.values().any(|e| s(&e["Type"]) == "HttpApi"));
        assert!(
            (1..=if api { 30 } else { 900 }).contains(&timeout),
            "{name}: timeout {timeout}"
        );
        assert!(
            p.get("Architectures").is_none(),
            "{name}: per-function architecture"
        );
    }
    assert_eq!(functions, 3);
}

/// The architecture is a literal that `sam build` bakes into the built template (no deploy-time parameter
/// that could disagree with the binaries); the Makefile's `ARCH=` rewrites exactly the marked line.
#[test]
fn architecture_is_a_build_time_literal() {
    let t = template();
    assert!(
        t["Parameters"].get("Architecture").is_none(),
        "a deploy-time Architecture parameter can disagree with the build"
    );
    let arch = t["Globals"]["Function"]["Architectures"]
        .as_sequence()
        .expect("Globals.Function.Architectures");
    assert_eq!(arch.len(), 1);
    assert!(matches!(s(&arch[0]).as_str(), "arm64" | "x86_64"));
    let marked = template_text()
        .lines()
        .filter(|l| l.trim_end().ends_with("# ARCH"))
        .count();
    assert_eq!(
        marked, 1,
        "exactly one `# ARCH` line for `make sam-build ARCH=`"
    );
    let makefile = std::fs::read_to_string(format!("{}/Makefile", root())).expect("Makefile");
    assert!(
        makefile.contains("# ARCH/"),
        "the Makefile rewrites the marked line"
    );
}

/// No secret value is owned by the template (a later deploy would write it back over the operator's), and
/// stateful resources are kept on stack deletion but not left behind by a failed first create.
#[test]
fn secrets_and_deletion_policies() {
    let t = template();
    for (name, res) in resources(&t) {
        if s(&res["Type"]) == "AWS::SecretsManager::Secret" {
            assert!(
                res["Properties"].get("SecretString").is_none(),
                "{name}: a literal SecretString is rewritten by later deploys"
            );
        }
        if let Some(p) = res.get("DeletionPolicy") {
            assert!(
                matches!(
                    s(p).as_str(),
                    "Delete" | "Retain" | "RetainExceptOnCreate" | "Snapshot"
                ),
                "{name}"
            );
        }
        if let Some(p) = res.get("UpdateReplacePolicy") {
            // RetainExceptOnCreate is a DeletionPolicy value only.
            assert!(
                matches!(s(p).as_str(), "Delete" | "Retain" | "Snapshot"),
                "{name}"
            );
        }
    }
    for stateful in ["StateTable", "CohortBucket"] {
        assert_eq!(
            s(&t["Resources"][stateful]["DeletionPolicy"]),
            "RetainExceptOnCreate",
            "{stateful}"
        );
    }
}

fn statements<'a>(t: &'a Value, function: &str) -> Vec<&'a Value> {
    t["Resources"][function]["Properties"]["Policies"]
        .as_sequence()
        .expect("Policies")
        .iter()
        .flat_map(|p| p["Statement"].as_sequence().expect("Statement").iter())
        .collect()
}

fn list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Sequence(s) => s.iter().collect(),
        other => vec![other],
    }
}

fn actions(st: &Value) -> Vec<String> {
    list(&st["Action"]).into_iter().map(s).collect()
}

/// Resource-level least privilege the issue names: the runner never reads the app credentials,
/// oauth-callback writes only `tiktok/*` secrets, nothing grants the dead-letter queue by hand (SAM does).
#[test]
fn least_privilege_on_resources() {
    let t = template();
    for st in statements(&t, "SyncRunnerFunction") {
        let text = format!("{:?}", st["Resource"]);
        assert!(!text.contains("AppCredentialsSecret"), "runner: {text}");
        assert!(!text.contains("app-credentials"), "runner: {text}");
        assert!(
            !actions(st).iter().any(|a| a.starts_with("sqs:")),
            "duplicate of SAM's OnFailure grant"
        );
    }
    for st in statements(&t, "OAuthCallbackFunction") {
        let writes = actions(st)
            .iter()
            .any(|a| a.starts_with("secretsmanager:") && a != "secretsmanager:GetSecretValue");
        if writes {
            for r in list(&st["Resource"]) {
                let text = format!("{r:?}");
                assert!(text.contains("/tiktok/*"), "oauth-callback writes {text}");
            }
        }
    }
    // save-mapping reads objects only under the cohort prefix.
    for st in statements(&t, "SaveMappingFunction") {
        if actions(st).iter().any(|a| a == "s3:GetObject") {
            let text = format!("{:?}", st["Resource"]);
            assert!(text.contains("${CohortPrefix}/*"), "{text}");
            assert!(!text.contains("audience-sync/snapshots"), "{text}");
        }
    }
}

/// Both ways Amplitude can be given the bucket: the bucket policy (AmplitudePrincipal) and a role it
/// assumes with an external ID (AmplitudeRoleTrustedPrincipal + AmplitudeExternalId), each only on demand.
#[test]
fn both_amplitude_access_ways() {
    let t = template();
    for p in [
        "AmplitudePrincipal",
        "AmplitudeRoleTrustedPrincipal",
        "AmplitudeExternalId",
    ] {
        assert_eq!(s(&t["Parameters"][p]["Default"]), "", "{p} is optional");
    }
    let policy = format!("{:?}", t["Resources"]["CohortBucketPolicy"]);
    assert!(policy.contains("AmplitudeWritesCohorts") && policy.contains("HasAmplitudePrincipal"));
    let role = &t["Resources"]["AmplitudeAccessRole"];
    assert_eq!(s(&role["Condition"]), "HasAmplitudeRole");
    let trust = format!("{:?}", role["Properties"]["AssumeRolePolicyDocument"]);
    assert!(trust.contains("sts:ExternalId") && trust.contains("AmplitudeExternalId"));
    let granted: Vec<String> = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_sequence()
        .expect("role statements")
        .iter()
        .flat_map(actions)
        .collect();
    assert_eq!(
        granted,
        ["s3:PutObject", "s3:ListBucket", "s3:GetBucketLocation"]
    );
    assert!(t["Rules"].get("AmplitudeRoleNeedsExternalId").is_some());
    assert_eq!(
        s(&t["Outputs"]["AmplitudeRoleArn"]["Condition"]),
        "HasAmplitudeRole"
    );
}

/// Every prefix a rule's `Prefix` (or `Filter.Prefix`) can take: both branches of an `!If`; a `!Sub` on
/// `${CohortPrefix}` with each of `cohort_prefixes`; none = the whole bucket.
fn rule_prefixes(v: Option<&Value>, cohort_prefixes: &[String]) -> Vec<String> {
    let Some(v) = v else {
        return vec![String::new()];
    };
    // Tags first: serde_yaml's `as_str` sees through them.
    let Some((tag, inner)) = tagged(v) else {
        return vec![
            v.as_str()
                .unwrap_or_else(|| panic!("prefix {v:?}"))
                .to_string(),
        ];
    };
    match tag.as_str() {
        "!If" => {
            let branches = inner.as_sequence().expect("!If [c, a, b]");
            branches[1..]
                .iter()
                .flat_map(|b| rule_prefixes(Some(b), cohort_prefixes))
                .collect()
        }
        "!Sub" => {
            let text = s(inner);
            assert!(
                !text.replace("${CohortPrefix}", "").contains("${"),
                "prefix {text}: only CohortPrefix is modelled"
            );
            cohort_prefixes
                .iter()
                .map(|c| text.replace("${CohortPrefix}", c))
                .collect()
        }
        other => panic!("prefix under {other}"),
    }
}

/// Which of `values` CloudFormation accepts for a parameter (its AllowedPattern matched against the whole
/// value, as Java's `matches` does; Python's `re.fullmatch` has the same lookahead semantics).
fn allowed_values(pattern: &str, values: &[&str]) -> Vec<String> {
    let python =
        std::env::var("SAM_PYTHON").unwrap_or_else(|_| format!("{}/.venv-sam/bin/python", root()));
    let script = "import json, re, sys\np, vs = json.load(sys.stdin)\n\
                  print(json.dumps([v for v in vs if re.fullmatch(p, v)]))";
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let input = serde_json::json!([pattern, values]).to_string();
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(out.status.success(), "python failed");
    serde_json::from_slice(&out.stdout).expect("JSON list")
}

/// Issue 12 item 7: no lifecycle rule may ever expire a current snapshot. Snapshots are written once at their
/// own key and removed by the code, so any expiry (current or noncurrent) reaching the snapshot prefix is one
/// failure away from deleting a paused sync's committed base. Checked for every prefix a rule can take,
/// including a CohortPrefix an operator may pick (`audience-sync` would put the raw-exports expiry on it).
#[test]
fn no_lifecycle_rule_expires_a_snapshot() {
    const EXPIRIES: [&str; 4] = [
        "ExpirationInDays",
        "ExpirationDate",
        "NoncurrentVersionExpiration",
        "NoncurrentVersionExpirationInDays",
    ];
    let t = template();
    let env = &t["Globals"]["Function"]["Environment"]["Variables"];
    let snapshots = format!("{}/", s(&env["SNAPSHOT_PREFIX"]).trim_end_matches('/'));
    assert!(snapshots.len() > 1, "SNAPSHOT_PREFIX is a literal");
    let candidates = [
        "cohorts",
        "amplitude/exports",
        "audience-sync",
        "audience-sync/snapshots",
        "audience-sync/snapshots/p1",
        "audience-syncx",
    ];
    let pattern = s(&t["Parameters"]["CohortPrefix"]["AllowedPattern"]);
    let cohort_prefixes = allowed_values(&pattern, &candidates);
    assert!(
        cohort_prefixes.contains(&"cohorts".to_string())
            && cohort_prefixes.contains(&"audience-syncx".to_string()),
        "ordinary prefixes stay allowed: {cohort_prefixes:?}"
    );
    let bucket = &t["Resources"]["CohortBucket"];
    let rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
        .as_sequence()
        .expect("lifecycle rules");
    let mut covering = 0;
    for rule in rules {
        let id = s(&rule["Id"]);
        if s(&rule["Status"]) == "Disabled" {
            continue;
        }
        let prefix = rule.get("Prefix").or_else(|| rule["Filter"].get("Prefix"));
        for p in rule_prefixes(prefix, &cohort_prefixes) {
            let overlaps = snapshots.starts_with(&p) || p.starts_with(&snapshots);
            if !overlaps {
                continue;
            }
            covering += 1;
            for e in EXPIRIES {
                assert!(
                    rule.get(e).is_none(),
                    "rule {id} (prefix {p:?}) has {e}: it can expire a snapshot under {snapshots}"
                );
            }
        }
    }
    assert!(
        covering >= 1,
        "the snapshot prefix has its (non-expiring) rule"
    );
}

/// The sweeper (issue 12, item 2): one schedule invokes the runner with the sweep trigger every few minutes
/// (parameter, 5 by default, at most 10), through the scheduler role; a run that dies is resumed within
/// lease + rate, under 15 minutes with the engine's lease. Its name is not `sync-*`, so the API's schedule
/// permissions (limited to `sync-*`) cannot change or delete it.
#[test]
fn one_sweeper_schedule_resumes_unfinished_runs() {
    use audience_core::sync::input::{RunnerInput, Trigger};
    let t = template();
    let schedules: Vec<_> = resources(&t)
        .into_iter()
        .filter(|(_, r)| s(&r["Type"]) == "AWS::Scheduler::Schedule")
        .collect();
    assert_eq!(
        schedules.len(),
        1,
        "one sweeper, per-sync schedules are the API's"
    );
    let (name, res) = &schedules[0];
    assert_eq!(name, "SweeperSchedule");
    let p = &res["Properties"];
    let input: serde_json::Value =
        serde_json::from_str(&s(&p["Target"]["Input"])).expect("input is JSON");
    assert_eq!(
        RunnerInput::parse(&input).expect("runner input"),
        RunnerInput::Trigger(Trigger::Sweep)
    );
    assert_eq!(
        input,
        Trigger::Sweep.to_json(),
        "the runner's own serialization"
    );
    let target = |k: &str| tagged(&p["Target"][k]).map(|(tag, v)| (tag, s(v)));
    assert_eq!(
        target("Arn"),
        Some(("!GetAtt".into(), "SyncRunnerFunction.Arn".into()))
    );
    assert_eq!(
        target("RoleArn"),
        Some(("!GetAtt".into(), "SchedulerRole.Arn".into()))
    );
    let group = tagged(&p["GroupName"]).map(|(tag, v)| (tag, s(v)));
    assert_eq!(group, Some(("!Ref".into(), "ScheduleGroup".into())));
    assert!(
        !s(&p["Name"]).starts_with("sync-"),
        "outside the API's sync-* grant"
    );
    assert_eq!(s(&p["State"]), "ENABLED");
    assert_eq!(s(&p["FlexibleTimeWindow"]["Mode"]), "OFF");
    let rate = tagged(&p["ScheduleExpression"]).map(|(tag, v)| (tag, s(v)));
    assert_eq!(rate, Some(("!Ref".into(), "SweepRate".into())));
    let param = &t["Parameters"]["SweepRate"];
    assert_eq!(s(&param["Default"]), "rate(5 minutes)");
    assert_eq!(
        s(&param["AllowedPattern"]),
        r"^rate\((1 minute|[2-9] minutes|10 minutes)\)$",
        "1 to 10 minutes only"
    );
    let lease = audience_core::sync::engine::EngineSettings::default().lease_ttl;
    assert!(
        lease + std::time::Duration::from_secs(10 * 60) < std::time::Duration::from_secs(15 * 60),
        "lease {lease:?} + the slowest sweep must stay under 15 minutes"
    );
    // The runner may scan the table (syncs_due): on the table only.
    let scan: Vec<_> = statements(&t, "SyncRunnerFunction")
        .into_iter()
        .filter(|st| actions(st).iter().any(|a| a == "dynamodb:Scan"))
        .collect();
    assert_eq!(scan.len(), 1);
    assert!(format!("{:?}", scan[0]["Resource"]).contains("StateTable"));
    // save-mapping scans for the console's project list (list_integrations), on the table only; the OAuth
    // callback never scans.
    for f in ["OAuthCallbackFunction", "SaveMappingFunction"] {
        for st in statements(&t, f) {
            let scans = actions(st).iter().any(|a| a == "dynamodb:Scan");
            if f == "OAuthCallbackFunction" {
                assert!(!scans, "{f}");
            } else if scans {
                assert!(
                    format!("{:?}", st["Resource"]).contains("StateTable"),
                    "{f}"
                );
            }
            if actions(st).iter().any(|a| a.starts_with("scheduler:")) {
                assert!(format!("{:?}", st["Resource"]).contains("/sync-*"), "{f}");
            }
        }
    }
}
