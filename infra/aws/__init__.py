"""The SageMaker stack: its component, the resources it composes, and the Lambda of its public API."""

from infra.aws.platform import SageMakerPlatform, SageMakerPlatformArgs

__all__ = ["SageMakerPlatform", "SageMakerPlatformArgs"]
