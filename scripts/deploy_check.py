"""`make deploy-check`: the built Lambda bootstraps, run as Lambda runs them, against AWS provisioned from the
translated template (on moto), fed recorded real-shaped events (tests/deploy-check/events) and checked
(tests/deploy-check/cases.json).

- The template is translated with samtranslator (scripts/sam_translate.py); the state table, bucket (its
  lifecycle rules as S3's API takes them), secrets, schedule group, queue and scheduler role are created on
  moto from the translated resources' properties; each function's environment is the template's, resolved.
- `cargo lambda watch --only-lambda-apis` is the Lambda Runtime API; each bootstrap polls it under its
  function name; `cargo lambda invoke` sends the events.

usage: deploy_check.py <bin-dir with <name>/bootstrap> <cargo-lambda> <python with moto> <python with samtranslator>
"""
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = os.path.join(ROOT, "tests", "deploy-check")
STACK = "audience-sync"
REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK_ID = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/4f1c2a9e-7d3b-11ef-9c1a-0a1b2c3d4e5f"
FUNCTIONS = {"SyncRunnerFunction": "sync-runner", "OAuthCallbackFunction": "oauth-callback",
             "SaveMappingFunction": "save-mapping"}
APP_CREDENTIALS = {"app_id": "7100000000000000001", "secret": "deploy-check-app-secret"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    sys.exit(f"{what} did not listen on {port}")


class Resolver:
    """The intrinsic functions the translated template uses, with the parameters' defaults."""

    def __init__(self, template, physical):
        self.t = template
        self.physical = physical
        self.params = {k: v.get("Default", "") for k, v in template.get("Parameters", {}).items()}
        self.pseudo = {"AWS::StackName": STACK, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                       "AWS::Partition": "aws", "AWS::StackId": STACK_ID, "AWS::URLSuffix": "amazonaws.com"}

    def ref(self, name):
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return str(self.params[name])
        if name in self.physical:
            return self.physical[name]["ref"]
        raise KeyError(f"Ref {name}")

    def condition(self, name):
        return bool(self.value(self.t["Conditions"][name]))

    def value(self, v):
        if isinstance(v, list):
            return [self.value(x) for x in v if x != {"Ref": "AWS::NoValue"}]
        if not isinstance(v, dict):
            return v
        if len(v) != 1:
            return {k: self.value(x) for k, x in v.items() if x != {"Ref": "AWS::NoValue"}}
        (fn, arg), = v.items()
        if fn == "Ref":
            return self.ref(arg)
        if fn == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], {k: self.value(x) for k, x in arg[1].items()})
            out, i = "", 0
            while i < len(text):
                j = text.find("${", i)
                if j < 0:
                    out += text[i:]
                    break
                k = text.index("}", j)
                out += text[i:j]
                name = text[j + 2:k]
                if name in extra:
                    out += str(extra[name])
                elif "." in name:
                    out += self.getatt(*name.split(".", 1))
                else:
                    out += self.ref(name)
                i = k + 1
            return out
        if fn == "Fn::GetAtt":
            return self.getatt(*(arg if isinstance(arg, list) else arg.split(".", 1)))
        if fn == "Fn::Select":
            return self.value(arg[1])[int(self.value(arg[0]))]
        if fn == "Fn::Split":
            return self.value(arg[1]).split(arg[0])
        if fn == "Fn::Join":
            return arg[0].join(str(x) for x in self.value(arg[1]))
        if fn == "Fn::If":
            return self.value(arg[1] if self.condition(arg[0]) else arg[2])
        if fn == "Fn::Equals":
            a, b = self.value(arg[0]), self.value(arg[1])
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not self.value(arg[0])
        if fn == "Condition":
            return self.condition(arg)
        return {fn: self.value(arg)}

    def getatt(self, resource, attr):
        return self.physical[resource][attr]


def lifecycle_rule(rule):
    """CloudFormation's rule shape -> S3's PutBucketLifecycleConfiguration shape (what CloudFormation sends)."""
    out = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    expiration = {}
    if "ExpirationInDays" in rule:
        expiration["Days"] = int(rule["ExpirationInDays"])
    if "ExpiredObjectDeleteMarker" in rule:
        expiration["ExpiredObjectDeleteMarker"] = bool(rule["ExpiredObjectDeleteMarker"])
    if expiration:
        out["Expiration"] = expiration
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}
    if set(expiration) == {"Days", "ExpiredObjectDeleteMarker"}:
        sys.exit(f"lifecycle rule {rule['Id']}: S3 rejects ExpiredObjectDeleteMarker with Days")
    if not (expiration.get("Days") or "NoncurrentVersionExpiration" in out or "AbortIncompleteMultipartUpload" in out):
        sys.exit(f"lifecycle rule {rule['Id']}: CloudFormation rejects a rule without an expiration/abort action")
    return out


