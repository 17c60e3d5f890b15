//! Every AWS call the adapters make, the IAM actions it needs, and which Lambda functions make it. Kept next
//! to the adapters so a new SDK call is added here in the same change; `tests/tests/template/iam.rs` checks
//! that (a) each `.client.<operation>()` in this crate's sources (`state/leases.rs`: paths under `src/`) is
//! listed here and nothing listed is gone,
//! and (b) each function's policy in the SAM-translated template grants exactly the actions listed for it.

/// A Lambda function of `infra/template.yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Function {
    SyncRunner,
    OAuthCallback,
    SaveMapping,
}

impl Function {
    pub const ALL: [Function; 3] = [
        Function::SyncRunner,
        Function::OAuthCallback,
        Function::SaveMapping,
    ];

    /// The function's logical id in the template.
    pub fn logical_id(self) -> &'static str {
        match self {
            Function::SyncRunner => "SyncRunnerFunction",
            Function::OAuthCallback => "OAuthCallbackFunction",
            Function::SaveMapping => "SaveMappingFunction",
        }
    }
}

/// One SDK operation called in one adapter file.
#[derive(Debug)]
pub struct AwsCall {
    /// File under `shared/aws/src/` (`state/runs.rs` for a submodule).
    pub source: &'static str,
    /// The SDK fluent method (`client.<operation>()`).
    pub operation: &'static str,
    pub actions: &'static [&'static str],
    pub functions: &'static [Function],
}

use Function::{OAuthCallback as O, SaveMapping as M, SyncRunner as R};

const fn call(
    source: &'static str,
    operation: &'static str,
    actions: &'static [&'static str],
    functions: &'static [Function],
) -> AwsCall {
    AwsCall {
        source,
        operation,
        actions,
        functions,
    }
}

