"""The kernel sandbox that runs generated code against its unit tests (threat model in run.py)."""
