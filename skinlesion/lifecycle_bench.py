"""``python -m skinlesion.lifecycle_bench --data DIR``: distillation and tuning measured on real data,
written to ``bench/lifecycle.json`` (the README quotes it).

Head mode throughout (frozen ImageNet backbones, embeddings cached once; the upright view only) on
one lesion-grouped split (70/15/15, seed 0); every score is on the test split, which no model trained
or selected on:

1. teacher: EfficientNet-Lite2 + metadata, registered under ``--work``;
2. student alone: EfficientNet-Lite0 + metadata, the same recipe;
3. distilled student: Lite0 taught by the Lite2 teacher at ``--alpha`` / ``--temperature``
   (registered; its card names the teacher), plus a few other (alpha, T) for context;
4. single-image CPU latency of teacher and student through the serving path (a loaded version's
   ``predict_proba`` on one image: preprocessing, network, calibration);
5. tuning: ``skinlesion.tune`` on the student's recipe (validation split), then the default and the
   best config side by side on the test split (and the best config distilled).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skinlesion import metrics
from skinlesion.bench import machine, percentiles
from skinlesion.data.images import load_image
from skinlesion.data.readers import read_dataset
from skinlesion.data.splits import split_dataset
from skinlesion.distill import Distilled, distill, register_student
from skinlesion.register import register
from skinlesion.registry import ModelVersion, load_version
from skinlesion.schema import METADATA_FIELDS, class_index
from skinlesion.settings import Settings
from skinlesion.train import FitResult, TrainConfig, fit, training_summary
from skinlesion.tune import tune

SPLIT_SEED = 0
#: The recipe of every model here (only the backbone and the searched fields change).
HEAD = TrainConfig(mode="head", epochs=30, patience=8, train_views=("identity",),
                   tta=("identity",))
TEACHER = HEAD.model_copy(update={"backbone": "efficientnet_lite2"})
STUDENT = HEAD.model_copy(update={"backbone": "efficientnet_lite0"})
#: Other (alpha, T) pairs reported for context (never used to pick the headline).
GRID = ((0.5, 2.0), (0.9, 4.0))


def test_scores(test: pd.DataFrame, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """Malignant-vs-benign AUROC, balanced multiclass accuracy, and sensitivity / specificity at
    the model's own threshold, on the test rows."""
    y = np.array([class_index(d) for d in test["diagnosis"]])
    s = metrics.summary(y, probs, threshold=threshold)
    return {"auroc": s["auroc"], "balanced_accuracy": s["balanced_accuracy"],
            "sensitivity": s["recall"], "specificity": s["specificity"], "n": s["n"]}


def _val_scores(result: FitResult) -> dict[str, float]:
    best = result.history[result.best_epoch - 1]
    return {"auroc": best["val_auroc"], "balanced_accuracy": best["val_balanced_accuracy"],
            "best_epoch": result.best_epoch}


def _summary(result: FitResult, test: pd.DataFrame, seconds: float) -> dict:
    return {"config": result.config.model_dump(mode="json"), "val": _val_scores(result),
            "test": test_scores(test, result.predict_proba(test), result.threshold),
            "fit_s": seconds}


def single_image_latency(version: ModelVersion, rows: pd.DataFrame, *, runs: int = 50,
                         warmup: int = 5) -> dict[str, float]:
    """Milliseconds per single-image answer (``classifier.predict_proba`` on one image and its
    metadata row), cycling through ``rows``' images (decoded beforehand)."""
    images = [load_image(p) for p in rows["path"]]
    meta = rows.loc[:, list(METADATA_FIELDS)].reset_index(drop=True)
    times = []
    for k in range(warmup + runs):
        i = k % len(images)
        start = time.perf_counter()
        version.classifier.predict_proba([images[i]], meta.iloc[[i]])
        if k >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return percentiles(times)


def _timed_fit(df: pd.DataFrame, split: pd.Series, config: TrainConfig, cache_dir: Path,
               progress: bool) -> tuple[FitResult, float]:
    start = time.perf_counter()
    result = fit(df, split, config, cache_dir, progress=progress)
    return result, time.perf_counter() - start


def _timed_distill(df: pd.DataFrame, split: pd.Series, teacher: ModelVersion, config: TrainConfig,
                   cache_dir: Path, alpha: float, temperature: float,
                   progress: bool) -> tuple[Distilled, float]:
    start = time.perf_counter()
    taught = distill(df, split, [teacher], config, cache_dir, alpha=alpha, temperature=temperature,
                     progress=progress)
    return taught, time.perf_counter() - start


