"""Write a synthetic Electronics-sized 2014 5-core dump (1.7 M JSON lines with review text, ~1 GB).

Same fields and shape as reviews_Electronics_5.json.gz (protocol §1.3); user/item counts near the
real file's (192k / 63k). Usage: python bench/make_electronics_dump.py [OUT] [--lines N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np

WORDS = ["battery", "cable", "works", "great", "sound", "quality", "price", "camera", "lens",
         "charger", "screen", "fits", "perfectly", "would", "recommend", "returned", "after",
         "two", "weeks", "the", "and", "it", "is", "for", "with", "this", "not", "very", "good"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="bench/out/reviews_Electronics_5.synthetic.json.gz")
    ap.add_argument("--lines", type=int, default=1_689_188)
    ap.add_argument("--users", type=int, default=192_403)
    ap.add_argument("--items", type=int, default=63_001)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    # review bodies: a pool of texts averaging ~500 characters, reused (the parser never sees them)
    texts = [json.dumps(" ".join(rng.choice(WORDS, size=int(rng.integers(20, 160)))))
             for _ in range(4096)]
    users = rng.integers(0, args.users, args.lines)
    items = (rng.zipf(1.3, args.lines) + rng.integers(0, args.items, args.lines)) % args.items
    times = 1_000_000_000 + rng.integers(0, 5000, args.lines) * 86400
    pick = rng.integers(0, len(texts), args.lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with gzip.open(out, "wt", compresslevel=1) as f:
        for n in range(args.lines):
            f.write(f'{{"reviewerID": "A{users[n]:013X}", "asin": "B{items[n]:09d}", '
                    f'"reviewerName": "Some Name", "helpful": [0, 0], "reviewText": '
                    f'{texts[pick[n]]}, "overall": 5.0, "summary": "Nice", '
                    f'"unixReviewTime": {times[n]}, "reviewTime": "01 1, 2014"}}\n')
    print(f"wrote {out}: {args.lines} lines, {out.stat().st_size / 2**20:.0f} MiB gz "
          f"in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
