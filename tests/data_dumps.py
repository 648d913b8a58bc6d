"""Small raw dumps in every supported format, generated from one random interaction table."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import numpy as np


def interactions(seed: int = 0, n_users: int = 30, n_items: int = 20, n: int = 600):
    """(user, item, ts) rows in 'file order'; dense enough that most rows survive a 5-core."""
    rng = np.random.default_rng(seed)
    u = rng.integers(1, n_users + 1, n)
    i = rng.integers(1, n_items + 1, n)
    t = 9.7e8 + rng.integers(0, 5000, n) * 17  # ML-like seconds with ties under float32
    return [(int(a), int(b), int(c)) for a, b, c in zip(u, i, t, strict=True)]


def ml1m_zip(rows) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "".join(f"{u}::{i}::4::{t}\n" for u, i, t in rows))
    return buf.getvalue()


def ml100k_zip(rows) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in rows))
    return buf.getvalue()


def inter(rows) -> bytes:
    head = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    return (head + "".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in rows)).encode()


def amazon_lines(rows) -> bytes:
    return "".join(json.dumps({"reviewerID": f"U{u}", "asin": f"B{i:05d}", "reviewerName": "x",
                               "helpful": [0, 0], "reviewText": "great " * 20, "overall": 5.0,
                               "summary": "ok", "unixReviewTime": t,
                               "reviewTime": "01 1, 2014"}) + "\n" for u, i, t in rows).encode()


def amazon_gz(rows) -> bytes:
    return gzip.compress(amazon_lines(rows), mtime=0)
