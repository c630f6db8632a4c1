"""The local stack: its component and the dynamic providers that run everything on this machine."""

from infra.local.platform import LocalPlatform, LocalPlatformArgs

__all__ = ["LocalPlatform", "LocalPlatformArgs"]
