"""Preprocessing at Electronics scale: wall time and peak RSS of `matrrec download --from-file`.

Goal (issue 2 item 6): <= 60 s and <= 2 GiB peak RSS on the 2-core dev machine. The prepare runs
in a child process so its peak RSS (ru_maxrss of children) is measured alone.
Usage: python bench/make_electronics_dump.py && python bench/bench_preprocess.py
"""

from __future__ import annotations

import gzip
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DUMP = Path("bench/out/reviews_Electronics_5.synthetic.json.gz")


def main() -> None:
    dump = Path(sys.argv[1]) if len(sys.argv) > 1 else DUMP
    if not dump.exists():
        sys.exit(f"{dump} missing; run python bench/make_electronics_dump.py first")
    with gzip.open(dump, "rb") as f:
        raw_bytes = sum(len(b) for b in iter(lambda: f.read(1 << 24), b""))
    with tempfile.TemporaryDirectory() as tmp:
        reg = Path(tmp) / "datasets.toml"
        reg.write_text(
            '[electronics-synth]\ntitle = "synthetic"\nkcore = { user = 5, item = 5 }\n'
            "training = { max_len = 50, dropout = 0.4 }\n[[electronics-synth.sources]]\n"
            f'kind = "url"\nurl = "http://127.0.0.1:9/x"\nfile = "{dump.name}"\n'
            f'format = "amazon-json"\nsize = {dump.stat().st_size}\n'
            f'sha256 = "{hashlib.sha256(dump.read_bytes()).hexdigest()}"\n')
        env = {**os.environ, "MATRREC_DATASETS_TOML": str(reg)}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "matrrec_cli", "download", "electronics-synth",
                        "--from-file", str(dump), "--data-dir", tmp], env=env, check=True)
        wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(f"dump {dump.stat().st_size / 2**20:.0f} MiB gz, {raw_bytes / 2**30:.2f} GiB raw; "
          f"download --from-file + prepare: {wall:.1f} s wall, peak RSS {rss:.2f} GiB "
          f"(goal <= 60 s, <= 2 GiB)")


if __name__ == "__main__":
    main()
