"""The dataset registry: datasets.toml, validated (protocol §1).

datasets.toml is found at $MATRREC_DATASETS_TOML, else the source checkout's top-level file, else
the copy packaged into the wheel. Unknown keys and missing fields are errors naming the key path.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

import matrrec_cli
from matrrec_cli.errors import MatrrecError, UsageError

DATASETS_TOML_ENV = "MATRREC_DATASETS_TOML"
Format = Literal["ml1m-zip", "ml100k-zip", "inter", "amazon-json"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Registry values that become a path or reach pip: a datasets.toml from someone else must not
# write outside raw/ nor hand pip an option (`-r URL` switches the index).
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
# our own bookkeeping beside the raw file; a source's file must not collide with it
RESERVED_SUFFIXES = (".part", ".part.json", ".sha256", ".lock")
REQUIREMENT_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?"
                            r"==[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}$")
MEMBER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*(?:/[A-Za-z0-9_][A-Za-z0-9._+-]*)*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class Source(_Strict):
    kind: Literal["url", "pypi-wheel"]
    file: str  # name under <data-dir>/<name>/raw/: a plain file name
    format: Format
    url: str | None = None  # kind "url": http(s) only
    requirement: str | None = None  # kind "pypi-wheel": exactly name==version, e.g. recbole==1.2.1
    member: str | None = None  # kind "pypi-wheel": path inside the wheel
    size: int | None = None
    sha256: str | None = None

    @field_validator("file")
    @classmethod
    def _plain_file(cls, v: str) -> str:
        if not FILE_RE.match(v) or ".." in v or v.endswith(RESERVED_SUFFIXES):
            raise ValueError(f"file {v[:80]!r} must be a plain file name (letters, digits, "
                             "'.', '_', '+', '-'; no '/' or '..')")
        return v

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname \
                or any(c.isspace() or ord(c) < 32 for c in v):
            raise ValueError(f"url {v[:80]!r} must be an http:// or https:// URL")
        return v

    @field_validator("requirement")
    @classmethod
    def _pinned_requirement(cls, v: str | None) -> str | None:
        if v is not None and not REQUIREMENT_RE.match(v):
            raise ValueError(f"requirement {v[:80]!r} must be exactly name==version (e.g. "
                             "recbole==1.2.1), no options, URLs or markers")
        return v

    @field_validator("member")
    @classmethod
    def _wheel_member(cls, v: str | None) -> str | None:
        if v is not None and (not MEMBER_RE.match(v) or ".." in v.split("/")):
            raise ValueError(f"member {v[:80]!r} must be a relative path inside the wheel "
                             "(no leading '/', no '..')")
        return v

    @field_validator("size")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"size must be a positive number of bytes, not {v}")
        return v

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, v: str | None) -> str | None:
        if v is not None and not SHA256_RE.match(v.lower()):
            raise ValueError(f"sha256 {v[:80]!r} must be 64 hex digits")
        return None if v is None else v.lower()

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Source:
        need = ("url",) if self.kind == "url" else ("requirement", "member")
        other = ("requirement", "member") if self.kind == "url" else ("url",)
        if missing := [k for k in need if getattr(self, k) is None]:
            raise ValueError(f"kind {self.kind!r} needs {' and '.join(missing)}")
        if extra := [k for k in other if getattr(self, k) is not None]:
            raise ValueError(f"kind {self.kind!r} takes no {' or '.join(extra)}")
        return self

    @property
    def label(self) -> str:
        return self.url if self.kind == "url" else f"{self.requirement} wheel:{self.member}"


class KCore(_Strict):
    user: int = 5
    item: int = 5


class Training(_Strict):
    max_len: int
    dropout: float
    paper_dropout: float | None = None  # the paper text, where it differs from the released config


class PaperRow(_Strict):
    users: int
    items: int
    inter: int
    avg_len_u: float
    avg_len_i: float
    sparsity: float  # percent
    padding_included: bool  # RecBole prints real count + 1 (protocol §1.1)


class DatasetSpec(_Strict):
    name: str
    title: str
    kcore: KCore
    training: Training
    sources: list[Source]
    paper: PaperRow | None = None


@dataclass(frozen=True)
class TrainingDefaults:
    max_len: int
    dropout: float
    # where these came from, recorded as the values' source (not part of what they are)
    source: str = field(default="datasets.toml", compare=False)


# Datasets outside the registry (imports): Amazon-style settings, the paper's majority case.
GENERIC_DEFAULTS = TrainingDefaults(max_len=50, dropout=0.4, source="default")


def registry_path() -> Path:
    """$MATRREC_DATASETS_TOML, else the checkout's datasets.toml, else the packaged copy."""
    if env := os.environ.get(DATASETS_TOML_ENV):
        return Path(env)
    pkg = Path(matrrec_cli.__file__).resolve().parent
    checkout = pkg.parent / "datasets.toml"
    return checkout if checkout.exists() else pkg / "datasets.toml"


