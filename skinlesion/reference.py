"""The reference recipe: ``python -m skinlesion.reference --data DIR --models-dir models``.

Trains the shipped ``reference`` version end to end on the ISIC 2019 / HAM10000 subset, on CPU:

1. read the dataset and split it by lesion (70/15/15, class-stratified, seed 0);
2. fine-tune EfficientNet-Lite0 + metadata branch on cached trunk activations (see skinlesion.train);
3. score the held-out test split it never saw (and check the serving path gives the same answers);
4. run the input ablation on cached features (metadata only; image only vs image + metadata with the
   frozen ImageNet backbone and with the fine-tuned one);
5. save the version as ``models/reference`` with its card (data, licence, metrics, ablation) and
   ``results.json``, then print the headline numbers and the run time.

``--quick`` runs the same code on a small subset with one short epoch (a smoke test, saved under a
fresh version id, never as ``reference``).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion import metrics
from skinlesion.data.images import load_image
from skinlesion.data.readers import read_dataset
from skinlesion.data.splits import split_dataset
from skinlesion.register import register
from skinlesion.schema import METADATA_FIELDS, class_index
from skinlesion.settings import Settings
from skinlesion.train import FitResult, TrainConfig, fit, training_summary

VERSION_ID = "reference"
SPLIT_SEED = 0
DATA_NAME = "ISIC 2019 training set, HAM10000 subset (8,047 dermoscopic images, 200x150)"
LICENCE = ("CC BY-NC 4.0 (HAM10000: Tschandl et al., Sci. Data 5, 180161, 2018; ISIC 2019 challenge). "
           "The licence carries over to these weights: non-commercial use, attribution required.")

#: The fixed recipe. Measured in the README (test metrics, ablation, run time on 2 CPU cores).
RECIPE = TrainConfig(
    backbone="efficientnet_lite0", inputs="image+metadata", mode="finetune",
    width=256, height=192, cut=11, epochs=6, lr=1e-3, backbone_lr=3e-4, weight_decay=1e-2,
    batch_size=64, dropout=0.3, class_weight="balanced", label_smoothing=0.0,
    train_views=("identity", "hflip", "vflip", "rot180"),
    tta=("identity", "hflip", "vflip", "rot180"),
    patience=3, seed=0, target_sensitivity=0.90, device="auto",
)
#: Smoke-test overrides for ``--quick``.
QUICK = {"epochs": 1, "train_views": ("identity",), "tta": ("identity",), "width": 128, "height": 96}
QUICK_IMAGES = 400
#: Images whose answers through the serving path (images -> Predictor network) are compared with the
#: cached training path.
SERVING_CHECK = 16


def _subset(df: pd.DataFrame, split: pd.Series, n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """About ``n`` rows keeping every split and class (for --quick)."""
    if len(df) <= n:
        return df, split
    keep = (df.assign(split=split).groupby(["split", "diagnosis"], group_keys=False)
            .apply(lambda g: g.sample(min(len(g), max(2, round(len(g) * n / len(df)))),
                                      random_state=seed)))
    return df.loc[keep.index.sort_values()], split.loc[keep.index.sort_values()]


def _labels(df: pd.DataFrame) -> np.ndarray:
    return np.array([class_index(d) for d in df["diagnosis"]])


def _scores(df: pd.DataFrame, probs: np.ndarray) -> dict[str, float]:
    y = _labels(df)
    return {"auroc": metrics.auroc(y, probs), "balanced_accuracy": metrics.balanced_accuracy(y, probs)}


def check_serving_path(result: FitResult, df: pd.DataFrame, cached: np.ndarray,
                       atol: float = 5e-3) -> float:
    """Largest difference between the classifier's own answers on the images (what the Predictor
    serves) and the cached-activation answers used for the metrics; raises when they disagree."""
    images = [load_image(p) for p in df["path"]]
    served = result.classifier.predict_proba(images, df.loc[:, list(METADATA_FIELDS)])
    diff = float(np.abs(served - cached).max())
    if diff > atol:
        raise RuntimeError(f"serving-path probabilities differ from the cached evaluation by {diff:.4f} "
                           f"(> {atol}); preprocessing or TTA is inconsistent")
    return diff


def ablation(df: pd.DataFrame, split: pd.Series, result: FitResult, cache_dir: Path, *,
             progress: bool) -> list[dict]:
    """Which inputs matter: heads trained on cached features with the recipe's views.

    Rows: metadata only; frozen ImageNet backbone with image only / image + metadata; the fine-tuned
    backbone with its head retrained on image only, and the reference itself (image + metadata)."""
    config = result.config
    head = config.model_copy(update={"mode": "head", "epochs": 30, "patience": 8,
                                     "train_views": config.tta})
    val, test = df[split == "val"], df[split == "test"]
    finetuned = result.classifier.net.backbone
    runs = [("metadata only", "none", head.model_copy(update={"inputs": "metadata"}), None),
            ("image only", "frozen ImageNet", head.model_copy(update={"inputs": "image"}), None),
            ("image + metadata", "frozen ImageNet", head, None),
            ("image only", "fine-tuned (head retrained)",
             head.model_copy(update={"inputs": "image"}), finetuned)]
    rows = []
    for name, backbone, cfg, init in runs:
        fitted = fit(df, split, cfg, cache_dir, progress=progress, init_backbone=init)
        rows.append({"inputs": name, "backbone": backbone,
                     **{f"val_{k}": v for k, v in _scores(val, fitted.predict_proba(val)).items()},
                     **{f"test_{k}": v for k, v in _scores(test, fitted.predict_proba(test)).items()}})
    rows.append({"inputs": "image + metadata", "backbone": "fine-tuned (reference)",
                 **{f"val_{k}": v for k, v in _scores(val, result.val_probs).items()},
                 **{f"test_{k}": v for k, v in _scores(test, result.predict_proba(test)).items()}})
    return rows


def _replace_old(models_dir: Path) -> Path | None:
    """Move an existing ``reference`` version aside (restored if the new run fails)."""
    old = models_dir / VERSION_ID
    if not old.exists():
        return None
    aside = models_dir / f".{VERSION_ID}-old-{secrets.token_hex(3)}"
    old.rename(aside)
    return aside


def run(data: Path, models_dir: Path, cache_dir: Path, *, quick: bool = False,
        progress: bool = True) -> dict:
    """The whole recipe; returns the results written to ``results.json``."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    df = read_dataset(data)
    split = split_dataset(df, seed=SPLIT_SEED)
    config = RECIPE.model_copy(update=QUICK) if quick else RECIPE
    if quick:
        df, split = _subset(df, split, QUICK_IMAGES, SPLIT_SEED)

    t = time.perf_counter()
    result = fit(df, split, config, cache_dir, progress=progress)
    timings["fit_s"] = time.perf_counter() - t
    test = df[split == "test"]
    t = time.perf_counter()
    test_probs = result.predict_proba(test)
    serving_diff = check_serving_path(result, test.iloc[:SERVING_CHECK], test_probs[:SERVING_CHECK])
    timings["test_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rows = ablation(df, split, result, cache_dir, progress=progress)
    timings["ablation_s"] = time.perf_counter() - t

    y_test = _labels(test)
    test_summary = metrics.summary(y_test, test_probs, threshold=result.threshold)
    results = {
        "version": VERSION_ID if not quick else None,
        "data": {"name": DATA_NAME, "path": str(data), "n_images": len(df),
                 "split_counts": split.value_counts().to_dict(), "split_seed": SPLIT_SEED,
                 "licence": LICENCE},
        "recipe": config.model_dump(mode="json"),
        "best_epoch": result.best_epoch,
        "temperature": result.temperature,
        "threshold": result.threshold,
        "test": test_summary,
        "test_per_class_recall": dict(zip(
            metrics.per_class_metrics(y_test, test_probs)["class"],
            metrics.per_class_metrics(y_test, test_probs)["sensitivity"].astype(float))),
        "val": metrics.summary(_labels(df[split == "val"]), result.val_probs,
                               threshold=result.threshold),
        "ablation": rows,
        "serving_path_max_abs_diff": serving_diff,
        "history": result.history,
    }

    t = time.perf_counter()
    models_dir.mkdir(parents=True, exist_ok=True)
    aside = None if quick else _replace_old(models_dir)
    try:
        card = register(
            models_dir, result.classifier, df, split, threshold=result.threshold,
            val_probs=result.val_probs, test_probs=test_probs, data_name=DATA_NAME,
            licence=LICENCE, history=result.history, training=training_summary(result),
            target_sensitivity=config.target_sensitivity,
            notes=("Reference recipe (python -m skinlesion.reference): EfficientNet-Lite0 fine-tuned "
                   "on cached trunk activations with age/sex/site metadata; temperature-calibrated "
                   "and thresholded on the validation split. Trained on the HAM10000 subset of "
                   "ISIC 2019 (CC BY-NC 4.0, non-commercial; the licence carries over to the "
                   "weights)."),
            version_id=None if quick else VERSION_ID, extra={"ablation": rows},
            progress=progress)
    except BaseException:
        if aside is not None:
            aside.rename(models_dir / VERSION_ID)
        raise
    if aside is not None:
        shutil.rmtree(aside)
    timings["save_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    results["version"] = card.id
    results["timings"] = timings
    (models_dir / card.id / "results.json").write_text(
        json.dumps(results, indent=2, default=float) + "\n")
    return results


def _print_summary(results: dict) -> None:
    test = results["test"]
    print(f"version {results['version']}: test AUROC {test['auroc']:.3f}, balanced accuracy "
          f"{test['balanced_accuracy']:.3f}, sensitivity {test['recall']:.3f} / specificity "
          f"{test['specificity']:.3f} at threshold {results['threshold']:.3f} (n={test['n']})")
    print("ablation (test AUROC / balanced accuracy):")
    for row in results["ablation"]:
        print(f"  {row['inputs']:<17} {row['backbone']:<28} {row['test_auroc']:.3f} / "
              f"{row['test_balanced_accuracy']:.3f}")
    minutes = results["timings"]["total_s"] / 60
    print(f"total run time {minutes:.1f} min")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m skinlesion.reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="dataset folder (ISIC 2019 layout, e.g. ../shared/data/isic2019-ham-train)")
    parser.add_argument("--models-dir", type=Path, default=None, help="models folder (default: settings)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="activation cache (default: settings cache_dir, data/cache)")
    parser.add_argument("--quick", action="store_true", help="small smoke-test run")
    args = parser.parse_args(argv)
    settings = Settings()
    results = run(args.data, args.models_dir or settings.models_dir,
                  args.cache_dir or settings.cache_dir, quick=args.quick)
    _print_summary(results)


if __name__ == "__main__":
    sys.exit(main())
