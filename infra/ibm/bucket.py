"""A Cloud Object Storage bucket (ibm-cos-sdk, the S3 API with IAM tokens).

COS encrypts every object at rest; with a Key Protect root key the bucket is created with it
(`IBMSSEKPEncryptionAlgorithm`, `IBMSSEKPCustomerRootKeyCrn`), which needs the COS -> Key Protect
authorization (infra/ibm/authorization.py) to exist first. COS buckets are private: nothing here
grants public access (`public_access: False` says so to the policy pack). Delete empties the bucket
(every object version) and removes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, log, state_of
from infra.ibm.connection import (
    CONNECTION_KEYS,
    Connection,
    failure,
    is_not_found,
    retrying,
    secret_key_opts,
    update_connection,
)

KEY_PROTECT_ALGORITHM = "AES256"
_REPLACE_KEYS = ("prefix", "location", "cos_instance_crn", "kms_key_crn")
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


@dataclass
class CosBucketArgs:
    """Inputs of a CosBucket."""

    prefix: pulumi.Input[str]
    """Bucket names are global: the bucket is `<prefix>-<8 hex digits of its identity>` (the stack, the
    resource and the inputs that force a replacement), the same name again after an interrupted create."""
    location: pulumi.Input[str]
    """Location constraint: `<region>-standard` (regional, Standard class)."""
    cos_instance_crn: pulumi.Input[str]
    """CRN of the COS instance the bucket belongs to."""
    region: pulumi.Input[str]
    """The stack's region (the COS regional endpoint)."""
    api_key: pulumi.Input[str]
    """IBM Cloud API key (a secret)."""
    kms_key_crn: pulumi.Input[str] | None = None
    """Key Protect root key CRN; COS-managed keys when None."""
    force_destroy: bool = True
    """Emptied on destroy (the stack's artifacts are derived data)."""
    endpoints: pulumi.Input[dict[str, str]] = field(default_factory=dict)
    """URL overrides (empty in production)."""


class CosBucketProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        conn = Connection.of(props)
        s3 = conn.cos_client(str(props["cos_instance_crn"]))
        # Named by its identity, not at random: a create interrupted after COS made the bucket left it under
        # this very name, and it is adopted instead of a second bucket being made beside it.
        bucket = f"{props['prefix']}-{identity(props, _REPLACE_KEYS)[:8]}"
        if _exists(s3, bucket):
            log(f"adopting bucket {bucket}, left by an interrupted create")
            endpoint = conn.cos_url or f"https://s3.{props['region']}.cloud-object-storage.appdomain.cloud"
            return CreateResult(id_=bucket, outs={**state_of(props), "bucket": bucket, "endpoint": endpoint})
        extra: dict[str, Any] = {}
        if props.get("kms_key_crn"):
            extra = {
                "IBMSSEKPEncryptionAlgorithm": KEY_PROTECT_ALGORITHM,
                "IBMSSEKPCustomerRootKeyCrn": props["kms_key_crn"],
            }
        log(f"creating bucket {bucket} in {props['location']}")
        try:
            retrying(
                lambda: s3.create_bucket(
                    Bucket=bucket,
                    CreateBucketConfiguration={"LocationConstraint": props["location"]},
                    **extra,
                )
            )
            retrying(lambda: s3.head_bucket(Bucket=bucket))
        except Exception as error:
            hint = (
                "With a Key Protect key, the COS -> Key Protect Reader authorization must exist and the key "
                "must be a root key in the same region."
                if extra
                else "The API key needs Writer (or Manager) on the COS instance."
            )
            raise failure(f"creating COS bucket {bucket}", error, hint) from error
        endpoint = conn.cos_url or f"https://s3.{props['region']}.cloud-object-storage.appdomain.cloud"
        return CreateResult(id_=bucket, outs={**state_of(props), "bucket": bucket, "endpoint": endpoint})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        updates = changed_keys(olds, news, (*CONNECTION_KEYS, "force_destroy", "public_access"))
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(
            outs={**update_connection(olds, news), "force_destroy": news.get("force_destroy")}
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        s3 = Connection.of(props).cos_client()
        try:
            retrying(lambda: s3.head_bucket(Bucket=id_))
        except Exception as error:
            if is_not_found(error):
                return ReadResult(None, {})
            raise failure(f"reading COS bucket {id_}", error) from error
        return ReadResult(id_, props)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        s3 = Connection.of(props).cos_client()
        log(f"emptying and deleting bucket {id_}")
        try:
            if props.get("force_destroy", True):
                empty_bucket(s3, id_)
            retrying(lambda: s3.delete_bucket(Bucket=id_))
        except Exception as error:
            if is_not_found(error):
                return
            raise failure(
                f"deleting COS bucket {id_}", error, "Empty it in the console and run `pulumi destroy` again."
            ) from error


def _exists(s3: Any, bucket: str) -> bool:
    try:
        retrying(lambda: s3.head_bucket(Bucket=bucket))
    except Exception as error:
        if is_not_found(error):
            return False
        raise failure(f"looking for COS bucket {bucket}", error) from error
    return True


def empty_bucket(s3: Any, bucket: str, prefix: str = "") -> int:
    """Delete every object (and object version) under `prefix`; the number deleted."""
    deleted = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        keys = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        ]
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            retrying(lambda b=batch: s3.delete_objects(Bucket=bucket, Delete={"Objects": b, "Quiet": True}))
            deleted += len(batch)
    # A bucket that never had versioning also answers list_objects_v2 (some S3 fakes list only here).
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            retrying(lambda k=keys: s3.delete_objects(Bucket=bucket, Delete={"Objects": k, "Quiet": True}))
            deleted += len(keys)
    return deleted


class CosBucket(pulumi.dynamic.Resource, module="ibm", name="CosBucket"):
    """The stack's bucket: the trained artifacts as objects."""

    bucket: pulumi.Output[str]
    endpoint: pulumi.Output[str]

    def __init__(self, name: str, args: CosBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "prefix": args.prefix,
            "location": args.location,
            "cos_instance_crn": args.cos_instance_crn,
            "region": args.region,
            "kms_key_crn": args.kms_key_crn,
            "public_access": False,
            "force_destroy": args.force_destroy,
            "api_key": args.api_key,
            "endpoints": args.endpoints,
            "bucket": None,
            "endpoint": None,
        }
        props[IDENTITY_SEED] = identity_seed("ibm:CosBucket", name)
        super().__init__(CosBucketProvider(), name, props, secret_key_opts(opts))