pub const CALLS: &[AwsCall] = &[
    // state.rs and state/*.rs (DynamoDB). Runner: syncs, leases, ledgers, previews, commits, seen exports,
    // pending exports, the sweeper's scan; oauth-callback: OAuth states, the integration, the project's
    // syncs; save-mapping: everything else.
    call("state.rs", "get_item", &["dynamodb:GetItem"], &[R, O, M]),
    call("state/syncs.rs", "query", &["dynamodb:Query"], &[R, O, M]),
    // Runs deleted with their sync.
    call(
        "state/syncs.rs",
        "batch_write_item",
        &["dynamodb:BatchWriteItem"],
        &[M],
    ),
    // The runner marks an integration reconnect_required.
    call(
        "state/integration.rs",
        "update_item",
        &["dynamodb:UpdateItem"],
        &[R, O, M],
    ),
    call(
        "state/integration.rs",
        "put_item",
        &["dynamodb:PutItem"],
        &[O],
    ),
    call(
        "state/integration.rs",
        "delete_item",
        &["dynamodb:DeleteItem"],
        &[O, M],
    ),
    call(
        "state/syncs.rs",
        "update_item",
        &["dynamodb:UpdateItem"],
        &[R, O, M],
    ),
    // A transaction is authorized per item: two Puts (the sync and its uniqueness guard).
    call(
        "state/syncs.rs",
        "transact_write_items",
        &["dynamodb:PutItem"],
        &[M],
    ),
    // The console's project list (list_integrations).
    call("state/integration.rs", "scan", &["dynamodb:Scan"], &[M]),
    // The sweeper's query (syncs_due).
    call("state/syncs.rs", "scan", &["dynamodb:Scan"], &[R]),
    call(
        "state/leases.rs",
        "update_item",
        &["dynamodb:UpdateItem"],
        &[R],
    ),
    // A run's ledger: a ConditionCheck of the sync item's fence and the Put of the ledger.
    call(
        "state/runs.rs",
        "transact_write_items",
        &["dynamodb:ConditionCheckItem", "dynamodb:PutItem"],
        &[R],
    ),
    // Runs listed newest first (the API; the runner reads its sync's history).
    call("state/runs.rs", "query", &["dynamodb:Query"], &[R, M]),
    // The daily budget (runner).
    call(
        "state/runs.rs",
        "update_item",
        &["dynamodb:UpdateItem"],
        &[R],
    ),
    // Previews: created by save-mapping, finished by the runner.
    call("state/runs.rs", "put_item", &["dynamodb:PutItem"], &[R, M]),
    // rate.rs (DynamoDB): the app-wide TikTok rate gate, before every TikTok request. Conditional updates
    // only (a failed one returns the item it saw); the same functions hold GetItem for state.rs anyway.
    call(
        "rate.rs",
        "update_item",
        &["dynamodb:UpdateItem"],
        &[R, O, M],
    ),
    // The runner records unmatched exports; save-mapping lists them.
    call(
        "state/unmatched.rs",
        "put_item",
        &["dynamodb:PutItem"],
        &[R],
    ),
    call("state/unmatched.rs", "query", &["dynamodb:Query"], &[M]),
    // A disconnect that keeps run history writes retired markers; the project list scans for them.
    call("state/retired.rs", "put_item", &["dynamodb:PutItem"], &[M]),
    call("state/retired.rs", "scan", &["dynamodb:Scan"], &[M]),
    // cohorts.rs (S3).
    call("cohorts.rs", "list_objects_v2", &["s3:ListBucket"], &[R, M]),
    call("cohorts.rs", "head_object", &["s3:GetObject"], &[R, M]),
    // Exports, and snapshots by version id (get_report is not called by any function).
    call(
        "cohorts.rs",
        "get_object",
        &["s3:GetObject", "s3:GetObjectVersion"],
        &[R],
    ),
    call("cohorts.rs", "put_object", &["s3:PutObject"], &[R]),
    // Every version of a sync's objects (save-mapping: delete, disconnect), of one snapshot or one report
    // (runner: a replaced snapshot, a report whose ledger was refused).
    call(
        "s3_versions.rs",
        "list_object_versions",
        &["s3:ListBucketVersions"],
        &[R, M],
    ),
    call(
        "s3_versions.rs",
        "delete_objects",
        &["s3:DeleteObject", "s3:DeleteObjectVersion"],
        &[R, M],
    ),
    // vault.rs (Secrets Manager).
    call(
        "vault.rs",
        "get_secret_value",
        &["secretsmanager:GetSecretValue"],
        &[R, O, M],
    ),
    call(
        "vault.rs",
        "create_secret",
        &["secretsmanager:CreateSecret"],
        &[O],
    ),
    call(
        "vault.rs",
        "put_secret_value",
        &["secretsmanager:PutSecretValue"],
        &[O],
    ),
    call(
        "vault.rs",
        "describe_secret",
        &["secretsmanager:DescribeSecret"],
        &[O],
    ),
    call(
        "vault.rs",
        "restore_secret",
        &["secretsmanager:RestoreSecret"],
        &[O],
    ),
    call(
        "vault.rs",
        "delete_secret",
        &["secretsmanager:DeleteSecret"],
        &[M],
    ),
    // notify.rs: the runner reads the notification webhook's URL.
    call(
        "notify.rs",
        "get_secret_value",
        &["secretsmanager:GetSecretValue"],
        &[R],
    ),
    // schedules.rs (EventBridge Scheduler): a schedule names the scheduler role, so writes pass it.
    call(
        "schedules.rs",
        "get_schedule",
        &["scheduler:GetSchedule"],
        &[R, O, M],
    ),
    call(
        "schedules.rs",
        "update_schedule",
        &["scheduler:UpdateSchedule", "iam:PassRole"],
        &[R, O, M],
    ),
    call(
        "schedules.rs",
        "create_schedule",
        &["scheduler:CreateSchedule", "iam:PassRole"],
        &[M],
    ),
    call(
        "schedules.rs",
        "delete_schedule",
        &["scheduler:DeleteSchedule"],
        &[M],
    ),
    // invoker.rs (Lambda): the runner continues itself; save-mapping starts runs and previews.
    call("invoker.rs", "invoke", &["lambda:InvokeFunction"], &[R, M]),
];

/// Actions the platform uses with a function's role, not the code: Lambda sends failed asynchronous
/// events of the runner to its dead-letter queue (SAM grants it for EventInvokeConfig's OnFailure).
pub const PLATFORM: &[(Function, &str)] = &[(Function::SyncRunner, "sqs:SendMessage")];

/// The IAM actions a function needs, sorted and deduplicated.
pub fn actions_for(function: Function) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = CALLS
        .iter()
        .filter(|c| c.functions.contains(&function))
        .flat_map(|c| c.actions.iter().copied())
        .chain(
            PLATFORM
                .iter()
                .filter(|(f, _)| *f == function)
                .map(|(_, a)| *a),
        )
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
