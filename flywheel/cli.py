"""The `flywheel` command line: create workspaces, run and schedule the loop, inspect results.

The commands live in modules by group (run_cmd, audit_cmd, reproduce_cmd, dispatch_cmd) and share
the helpers of flywheel/common.py; this module only puts them on one app, in the order `--help` lists them."""

from __future__ import annotations

import typer

from flywheel.audit_cmd import diff_cmd, lineage, log_cmd, report, sql_cmd, status
from flywheel.dispatch_cmd import deploy_worker
from flywheel.reproduce_cmd import reproduce
from flywheel.run_cmd import init, run, serve, stage_cmd

app = typer.Typer(
    help="Nightly self-improvement for reasoning models: sample, verify, select, fine-tune, evaluate, "
         "promote — every dataset and checkpoint versioned with DVC.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

for command, name in ((init, None), (run, None), (serve, None), (status, None), (report, None),
                      (stage_cmd, "stage"), (reproduce, None), (deploy_worker, "deploy-worker"),
                      (lineage, None), (log_cmd, "log"), (diff_cmd, "diff"), (sql_cmd, "sql")):
    app.command(name=name)(command)


def main() -> None:
    app()
