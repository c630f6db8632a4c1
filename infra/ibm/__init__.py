"""The watsonx.ai stack: its component and the dynamic providers around IBM's SDKs."""

from infra.ibm.platform import WatsonxPlatform, WatsonxPlatformArgs

__all__ = ["WatsonxPlatform", "WatsonxPlatformArgs"]
