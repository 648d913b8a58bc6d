"""Paper Table 1 mirror: #Users, #Items, #Inter, Avg.Len_U, Avg.Len_I, Sparsity (protocol §1.1).

Our counts are real users/items (no padding id). The paper's Amazon rows are RecBole's printed
counts (real + 1); its ML-1M row is not. Both are shown side by side, as printed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from matrrec_cli.data.prepared import load_meta
from matrrec_cli.data.registry import get_dataset
from matrrec_cli.errors import MatrrecError


def dataset_stats(name: str, data_dir: Path) -> dict:
    meta = load_meta(name, data_dir)
    u, i, n = meta["n_users"], meta["n_items"], meta["n_interactions"]
    row = {"dataset": name, "users": u, "items": i, "inter": n,
           "avg_len_u": round(n / u, 1), "avg_len_i": round(n / i, 1),
           "sparsity": round(100 * (1 - n / (u * i)), 2)}
    try:
        paper = get_dataset(name).paper
    except MatrrecError:  # imported datasets have no registry entry
        paper = None
    for key in ("users", "items", "inter", "avg_len_u", "avg_len_i", "sparsity"):
        row[f"paper_{key}"] = getattr(paper, key) if paper else None
    row["paper_padding_included"] = paper.padding_included if paper else None
    return row


def stats_table(names: list[str], data_dir: Path) -> pd.DataFrame:
    return pd.DataFrame([dataset_stats(n, data_dir) for n in names])
