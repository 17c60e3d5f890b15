"""Translates infra/template.yaml with samtranslator (what CloudFormation's SAM transform runs) and prints
the CloudFormation JSON. Used by the IAM test (tests/tests/template.rs) and `make deploy-check`.

usage: sam_translate.py <template.yaml>
"""
import json
import sys

import os
from samtranslator.model.exceptions import InvalidDocumentException

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class OfflinePolicyLoader:
    """Managed policies SAM may attach by name (no network here); AWSLambdaBasicExecutionRole is the only one
    the template's functions get."""

    def load(self):
        return {
            "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        }


def main():
    # Pseudo parameters are left as references; samtranslator only wants a region to exist.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(sys.argv[1]) as f:
        template = yaml_parse(f.read())
    # What `sam package` does before the transform: local code becomes an S3 object.
    for name, res in template.get("Resources", {}).items():
        props = res.get("Properties", {})
        if res.get("Type") == "AWS::Serverless::Function" and not str(props.get("CodeUri", "")).startswith("s3://"):
            props["CodeUri"] = f"s3://sam-package/{name}.zip"
    try:
        out = transform(template, {}, OfflinePolicyLoader())
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(cause.message, file=sys.stderr)
        sys.exit(1)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
