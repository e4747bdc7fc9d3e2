"""Git and DVC operations on a workspace. DVC holds a repo-wide lock: call these one at a time."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path

from tasks.errors import WorkspaceError

GIT_ENV = {"GIT_AUTHOR_NAME": "flywheel", "GIT_AUTHOR_EMAIL": "flywheel@localhost",
           "GIT_COMMITTER_NAME": "flywheel", "GIT_COMMITTER_EMAIL": "flywheel@localhost"}


def _git_env() -> dict[str, str]:
    return {**os.environ, **{k: os.environ.get(k, v) for k, v in GIT_ENV.items()}}


def git_ok(root: Path, *args: str) -> bool:
    """Whether a git command exits 0 (for questions such as `diff --quiet`)."""
    return subprocess.run(["git", *args], cwd=root, capture_output=True, env=_git_env()).returncode == 0


def git(root: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env=_git_env())
    if check and proc.returncode:
        raise WorkspaceError(f"git {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}",
                             file=str(root))
    return proc.stdout.strip()


@contextmanager
def _repo(root: Path) -> Iterator:
    """Open the workspace's DVC repo with the working directory at its root, as DVC expects."""
    import logging

    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.WARNING)  # per-stage "Updating lock file" is noise here
    with chdir(root), Repo(str(root)) as repo:
        yield repo


# DVC's names for the user and password a URL's userinfo holds, by scheme (its remote options)
_CREDENTIAL_KEYS = {"https": ("user", "password"), "http": ("user", "password"), "ssh": ("user", "password"),
                    "webdav": ("user", "password"), "webdavs": ("user", "password"),
                    "s3": ("access_key_id", "secret_access_key")}


def init_repos(root: Path, remote_url: str) -> None:
    """git init + dvc init, autostage on, analytics off, a default remote.

    The config files are written as UTF-8 here rather than through DVC's `config.edit()`, whose
    writer (configobj) encodes as ASCII whatever the locale: a workspace under a folder named with
    non-ASCII letters failed there. Credentials in the URL never reach the committed `.dvc/config`:
    user and password go to `.dvc/config.local` (git-ignored), anything else is refused."""
    from dvc.repo import Repo

    from tasks.workspace.secrets import has_credentials, redact, strip_credentials

    url, local = remote_url, {}
    if has_credentials(remote_url):
        url, user, password = strip_credentials(remote_url)
        keys = _CREDENTIAL_KEYS.get(remote_url.split("://", 1)[0].lower())
        if keys is None or has_credentials(url):
            raise WorkspaceError(f"the remote {redact(remote_url)} embeds credentials that cannot be kept "
                                 "out of the workspace's history.", field="remote.url",
                                 fix="give the URL without them and set them with "
                                 "`dvc remote modify --local origin KEY VALUE` inside the workspace.")
        local = {k: v for k, v in zip(keys, (user, password), strict=True) if v is not None}
    git(root, "init", "-q", "-b", "main")
    Repo.init(str(root)).close()
    _write_dvc_config(root / ".dvc" / "config", {"core": {"autostage": "True", "analytics": "False",
                                                          "remote": "origin"},
                                                 'remote "origin"': {"url": url}})
    if local:
        _write_dvc_config(root / ".dvc" / "config.local", {'remote "origin"': local})
    Repo(str(root)).close()  # DVC reads and validates what was written


def _write_dvc_config(path: Path, sections: dict[str, dict[str, str]]) -> None:
    """Merge `sections` into a DVC config file, written as UTF-8 (DVC reads it back as text)."""
    from configobj import ConfigObj

    conf = ConfigObj(str(path) if path.is_file() else None, encoding="utf-8", indent_type="    ")
    for name, values in sections.items():
        conf.setdefault(name, {}).update(values)
    conf.filename = str(path)
    conf.write()
    if path.name == "config.local":
        path.chmod(0o600)


