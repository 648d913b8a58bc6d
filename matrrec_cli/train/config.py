"""The resolved training configuration, with where every value came from.

Precedence (lowest to highest): built-in default (RecBole's, protocol §3/§5) < datasets.toml (the
paper's per-dataset max_len and dropout) < preset < command line (`--epochs`, ..., `--set k=v`).

Presets:
* paper   — the released MaTrRec yaml applied to the chosen model (hidden 64, 1 layer, 1 head,
            the dataset's dropout; `paper_overrides`). The faithful default.
* recbole — the model's own RecBole 1.2.1 defaults (no yaml override; protocol §10 leaves open
            which one the paper's baselines used). max_len still comes from datasets.toml.

A config hash over the semantic keys (not device, paths or eval batch size, which cannot change a
number) names the configuration for `--resume` and for grouping seeds in reports.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.paths import DEFAULT_DATA_DIR, DEFAULT_RESULTS_DIR

DEFAULT = "default"
CLI = "command line"
PRESET_PAPER = "preset paper"
DEFAULT_MODEL = "matrrec"

# A history longer than this is no sequential recommendation data set's (and L x batch x hidden
# would not fit in memory); the bound turns a typo into an error instead of a MemoryError.
MAX_LEN_LIMIT = 65536
TAG_RE = re.compile(r"^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _at_least(n: int) -> Callable[[Any], str | None]:
    return lambda v: None if int(v) >= n else f"must be at least {n}"


def _finite(*, above: float | None = None, at_least: float | None = None
            ) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        x = float(v)
        if not math.isfinite(x) or (above is not None and x <= above) \
                or (at_least is not None and x < at_least):
            bound = f"above {above:g}" if above is not None else f">= {at_least:g}"
            return f"must be a finite number {bound}"
        return None
    return check


def knob(default: Any, help: str, *, settable: bool = True, departs: bool = True,
         semantic: bool = True, late: bool = False,
         check: Callable[[Any], str | None] | None = None) -> Any:
    """A trainer setting, declared once: its default (RecBole's, protocol §3/§5), its help, whether
    `--set` takes it (else it has its own option), whether changing it departs from the protocol
    (Table 2 prefers runs that do not), whether it can change a number (else it stays out of the
    config hash), whether it came after the first recorded runs (then it is left out of the hash
    at its default, so older records keep their identity), and the check of its value."""
    return dataclasses.field(default=default, metadata={
        "help": help, "settable": settable, "departs": departs, "semantic": semantic,
        "late": late, "check": check})


# loss=sampled's negative distributions (models/sampled_loss.SampledSoftmax.build)
SAMPLERS = ("uniform", "popularity")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    dataset: str
    model: str
    dropout: float | None  # None: the model's own default (preset recbole without --dropout)
    model_config: dict[str, Any]  # the model's full resolved Config
    sources: dict[str, str]  # key (model keys as "model.<key>") -> where its value came from
    # --- trainer knobs (--set KEY=VALUE where settable) ------------------------------------------
    preset: str = knob("paper", "paper (the released yaml) or recbole (model defaults)",
                       settable=False)
    objective: str = knob("prefix", "prefix (RecBole's one sample per prefix, faithful) or all",
                          settable=False)
    seed: int = knob(2020, "RecBole's seed", settable=False, departs=False,
                     check=lambda v: None if 0 <= int(v) < 2**32 else "must be in [0, 2^32)")
    epochs: int = knob(300, "upper bound; early stopping usually ends sooner", settable=False,
                       departs=False, check=_at_least(1))
    batch_size: int = knob(2048, "train_batch_size", check=_at_least(1))
    eval_batch_size: int = knob(4096, "eval_batch_size; cannot change a metric (tested)",
                                departs=False, semantic=False, check=_at_least(1))
    lr: float = knob(1e-3, "Adam's learning rate (no schedule, no clipping)",
                     check=_finite(above=0))
    stopping_step: int = knob(10, "stop once more than this many evaluations in a row fail to "
                                  "improve", check=_at_least(0))
    mask_history: bool = knob(False, "mask the items a user saw when ranking (RecBole does not "
                                     "for sequential models)")
    max_len: int = knob(50, "history length L; used only when datasets.toml has no entry",
                        settable=False, check=lambda v: None if 1 <= int(v) <= MAX_LEN_LIMIT
                        else f"must be in [1, {MAX_LEN_LIMIT}]")
    weight_decay: float = knob(0.0, "Adam's L2 term (RecBole's weight_decay); 0 in every "
                                    "released config", late=True, check=_finite(at_least=0))
    tag: str = knob("", "a name for a recipe beyond the paper (e.g. tuned): its own column in "
                        "reports", departs=False, late=True,
                    check=lambda v: None if TAG_RE.match(str(v)) else
                    "must be letters, digits, '.', '_' or '-' (at most 64; it names files)")
    # speed option: batches of similar history length, trimmed to their longest (see
    # samples.epoch_batches); another batch composition, so another random stream
    bucket_by_length: bool = knob(False, "batches of similar history length, trimmed (speed)",
                                  late=True)
    # Klenitskiy et al., RecSys 2024: how much of a score comes from the order of histories
    shuffle_history: bool = knob(False, "the shuffle test: each user's history in a random order "
                                        "drawn from the seed (targets unchanged)", late=True)
    # under leave-one-out the test history ends with the valid item, which count models count
    # at test time and an early-stopped network never trained on (docs/measurements.md)
    refit: bool = knob(False, "after early stopping, train again from the seed on the train and "
                              "valid targets for the best epoch count; the test uses those "
                              "weights", late=True)
    # large catalogs: the training loss over the target and sampled items (models/sampled_loss)
    loss: str = knob("full", "full: cross-entropy over every item (the protocol); sampled: over "
                             "the target and `negatives` items drawn per batch, logQ-corrected",
                     late=True, check=lambda v: None if v in ("full", "sampled") else
                     "must be full or sampled")
    negatives: int = knob(256, "with loss=sampled: items drawn per batch", late=True,
                          check=_at_least(1))
    sampler: str = knob("uniform", "with loss=sampled: uniform, or popularity (training counts)",
                        late=True, check=lambda v: None if v in SAMPLERS else
                        f"must be one of {', '.join(SAMPLERS)}")
    # --- where it runs: cannot change a number -----------------------------------------------
    device: str = dataclasses.field(default="auto", metadata={"semantic": False})
    data_dir: str = dataclasses.field(default=DEFAULT_DATA_DIR, metadata={"semantic": False})
    results_dir: str = dataclasses.field(default=DEFAULT_RESULTS_DIR, metadata={"semantic": False})

    def semantic(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in (*NON_SEMANTIC, "sources"):
            d.pop(k)
        return comparable(d)

    def config_hash(self) -> str:
        blob = json.dumps(self.semantic(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "config_hash": self.config_hash()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


KNOBS = {f.name: f for f in dataclasses.fields(TrainConfig) if "help" in f.metadata}
TRAINER_DEFAULTS: dict[str, Any] = {name: f.default for name, f in KNOBS.items()}
SETTABLE = tuple(name for name, f in KNOBS.items() if f.metadata["settable"])
# Knobs added after results were first recorded: at these values they are left out of the hash
# and of report grouping, so older run records still name the same configuration.
LATE_DEFAULTS: dict[str, Any] = {n: f.default for n, f in KNOBS.items() if f.metadata["late"]}
LATE_MODEL_DEFAULTS: dict[str, Any] = {"skip_padding": False, "readout_only": False,
                                       "scan_impl": "auto"}
# Fields that cannot change a number; left out of the config hash.
NON_SEMANTIC = tuple(f.name for f in dataclasses.fields(TrainConfig)
                     if f.metadata.get("semantic") is False)
# Trainer keys whose change does not depart from the protocol (Table 2's run choice).
NEUTRAL = tuple(name for name, f in KNOBS.items() if not f.metadata["departs"])


def flat(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config record (TrainConfig.to_dict or a run's config.json) as one level of keys, the
    model's settings as `model.<key>`: the keys `sources` uses."""
    out = {k: v for k, v in cfg.items() if k not in ("model_config", "sources", "config_hash")}
    out.update({f"model.{k}": v for k, v in cfg.get("model_config", {}).items()})
    return out


def settable_help() -> str:
    """The `--set` trainer keys with their defaults, for help and error messages."""
    return "; ".join(f"{n} ({TRAINER_DEFAULTS[n]!r}: {KNOBS[n].metadata['help']})"
                     for n in SETTABLE)


def comparable(d: dict[str, Any]) -> dict[str, Any]:
    """A stored or resolved config without the late keys that sit at their defaults."""
    out = {k: v for k, v in d.items() if not (k in LATE_DEFAULTS and v == LATE_DEFAULTS[k])}
    if isinstance(out.get("model_config"), dict):
        out["model_config"] = {k: v for k, v in out["model_config"].items()
                               if not (k in LATE_MODEL_DEFAULTS and v == LATE_MODEL_DEFAULTS[k])}
    return out


def _coerce(key: str, raw: str, default: Any, where: str | None = None) -> Any:
    """Parse a `--set` value (or a config file's, `where` naming it) to the type of the key's
    default."""
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise UsageError(
            f"{where or '--set'} {key}={raw}: expected {_a(default)} like "
            f"{default!r}") from None
    return raw


def _a(default: Any) -> str:
    """'an int', 'a float', 'a bool', 'a str': the type of a key's default, for messages."""
    name = type(default).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


# The options a command gives a run directly (each its own flag); the rest is --set.
OWN_FLAGS = ("seed", "epochs", "max_len", "dropout", "objective", "preset")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What one run is asked for, as it travels from a command (or an experiment, or a Ray
    worker) down to `resolve`: the values someone gave, None where nothing was given, so that
    datasets.toml, the preset or the built-in default decides. `sources` names where a given
    value came from, by option or --set key (`ablate: Remove FFN`, `sweep dropout`, ...); a key
    not listed came from the command line."""

    dataset: str
    model: str = DEFAULT_MODEL
    seed: int | None = None
    epochs: int | None = None
    max_len: int | None = None
    dropout: float | None = None
    objective: str | None = None
    preset: str | None = None
    sets: tuple[str, ...] = ()  # "key=value" for a model or trainer setting, in order
    device: str = "auto"
    data_dir: str = DEFAULT_DATA_DIR
    results_dir: str = DEFAULT_RESULTS_DIR
    sources: dict[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def given_by(self, source: str, *, sets: tuple[str, ...] | list[str] = (),
                 **values: Any) -> RunOptions:
        """A copy with `values` and more `sets` that `source` gave (later sets win)."""
        marks = dict.fromkeys(values, source)
        marks.update(dict.fromkeys((p.partition("=")[0].strip() for p in sets), source))
        return dataclasses.replace(self, **values, sets=(*self.sets, *sets),
                                   sources={**self.sources, **marks})

    def source(self, key: str) -> str:
        return self.sources.get(key, CLI)


CONFIG_FILE = "config file "  # the source of a value read from --config FILE


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A run's settings from a TOML file (`--config run.toml`), as keyword arguments of
    RunOptions: top-level `dataset` and `model`; `[trainer]` the trainer's own flags (epochs,
    max_len, dropout, objective, preset, seed) and its --set keys; `[model_config]` the model's
    settings (as in a run's config.json). Values are checked by the same typed schema as
    `--set` (in `resolve`, whose errors name this file); anything else fails here."""
    import tomllib

    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"--config {path}: not a readable TOML file ({exc})") from None
    source = f"{CONFIG_FILE}{path}"
    out: dict[str, Any] = {"sources": {}}
    sets: list[str] = []
    for key, value in doc.items():
        if key in ("dataset", "model"):
            if not isinstance(value, str):
                raise UsageError(f"{path}: {key} must be a name in quotes, not {value!r}")
            out[key], out["sources"][key] = value, source
        elif key not in ("trainer", "model_config") or not isinstance(value, dict):
            raise UsageError(f"{path}: unknown key or section {key!r}; a run file has dataset, "
                             "model, [trainer] and [model_config]")
    for section in ("trainer", "model_config"):
        for key, value in doc.get(section, {}).items():
            if isinstance(value, (dict, list)):
                raise UsageError(f"{path}: [{section}] {key} = {value!r}: expected one value")
            if section == "trainer" and key in OWN_FLAGS:
                default = 0.0 if key == "dropout" else TRAINER_DEFAULTS[key]
                if isinstance(value, bool) or not isinstance(value, (type(default), int)):
                    raise UsageError(f"{path}: [trainer] {key} = {value!r}: expected "
                                     f"{_a(default)} like {default!r}")
                out[key] = float(value) if isinstance(default, float) else value
            elif section == "model_config" and key in SETTABLE:
                raise UsageError(f"{path}: {key} is a trainer setting; put it under [trainer]")
            elif section == "trainer" and key not in SETTABLE:
                raise UsageError(f"{path}: [trainer] {key}: not a trainer setting (those are "
                                 f"{', '.join((*OWN_FLAGS, *SETTABLE))}); a model's settings "
                                 "go under [model_config]")
            else:
                sets.append(f"{key}={toml_text(value)}")
            out["sources"][key] = source
    out["sets"] = tuple(sets)
    return out


