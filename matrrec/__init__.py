"""MaTrRec as a library: load a trained run and ask it for recommendations.

    import matrrec
    run = matrrec.load_run("results/runs/ml-100k/matrrec/20260101-120000-abcdef123456")
    print(run.metrics["test"]["ndcg@10"])          # metrics.json; run.config is the TrainConfig
    print(run.recommend(["196", "186"], k=10))     # user, rank, item, score (original ids)
    scores = run.score([["242", "302", "377"]])    # (1, n_items), columns = run.item_ids

A thin name over matrrec_cli.api (see its docstring for which history is scored and which items
are listed), so that library users never import the CLI's package by name.
"""

from matrrec_cli import __version__
from matrrec_cli.api import Run, load_run

__all__ = ["Run", "__version__", "load_run"]
