"""Prefect flows. They orchestrate stages and hold no stage logic."""
