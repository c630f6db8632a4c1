"""Local servers that speak the SageMaker, Vertex AI and watsonx.ai wire contracts."""