def run(data: Path, out: Path, work: Path, cache_dir: Path, *, trials: int, timeout: float,
        alpha: float, temperature: float, latency_runs: int, progress: bool = True) -> dict:
    """Every stage above; the results are rewritten to ``out`` after each stage."""
    df = read_dataset(data)
    split = split_dataset(df, seed=SPLIT_SEED)
    test = df[split == "test"]
    models = work / "models"
    results: dict = {
        "command": f"python -m skinlesion.lifecycle_bench --data {data} --trials {trials} "
                   f"--timeout {timeout:g} --alpha {alpha:g} --temperature {temperature:g}",
        "data": {"path": str(data), "n_images": len(df), "split_seed": SPLIT_SEED,
                 "split_counts": {k: int(v) for k, v in split.value_counts().items()}},
        "machine": machine(), "recipe": HEAD.model_dump(mode="json"),
    }

    def save(stage: str) -> None:
        results.setdefault("stages_done", []).append(stage)
        results["load_average"] = os.getloadavg()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=float) + "\n")
        print(f"[lifecycle] {stage} done", file=sys.stderr, flush=True)

    teacher_fit, seconds = _timed_fit(df, split, TEACHER, cache_dir, progress)
    teacher_test = teacher_fit.predict_proba(test)
    card = register(models, teacher_fit.classifier, df, split, threshold=teacher_fit.threshold,
                    val_probs=teacher_fit.val_probs, test_probs=teacher_test, data_name=str(data),
                    history=teacher_fit.history, training=training_summary(teacher_fit),
                    notes="lifecycle bench teacher", progress=progress)
    teacher = load_version(card.id, models, device="cpu")
    results["teacher"] = _summary(teacher_fit, test, seconds) | {"version": card.id}
    save("teacher")

    alone, seconds = _timed_fit(df, split, STUDENT, cache_dir, progress)
    results["student_alone"] = _summary(alone, test, seconds)
    save("student_alone")

    taught, seconds = _timed_distill(df, split, teacher, STUDENT, cache_dir, alpha, temperature,
                                     progress)
    student_card = register_student(models, taught, df, split, data_name=str(data),
                                    test_probs=taught.fit.predict_proba(test), progress=progress)
    results["distilled"] = (_summary(taught.fit, test, seconds)
                            | {"version": student_card.id, **taught.info.model_dump()})
    grid = []
    for a, t in GRID:
        other, seconds = _timed_distill(df, split, teacher, STUDENT, cache_dir, a, t, progress)
        grid.append({"alpha": a, "temperature": t, **_summary(other.fit, test, seconds)})
    results["distill_grid"] = grid
    save("distilled")

    rows = test.iloc[:max(1, min(len(test), latency_runs))]
    student = load_version(student_card.id, models, device="cpu")
    results["latency_single_image_cpu"] = {
        "torch_threads": torch.get_num_threads(),
        "teacher": single_image_latency(teacher, rows, runs=latency_runs),
        "student": single_image_latency(student, rows, runs=latency_runs)}
    save("latency")

    search = tune(df, split, STUDENT, cache_dir, trials=trials, timeout=timeout, seed=SPLIT_SEED,
                  progress=progress)
    tuned, seconds = _timed_fit(df, split, search.best_config, cache_dir, progress)
    tuned_taught, taught_seconds = _timed_distill(df, split, teacher, search.best_config,
                                                  cache_dir, alpha, temperature, progress)
    results["tuning"] = {
        "metric": search.metric, "trials": len(search.trials), "pruned": search.n_pruned,
        "search_s": search.seconds, "best_trial": search.best_trial,
        "val_default": search.base_value, "val_best": search.best_value,
        "best_params": search.trials[search.best_trial].params,
        "default": results["student_alone"], "best": _summary(tuned, test, seconds),
        "best_distilled": _summary(tuned_taught.fit, test, taught_seconds),
        "trial_records": [t.model_dump() for t in search.trials]}
    save("tuning")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m skinlesion.lifecycle_bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="dataset folder (ISIC 2019 layout, e.g. ../shared/data/isic2019-ham-train)")
    parser.add_argument("--out", type=Path, default=Path("bench/lifecycle.json"))
    parser.add_argument("--work", type=Path, default=Path("data/lifecycle-bench"),
                        help="folder of the bench's own model versions (not the served models/)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="activation cache (default: settings cache_dir)")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=1800.0, help="tuning time limit, seconds")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--latency-runs", type=int, default=50)
    args = parser.parse_args(argv)
    results = run(args.data, args.out, args.work, args.cache_dir or Settings().cache_dir,
                  trials=args.trials, timeout=args.timeout, alpha=args.alpha,
                  temperature=args.temperature, latency_runs=args.latency_runs)
    for name in ("teacher", "student_alone", "distilled"):
        t = results[name]["test"]
        print(f"{name:<14} test AUROC {t['auroc']:.3f}  balanced accuracy "
              f"{t['balanced_accuracy']:.3f}")
    tuning = results["tuning"]
    print(f"tuning: default {tuning['default']['test']['auroc']:.3f} / "
          f"{tuning['default']['test']['balanced_accuracy']:.3f} -> best "
          f"{tuning['best']['test']['auroc']:.3f} / {tuning['best']['test']['balanced_accuracy']:.3f}"
          " (test AUROC / balanced accuracy)")


if __name__ == "__main__":
    main()
