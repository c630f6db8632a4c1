"""The Vertex AI stack: what the Cloud ML MNIST walkthroughs do by hand with gcloud, as declared resources.

APIs -> bucket + dataset (npz) -> service accounts with bucket-scoped roles -> the project's image, built
by Cloud Build into Artifact Registry -> a custom job training the TF CNN -> champion gate (the job's
model is served only if it passes the promotion rule, docs/gate.md) -> a model with the same image as
its serving container -> an endpoint serving it. Native pulumi-gcp resources wherever they exist;
the job, the model, the deployment and the image build are small dynamic providers around Google's own
clients (pulumi-gcp has none: terraform-provider-google #15303, #25152).

How updates roll forward: the job's identity (display name, output folder) is a hash of everything it
is made of (image tag = content hash of the code, the data's hashes, hyperparameters, machines), so a
re-run changes nothing and any change trains a new job; when the gate promotes it, a new model is uploaded
and deployed to the same endpoint before the old deployment is undeployed (no gap in serving); when the
gate holds it back, the model and deployment stay as they are. The bucket, endpoint, accounts
and APIs stay. `pulumi destroy` removes everything except the enabled APIs (docs/gcp.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.gate import PromotionRule
from infra.gate_provider import models_entry
from infra.gcp.clients import DEFAULT_POLL_SECONDS
from infra.gcp.custom_job import VertexCustomJob, VertexCustomJobArgs
from infra.gcp.data import NPZ_CONTENT_TYPE, StagedNpz, data_hash, stage_npz
from infra.gcp.deployment import VertexDeployment, VertexDeploymentArgs
from infra.gcp.gate import VertexGate, VertexGateArgs
from infra.gcp.iam_wait import DEFAULT_PROPAGATION_SECONDS, IamPropagation
from infra.gcp.image_build import CloudBuildImage, CloudBuildImageArgs
from infra.gcp.image_context import (
    HEALTH_ROUTE,
    PREDICT_ROUTE,
    SERVE_COMMAND,
    SERVING_PORT,
    TRAIN_COMMAND,
    ImageContext,
    build_image_context,
)
from infra.gcp.model import VertexModel, VertexModelArgs
from infra.gcp.names import endpoint_id, gs_uri, image_tag, image_uri
from infra.gcp.tuning_job import VertexTuningJob, VertexTuningJobArgs, study_spec
from infra.hashing import content_hash
from infra.settings import (
    PROJECT,
    PROJECT_IMAGE,
    TUNABLE_HYPERPARAMETERS,
    Dataset,
    Framework,
    ModelTuning,
    Settings,
)

MODEL_KEY = Framework.TENSORFLOW.value
# Every API the stack calls; kept on destroy (disabling one breaks whatever else the project runs).
APIS = ("aiplatform", "storage", "iam", "artifactregistry", "cloudbuild")
JOB_DIGEST_LENGTH = 12
PREBUILT_PREDICTION_REPOSITORY = "us-docker.pkg.dev/vertex-ai/prediction"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Roles on the stack's bucket only: TF's GCS filesystem reads bucket metadata (legacyBucketReader).
TRAINING_BUCKET_ROLES = ("roles/storage.objectUser", "roles/storage.legacyBucketReader")
BUILD_BUCKET_ROLES = ("roles/storage.objectViewer",)
# The serving account gets nothing on the bucket (training data, build context, every job's output): its
# container reads only AIP_STORAGE_URI, the copy of the model's artifacts that Vertex AI makes in a bucket
# of its own and lets the deployed model's account read (Vertex AI docs, "Custom container requirements").
KMS_ROLE = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
# What the Vertex AI Service Agent needs on a user-managed account a DeployedModel runs as
# (Vertex AI docs, "Use a custom service account"), granted on that one account, not the project.
SERVING_AGENT_ROLE = "roles/iam.serviceAccountAdmin"
# A custom job, a deployment and a build that run as a user-managed service account need the caller to hold
# iam.serviceAccounts.actAs on it. The stack grants it to the deploying identity on the three accounts it
# creates, and nowhere else: a project-wide Service Account User would let it act as every account of the
# project, the Compute Engine default account (often an editor) included.
ACT_AS_ROLE = "roles/iam.serviceAccountUser"


@dataclass(frozen=True)
class GcpApiEndpoints:
    """Where the dynamic providers send their calls. Production leaves all unset (Google's endpoints);
    tests point them at loopback fakes."""

    vertex: str | None = None
    cloudbuild: str | None = None
    artifact_registry: str | None = None
    storage: str | None = None


@dataclass
class VertexPlatformArgs:
    """Everything the Vertex AI stack is built from, resolved and validated by `from_settings`."""

    stack: str
    """The Pulumi stack name: part of names and the `stack` label."""
    project: str
    """The project every resource is created in (`gcp:project`)."""
    region: str
    """The region of the bucket, repository, build and every Vertex AI resource (`gcp:region`)."""
    dataset: Dataset
    """Which dataset the staged files hold (exported as `dataset`)."""
    staged_files: Sequence[StagedNpz]
    """`train.npz` and `test.npz` on this machine, with their content hashes."""
    image_context: ImageContext
    """The build context of the project's image (archive, content hash)."""
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    """TF trainer overrides (`--set name=value`)."""
    training_machine_type: str = "n1-standard-4"
    training_replica_count: int = 1
    """More than one trains distributed: pool 0 one chief, pool 1 the other workers."""
    training_timeout_seconds: int = 3600
    serving_machine_type: str = "n1-standard-2"
    serving_min_replicas: int = 1
    serving_max_replicas: int = 2
    kms_key_name: str | None = None
    """CMEK for bucket, repository, job, model and endpoint; Google-managed keys when None."""
    serving_image: str = PROJECT_IMAGE
    """`project` or the name of a prebuilt Vertex AI TF prediction image (checked by settings)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Extra labels; `project` and `stack` are always set."""
    api_endpoints: GcpApiEndpoints = field(default_factory=GcpApiEndpoints)
    """Tests only: loopback fakes of the Google APIs the dynamic providers call."""
    poll_seconds: float = DEFAULT_POLL_SECONDS
    """How often a running custom job is polled."""
    promotion: PromotionRule = field(default_factory=lambda: PromotionRule(min_accuracy=0.0))
    """The champion gate's rule for the TF model (docs/gate.md)."""
    iam_propagation_seconds: float = DEFAULT_PROPAGATION_SECONDS
    """How long the build, the job and the deployment wait for new accounts and grants (iam_wait.py)."""
    tuning: ModelTuning | None = None
    """`tuning.tensorflow`: a Vertex hyperparameter tuning job instead of the custom job (tuning_job.py)."""

    def __post_init__(self) -> None:
        if {f.name for f in self.staged_files} != {"train.npz", "test.npz"}:
            raise ValueError(
                f"staged_files must be train.npz and test.npz, not {[f.name for f in self.staged_files]}"
            )
        if self.serving_min_replicas > self.serving_max_replicas:
            raise ValueError("serving_min_replicas must not exceed serving_max_replicas")


def label_value(value: str) -> str:
    """A GCP label value: lowercase letters, digits, `_` and `-`, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def iam_member(email: str | None) -> str:
    """The IAM member of an identity's email: a service account, or a user."""
    if not email:
        raise ValueError(
            "the identity running `pulumi up` has no email (the pulumi-gcp provider needs the "
            "userinfo.email scope, which it asks for by default; a workload identity federation principal "
            "has none): the gcp stack grants that identity actAs on its own service accounts, so deploy as a "
            "user or a service account (docs/gcp.md, 'What the deploying identity needs')"
        )
    kind = "serviceAccount" if email.endswith(".gserviceaccount.com") else "user"
    return f"{kind}:{email}"


def repository_id(stack: str) -> str:
    """An Artifact Registry repository ID: lowercase letters, digits and hyphens, a letter first, a letter or
    digit last, at most 63 characters (a stack name may hold `_` or `.`, which a label value keeps)."""
    stem = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", f"mnist-{stack.lower()}"))
    return stem[:63].rstrip("-")


def account_id(stack: str, role: str) -> str:
    """A service account ID (6-30 characters, a letter first) naming the stack and the role."""
    stem = re.sub(r"[^a-z0-9-]", "-", f"mnist-{stack.lower()}")[: 29 - len(role)].rstrip("-")
    return f"{stem}-{role}"


def training_args(data_uri: str, hyperparameters: Mapping[str, str]) -> list[str]:
    """The TF trainer's arguments in the custom job: where the npz files are, and the overrides."""
    args = ["--data", data_uri]
    for name, value in sorted(hyperparameters.items()):
        args += ["--set", f"{name}={value}"]
    return args


class VertexPlatform(pulumi.ComponentResource):
    """MNIST on Vertex AI: data in Cloud Storage, a custom job training the project's image, an endpoint."""

    endpoints: pulumi.Output[dict]
    """`{"tensorflow": {"flavor": "vertex", "name": <endpoint id>, "region", "project"}}` (DESIGN.md)."""
    models: pulumi.Output[dict]
    """`{"tensorflow": {"artifact": <gs:// champion SavedModel>, "metrics": {"accuracy": ...}, "champion",
    "challenger"}}` (docs/gate.md)."""
    bucket: pulumi.Output[str]
    dataset: pulumi.Output[str]
    image: pulumi.Output[str]
    """The project's image URI, tagged by the content hash of its build context."""
    training_job: pulumi.Output[str]
    """The custom job's resource name."""

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: Settings,
        api_endpoints: GcpApiEndpoints | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        iam_propagation_seconds: float = DEFAULT_PROPAGATION_SECONDS,
    ) -> VertexPlatform:
        """The preflight (before any resource), the staged dataset and image context, the component."""
        from training.datasets import default_data_dir
        from training.hyperparameters import with_overrides
        from training.presets import preset_overrides
        from training.tf_trainer import Hyperparameters

        gcp_settings = settings.gcp
        if gcp_settings is None:
            raise ValueError("the gcp stack needs its settings (gcp:project and the gcp keys of Pulumi.yaml)")
        overrides = settings.hyperparameters.get(Framework.TENSORFLOW, {})
        try:
            with_overrides(Hyperparameters(), overrides)  # a typo stops here, not after an hour of building
        except ValueError as error:
            raise ValueError(f"config {PROJECT}:hyperparameters.tensorflow: {error}") from None
        # The job gets the dataset's preset spelled out (the trainer in the container reads npz files and
        # does not know the dataset's name), with the stack's overrides on top: what `mnistctl train` uses.
        preset = preset_overrides("tensorflow", settings.dataset, settings.training_preset.value)
        staged = stage_npz(settings.dataset, settings.data_dir)
        context = build_image_context(PROJECT_ROOT, default_data_dir() / "staging" / "vertex-image-context")
        args = VertexPlatformArgs(
            stack=settings.stack,
            project=gcp_settings.project,
            region=gcp_settings.region,
            dataset=settings.dataset,
            staged_files=staged,
            image_context=context,
            hyperparameters={**preset, **overrides},
            training_machine_type=gcp_settings.training_machine_type,
            training_replica_count=gcp_settings.training_replica_count,
            training_timeout_seconds=gcp_settings.training_timeout_seconds,
            serving_machine_type=gcp_settings.serving_machine_type,
            serving_min_replicas=gcp_settings.serving_min_replicas,
            serving_max_replicas=gcp_settings.serving_max_replicas,
            kms_key_name=gcp_settings.kms_key_name,
            serving_image=gcp_settings.serving_image,
            api_endpoints=api_endpoints or GcpApiEndpoints(),
            poll_seconds=poll_seconds,
            promotion=settings.promotion.rule(Framework.TENSORFLOW),
            iam_propagation_seconds=iam_propagation_seconds,
            tuning=settings.tuning.get(Framework.TENSORFLOW),
        )
        return cls(name, args)

    def __init__(
        self, name: str, args: VertexPlatformArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mnist-platform:gcp:VertexPlatform", name, None, opts)
        self._name = name
        self._args = args
        self._labels = {**args.labels, "project": PROJECT, "stack": label_value(args.stack)}
        self.provider = gcp.Provider(
            f"{name}-gcp",
            project=args.project,
            region=args.region,
            default_labels=self._labels,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._apis = [
            gcp.projects.Service(
                f"{name}-api-{api}",
                service=f"{api}.googleapis.com",
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=self._opts(),
            )
            for api in APIS
        ]
        self._vertex_agent = gcp.projects.ServiceIdentity(
            f"{name}-vertex-agent",
            service="aiplatform.googleapis.com",
            opts=self._opts(depends_on=self._apis),
        )
        key_grants = self._customer_key_grants()
        bucket = self._bucket(depends_on=key_grants)
        training_sa, serving_sa, build_sa = (
            self._account(role, title)
            for role, title in (("train", "training"), ("serve", "serving"), ("build", "image build"))
        )
        act_as = self._deployer_may_act_as({"train": training_sa, "serve": serving_sa, "build": build_sa})
        training_access = self._bucket_roles(bucket, training_sa, "train", TRAINING_BUCKET_ROLES)
        serving_access: list[pulumi.CustomResource] = [
            gcp.serviceaccount.IAMMember(
                f"{name}-serve-vertex-agent",
                service_account_id=serving_sa.name,
                role=SERVING_AGENT_ROLE,
                member=self._vertex_agent.member,
                opts=self._opts(),
            )
        ]
        uploads = self._upload_dataset(bucket)
        repository = self._repository(depends_on=key_grants)
        build_access = self._build_grants(bucket, repository, build_sa)
        # What runs as these accounts starts only once they and their grants have propagated.
        propagated = IamPropagation(
            f"{name}-iam-propagation",
            grants=[*act_as, *training_access, *serving_access, *build_access],
            seconds=args.iam_propagation_seconds,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[training_sa, serving_sa, build_sa]),
        )
        image = self._image(bucket, repository, build_sa, depends_on=[*build_access, propagated])
        # With `tuning`, the best trial of a tuning job is the challenger: its SavedModel and metrics.json
        # are where the gate reads a custom job's (`name`, `model_dir`, `metrics_uri`).
        job = (self._tuning_job if args.tuning else self._training_job)(
            bucket, image, training_sa, depends_on=[*uploads, *training_access, propagated]
        )
        endpoint = gcp.vertex.AiEndpoint(
            f"{name}-endpoint",
            name=endpoint_id(args.project, args.region, args.stack, name),
            display_name=f"mnist-{args.stack}-{MODEL_KEY}",
            description="mnist-platform: the TF CNN, served by the project's image",
            location=args.region,
            region=args.region,
            labels=self._labels,
            encryption_spec={"kms_key_name": args.kms_key_name} if args.kms_key_name else None,
            opts=self._opts(depends_on=[*self._apis, *key_grants]),
        )
        # The model is uploaded from the gate's champion, not from the job's output (docs/gate.md).
        gate = VertexGate(
            f"{name}-gate",
            VertexGateArgs(
                model=MODEL_KEY,
                job_name=job.name,
                model_dir=job.model_dir,
                metrics_uri=job.metrics_uri,
                project=args.project,
                bucket=bucket.name,
                rule=args.promotion,
                storage_api_endpoint=args.api_endpoints.storage,
            ),
            opts=self._dynamic_opts(depends_on=[job]),
        )
        # Model and deployment are named after the champion's job: they change only with the champion.
        served_name = gate.champion_job_id.apply(lambda job_id: f"mnist-{args.stack}-{MODEL_KEY}-{job_id}")
        model = self._model(gate, image, served_name)
        deployment = VertexDeployment(
            f"{name}-deployment",
            VertexDeploymentArgs(
                project=args.project,
                region=args.region,
                endpoint=endpoint.name,
                model=model.name,
                display_name=served_name,
                service_account=serving_sa.email,
                instance_type=args.serving_machine_type,
                min_replicas=args.serving_min_replicas,
                max_replicas=args.serving_max_replicas,
                api_endpoint=args.api_endpoints.vertex,
            ),
            opts=self._dynamic_opts(depends_on=[endpoint, model, *serving_access, propagated]),
        )

        self.bucket = bucket.name
        self.dataset = pulumi.Output.from_input(args.dataset.value)
        self.image = image.image
        self.training_job = job.name
        self.endpoints = pulumi.Output.all(endpoint.name, deployment.deployed_model_id).apply(
            lambda values: {MODEL_KEY: self._endpoint_entry(values[0])}
        )
        # What the endpoint serves (the champion) and what the last training run made of the gate.
        tuned = job.summary if isinstance(job, VertexTuningJob) else None
        self.models = pulumi.Output.all(models_entry(gate.champion, gate.challenger), tuned).apply(
            lambda values: {MODEL_KEY: {**values[0], **({"tuning": values[1]} if values[1] else {})}}
        )
        self.register_outputs(
            {
                "endpoints": self.endpoints,
                "models": self.models,
                "bucket": self.bucket,
                "dataset": self.dataset,
                "image": self.image,
                "training_job": self.training_job,
            }
        )

    # -- helpers -------------------------------------------------------------------------------

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Child options: parented to the component, on the stack's provider."""
        return pulumi.ResourceOptions(parent=self, provider=self.provider, **kwargs)

    def _dynamic_opts(self, depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.ResourceOptions:
        # Dynamic resources have their own provider; every one waits for the APIs.
        return pulumi.ResourceOptions(parent=self, depends_on=[*self._apis, *depends_on])

    def _endpoint_entry(self, endpoint: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "flavor": "vertex",
            "name": endpoint,
            "region": self._args.region,
            "project": self._args.project,
        }
        if self._args.api_endpoints.vertex:  # tests: the fake serves predictions too
            entry["url"] = self._args.api_endpoints.vertex
        return entry

    def _customer_key_grants(self) -> list[pulumi.Resource]:
        """With a customer key: the service agents of Storage, Artifact Registry and Vertex AI may use it."""
        args = self._args
        if not args.kms_key_name:
            return []
        storage_agent = gcp.storage.get_project_service_account_output(
            project=args.project,
            opts=pulumi.InvokeOutputOptions(parent=self, provider=self.provider, depends_on=self._apis),
        )
        registry_agent = gcp.projects.ServiceIdentity(
            f"{self._name}-registry-agent",
            service="artifactregistry.googleapis.com",
            opts=self._opts(depends_on=self._apis),
        )
        members = {
            "storage": storage_agent.member,
            "registry": registry_agent.member,
            "vertex": self._vertex_agent.member,
        }
        # retain_on_delete: the key is the user's, and so may be its grants. On a shared key the Storage
        # service agent's grant may predate this stack and serve other CMEK buckets of the project; removing
        # it on `pulumi destroy` would break them. `destroy` forgets these grants and leaves them on the key.
        return [
            gcp.kms.CryptoKeyIAMMember(
                f"{self._name}-key-{who}",
                crypto_key_id=args.kms_key_name,
                role=KMS_ROLE,
                member=member,
                opts=self._opts(retain_on_delete=True),
            )
            for who, member in members.items()
        ]

    def _bucket(self, depends_on: Sequence[pulumi.Resource]) -> gcp.storage.Bucket:
        """Private (uniform access, public access prevention enforced), emptied and deleted by destroy."""
        args = self._args
        return gcp.storage.Bucket(
            f"{self._name}-data",
            location=args.region.upper(),
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            force_destroy=True,
            labels=self._labels,
            encryption={"default_kms_key_name": args.kms_key_name} if args.kms_key_name else None,
            opts=self._opts(depends_on=[*self._apis, *depends_on]),
        )

    def _account(self, role: str, title: str) -> gcp.serviceaccount.Account:
        return gcp.serviceaccount.Account(
            f"{self._name}-{role}",
            account_id=account_id(self._args.stack, role),
            display_name=f"mnist-platform {self._args.stack}: {title}",
            description=f"mnist-platform stack {self._args.stack}: runs the {title}",
            opts=self._opts(depends_on=self._apis),
        )

    def _deployer_may_act_as(
        self, accounts: Mapping[str, gcp.serviceaccount.Account]
    ) -> list[pulumi.CustomResource]:
        """actAs for whoever runs `pulumi up` (the pulumi-gcp provider's identity), on each account only."""
        deployer = gcp.organizations.get_client_open_id_user_info_output(
            opts=pulumi.InvokeOutputOptions(parent=self, provider=self.provider)
        )
        member = deployer.email.apply(iam_member)
        return [
            gcp.serviceaccount.IAMMember(
                f"{self._name}-{who}-deployer-act-as",
                service_account_id=account.name,
                role=ACT_AS_ROLE,
                member=member,
                opts=self._opts(),
            )
            for who, account in accounts.items()
        ]

    def _bucket_roles(
        self, bucket: gcp.storage.Bucket, account: gcp.serviceaccount.Account, who: str, roles: Sequence[str]
    ) -> list[pulumi.CustomResource]:
        return [
            gcp.storage.BucketIAMMember(
                f"{self._name}-{who}-{role.rsplit('.', 1)[-1]}",
                bucket=bucket.name,
                role=role,
                member=account.member,
                opts=self._opts(),
            )
            for role in roles
        ]

    def _upload_dataset(self, bucket: gcp.storage.Bucket) -> list[gcp.storage.BucketObject]:
        """Objects under `data/<hash>/`: new data, new names: a replacement never deletes the new object."""
        prefix = f"data/{data_hash(list(self._args.staged_files))}"
        return [
            gcp.storage.BucketObject(
                f"{self._name}-data-{staged.name.removesuffix('.npz')}",
                bucket=bucket.name,
                name=f"{prefix}/{staged.name}",
                source=pulumi.FileAsset(str(staged.path)),
                content_type=NPZ_CONTENT_TYPE,
                opts=self._opts(),
            )
            for staged in self._args.staged_files
        ]

    def _repository(self, depends_on: Sequence[pulumi.Resource]) -> gcp.artifactregistry.Repository:
        """The Docker repository the image is pushed to."""
        args, name = self._args, self._name
        return gcp.artifactregistry.Repository(
            f"{name}-images",
            repository_id=repository_id(args.stack),
            location=args.region,
            format="DOCKER",
            description="mnist-platform: the project's image (train and serve), tagged by content",
            labels=self._labels,
            kms_key_name=args.kms_key_name,
            opts=self._opts(depends_on=[*self._apis, *depends_on]),
        )

    def _build_grants(
        self,
        bucket: gcp.storage.Bucket,
        repository: gcp.artifactregistry.Repository,
        account: gcp.serviceaccount.Account,
    ) -> list[pulumi.CustomResource]:
        """The build account reads the context, pushes to the repository and writes its logs."""
        args, name = self._args, self._name
        return [
            *self._bucket_roles(bucket, account, "build", BUILD_BUCKET_ROLES),
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-build-writer",
                repository=repository.name,
                location=args.region,
                role="roles/artifactregistry.writer",
                member=account.member,
                opts=self._opts(),
            ),
            gcp.projects.IAMMember(
                f"{name}-build-logs",
                project=args.project,
                role="roles/logging.logWriter",
                member=account.member,
                opts=self._opts(),
            ),
        ]

    def _image(
        self,
        bucket: gcp.storage.Bucket,
        repository: gcp.artifactregistry.Repository,
        account: gcp.serviceaccount.Account,
        depends_on: Sequence[pulumi.Resource],
    ) -> CloudBuildImage:
        """The build context uploaded, and the image Cloud Build makes from it."""
        args, name = self._args, self._name
        context = args.image_context
        source = gcp.storage.BucketObject(
            f"{name}-image-context",
            bucket=bucket.name,
            name=f"build/{context.sha256[:16]}.tar.gz",
            source=pulumi.FileAsset(str(context.archive)),
            content_type="application/gzip",
            opts=self._opts(),
        )
        uri = repository.repository_id.apply(
            lambda repository_id: image_uri(
                args.region, args.project, repository_id, image_tag(context.sha256)
            )
        )
        return CloudBuildImage(
            f"{name}-image",
            CloudBuildImageArgs(
                project=args.project,
                region=args.region,
                image=uri,
                bucket=bucket.name,
                source_object=source.name,
                context_sha256=context.sha256,
                service_account=account.email,
                api_endpoint=args.api_endpoints.cloudbuild,
                registry_api_endpoint=args.api_endpoints.artifact_registry,
            ),
            opts=self._dynamic_opts(depends_on=[source, repository, *depends_on]),
        )

    def _training_job(
        self,
        bucket: gcp.storage.Bucket,
        image: CloudBuildImage,
        account: gcp.serviceaccount.Account,
        depends_on: Sequence[pulumi.Resource],
    ) -> VertexCustomJob:
        args = self._args
        data = data_hash(list(args.staged_files))
        spec = {
            "context": args.image_context.sha256,
            "command": list(TRAIN_COMMAND),
            "data": data,
            "hyperparameters": dict(args.hyperparameters),
            "machine_type": args.training_machine_type,
            "replicas": args.training_replica_count,
            "timeout": args.training_timeout_seconds,
            "kms": args.kms_key_name,
        }
        digest = content_hash(spec, JOB_DIGEST_LENGTH)
        return VertexCustomJob(
            f"{self._name}-training",
            VertexCustomJobArgs(
                project=args.project,
                region=args.region,
                display_name=f"mnist-{args.stack}-{MODEL_KEY}-{digest}",
                image_uri=image.image,
                command=TRAIN_COMMAND,
                args=bucket.name.apply(
                    lambda b: training_args(gs_uri(b, "data", data), args.hyperparameters)
                ),
                base_output_directory=bucket.name.apply(lambda b: gs_uri(b, "jobs", digest)),
                service_account=account.email,
                instance_type=args.training_machine_type,
                instance_count=args.training_replica_count,
                max_runtime_seconds=args.training_timeout_seconds,
                labels=self._labels,
                kms_key_name=args.kms_key_name,
                api_endpoint=args.api_endpoints.vertex,
                storage_api_endpoint=args.api_endpoints.storage,
                poll_seconds=args.poll_seconds,
            ),
            opts=self._dynamic_opts(depends_on=[image, *depends_on]),
        )

    def _tuning_job(
        self,
        bucket: gcp.storage.Bucket,
        image: CloudBuildImage,
        account: gcp.serviceaccount.Account,
        depends_on: Sequence[pulumi.Resource],
    ) -> VertexTuningJob:
        """Every trial the custom job of `_training_job` with the searched hyperparameters left to Vertex,
        which passes them as `--<name>=<value>`."""
        args = self._args
        tuning = args.tuning
        assert tuning is not None  # only called with a search
        data = data_hash(list(args.staged_files))
        fixed = {k: v for k, v in args.hyperparameters.items() if k not in tuning.ranges}
        study = study_spec(tuning, TUNABLE_HYPERPARAMETERS[Framework.TENSORFLOW])
        spec = {
            "context": args.image_context.sha256,
            "command": list(TRAIN_COMMAND),
            "data": data,
            "hyperparameters": fixed,
            "study": study,
            "trials": [tuning.max_trials, tuning.parallel_trials],
            "machine_type": args.training_machine_type,
            "replicas": args.training_replica_count,
            "timeout": args.training_timeout_seconds,
            "kms": args.kms_key_name,
        }
        digest = content_hash(spec, JOB_DIGEST_LENGTH)
        return VertexTuningJob(
            f"{self._name}-tuning",
            VertexTuningJobArgs(
                project=args.project,
                region=args.region,
                display_name=f"mnist-{args.stack}-{MODEL_KEY}-tuning-{digest}",
                image_uri=image.image,
                command=TRAIN_COMMAND,
                args=bucket.name.apply(lambda b: training_args(gs_uri(b, "data", data), fixed)),
                base_output_directory=bucket.name.apply(lambda b: gs_uri(b, "tuning", digest)),
                service_account=account.email,
                study_spec=study,
                max_trial_count=tuning.max_trials,
                parallel_trial_count=tuning.parallel_trials,
                instance_type=args.training_machine_type,
                instance_count=args.training_replica_count,
                max_runtime_seconds=args.training_timeout_seconds,
                labels=self._labels,
                kms_key_name=args.kms_key_name,
                api_endpoint=args.api_endpoints.vertex,
                poll_seconds=args.poll_seconds,
            ),
            opts=self._dynamic_opts(depends_on=[image, *depends_on]),
        )

    def _model(
        self, gate: VertexGate, image: CloudBuildImage, display_name: pulumi.Output[str]
    ) -> VertexModel:
        args = self._args
        if args.serving_image == PROJECT_IMAGE:
            serving: dict[str, Any] = {
                "image_uri": image.image,
                "command": SERVE_COMMAND,
                "port": SERVING_PORT,
                "predict_route": PREDICT_ROUTE,
                "health_route": HEALTH_ROUTE,
            }
        else:  # Google's TF Serving image: it knows its own command, port and routes
            serving = {"image_uri": f"{PREBUILT_PREDICTION_REPOSITORY}/{args.serving_image}:latest"}
        return VertexModel(
            f"{self._name}-model",
            VertexModelArgs(
                project=args.project,
                region=args.region,
                display_name=display_name,
                artifact_uri=gate.champion_artifact,
                labels=self._labels,
                kms_key_name=args.kms_key_name,
                api_endpoint=args.api_endpoints.vertex,
                **serving,
            ),
            opts=self._dynamic_opts(depends_on=[gate]),
        )