def provision(t, endpoint):
    """Creates the stateful resources of the translated template on moto; returns their physical names."""
    kw = {"endpoint_url": endpoint, "region_name": REGION}
    physical = {}
    r = Resolver(t, physical)
    res = t["Resources"]
    # Names first (other resources' properties refer to them).
    for name, spec in res.items():
        typ, props = spec["Type"], spec.get("Properties", {})
        if typ == "AWS::DynamoDB::Table":
            physical[name] = {"ref": f"{STACK}-{name}-DC1", "Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-{name}-DC1"}
        elif typ == "AWS::S3::Bucket":
            bucket = r.value(props["BucketName"])
            physical[name] = {"ref": bucket, "Arn": f"arn:aws:s3:::{bucket}"}
        elif typ == "AWS::SecretsManager::Secret":
            physical[name] = {"ref": r.value(props["Name"])}
        elif typ == "AWS::IAM::Role":
            physical[name] = {"ref": f"{STACK}-{name}", "Arn": f"arn:aws:iam::{ACCOUNT}:role/{STACK}-{name}"}
        elif typ == "AWS::SQS::Queue":
            physical[name] = {"ref": f"http://sqs/{STACK}-{name}", "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-{name}",
                              "QueueName": f"{STACK}-{name}"}
        elif typ == "AWS::Scheduler::ScheduleGroup":
            physical[name] = {"ref": r.value(props["Name"])}
        elif typ == "AWS::Lambda::Function":
            fn = r.value(props["FunctionName"])
            physical[name] = {"ref": fn, "Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fn}"}
    ddb, s3 = boto3.client("dynamodb", **kw), boto3.client("s3", **kw)
    sm, iam = boto3.client("secretsmanager", **kw), boto3.client("iam", **kw)
    for name, spec in res.items():
        typ = spec["Type"]
        if "Condition" in spec and not r.condition(spec["Condition"]):
            continue
        if name not in physical:
            continue
        if typ in ("AWS::Lambda::Function", "AWS::IAM::Role"):
            # Roles: only the trust policy matters here (moto does not enforce IAM policies).
            if typ == "AWS::IAM::Role":
                iam.create_role(RoleName=physical[name]["ref"], AssumeRolePolicyDocument=json.dumps(
                    r.value(spec["Properties"]["AssumeRolePolicyDocument"])))
            continue
        props = r.value(spec.get("Properties", {}))
        if typ == "AWS::DynamoDB::Table":
            ddb.create_table(TableName=physical[name]["ref"], BillingMode=props["BillingMode"],
                             AttributeDefinitions=props["AttributeDefinitions"], KeySchema=props["KeySchema"],
                             GlobalSecondaryIndexes=props.get("GlobalSecondaryIndexes", []))
            ttl = props.get("TimeToLiveSpecification")
            if ttl:
                ddb.update_time_to_live(TableName=physical[name]["ref"], TimeToLiveSpecification=ttl)
        elif typ == "AWS::S3::Bucket":
            b = physical[name]["ref"]
            s3.create_bucket(Bucket=b)
            s3.put_bucket_versioning(Bucket=b, VersioningConfiguration=props["VersioningConfiguration"])
            rules = [lifecycle_rule(x) for x in props["LifecycleConfiguration"]["Rules"]]
            s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": rules})
        elif typ == "AWS::SecretsManager::Secret":
            args = {"Name": physical[name]["ref"], "Description": props.get("Description", "")}
            if "SecretString" in props:
                args["SecretString"] = props["SecretString"]
            elif "GenerateSecretString" in props:
                g = props["GenerateSecretString"]
                value = json.loads(g["SecretStringTemplate"])
                value[g["GenerateStringKey"]] = secrets.token_hex(g["PasswordLength"] // 2)
                args["SecretString"] = json.dumps(value)
            sm.create_secret(**args)
        elif typ == "AWS::SQS::Queue":
            boto3.client("sqs", **kw).create_queue(QueueName=physical[name]["QueueName"])
        elif typ == "AWS::Scheduler::ScheduleGroup":
            boto3.client("scheduler", **kw).create_schedule_group(Name=physical[name]["ref"])
    # The operator's step after the first deploy: the app credentials (the template leaves the secret empty).
    sm.put_secret_value(SecretId=physical["AppCredentialsSecret"]["ref"], SecretString=json.dumps(APP_CREDENTIALS))
    envs = {}
    for logical, fn in FUNCTIONS.items():
        envs[fn] = {k: str(v) for k, v in r.value(res[logical]["Properties"]["Environment"]["Variables"]).items()}
    admin = json.loads(sm.get_secret_value(SecretId=physical["AdminTokenSecret"]["ref"])["SecretString"])["token"]
    return physical, envs, admin


def check(case, answer, stdout, ddb, table):
    e, errors = case["expect"], []
    if "statusCode" in e:
        if answer.get("statusCode") != e["statusCode"]:
            errors.append(f"statusCode {answer.get('statusCode')} != {e['statusCode']}")
        body = answer.get("body") or ""
        if answer.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        for s in e.get("body_contains", []):
            if s not in body:
                errors.append(f"body lacks {s!r}")
        for k, v in e.get("json", {}).items():
            got = json.loads(body).get(k) if body.startswith("{") else None
            if got != v:
                errors.append(f"json {k} = {got!r}, expected {v!r}")
    if "outcome" in e:
        outs = answer.get("outcomes") or [{}]
        if outs[0].get("outcome") != e["outcome"]:
            errors.append(f"outcome {outs[0].get('outcome')!r} != {e['outcome']!r}")
        if e.get("reason_contains", "") not in (outs[0].get("reason") or ""):
            errors.append(f"reason {outs[0].get('reason')!r} lacks {e['reason_contains']!r}")
    if "state" in e:
        item = ddb.get_item(TableName=table, Key={"pk": {"S": e["state"]["pk"]}, "sk": {"S": e["state"]["sk"]}}).get("Item")
        if not item or e["state"]["contains"] not in json.dumps(item):
            errors.append(f"state {e['state']['pk']}: {item}")
    if "stdout_contains" in e and e["stdout_contains"] not in stdout:
        errors.append(f"stdout lacks {e['stdout_contains']!r}")
    return errors


def main():
    bin_dir, cargo_lambda, moto_python, sam_python = sys.argv[1:5]
    t = json.loads(subprocess.run([sam_python, os.path.join(ROOT, "scripts", "sam_translate.py"),
                                   os.path.join(ROOT, "infra", "template.yaml")],
                                  check=True, capture_output=True).stdout)
    procs, logs = [], tempfile.mkdtemp(prefix="deploy-check-")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    try:
        moto_port = free_port()
        # The repository's one moto launcher (DynamoDB made atomic, as AWS is).
        launcher = os.path.join(ROOT, "tests", "moto", "atomic_moto.py")
        procs.append(subprocess.Popen([moto_python, launcher, "-p", str(moto_port)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_port(moto_port, "moto")
        endpoint = f"http://127.0.0.1:{moto_port}"
        os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": REGION})
        physical, envs, admin = provision(t, endpoint)
        rt_port = free_port()
        procs.append(subprocess.Popen([cargo_lambda, "lambda", "watch", "--only-lambda-apis", "--invoke-address", "127.0.0.1",
                                       "-P", str(rt_port), "--manifest-path", os.path.join(ROOT, "Cargo.toml")],
                                      stdout=open(os.path.join(logs, "watch.log"), "w"), stderr=subprocess.STDOUT,
                                      cwd=ROOT))
        wait_port(rt_port, "cargo lambda watch")
        outputs = {}
        for fn, env in envs.items():
            env = dict(base_env, **env, AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{rt_port}/.rt/{fn}",
                       AWS_LAMBDA_FUNCTION_NAME=fn, AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
                       AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256", AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION,
                       AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_ENDPOINT_URL=endpoint)
            outputs[fn] = os.path.join(logs, f"{fn}.log")
            procs.append(subprocess.Popen([os.path.join(bin_dir, fn, "bootstrap")], env=env,
                                          stdout=open(outputs[fn], "w"), stderr=subprocess.STDOUT))
        bucket = physical["CohortBucket"]["ref"]
        boto3.client("s3", endpoint_url=endpoint).put_object(
            Bucket=bucket, Key="cohorts/amp/187520_Ab1x_2026-12-02T07:00_existing_my route_key.csv",
            Body=b" amplitudeID, userID, email\n1,u1,a@example.com\n")
        ddb = boto3.client("dynamodb", endpoint_url=endpoint)
        failures = 0
        for case in json.load(open(os.path.join(CASES, "cases.json")))["cases"]:
            raw = open(os.path.join(CASES, "events", case["event"])).read()
            raw = raw.replace("{{ADMIN_TOKEN}}", admin).replace("{{BUCKET}}", bucket)
            try:
                res = subprocess.run([cargo_lambda, "lambda", "invoke", case["function"], "--invoke-address",
                                      "127.0.0.1", "-P", str(rt_port), "--data-ascii", raw, "--output-format", "json"],
                                     capture_output=True, text=True, timeout=60)
                answer = json.loads(res.stdout)
            except subprocess.TimeoutExpired:
                answer = {"_raw": "no answer within 60 s (did the bootstrap start? see its log)"}
            except ValueError:
                answer = {"_raw": res.stdout + res.stderr}
            time.sleep(0.2)
            errors = check(case, answer, open(outputs[case["function"]]).read(), ddb,
                           physical["StateTable"]["ref"])
            failures += bool(errors)
            print(f"{'ok  ' if not errors else 'FAIL'} {case['function']:15} {case['event']}"
                  + ("" if not errors else f": {'; '.join(errors)}\n     answer: {json.dumps(answer)[:400]}"))
        print(f"{len(json.load(open(os.path.join(CASES, 'cases.json')))['cases']) - failures} passed, {failures} failed"
              f" (function logs: {logs})")
        sys.exit(1 if failures else 0)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
