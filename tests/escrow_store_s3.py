"""The store tests' independent client (tests/escrow_store.rs): boto3, with
ops' credentials from the environment, path-style, against the weed
endpoint given. Prints JSON answers; exits non-zero on an unexpected error.

usage: escrow_store_s3.py ENDPOINT mkbucket BUCKET [lock]
       escrow_store_s3.py ENDPOINT get BUCKET KEY OUT
       escrow_store_s3.py ENDPOINT delete-versions BUCKET KEY
"""
import json, sys
import boto3, botocore

endpoint, cmd, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  config=botocore.config.Config(s3={"addressing_style": "path"},
                                                retries={"max_attempts": 1}))
if cmd == "mkbucket":
    if len(sys.argv) > 4 and sys.argv[4] == "lock":
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    else:
        s3.create_bucket(Bucket=bucket)
elif cmd == "get":
    body = s3.get_object(Bucket=bucket, Key=sys.argv[4])["Body"].read()
    open(sys.argv[5], "wb").write(body)
elif cmd == "delete-versions":
    out = []
    versions = s3.list_object_versions(Bucket=bucket, Prefix=sys.argv[4]).get("Versions", [])
    for v in versions:
        try:
            s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
            out.append("deleted")
        except botocore.exceptions.ClientError as e:
            out.append(e.response["Error"]["Code"])
    print(json.dumps(out))
