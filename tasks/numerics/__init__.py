"""Process-wide numeric state: portable CPU code paths (`portable`), the machine fingerprint the bits
depend on (`fingerprint`), and the pinned thread and determinism settings (`state`).

Kept import-free, so `portable` and `fingerprint` load with the standard library alone (bench scripts
run them on machines with only torch)."""
