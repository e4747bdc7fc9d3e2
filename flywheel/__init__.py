"""The `flywheel` command line.

Its process (and every stage it runs in-process, e.g. under `dvc repro`) computes on the portable
CPU path unless FLYWHEEL_CPU_PATH=native: the variables must be in the environment before anything
loads torch, so they are set here, when the package is first imported (tasks/numerics/portable.py)."""

import os as _os

from tasks.numerics import portable as _portable

_portable.apply(_portable.cpu_path_env(_os.environ.get("FLYWHEEL_CPU_PATH", _portable.PORTABLE)))
