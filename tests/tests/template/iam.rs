//! Each function's IAM policy, as CloudFormation will create it (the template translated by samtranslator,
//! the library behind the SAM transform), against the AWS calls its code makes
//! (`audience_aws::iam_actions`): every needed action granted, nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use audience_aws::iam_actions::{CALLS, Function, actions_for};
use serde_json::Value;

use super::root;

/// `.client.<operation>()` calls in one source file (whitespace-insensitive, as rustfmt splits chains).
fn sdk_calls(source: &str) -> BTreeSet<String> {
    let flat: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    flat.match_indices(".client.")
        .filter_map(|(i, m)| {
            let rest = &flat[i + m.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            rest[end..]
                .starts_with("()")
                .then(|| rest[..end].to_string())
        })
        .collect()
}

/// Every `.rs` file under `dir` (recursively), by its path relative to `base` (`state/runs.rs`).
fn sources(base: &std::path::Path, dir: &std::path::Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(base, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(name, std::fs::read_to_string(&path).expect("source"));
        }
    }
}

#[test]
fn every_sdk_call_in_the_adapters_is_listed() {
    let dir = std::path::PathBuf::from(format!("{}/shared/aws/src", root()));
    let mut files = BTreeMap::new();
    sources(&dir, &dir, &mut files);
    assert!(
        files.contains_key("state/leases.rs"),
        "submodules are scanned"
    );
    let mut in_code: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, text) in files {
        let calls = sdk_calls(&text);
        if !calls.is_empty() {
            in_code.insert(name, calls);
        }
    }
    let mut listed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in CALLS {
        assert!(
            listed
                .entry(c.source.to_string())
                .or_default()
                .insert(c.operation.to_string()),
            "{} {} listed twice",
            c.source,
            c.operation
        );
    }
    assert!(
        in_code.values().map(BTreeSet::len).sum::<usize>() >= 25,
        "the scan found the calls"
    );
    assert_eq!(
        in_code, listed,
        "SDK calls in shared/aws/src vs iam_actions::CALLS"
    );
}

/// samtranslator's CloudFormation output for infra/template.yaml (the venv comes from `make test`; set
/// SAM_PYTHON to use another interpreter that has aws-sam-translator).
fn translated() -> Value {
    let python =
        std::env::var("SAM_PYTHON").unwrap_or_else(|_| format!("{}/.venv-sam/bin/python", root()));
    let out = Command::new(&python)
        .arg(format!("{}/scripts/sam_translate.py", root()))
        .arg(format!("{}/infra/template.yaml", root()))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} (run `make test`, which installs aws-sam-translator): {e}")
        });
    assert!(
        out.status.success(),
        "samtranslator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("translated template is JSON")
}

fn granted(role: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for policy in role["Properties"]["Policies"].as_array().expect("Policies") {
        for st in policy["PolicyDocument"]["Statement"]
            .as_array()
            .expect("Statement")
        {
            assert_eq!(st["Effect"], "Allow", "{st}");
            match &st["Action"] {
                Value::String(a) => {
                    out.insert(a.clone());
                }
                Value::Array(a) => out.extend(a.iter().filter_map(Value::as_str).map(String::from)),
                other => panic!("action {other}"),
            }
        }
    }
    out
}

#[test]
fn each_function_policy_grants_exactly_what_its_calls_need() {
    let t = translated();
    for f in Function::ALL {
        let function = &t["Resources"][f.logical_id()];
        assert_eq!(function["Type"], "AWS::Lambda::Function", "{f:?}");
        // SAM names the generated role `<logical id>Role` and points the function at it.
        let role_id = format!("{}Role", f.logical_id());
        assert_eq!(
            function["Properties"]["Role"]["Fn::GetAtt"][0],
            role_id.as_str()
        );
        let role = &t["Resources"][role_id.as_str()];
        let need: BTreeSet<String> = actions_for(f).into_iter().map(String::from).collect();
        assert_eq!(granted(role), need, "{f:?}: granted vs needed");
        // Logs only, through the managed basic execution role.
        assert_eq!(
            role["Properties"]["ManagedPolicyArns"],
            serde_json::json!(["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]),
            "{f:?}"
        );
    }
}