@functools.cache
def _load(path: Path, mtime: float) -> dict[str, DatasetSpec]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MatrrecError(f"dataset registry {path} not found; set ${DATASETS_TOML_ENV}") from None
    except UnicodeDecodeError:
        raise MatrrecError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise MatrrecError(f"{path}: invalid TOML: {exc}") from None
    specs = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise MatrrecError(f"{path}: '{name}' must be a table")
        try:
            specs[name] = DatasetSpec(name=name, **table)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join([name, *(str(p) for p in err["loc"])])
            if err["type"] == "extra_forbidden":
                what = "unknown key"
            elif err["type"] == "value_error":  # our validators' own sentence, as written
                what = str(err.get("ctx", {}).get("error", err["msg"]))
            else:
                what = err["msg"].lower()
            raise MatrrecError(f"{path}: {what}: {key}") from None
        if not specs[name].sources:
            raise MatrrecError(f"{path}: {name}.sources is empty")
    return specs


def _specs() -> dict[str, DatasetSpec]:
    path = registry_path()
    return _load(path, path.stat().st_mtime if path.exists() else 0.0)


# Dataset names become directory and file names: letters, digits and . _ -, at most 64.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    """`name` when it is a safe dataset name, else a usage error saying what is allowed."""
    if not NAME_RE.match(name) or ".." in name:
        raise UsageError(f"dataset name {name[:80]!r}: use letters, digits, '.', '_' or '-' "
                         "(at most 64, starting with a letter or digit)")
    return name


def dataset_names() -> list[str]:
    return list(_specs())


def get_dataset(name: str) -> DatasetSpec:
    specs = _specs()
    if name not in specs:
        raise MatrrecError(f"unknown dataset '{name}'; known: {', '.join(specs)}")
    return specs[name]


def training_defaults(name: str, data_dir: Path | str | None = None) -> TrainingDefaults:
    """Registered dataset -> datasets.toml; else prepared metadata's "training"; else L 50 / 0.4."""
    specs = _specs()
    if name in specs:
        t = specs[name].training
        return TrainingDefaults(max_len=t.max_len, dropout=t.dropout)
    if data_dir is not None:
        meta = Path(data_dir) / name / "meta.json"
        if meta.exists():
            try:
                t = json.loads(meta.read_text()).get("training") or {}
                if "max_len" in t and "dropout" in t:
                    return TrainingDefaults(max_len=int(t["max_len"]),
                                            dropout=float(t["dropout"]), source=str(meta))
            except (OSError, ValueError, TypeError, AttributeError):
                # only imports reach here (registered datasets returned above); the record of
                # the imported file is what is corrupt, so the user names it again
                raise MatrrecError(f"{meta} is corrupt; run `matrrec import {name} --from-file "
                                   "PATH --format FORMAT` with the original file to rebuild "
                                   "it") from None
    return GENERIC_DEFAULTS
