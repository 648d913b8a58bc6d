"""Our pipeline vs the peer (RecBole 1.2.1) on the same machine, data and work (issue 7).

Runs, in one invocation, on ml-100k:
  * the peer's SASRec (2 layers, 2 heads, L as given; ../shared/peers/recbole/run.sh sasrec_l2h2)
    bounded by --peer-seconds (RecBole stops after the first epoch ending past it), giving its
    seconds per training epoch, per full-sort validation, its peak RSS and its best valid
    NDCG@10 with the time it took to reach it;
  * ours, same model and settings (`--preset recbole`: RecBole's SASRec defaults, prefix samples,
    batch 2048, full-sort over all users), timed by `matrrec profile`'s worker (one full epoch,
    full test-set ranking, peak RSS of a fresh process);
  * ours with `--objective all` trained until its valid NDCG@10 reaches the peer's best: the
    time-to-quality ratio of goal (c).
and prints every comparison as a ratio. Without the peer's environment (run.sh setup) the peer
part is skipped with a message. The Mamba models cannot run in the peer on a CPU; for them our
own numbers come from `matrrec profile --dataset ml-100k --models matrrec,mamba4rec`.

Example: python bench/bench_vs_recbole.py --max-len 200 --peer-seconds 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER = REPO.parent / "shared" / "peers" / "recbole"
sys.path.insert(0, str(REPO))


def peer_run(max_len: int, seconds: float, work: Path) -> dict | None:
    venv = Path(os.environ.get("PEER_VENV", work / "venv"))
    if not (PEER / "run.sh").exists() or not (venv / "bin" / "python").exists():
        print(f"peer skipped: no RecBole environment (run {PEER / 'run.sh'} setup)")
        return None
    env = {**os.environ, "MAX_TRAIN_SECONDS": str(seconds),
           "MAX_ITEM_LIST_LENGTH": str(max_len), "PEER_WORK": str(work)}
    t0 = time.perf_counter()
    subprocess.run(["bash", str(PEER / "run.sh"), "sasrec_l2h2"], env=env, check=False)
    wall = time.perf_counter() - t0
    out = work / "results" / "sasrec_l2h2.json"
    if not out.exists():
        print(f"peer failed: see {work / 'logs' / 'sasrec_l2h2.log'}")
        return None
    res = json.loads(out.read_text())
    res["wall_seconds"] = wall
    return res


def ours_profile(max_len: int, data_dir: Path, sets: tuple[str, ...] = (),
                 max_batches: int | None = None) -> dict:
    from matrrec_cli.experiments.profile import run_cell

    return run_cell({"dataset": "ml-100k", "model": "sasrec", "max_len": max_len,
                     "synthetic": False, "device": "cpu", "data_dir": str(data_dir),
                     "repeats": 1, "warmup": 1, "max_batches": max_batches, "preset": "recbole",
                     "sets": sets})


def ours_time_to(target: float, max_len: int, data_dir: Path, epochs: int,
                 sets: tuple[str, ...] = ()) -> dict:
    """Train SASRec (recbole preset, objective all) and find when valid NDCG@10 >= target."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "matrrec_cli", "train", "--dataset", "ml-100k",
               "--model", "sasrec", "--preset", "recbole", "--objective", "all",
               "--max-len", str(max_len), "--epochs", str(epochs), "--device", "cpu",
               "--data-dir", str(data_dir), "--results-dir", tmp, "--json"]
        for pair in sets:
            cmd += ["--set", pair]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"our training failed: {proc.stderr.strip().splitlines()[-1:]}")
        run = Path(json.loads(proc.stdout)["run_dir"])
        history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    elapsed = 0.0
    for h in history:
        elapsed += h["seconds"]
        if h["valid"]["ndcg@10"] >= target:
            return {"reached": True, "epoch": h["epoch"], "seconds": elapsed,
                    "valid_ndcg@10": h["valid"]["ndcg@10"]}
    return {"reached": False, "epoch": len(history), "seconds": elapsed,
            "valid_ndcg@10": max(h["valid"]["ndcg@10"] for h in history)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--peer-seconds", type=float, default=1.0,
                    help="bound on the peer's training (it finishes the epoch in progress)")
    ap.add_argument("--peer-work", type=Path, default=Path(os.environ.get(
        "PEER_WORK", Path.home() / ".cache" / "matrrec-peer-recbole")))
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--data-dir", type=Path, default=REPO / "data")
    ap.add_argument("--our-epochs", type=int, default=60,
                    help="cap for the time-to-quality run of ours")
    ap.add_argument("--speed-set", action="append", default=[], metavar="KEY=VALUE",
                    help="also time ours with this speed option (repeatable), e.g. "
                         "readout_only=true; printed beside the default, same invocation")
    ap.add_argument("--time-set", action="append", default=[], metavar="KEY=VALUE",
                    help="settings of the time-to-quality run of ours (repeatable), e.g. "
                         "batch_size=256")
    ap.add_argument("--target", type=float, default=None,
                    help="time ours to this valid NDCG@10 without running the peer (the "
                         "peer's best from an earlier invocation)")
    ap.add_argument("--max-batches", type=int, default=None,
                    help="time only this many training batches of ours, scaled to the epoch")
    args = ap.parse_args()

    if args.target is not None:  # only goal (c)'s half that is ours
        reach = ours_time_to(args.target, args.max_len, args.data_dir, args.our_epochs,
                             tuple(args.time_set))
        print(f"ours (objective all, {' '.join(args.time_set) or 'defaults'}): valid NDCG@10 "
              f"{'reached' if reach['reached'] else 'did NOT reach'} {args.target} at epoch "
              f"{reach['epoch']}, {reach['seconds']:.1f} s")
        return
    peer = None if args.skip_peer else peer_run(args.max_len, args.peer_seconds, args.peer_work)
    ours = ours_profile(args.max_len, args.data_dir, max_batches=args.max_batches)
    if args.speed_set:
        fast = ours_profile(args.max_len, args.data_dir, tuple(args.speed_set), args.max_batches)
        print(f"ours with {' '.join(args.speed_set)} vs ours default: training epoch "
              f"{ours['train_s_per_epoch'] / fast['train_s_per_epoch']:.2f}x, full-sort "
              f"{ours['inference_s'] / fast['inference_s']:.2f}x, peak RSS "
              f"{fast['memory_gb']:.2f} vs {ours['memory_gb']:.2f} GiB")
    print(f"\nSASRec (2 layers, 2 heads, RecBole defaults), ml-100k, L {args.max_len}, prefix "
          f"samples, batch 2048, CPU, {ours['threads']} threads")
    print(f"ours: {ours['n_train_rows']} train rows, {ours['train_s_per_epoch']:.1f} s/epoch, "
          f"full-sort of {ours['n_test_users']} users {ours['inference_s']:.2f} s, "
          f"peak RSS {ours['memory_gb']:.2f} GiB")
    if peer is None:
        return
    p_train = peer["mean_train_epoch_seconds"]
    p_eval = peer["mean_valid_epoch_seconds"]
    print(f"peer: {peer['train_info']['train_samples_per_epoch']} train rows, {p_train:.1f} "
          f"s/epoch, full-sort valid {p_eval:.2f} s, test {peer['test_eval_seconds']:.2f} s, "
          f"peak RSS {peer['peak_rss_mb_self'] / 1024:.2f} GiB, {peer['epochs_run']} epochs")
    print(f"(a) training epoch: peer / ours = {p_train / ours['train_s_per_epoch']:.1f}x")
    print(f"(b) full-sort evaluation: peer / ours = {p_eval / ours['inference_s']:.1f}x")
    if args.speed_set:
        print(f"    with {' '.join(args.speed_set)}: (a) "
              f"{p_train / fast['train_s_per_epoch']:.1f}x, (b) "
              f"{p_eval / fast['inference_s']:.1f}x")
    print(f"    peak memory: peer / ours = "
          f"{peer['peak_rss_mb_self'] / 1024 / ours['memory_gb']:.2f}x")
    best = max(peer["valid_curve"])
    k = peer["valid_curve"].index(best)
    peer_time = sum(peer["train_epoch_seconds"][:k + 1]) + sum(peer["valid_epoch_seconds"][:k + 1])
    reach = ours_time_to(round(best, 4), args.max_len, args.data_dir, args.our_epochs,
                         tuple(args.time_set))
    word = "reached" if reach["reached"] else "did NOT reach"
    print(f"(c) peer's best valid NDCG@10 {best:.4f} after {k + 1} epoch(s), {peer_time:.0f} s; "
          f"ours (objective all) {word} it at epoch {reach['epoch']}, {reach['seconds']:.1f} s: "
          f"{peer_time / reach['seconds']:.1f}x")


if __name__ == "__main__":
    main()
