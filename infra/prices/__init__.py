"""Price tables, one CSV per cloud: infra/cost.py reads them; docs/cost.md gives their sources."""
