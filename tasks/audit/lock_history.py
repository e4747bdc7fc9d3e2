"""Read what DVC and the workspace recorded at each `iter-NNNN` tag, without checking anything out.

Lineage, audits and diffs trust only these records: `dvc.lock` as committed at each tag (hashes,
sizes, params), plus the run record, params and small JSON outputs committed beside it. All blobs
come from one `git cat-file --batch` process (the same bytes `git show TAG:PATH` prints), and
lock files are parsed stage by stage so that identical stage entries at many tags parse once.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import WorkspaceError
from tasks.workspace.layout import ITERATION_ID, Layout, iteration_id, tag_for

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STAGE_LINE = re.compile(r"^  (?=\S)(?!-)", re.MULTILINE)  # a stage key: two spaces of indentation under `stages:`


@dataclass(frozen=True)
class Entry:
    """One dep or out of a stage, as dvc.lock records it."""

    path: str
    md5: str | None
    size: int | None
    nfiles: int | None

    @property
    def is_dir(self) -> bool:
        return bool(self.md5 and self.md5.endswith(".dir"))


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str | None
    deps: tuple[Entry, ...]
    outs: tuple[Entry, ...]
    params: dict[str, Any]  # dotted key -> value, flattened over every params file
    params_files: tuple[str, ...]

    @property
    def base(self) -> str:
        return self.name.split("@", 1)[0]

    @property
    def iteration(self) -> str:
        """The iteration a stage belongs to: `generate@0002` -> 0002; bootstrap stages -> 0000."""
        return self.name.split("@", 1)[1] if "@" in self.name else "0000"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys (`generate.k`); lists and scalars are leaves."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _entry(raw: dict) -> Entry:
    return Entry(path=str(raw["path"]), md5=raw.get("md5"), size=raw.get("size"), nfiles=raw.get("nfiles"))


@lru_cache(maxsize=8192)
def _parse_stage_chunk(chunk: str) -> tuple[str, Stage]:
    """Parse one stage's block of dvc.lock (memoised: most blocks repeat unchanged at every later tag)."""
    data = yaml.load("stages:\n" + chunk, Loader=_Loader)["stages"]
    (name, raw), = data.items()
    return name, _stage_from(str(name), raw or {})


def _stage_from(name: str, raw: dict) -> Stage:
    params = raw.get("params") or {}
    flat: dict[str, Any] = {}
    for values in params.values():
        flat.update(flatten(values))
    return Stage(name=name, cmd=raw.get("cmd"), deps=tuple(_entry(d) for d in raw.get("deps") or ()),
                       outs=tuple(_entry(o) for o in raw.get("outs") or ()), params=flat,
                       params_files=tuple(params))


def parse_lock(text: str) -> dict[str, Stage]:
    """dvc.lock text -> stages by name. Splits at the stage keys; falls back to one full parse."""
    _, sep, body = text.partition("\nstages:\n")
    if sep:
        starts = [m.start() for m in _STAGE_LINE.finditer(body)]
        chunks = [body[a:b] for a, b in zip(starts, [*starts[1:], len(body)], strict=True)]
        try:
            return dict(_parse_stage_chunk(c if c.endswith("\n") else c + "\n") for c in chunks)
        except (yaml.YAMLError, ValueError, TypeError):
            pass  # e.g. a YAML alias whose anchor lives in another stage's block
    data = yaml.load(text, Loader=_Loader) or {}  # parse the whole file
    return {str(k): _stage_from(str(k), v or {}) for k, v in (data.get("stages") or {}).items()}


def dvc_cache_dir(root: Path) -> Path:
    """The DVC cache folder (`[cache] dir` in .dvc/config, else .dvc/cache)."""
    conf = configparser.ConfigParser()
    for name in ("config", "config.local"):
        try:
            conf.read(root / ".dvc" / name)
        except configparser.Error:
            continue
    custom = conf.get("cache", "dir", fallback=None)
    return (root / ".dvc" / custom).resolve() if custom else root / ".dvc" / "cache"


def cache_object(root: Path, md5: str | None) -> Path | None:
    """Where DVC 3 keeps a file's content by its md5, if that object is in the local cache."""
    if not md5 or md5.endswith(".dir"):
        return None
    path = dvc_cache_dir(root) / "files" / "md5" / md5[:2] / md5[2:]
    return path if path.is_file() else None


