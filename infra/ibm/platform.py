"""The watsonx.ai stack: what the seed's Watson Studio notebook did by hand, as declared resources.

COS instance + watsonx.ai Runtime instance (Resource Controller) -> bucket (optionally with a Key
Protect root key, after the COS -> Key Protect authorization) -> deployment space -> the PyTorch CNN
trained on this machine, its ONNX archive uploaded to the bucket -> champion gate (the new model is
served only if it passes the promotion rule, docs/gate.md) -> the champion stored in the space -> an
online deployment. Every resource is a small dynamic provider around IBM's own SDKs (no Pulumi
`ibm` package on PyPI; watsonx.ai has no Terraform resource): see docs/ibm.md.

Dependencies make `pulumi destroy` go deployment -> model -> space -> bucket -> instances: the
deployment takes the model's id, the model the space's id and the gate's champion, the gate the
bucket, the space the instances' CRNs and an explicit dependency on the bucket, the bucket the COS
instance's CRN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from infra.gate import PromotionRule
from infra.gate_provider import models_entry
from infra.ibm.authorization import ServiceAuthorization, ServiceAuthorizationArgs
from infra.ibm.bucket import CosBucket, CosBucketArgs
from infra.ibm.connection import watsonx_url
from infra.ibm.deployment import OnlineDeployment, OnlineDeploymentArgs
from infra.ibm.gate import WatsonxGate, WatsonxGateArgs
from infra.ibm.model import StoredModel, StoredModelArgs
from infra.ibm.resource_instance import ResourceInstance, ResourceInstanceArgs
from infra.ibm.space import DeploymentSpace, DeploymentSpaceArgs
from infra.ibm.training_job import TrainingJob, TrainingJobArgs
from infra.local.dataset import LocalDataset, LocalDatasetArgs
from infra.local.platform import search_json, training_code_hash, with_tuning
from infra.settings import KMS_KEY_CRN, PROJECT, Framework, Settings
from mnistctl.client import DEFAULT_WATSONX_VERSION
from serving.constants import WATSONX_IMAGE_SHAPE, Flavor

TYPE = "mnist-platform:ibm:WatsonxPlatform"
MODEL = Framework.PYTORCH
COS_SERVICE = "cloud-object-storage"
RUNTIME_SERVICE = "pm-20"  # watsonx.ai Runtime (formerly Watson Machine Learning) in the Global Catalog
COS_TARGET = "global"


@dataclass
class WatsonxPlatformArgs:
    """Everything the watsonx.ai stack is built from, resolved and validated by `from_settings`."""

    stack: str
    """The Pulumi stack name: part of every IBM resource's name and its `stack:` tag."""
    region: str
    """watsonx.ai Runtime region (`ibm:region`), also the bucket's."""
    api_key: pulumi.Input[str]
    """The IBM Cloud API key, a secret Output (never a plain string here)."""
    dataset: str
    """Dataset name (exported as `dataset`)."""
    work_root: str
    """Folder on this machine where the data is prepared and the model trained."""
    training_code_hash: str
    """Hash of the PyTorch training sources: a change retrains."""
    resource_group: str = "Default"
    """Resource group (name or id) of both instances."""
    cos_plan: str = "standard"
    runtime_plan: str = "v2-standard"
    hardware_spec: str = "XS"
    """Hardware specification of the online deployment."""
    replicas: int = 1
    """Nodes of the online deployment."""
    data_dir: str | None = None
    """Where the dataset is read from or cached; the user cache dir when None."""
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    """PyTorch trainer overrides."""
    training_preset: str = "standard"
    """The dataset's hyperparameter preset (training/presets.py): standard or long."""
    dry_run: bool = False
    """Train on a tiny subset (tests and quick looks)."""
    training_slots: int | None = None
    """How many trainings run at once on this machine (training/slots.py); one per 4 cores when None."""
    tuning: str | None = None
    """The model's search as JSON (config `tuning`): the job tunes on this machine (training/tuning.py) and
    hands the best trial to the gate; None trains once."""
    kms_key_crn: str | None = None
    """Key Protect root key for the bucket; COS-managed keys when None."""
    endpoints: Mapping[str, str] = field(default_factory=dict)
    """IBM API URL overrides (private endpoints, test fakes); empty in production."""
    promotion: PromotionRule = field(default_factory=lambda: PromotionRule(min_accuracy=0.0))
    """The champion gate's rule for the PyTorch model (docs/gate.md)."""

    @property
    def tags(self) -> list[str]:
        return [f"project:{PROJECT}", f"stack:{self.stack}"]