def toml_text(value: Any) -> str:
    """A TOML value as the text `--set` takes (booleans as true/false)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def is_given(source: str | None) -> bool:
    """Whether a recorded source is someone's choice (the command line, a run file, an
    experiment's variant or candidate) rather than a default the toolkit derived (built-in,
    datasets.toml or an import's meta.json, the paper preset, an environment variable)."""
    if not source:
        return False
    derived = source in (DEFAULT, "datasets.toml", PRESET_PAPER) or source.startswith("$")
    return not (derived or source.endswith("meta.json"))


def dataset_defaults(name: str, data_dir: str, *, prepared: bool = True) -> Any:
    """The paper's per-dataset settings (.max_len, .dropout, .source): datasets.toml, else an
    import's meta.json. With `prepared`, an unprepared or unknown dataset fails here, before any
    configuration is shown or anything is written."""
    from matrrec_cli.data.prepared import require_prepared
    from matrrec_cli.data.registry import training_defaults

    if prepared:
        require_prepared(name, data_dir)
    return training_defaults(name, data_dir)


def preset_overrides(model: str, preset: str, dropout: float | None
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model settings the preset sets, and those the dropout option sets (over the
    preset's), before any --set: with the model's own defaults, the configuration nobody chose."""
    from matrrec_cli.models import get_model_class

    cls = get_model_class(model)
    preset_values = (cls.paper_overrides(dropout=dropout if dropout is not None else 0.0)
                     if preset == "paper" else {})
    return preset_values, (cls.dropout_overrides(dropout) if dropout is not None else {})


@functools.lru_cache(maxsize=256)  # asked once per given setting of every run a report reads
def baseline_model_config(model: str, preset: str, dropout: float | None
                          ) -> Mapping[str, Any]:
    """The model's settings as the preset and the dropout option make them, without any --set
    (read-only: the one cached copy is shared)."""
    from matrrec_cli.models import make_config

    preset_values, by_dropout = preset_overrides(model, preset, dropout)
    return MappingProxyType({**dataclasses.asdict(make_config(model)), **preset_values,
                             **by_dropout})


def given_differs(cfg: dict[str, Any], key: str) -> bool:
    """Whether a recorded run's `key` (a trainer key, or `model.<key>`) has another value than
    the run would have had without any --set: a --set of the value it has anyway (tune's
    faithful trial passes every default explicitly) departs from nothing. The one account of
    how a run departs from the protocol (experiments.table2.departures) asks this."""
    if not key.startswith("model."):
        return cfg.get(key) != TRAINER_DEFAULTS.get(key)
    name = key.removeprefix("model.")
    try:
        base = baseline_model_config(cfg["model"], cfg.get("preset", "paper"), cfg.get("dropout"))
    except MatrrecError:  # a model no longer registered: every given value counts
        return True
    return name not in base or (cfg.get("model_config") or {}).get(name) != base[name]


def resolve(opts: RunOptions, *, prepared: bool = True) -> TrainConfig:
    """Merge the built-in defaults, the dataset's defaults (looked up here), the preset and the
    given options into a TrainConfig that records where every value came from. `prepared=False`
    resolves without prepared data (profile's synthetic cells, tests)."""
    from matrrec_cli.models import get_model_class, make_config
    from matrrec_cli.train.device import resolve_device

    model, dataset = opts.model, opts.dataset
    resolve_device(opts.device)  # a bad or absent device fails before anything is printed
    ds = dataset_defaults(dataset, opts.data_dir, prepared=prepared)
    values: dict[str, Any] = dict(TRAINER_DEFAULTS)
    sources = dict.fromkeys(values, DEFAULT)
    values["max_len"], sources["max_len"] = int(ds.max_len), ds.source
    dropout, sources["dropout"] = None, DEFAULT
    for key in OWN_FLAGS:
        value = getattr(opts, key)
        if value is not None and key != "dropout":
            values[key], sources[key] = value, opts.source(key)
    if values["preset"] not in ("paper", "recbole"):
        raise UsageError(f"--preset must be paper or recbole, not {values['preset']!r}")
    if values["objective"] not in ("prefix", "all"):
        raise UsageError(f"--objective must be prefix or all, not {values['objective']!r}")
    if opts.dropout is not None:
        dropout, sources["dropout"] = float(opts.dropout), opts.source("dropout")
    elif values["preset"] == "paper":
        dropout, sources["dropout"] = float(ds.dropout), ds.source

    if dropout is not None and not 0.0 <= dropout < 1.0:  # NaN fails here too
        raise UsageError(f"--dropout must be in [0, 1), not {dropout}")
    cls = get_model_class(model)
    if values["objective"] == "all" and not cls.supports_all_objective:
        raise UsageError(f"model {model!r} cannot train with --objective all; use prefix")
    model_defaults = dataclasses.asdict(make_config(model))
    model_src = dict.fromkeys(model_defaults, DEFAULT)
    preset, by_dropout = preset_overrides(model, values["preset"], dropout)
    overrides: dict[str, Any] = {**preset, **by_dropout}
    model_src.update(dict.fromkeys(preset, PRESET_PAPER))
    model_src.update(dict.fromkeys(by_dropout, sources["dropout"]))
    for key, raw in parse_sets(list(opts.sets)).items():
        given = opts.sources.get(key, f"{CLI} --set")
        where = given.removeprefix(CONFIG_FILE) if given.startswith(CONFIG_FILE) else None
        if key in SETTABLE:
            values[key], sources[key] = _coerce(key, raw, TRAINER_DEFAULTS[key], where), given
        elif key in model_defaults:
            overrides[key] = _coerce(key, raw, model_defaults[key], where)
            model_src[key] = given
        else:
            raise UsageError(
                f"{where or '--set'} {key}: unknown key; trainer keys: {', '.join(SETTABLE)}; "
                f"model {model!r} keys: {', '.join(sorted(model_defaults))} (matrrec train "
                "--help lists the trainer keys with their defaults)"
            )
    model_config = dataclasses.asdict(make_config(model, overrides))  # validates values
    for key, f in KNOBS.items():  # each knob's own check, declared with it
        problem = f.metadata["check"](values[key]) if f.metadata["check"] else None
        if problem:
            flag = f"--set {key}" if key in SETTABLE else f"--{key.replace('_', '-')}"
            raise UsageError(f"{flag} {problem}, not {values[key]}")
    if values["bucket_by_length"] and not cls.right_padding_invariant:
        raise UsageError(f"bucket_by_length: model {model!r} reads its padding by design, so "
                         "trimming it would change the model; leave the option off")
    sources.update({f"model.{k}": v for k, v in model_src.items()})
    for k in ("dataset", "model", "device", "data_dir", "results_dir"):
        sources[k] = opts.source(k)
    return TrainConfig(
        dataset=dataset, model=model.lower(), dropout=dropout, model_config=model_config,
        sources=sources, device=opts.device, data_dir=str(opts.data_dir),
        results_dir=str(opts.results_dir),
        **{key: type(TRAINER_DEFAULTS[key])(values[key]) for key in KNOBS})
