"""Code shipped to AWS Lambda by the SageMaker stack's public API (each module runs there on its own)."""