def stage_target(root: Path, stage: str) -> str:
    """An absolute `dvc.yaml:stage` target, independent of the current directory."""
    return f"{Path(root) / 'dvc.yaml'}:{stage}"


def commit_stage(root: Path, stage: str) -> None:
    """Record a stage's deps, params and outs hashes in dvc.lock and its outs in the cache."""
    with _repo(root) as repo:
        repo.commit(stage_target(root, stage), force=True)


def stage_is_current(root: Path, stage: str) -> bool:
    """True when dvc.lock has the stage and its deps, params and outs all match it."""
    import yaml

    lock = Path(root) / "dvc.lock"
    if not lock.is_file() or stage not in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}):
        return False
    with _repo(root) as repo:
        return not repo.status(targets=[stage_target(root, stage)])


def push(root: Path) -> None:
    """Push every recorded output to the default remote. Fails with one line naming the remote and
    the fix; a local remote folder that vanished is an error, never silently made anew."""
    from dvc.exceptions import DvcException

    name, url = _remote(root)
    folder = local_folder(root, url)
    if folder is not None and not folder.is_dir():
        raise _remote_error(name, url, "is missing" if not folder.exists() else "is not a folder")
    with _repo(root) as repo, _dvc_errors() as causes:
        try:
            repo.push()
        except (DvcException, OSError) as err:
            reason = next(iter(causes), None) or str(err)
            raise _remote_error(name, url, f"could not be written ({reason})") from None


def _remote(root: Path) -> tuple[str, str | None]:
    with _repo(root) as repo:
        name = repo.config["core"].get("remote") or "origin"
        return name, repo.config["remote"].get(name, {}).get("url")


def local_folder(root: Path, url: str | None) -> Path | None:
    """A remote URL's folder when it is on this machine (None for s3://, gs://, ...)."""
    if not url or "://" in url:
        return None
    folder = Path(url).expanduser()
    return folder if folder.is_absolute() else (Path(root) / ".dvc" / folder).resolve()  # as DVC resolves it


def _remote_error(name: str, url: str | None, what: str) -> WorkspaceError:
    return WorkspaceError(f"DVC remote '{name}' {what}; nothing was tagged.", file=url,
                          fix="make it writable (or restore it), or point the workspace elsewhere with "
                          f"`dvc remote modify {name} url NEW`; then rerun, which resumes and pushes.")


@contextmanager
def _dvc_errors() -> Iterator[list[str]]:
    """Collect DVC's own error log lines (the real cause of a failed push) instead of letting them
    print: the CLI then shows one line."""
    import logging

    causes: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                text = record.getMessage().strip()
                if record.exc_info and record.exc_info[1] is not None:
                    text = f"{text} {record.exc_info[1]}".strip()
                causes.append(" ".join(text.split()))

    log = logging.getLogger("dvc")
    handler = Collect()
    log.addHandler(handler)
    try:
        yield causes
    finally:
        log.removeHandler(handler)


def remote_url(root: Path) -> str | None:
    with _repo(root) as repo:
        name = repo.config["core"].get("remote")
        return repo.config["remote"].get(name, {}).get("url") if name else None


# Never commit a temp file, even one left where recovery does not look (ours: .name.tmp-PID;
# DVC's: [name].token.tmp).
_NOT_RECORDED = (":(exclude,glob)**/.*.tmp-*", ":(exclude,glob)**/.*.old-*",
                 ":(exclude,glob)**/*." + "?" * 22 + ".tmp")


def commit_and_tag(root: Path, message: str, tag: str | None = None) -> str:
    git(root, "add", "-A", "--", ".", *_NOT_RECORDED)
    if not git_ok(root, "diff", "--cached", "--quiet"):
        git(root, "commit", "-q", "-m", message)
    if tag:
        git(root, "tag", "-f", tag)
    return git(root, "rev-parse", "HEAD")


def tags(root: Path) -> list[str]:
    return [t for t in git(root, "tag", "--list", "iter-*").splitlines() if t]
