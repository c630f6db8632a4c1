"""The draw-a-digit page of `mnistctl ui` (server.py, static/)."""