class WatsonxPlatform(pulumi.ComponentResource):
    """MNIST on watsonx.ai Runtime: COS, a Runtime instance, a space, the ONNX model and its deployment."""

    endpoints: pulumi.Output[dict[str, Any]]
    """`{"pytorch": {"flavor": "watsonx", "name": <deployment id>, "region", "version", "space", "url"}}`."""
    models: pulumi.Output[dict[str, Any]]
    """`{"pytorch": {"artifact": cos://.../champions/..., "metrics": {...}, "champion", "challenger"}}`
    (docs/gate.md)."""
    bucket: pulumi.Output[str]
    dataset: pulumi.Output[str]

    @classmethod
    def from_settings(
        cls, name: str, settings: Settings, api_key: pulumi.Input[str] | None = None
    ) -> WatsonxPlatform:
        """The component for an ibm stack (called by infra/platforms.py with the program's secret key)."""
        ibm = settings.ibm
        if ibm is None:
            raise ValueError("WatsonxPlatform needs ibm settings (cloud: ibm)")
        if api_key is None:
            raise ValueError("WatsonxPlatform needs the IBM Cloud API key (ibm:apiKey) as a secret Output")
        args = WatsonxPlatformArgs(
            stack=settings.stack,
            region=ibm.region.value,
            api_key=api_key,
            dataset=settings.dataset.value,
            work_root=str(ibm.work_root),
            training_code_hash=training_code_hash(MODEL),
            resource_group=ibm.resource_group,
            cos_plan=ibm.cos_plan.value,
            runtime_plan=ibm.runtime_plan.value,
            hardware_spec=ibm.hardware_spec.value,
            replicas=ibm.deployment_replicas,
            data_dir=str(settings.data_dir) if settings.data_dir else None,
            hyperparameters=settings.hyperparameters.get(MODEL, {}),
            training_preset=settings.training_preset.value,
            dry_run=ibm.dry_run,
            training_slots=ibm.training_slots,
            tuning=search_json(settings.tuning[MODEL]) if MODEL in settings.tuning else None,
            kms_key_crn=ibm.kms_key_crn,
            endpoints=ibm.endpoints,
            promotion=settings.promotion.rule(MODEL),
        )
        return cls(name, args)

    def __init__(
        self, name: str, args: WatsonxPlatformArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        common = {"region": args.region, "api_key": args.api_key, "endpoints": dict(args.endpoints)}
        ibm_name = f"{PROJECT}-{args.stack}"

        self.cos_instance = ResourceInstance(
            f"{name}-cos",
            ResourceInstanceArgs(
                name=f"{ibm_name}-cos",
                service=COS_SERVICE,
                plan=args.cos_plan,
                target=COS_TARGET,
                resource_group=args.resource_group,
                tags=args.tags,
                **common,
            ),
            child,
        )
        self.runtime_instance = ResourceInstance(
            f"{name}-runtime",
            ResourceInstanceArgs(
                name=f"{ibm_name}-runtime",
                service=RUNTIME_SERVICE,
                plan=args.runtime_plan,
                target=args.region,
                resource_group=args.resource_group,
                tags=args.tags,
                **common,
            ),
            child,
        )
        bucket_opts = child
        self.authorization: ServiceAuthorization | None = None
        if args.kms_key_crn:
            key = KMS_KEY_CRN.match(args.kms_key_crn)
            if key is None:
                raise ValueError(f"kms_key_crn is not a Key Protect root key CRN: {args.kms_key_crn!r}")
            self.authorization = ServiceAuthorization(
                f"{name}-cos-reads-key",
                ServiceAuthorizationArgs(
                    account_id=key["account"],
                    source_instance_guid=self.cos_instance.guid,
                    target_service=key["service"],
                    target_instance_guid=key["instance"],
                    **common,
                ),
                child,
            )
            bucket_opts = pulumi.ResourceOptions(parent=self, depends_on=[self.authorization])
        self.cos_bucket = CosBucket(
            f"{name}-bucket",
            CosBucketArgs(
                prefix=ibm_name,
                location=f"{args.region}-standard",
                cos_instance_crn=self.cos_instance.crn,
                kms_key_crn=args.kms_key_crn,
                **common,
            ),
            bucket_opts,
        )
        self.space = DeploymentSpace(
            f"{name}-space",
            DeploymentSpaceArgs(
                name=ibm_name,
                description=f"MNIST models of the {args.stack} stack ({PROJECT}); managed by Pulumi",
                cos_instance_crn=self.cos_instance.crn,
                runtime_name=f"{ibm_name}-runtime",
                runtime_crn=self.runtime_instance.crn,
                tags=args.tags,
                **common,
            ),
            # Not an input, but the order destroy needs: the space goes before the bucket.
            pulumi.ResourceOptions(parent=self, depends_on=[self.cos_bucket]),
        )
        self.data = LocalDataset(
            f"{name}-data",
            LocalDatasetArgs(
                dataset=args.dataset, root=args.work_root, stack=args.stack, source_dir=args.data_dir
            ),
            child,
        )
        self.training_job = TrainingJob(
            f"{name}-{MODEL.value}-training",
            TrainingJobArgs(
                dataset=args.dataset,
                data_dir=self.data.path,
                data_hash=self.data.content_hash,
                code_hash=args.training_code_hash,
                root=args.work_root,
                bucket=self.cos_bucket.bucket,
                hyperparameters=dict(args.hyperparameters),
                preset=args.training_preset,
                dry_run=args.dry_run,
                training_slots=args.training_slots,
                tuning=args.tuning,
                framework=MODEL.value,
                **common,
            ),
            child,
        )
        # The space stores the gate's champion, not the job's upload (docs/gate.md).
        self.gate = WatsonxGate(
            f"{name}-{MODEL.value}-gate",
            WatsonxGateArgs(
                model=MODEL.value,
                job_id=self.training_job.job_id,
                artifact=self.training_job.artifact,
                bucket=self.cos_bucket.bucket,
                rule=args.promotion,
                **common,
            ),
            child,
        )
        self.model = StoredModel(
            f"{name}-{MODEL.value}-model",
            StoredModelArgs(
                name=f"{ibm_name}-{MODEL.value}",
                space_id=self.space.space_id,
                bucket=self.cos_bucket.bucket,
                archive_key=self.gate.champion_key,
                artifact_hash=self.gate.champion_artifact,
                tags=args.tags,
                **common,
            ),
            child,
        )
        self.deployment = OnlineDeployment(
            f"{name}-{MODEL.value}-deployment",
            OnlineDeploymentArgs(
                name=f"{ibm_name}-{MODEL.value}",
                space_id=self.space.space_id,
                model_id=self.model.model_id,
                instance_type=args.hardware_spec,
                replicas=args.replicas,
                tags=args.tags,
                **common,
            ),
            child,
        )

        iam_url = args.endpoints.get("iam_url")
        self.endpoints = pulumi.Output.all(
            deployment=self.deployment.deployment_id,
            space=self.space.space_id,
            url=self.deployment.url,
            input_shape=self.model.input_shape,
        ).apply(
            lambda o: {
                MODEL.value: {
                    "flavor": Flavor.WATSONX.value,
                    "name": o["deployment"],
                    "region": args.region,
                    "version": DEFAULT_WATSONX_VERSION,
                    "space": o["space"],
                    "url": o["url"] or watsonx_url(args.region),
                    # what each image of a scoring request must look like (watsonx.ai does not reshape)
                    "input_shape": o["input_shape"] or list(WATSONX_IMAGE_SHAPE),
                    **({"iam_url": iam_url} if iam_url else {}),
                }
            }
        )
        # What the deployment serves (the champion) and what the last training run made of the gate.
        self.models = with_tuning(
            models_entry(self.gate.champion, self.gate.challenger), self.training_job.metrics
        ).apply(lambda entry: {MODEL.value: entry})
        self.bucket = self.cos_bucket.bucket
        self.dataset = pulumi.Output.from_input(args.dataset)
        self.register_outputs(
            {
                "endpoints": self.endpoints,
                "models": self.models,
                "bucket": self.bucket,
                "dataset": self.dataset,
            }
        )
