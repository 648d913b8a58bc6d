"""Every dataset a command can name: the registered ones and those imported into a data directory,
with whether each is prepared and the command that prepares it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matrrec_cli.data.prepared import INTERACTIONS, prepare_command
from matrrec_cli.data.preprocess import META
from matrrec_cli.data.registry import dataset_names, get_dataset, training_defaults
from matrrec_cli.errors import MatrrecError


def _meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def dataset_rows(data_dir: Path) -> list[dict[str, Any]]:
    """One row per dataset: name, kind (registered/imported), prepared, counts, default L and
    dropout, and the command that (re)prepares it."""
    if Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise MatrrecError(f"--data-dir {data_dir} is a file, not a directory")
    registered = dataset_names()
    imported = sorted(p.parent.name for p in Path(data_dir).glob(f"*/{META}")
                      if p.parent.name not in registered)
    rows = []
    for name in [*registered, *imported]:
        meta = _meta(Path(data_dir) / name / META)
        prepared = meta is not None and (Path(data_dir) / name / INTERACTIONS).exists()
        defaults = training_defaults(name, data_dir)
        rows.append({
            "name": name,
            "kind": "registered" if name in registered else "imported",
            "title": get_dataset(name).title if name in registered else "",
            "prepared": prepared,
            "users": meta.get("n_users") if prepared else None,
            "items": meta.get("n_items") if prepared else None,
            "interactions": meta.get("n_interactions") if prepared else None,
            "max_len": defaults.max_len, "dropout": defaults.dropout,
            "command": prepare_command(name, data_dir),
        })
    return rows
