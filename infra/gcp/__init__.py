"""The Vertex AI stack: its component, its helpers, and the dynamic providers pulumi-gcp lacks."""

from infra.gcp.platform import GcpApiEndpoints, VertexPlatform, VertexPlatformArgs

__all__ = ["GcpApiEndpoints", "VertexPlatform", "VertexPlatformArgs"]
