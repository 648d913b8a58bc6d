"""What the fused CPU scan's first use costs: a forward and backward of a small Mamba block with
scan_impl=kernel, in a fresh process with an empty numba cache (the compile), then again in a
fresh process with that cache (what every later run pays). Run alone for clean numbers:

    python bench/numba_compile.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

PROBE = """
import time, torch
t0 = time.perf_counter()
from matrrec_cli.models.mamba import Mamba
m = Mamba(d_model=16, d_state=4, scan_impl="kernel")
x = torch.randn(2, 6, 16, requires_grad=True)
m(x).sum().backward()
print(f"{time.perf_counter() - t0:.1f}")
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
        cold, warm = (float(subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                                           capture_output=True, text=True).stdout)
                      for _ in range(2))
    print(f"first forward+backward, empty numba cache: {cold:.1f} s; with the cache: "
          f"{warm:.1f} s (one thread)")


if __name__ == "__main__":
    main()