class History:
    """The workspace's finished iterations (tags) and the files committed at each."""

    def __init__(self, root: Path) -> None:
        self.layout = Layout(Path(root).resolve())
        self.root = self.layout.root
        self._blobs: dict[str, bytes | None] = {}
        self._locks: dict[str, dict[str, Stage]] = {}
        self._producers: dict[str, dict[str, Stage]] = {}
        refs = _git(self.root, "for-each-ref", "refs/tags/iter-*",
                    "--format=%(refname:short) %(objectname) %(*objectname)")
        self.commits: dict[str, str] = {}
        for line in refs.splitlines():
            tag, obj, *peeled = line.split()
            it = tag.removeprefix("iter-")
            if ITERATION_ID.fullmatch(it):
                self.commits[it] = peeled[0] if peeled else obj

    @property
    def iterations(self) -> list[str]:
        return sorted(self.commits)

    def require(self, value: str | int) -> str:
        """Normalise an iteration id and insist it has a tag; the error says how to list valid ones."""
        try:
            it = iteration_id(value)
        except WorkspaceError:
            it = None
        if it is None or it not in self.commits:
            known = ", ".join(self.iterations[-5:]) or "none yet"
            raise WorkspaceError(f"iteration {value!r} not found: no tag {tag_for(it or str(value))} "
                                 f"(latest finished: {known}).", file=str(self.root),
                                 fix=f"list finished iterations with `flywheel log -w {self.root}`.")
        return it

    def prefetch(self, its: list[str], paths: list[str], pairs: list[tuple[str, str]] = ()) -> None:
        """Read `TAG:PATH` for every iteration x path (and every extra pair) in one git process."""
        specs = [f"{tag_for(it)}:{p}" for it in its for p in paths] + [f"{tag_for(i)}:{p}" for i, p in pairs]
        missing = [s for s in specs if s not in self._blobs]
        if missing:
            self._blobs.update(_cat_file(self.root, missing))

    def blob(self, it: str, path: str) -> bytes | None:
        spec = f"{tag_for(it)}:{path}"
        if spec not in self._blobs:
            self._blobs.update(_cat_file(self.root, [spec]))
        return self._blobs[spec]

    def text(self, it: str, path: str) -> str | None:
        raw = self.blob(it, path)
        return None if raw is None else raw.decode("utf-8")

    def json(self, it: str, path: str) -> Any:
        raw = self.blob(it, path)
        return None if raw is None else json.loads(raw)

    def yaml(self, it: str, path: str) -> Any:
        raw = self.blob(it, path)
        return None if raw is None else yaml.load(raw, Loader=_Loader)

    def lock(self, it: str) -> dict[str, Stage]:
        if it not in self._locks:
            text = self.text(it, "dvc.lock")
            self._locks[it] = parse_lock(text) if text else {}
        return self._locks[it]

    def record(self, it: str) -> dict:
        return self.json(it, self.layout.rel(self.layout.record(it))) or {}

    def producers(self, it: str) -> dict[str, Stage]:
        """Out path -> the stage that produced it, in the lock at `it`'s tag."""
        if it not in self._producers:
            self._producers[it] = {o.path: s for s in self.lock(it).values() for o in s.outs}
        return self._producers[it]


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], check=False, cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise WorkspaceError(f"git {args[0]} failed: {proc.stderr.strip()[:200]}", file=str(root),
                             fix="check that the folder is a flywheel workspace (a git repo).")
    return proc.stdout


def _cat_file(root: Path, specs: list[str]) -> dict[str, bytes | None]:
    """`git cat-file --batch`: the same bytes as `git show SPEC`, for many specs in one process."""
    proc = subprocess.run(["git", "cat-file", "--batch"], check=False, cwd=root, input="\n".join(specs).encode() + b"\n",
                          capture_output=True)
    if proc.returncode:
        raise WorkspaceError(f"git cat-file failed: {proc.stderr.decode().strip()[:200]}", file=str(root))
    out, pos, data = {}, 0, proc.stdout
    for spec in specs:
        end = data.index(b"\n", pos)
        header = data[pos:end].split()
        pos = end + 1
        if len(header) == 3 and header[1] == b"blob":
            size = int(header[2])
            out[spec] = data[pos:pos + size]
            pos += size + 1
        elif len(header) == 3:  # a tree or commit: skip its body
            pos += int(header[2]) + 1
            out[spec] = None
        else:  # "<spec> missing" / "ambiguous"
            out[spec] = None
    return out
