"""GPU checks of the native Mamba block, driven by bench/gpu_check.sh (also runs on a CPU).

  parity  our block vs mamba_ssm's own Mamba (use_fast_path=False, scan = its selective_scan_ref,
          imported from the sdist source with stub kernels): strict state_dict load both ways,
          outputs and gradients at L 50 and L 200, native and MaTrRec ("faithful") init.
  time    forward+backward of our block and of a causal 1-head attention block, paper shapes and
          the full ML-1M batch 2048 x 200, with peak memory.
  fused   same timings for mamba_ssm's fused kernels (backend "cuda"), when they were built.

Example: python bench/gpu_mamba.py parity --src .gpu/src/mamba_ssm-2.2.2 --device cpu --out p.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mamba import AttentionBlock  # the same baseline block as the CPU bench

from matrrec_cli.models.mamba import Mamba

SHAPES = [(256, 50), (64, 200), (2048, 200)]  # paper batches at L 50 / L 200; ML-1M batch


def faithful_init(m: nn.Module) -> None:
    """MaTrRec's RecBole init over the Mamba block: Linear N(0, 0.02), zero biases (protocol §6)."""
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, std=0.02)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


def compare(ref: nn.Module, ours: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Max abs and relative differences of output, input grad and every parameter grad."""
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outs = [ref(xs[0]), ours(xs[1])]
    g = torch.randn_like(outs[0])
    for o in outs:
        o.backward(g)
    pairs = {"out": (outs[0], outs[1]), "grad_x": (xs[0].grad, xs[1].grad)}
    for (name, p_ref), (_, p_ours) in zip(ref.named_parameters(), ours.named_parameters(),
                                          strict=True):
        pairs[f"grad_{name}"] = (p_ref.grad, p_ours.grad)
    res = {}
    for k, (a, b) in pairs.items():
        err = (a.double() - b.double()).abs().max().item()
        res[k] = {"max_abs": err, "rel": err / max(a.double().abs().max().item(), 1e-30)}
    return res


def parity(args: argparse.Namespace) -> dict:
    import mamba_ssm_shim

    mamba_ssm_shim.install(args.src, stub_kernels=True)
    simple = mamba_ssm_shim.mamba_simple_with_ref_scan()
    dev = torch.device(args.device)
    out: dict = {"src": str(args.src), "device": str(dev), "cases": {}}
    for init in ("native", "faithful"):
        for L in (50, 200):
            torch.manual_seed(0)
            ref = simple.Mamba(d_model=64, d_state=32, d_conv=4, expand=2, use_fast_path=False)
            ref = ref.to(dev)
            if init == "faithful":
                faithful_init(ref)
            ours = Mamba(d_model=64, d_state=32, d_conv=4, expand=2, backend="torch").to(dev)
            ours.load_state_dict(ref.state_dict(), strict=True)
            ref.load_state_dict(ours.state_dict(), strict=True)  # both directions
            x = torch.randn(8, L, 64, device=dev)
            case = compare(ref, ours, x)
            worst = max(v["rel"] for v in case.values())
            out["cases"][f"{init}_L{L}_fp32"] = {"worst_rel": worst, "ok": worst < 1e-4, **case}
            print(f"parity {init} L{L} fp32: worst rel {worst:.2e}", flush=True)
    out["ok"] = all(c["ok"] for c in out["cases"].values())
    return out


def time_block(block: nn.Module, shape: tuple[int, int], dev: torch.device, reps: int) -> dict:
    x = torch.randn(*shape, 64, device=dev, requires_grad=True)

    def step() -> None:
        block(x).sum().backward()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(3):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    res = {"median_ms": 1e3 * statistics.median(times), "reps": reps}
    if dev.type == "cuda":
        res["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def timing(args: argparse.Namespace, backend: str) -> dict:
    dev = torch.device(args.device)
    out: dict = {"device": str(dev), "backend": backend, "shapes": {}}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    for B, L in args.shapes:
        key = f"B{B}_L{L}"
        try:
            torch.manual_seed(0)
            m = Mamba(d_model=64, d_state=32, d_conv=4, expand=2, backend=backend).to(dev)
            res = {"mamba": time_block(m, (B, L), dev, args.reps), "ran": m.last_backend}
            res["attention"] = time_block(AttentionBlock(64).to(dev), (B, L), dev, args.reps)
            res["ratio"] = res["mamba"]["median_ms"] / res["attention"]["median_ms"]
        except Exception as exc:  # record and go on: one shape failing must not lose the others
            res = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        out["shapes"][key] = res
        print(f"time {backend} {key}: {json.dumps(res)[:300]}", flush=True)
    return out


def fused(args: argparse.Namespace) -> dict:
    import mamba_ssm_shim

    mamba_ssm_shim.install(args.src, stub_kernels=False, conv_src=args.conv_src)
    from matrrec_cli.models.mamba import cuda_backend_available, cuda_backend_reason

    res: dict = {"available": cuda_backend_available(), "reason": cuda_backend_reason()}
    if res["available"]:
        res["timing"] = timing(args, "cuda")
    return res


def _shapes(text: str) -> list[tuple[int, int]]:
    return [(int(b), int(n)) for b, n in (part.split("x") for part in text.split(","))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["parity", "time", "fused"])
    ap.add_argument("--src", help="extracted mamba_ssm sdist (parity, fused)")
    ap.add_argument("--conv-src", help="extracted causal_conv1d sdist, built in place (fused)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--shapes", type=_shapes, default=SHAPES, help="e.g. 256x50,64x200")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.mode == "parity":
        res = parity(args)
    elif args.mode == "time":
        res = timing(args, "torch")
    else:
        res = fused(args)
    res["torch"] = torch.__version__
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
