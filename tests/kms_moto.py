"""moto's side of tests/kms.rs, with boto3 (a client that is not ephemera's).

usage: kms_moto.py URL setup REGION
  With moto's first requests unsigned (INITIAL_NO_AUTH_ACTION_COUNT=3): an
  IAM user `node`, a policy that lets it use KMS, and its access key; then,
  signed by that key, two KMS keys. Prints {"access_key_id", "secret",
  "key1", "key2"} as JSON.
usage: kms_moto.py URL decrypt REGION < {"access_key_id", "secret", "slot"}
  What ops do with an unlock file's kms slot (docs/UNLOCK.md's runbook):
  Decrypt its ciphertext under its context; prints the part, base64.
"""
import json
import sys

import boto3

url, cmd, region = sys.argv[1], sys.argv[2], sys.argv[3]
if cmd == "decrypt":
    import base64
    a = json.load(sys.stdin)
    kms = boto3.client("kms", endpoint_url=url, region_name=region,
                       aws_access_key_id=a["access_key_id"], aws_secret_access_key=a["secret"])
    s = a["slot"]
    out = kms.decrypt(KeyId=s["key_id"], CiphertextBlob=base64.b64decode(s["ciphertext"]),
                      EncryptionContext=s["context"])
    print(base64.b64encode(out["Plaintext"]).decode())
    sys.exit(0)
if cmd != "setup":
    sys.exit(f"kms_moto.py: unknown command {cmd}")
iam = boto3.client("iam", endpoint_url=url, region_name=region,
                   aws_access_key_id="unsigned", aws_secret_access_key="unsigned")
iam.create_user(UserName="node")
iam.put_user_policy(UserName="node", PolicyName="kms", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="node")["AccessKey"]
kms = boto3.client("kms", endpoint_url=url, region_name=region,
                   aws_access_key_id=k["AccessKeyId"], aws_secret_access_key=k["SecretAccessKey"])
keys = [kms.create_key(Description=f"ephemera test {i}")["KeyMetadata"]["Arn"] for i in (1, 2)]
print(json.dumps({"access_key_id": k["AccessKeyId"], "secret": k["SecretAccessKey"],
                  "key1": keys[0], "key2": keys[1]}))
