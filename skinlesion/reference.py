"""The reference recipe: ``python -m skinlesion.reference --data DIR --models-dir models``.

Trains the shipped ``reference`` version end to end on the ISIC 2019 / HAM10000 subset, on CPU:

1. read the dataset and split it by lesion (70/15/15, class-stratified and stratified by images
   per lesion, seed 0), recording each split's composition;
2. fine-tune EfficientNet-Lite0 + metadata branch on cached trunk activations (see skinlesion.train),
   once per candidate recipe (:data:`CANDIDATES`);
3. choose the recipe on the validation split only (:func:`choose`), then run the calibration step
   on it (:mod:`skinlesion.recalibration`: temperature, BCTS or vector scaling and the diagnosis
   rule, chosen out of fold on validation; the threshold for 90 % validation sensitivity);
4. score the held-out test split it never saw, per image and per lesion with 95 % intervals
   clustered by lesion (and check the serving path gives the same answers);
5. run the input ablation on cached features (metadata only; image only vs image + metadata with the
   frozen ImageNet backbone and with the fine-tuned one);
6. save the version as ``models/reference`` with its card (data, licence, split composition,
   intended use and limits, metrics with intervals, both ablations) and ``results.json``, then
   print the headline numbers and the run time.

``--quick`` runs the same code on a small subset with one short epoch (a smoke test, saved under a
fresh version id, never as ``reference``). ``--recalibrate`` reruns step 3 on the shipped version
without training it; ``--refit-ood`` refits only its out-of-distribution gate
(:func:`skinlesion.recalibration.refit_ood_gate`).
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

from skinlesion import intervals, metrics, recalibration
from skinlesion.data.images import load_image
from skinlesion.data.readers import read_dataset
from skinlesion.data.splits import split_composition, split_dataset
from skinlesion.evaluate import labelled_report
from skinlesion.register import register, shown_summary
from skinlesion.schema import METADATA_FIELDS, class_index
from skinlesion.settings import Settings
from skinlesion.train import (FitResult, TrainConfig, calibration_choice, fit, raw_logits,
                              recalibrate, training_summary)

VERSION_ID = "reference"
SPLIT_SEED = 0
DATA_NAME = "ISIC 2019 training set, HAM10000 subset (8,047 dermoscopic images, 200x150)"
LICENCE = ("CC BY-NC 4.0 (HAM10000: Tschandl et al., Sci. Data 5, 180161, 2018; ISIC 2019 challenge). "
           "The licence carries over to these weights: non-commercial use, attribution required.")

#: The base recipe. Measured in the README (test metrics, ablation, run time on 2 CPU cores).
RECIPE = TrainConfig(
    backbone="efficientnet_lite0", inputs="image+metadata", mode="finetune",
    width=256, height=192, cut=11, epochs=6, lr=1e-3, backbone_lr=3e-4, weight_decay=1e-2,
    batch_size=64, dropout=0.3, class_weight="balanced", label_smoothing=0.0,
    train_views=("identity", "hflip"), tta=("identity", "hflip"),
    patience=3, seed=0, target_sensitivity=0.90, device="auto",
)
#: Candidate recipes (name -> changes to RECIPE), all trained; :func:`choose` keeps one on validation.
#: One on this machine's CPU budget; further candidates were measured apart (README, ablation).
CANDIDATES: dict[str, dict] = {"base": {}}
SELECTION_RULE = (
    "on validation only: the recipe with the highest mean of AUROC and balanced accuracy under "
    "temperature calibration; then the calibration step (skinlesion.recalibration): "
    + recalibration.SELECTION_RULE)
BOOTSTRAP = 1000
QUICK_BOOTSTRAP = 50
INTENDED_USE = (
    "Second-reader triage of dermoscopic images of a single skin lesion with the patient's age, sex "
    "and anatomical site: refer when p_malignant >= the card's threshold (chosen for 90 % "
    "sensitivity on validation). p_malignant and the class probabilities are calibrated to the "
    "population of the training data (about 19 % malignant); the shown diagnosis follows the "
    "card's diagnosis_rule. Not a diagnosis; a clinician decides.")
#: Test recall (of the shown diagnosis) below which a class is named in the card's ``weak_recall``.
WEAK_RECALL = recalibration.WEAK_RECALL
LIMITS = (
    "Population: dermoscopy from the HAM10000 sites (ViDIR Vienna, Rosendahl Queensland), as "
    "published in ISIC 2019 at 600x450 and read here at 200x150; mostly fair skin; adults. "
    "Acquisitions not covered: clinical (non-dermoscopic) photographs, smartphone images, other "
    "dermatoscopes and sites (BCN20000, MSK and other ISIC sources are not in the training data: "
    "on another acquisition the previous reference fell to AUROC 0.74), children, darker skin, "
    "mucosal, nail and acral lesions beyond the few in HAM10000, and classes outside the eight "
    f"(UNK). Weak recall: the classes in weak_recall (test recall of the shown diagnosis below "
    f"{WEAK_RECALL:g}); their "
    "answers should not be trusted alone.")

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


def _recipe_scores(y: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """What a recipe candidate is compared by: discrimination, calibration and the operating point."""
    return {"auroc": metrics.auroc(y, probs), "balanced_accuracy": metrics.balanced_accuracy(y, probs),
            "ece_15": metrics.expected_calibration_error(y, probs, n_bins=intervals.ECE_BINS),
            "sensitivity_at_specificity_80": intervals.sensitivity_at_specificity(y, probs),
            "sensitivity": metrics.recall(y, probs, threshold=threshold),
            "specificity": metrics.specificity(y, probs, threshold=threshold)}


def recipe_rows(name: str, result: FitResult, test: pd.DataFrame) -> list[dict]:
    """A fitted candidate's ablation row under temperature calibration: its validation scores (what
    :func:`choose` reads) and, for the record only, its test scores. Nothing is changed."""
    choice = calibration_choice(result, "temperature")
    val = _recipe_scores(result.val_labels, choice.probs(result.val_logits), choice.threshold)
    tst = _recipe_scores(_labels(test), choice.probs(raw_logits(result, test)), choice.threshold)
    return [{"recipe": name, "calibration": "temperature", "best_epoch": result.best_epoch,
             "temperature": choice.temperature, "threshold": choice.threshold,
             **{f"val_{k}": v for k, v in val.items()},
             **{f"test_{k}": v for k, v in tst.items()}}]


def choose(rows: list[dict]) -> str:
    """The recipe to ship, from validation scores only: the highest mean of validation AUROC and
    balanced accuracy under temperature calibration (the calibration step comes after)."""
    plain = [r for r in rows if r["calibration"] == "temperature"]
    return max(plain, key=lambda r: (r["val_auroc"] + r["val_balanced_accuracy"]) / 2)["recipe"]


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


def train_candidates(df: pd.DataFrame, split: pd.Series, base: TrainConfig, cache_dir: Path, *,
                     progress: bool) -> tuple[dict[str, FitResult], dict[str, float]]:
    """Every candidate recipe of :data:`CANDIDATES` fitted on the same split and cache, with the
    seconds each took."""
    fitted, seconds = {}, {}
    for name, changes in CANDIDATES.items():
        t = time.perf_counter()
        fitted[name] = fit(df, split, base.model_copy(update=changes), cache_dir, progress=progress)
        seconds[name] = time.perf_counter() - t
    return fitted, seconds


def calibrate(result: FitResult, df: pd.DataFrame, test: pd.DataFrame, *, n_boot: int
              ) -> tuple[FitResult, recalibration.CalibrationStep, list[dict]]:
    """The calibration step on the chosen candidate (:func:`recalibration.calibration_step` on its
    raw validation logits), folded into its network; with the ablation's test rows (record only)."""
    lesions = df.loc[result.val_index, "lesion_id"].astype(str).to_numpy()
    step = recalibration.calibration_step(result.val_logits, result.val_labels, lesions,
                                          target_sensitivity=result.config.target_sensitivity)
    calibrated = recalibrate(result, step.calibrator.method)
    ablation = recalibration.test_rows(
        result.val_logits, result.val_labels, raw_logits(calibrated, test), _labels(test),
        test["lesion_id"].astype(str).to_numpy(),
        target_sensitivity=result.config.target_sensitivity, n_boot=n_boot)
    return calibrated, step, ablation


def run(data: Path, models_dir: Path, cache_dir: Path, *, quick: bool = False,
        input_ablation: bool = True, progress: bool = True) -> dict:
    """The whole recipe; returns the results written to ``results.json``. ``input_ablation=False``
    leaves out step 5 (it changes no weight; about half the post-training time on CPU)."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    df = read_dataset(data)
    split = split_dataset(df, seed=SPLIT_SEED)
    base = RECIPE.model_copy(update=QUICK) if quick else RECIPE
    if quick:
        df, split = _subset(df, split, QUICK_IMAGES, SPLIT_SEED)
    composition = split_composition(df, split)
    test = df[split == "test"]

    t = time.perf_counter()
    fitted, fit_seconds = train_candidates(df, split, base, cache_dir, progress=progress)
    timings["fit_s"] = time.perf_counter() - t
    timings.update({f"fit_s[{name}]": v for name, v in fit_seconds.items()})
    recipes = [row for name, r in fitted.items() for row in recipe_rows(name, r, test)]
    chosen = choose(recipes)
    n_boot = QUICK_BOOTSTRAP if quick else BOOTSTRAP
    t = time.perf_counter()
    result, step, calibration_test = calibrate(fitted[chosen], df, test, n_boot=n_boot)
    mode = step.calibrator.method
    timings["calibration_s"] = time.perf_counter() - t

    t = time.perf_counter()
    test_probs = result.predict_proba(test)
    serving_diff = check_serving_path(result, test.iloc[:SERVING_CHECK], test_probs[:SERVING_CHECK])
    report = labelled_report(_labels(test), test_probs, test["lesion_id"].to_numpy(),
                             threshold=result.threshold, diagnosis=step.diagnosis, n_boot=n_boot)
    timings["test_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rows = ablation(df, split, result, cache_dir, progress=progress) if input_ablation else []
    timings["ablation_s"] = time.perf_counter() - t

    selection = {"recipe": chosen, "calibration": mode, "diagnosis_rule": step.diagnosis.rule,
                 "rule": SELECTION_RULE}
    calibration_ablation = {"validation_out_of_fold": step.rows, "test": calibration_test}
    results = {
        "version": VERSION_ID if not quick else None,
        "data": {"name": DATA_NAME, "path": str(data), "n_images": len(df),
                 "split_counts": split.value_counts().to_dict(), "split_seed": SPLIT_SEED,
                 "split_composition": composition.to_dict(orient="index"),
                 "licence": LICENCE},
        "recipe": result.config.model_dump(mode="json"),
        "selection": selection,
        "best_epoch": result.best_epoch,
        "temperature": result.temperature,
        "threshold": result.threshold,
        "test": report["summary"],
        "test_per_class_recall": report["per_class_recall"],
        "test_official": report["official"],
        "test_intervals": report["intervals"],
        "val": shown_summary(result.val_labels, result.val_probs, threshold=result.threshold,
                             diagnosis=step.diagnosis),
        **step.card_section(),
        "calibration_ablation": calibration_ablation,
        "recipe_ablation": recipes,
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
            target_sensitivity=result.config.target_sensitivity,
            notes=(f"Reference recipe (python -m skinlesion.reference): EfficientNet-Lite0 fine-tuned "
                   f"on cached trunk activations with age/sex/site metadata; recipe "
                   f"'{chosen}' and {mode} calibration chosen on the validation split, which also "
                   f"sets the threshold. Trained on the HAM10000 subset of ISIC 2019 (CC BY-NC 4.0, "
                   f"non-commercial; the licence carries over to the weights)."),
            version_id=None if quick else VERSION_ID, diagnosis=step.diagnosis,
            extra={"intended_use": INTENDED_USE, "limits": LIMITS,
                   **step.card_section(),
                   "calibration_ablation": calibration_ablation,
                   "weak_recall": sorted(c for c, v in report["per_class_recall"].items()
                                         if v < WEAK_RECALL),
                   "split_composition": results["data"]["split_composition"],
                   "selection": selection, "test_per_class_recall": report["per_class_recall"],
                   "test_official": report["official"], "test_intervals": report["intervals"],
                   "recipe_ablation": recipes, "ablation": rows},
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


def _shipped_recipe(models_dir: Path) -> str:
    card = json.loads((models_dir / VERSION_ID / "card.json").read_text())
    return card["selection"]["recipe"]


def recalibrate_shipped(data: Path, models_dir: Path, cache_dir: Path, *,
                        progress: bool = True) -> dict:
    """Step 3's calibration (and what follows from it) applied to the shipped ``reference`` without
    training it again (:func:`recalibration.recalibrate_version`); its ``results.json`` is updated
    with the new numbers (the training run's records, e.g. the recipe ablation and timings, kept).
    Returns the updated results."""
    start = time.perf_counter()
    out = recalibration.recalibrate_version(
        models_dir, VERSION_ID, read_dataset(data), cache_dir, n_boot=BOOTSTRAP, progress=progress,
        card_updates={"intended_use": INTENDED_USE, "limits": LIMITS,
                      "selection": {"recipe": _shipped_recipe(models_dir), "rule": SELECTION_RULE}})
    path = models_dir / VERSION_ID / "results.json"
    results = json.loads(path.read_text())
    card = out.card.model_dump(mode="json")
    results["recipe"] = {**results["recipe"], "calibration": out.step.calibrator.method}
    results.update({
        "selection": card["selection"], "temperature": out.step.calibrator.temperature,
        "threshold": out.step.threshold, "test": out.report["summary"],
        "test_per_class_recall": out.report["per_class_recall"],
        "test_official": out.report["official"], "test_intervals": out.report["intervals"],
        "val": card["metrics"]["val"], "calibration": card["calibration"],
        "diagnosis_rule": card["diagnosis_rule"],
        "calibration_ablation": card["calibration_ablation"], "recalibrated": card["recalibrated"],
        "serving_path_max_abs_diff": out.serving_diff,
    })
    results["timings"] = {**results.get("timings", {}),
                          "recalibrate_s": time.perf_counter() - start}
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


def measure(data: Path, cache_dir: Path, changes: dict, *, progress: bool = True) -> list[dict]:
    """One more candidate recipe (RECIPE with ``changes``) fitted on the reference split and cache,
    scored as the candidates are (:func:`recipe_rows`); nothing is registered. How a recipe outside
    :data:`CANDIDATES` is measured for the ablation."""
    df = read_dataset(data)
    split = split_dataset(df, seed=SPLIT_SEED)
    name = ", ".join(f"{k}={v}" for k, v in changes.items())
    result = fit(df, split, RECIPE.model_copy(update=changes), cache_dir, progress=progress)
    return recipe_rows(name, result, df[split == "test"])


def _print_summary(results: dict) -> None:
    test, honest = results["test"], results["test_intervals"]
    print(f"version {results['version']}: recipe '{results['selection']['recipe']}', "
          f"{results['selection']['calibration']} calibration; sensitivity {test['recall']:.3f} / "
          f"specificity {test['specificity']:.3f} at threshold {results['threshold']:.3f}")
    print(f"test, {honest['interval']}:")
    for level in ("per_image", "per_lesion"):
        n = honest["n_images"] if level == "per_image" else honest["n_lesions"]
        print(f"  {level} (n={n}): " + ", ".join(
            f"{name} {intervals.format_interval(v)}" for name, v in honest[level].items()))
    print("recipe ablation (val / test: AUROC, balanced accuracy, ECE 15 bins):")
    for row in results["recipe_ablation"]:
        print(f"  {row['recipe']:<20} {row['calibration']:<18} "
              f"{row['val_auroc']:.3f} {row['val_balanced_accuracy']:.3f} {row['val_ece_15']:.3f} / "
              f"{row['test_auroc']:.3f} {row['test_balanced_accuracy']:.3f} {row['test_ece_15']:.3f}")
    print(f"calibration {results['calibration']['method']} (T {results['temperature']:.3f}), shown "
          f"diagnosis: {results['diagnosis_rule']['rule']}; calibration ablation, validation out "
          "of fold (NLL, ECE 15 bins, mean p_malignant vs prevalence, balanced accuracy argmax / "
          "balanced rule):")
    for row in results["calibration_ablation"]["validation_out_of_fold"]:
        print(f"  {row['calibration']:<12} {row['val_oof_nll']:.3f} {row['val_oof_ece_15']:.3f} "
              f"{row['val_oof_mean_p_malignant']:.3f}/{row['val_malignant_prevalence']:.3f} "
              f"{row['val_oof_balanced_accuracy_argmax']:.3f} / "
              f"{row['val_oof_balanced_accuracy_balanced']:.3f}")
    print("calibration ablation, test (record only), per image / per lesion:")
    for row in results["calibration_ablation"]["test"]:
        for level in ("per_image", "per_lesion"):
            print(f"  {row['calibration']:<12} {level:<10} " + ", ".join(
                f"{name} {intervals.format_interval(v)}"
                for name, v in row["test_intervals"][level].items()))
    print("input ablation (test AUROC / balanced accuracy):" if results["ablation"]
          else "input ablation: not run (--no-input-ablation)")
    for row in results["ablation"]:
        print(f"  {row['inputs']:<17} {row['backbone']:<28} {row['test_auroc']:.3f} / "
              f"{row['test_balanced_accuracy']:.3f}")
    print(", ".join(f"{k} {v / 60:.1f} min" for k, v in results["timings"].items()
                    if k in ("total_s", "recalibrate_s")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m skinlesion.reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="dataset folder (ISIC 2019 layout, e.g. ../shared/data/isic2019-ham-train)")
    parser.add_argument("--models-dir", type=Path, default=None, help="models folder (default: settings)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="activation cache (default: settings cache_dir, data/cache)")
    parser.add_argument("--quick", action="store_true", help="small smoke-test run")
    parser.add_argument("--no-input-ablation", action="store_true",
                        help="leave out the input ablation (same weights, less CPU time)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="only run the calibration step on the shipped reference (no "
                        "training): calibration, diagnosis rule, threshold, card, reference "
                        "answers and results.json redone")
    parser.add_argument("--refit-ood", action="store_true",
                        help="only refit the shipped reference's OOD gate (card 'ood', its texture "
                        "sidecar and the reference answers' texture_distance); probabilities unchanged")
    parser.add_argument("--measure", type=json.loads, default=None, metavar="JSON",
                        help="only measure RECIPE with these changes (e.g. '{\"label_smoothing\": "
                        "0.1}') on the reference split: print its validation/test rows as JSON, "
                        "register nothing")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.recalibrate:
        _print_summary(recalibrate_shipped(args.data, args.models_dir or settings.models_dir,
                                           args.cache_dir or settings.cache_dir))
        return
    if args.refit_ood:
        ood = recalibration.refit_ood_gate(args.models_dir or settings.models_dir, VERSION_ID,
                                           read_dataset(args.data))
        print(json.dumps(ood.card_section()["ood"]["texture"], indent=2))
        return
    if args.measure is not None:
        rows = measure(args.data, args.cache_dir or settings.cache_dir, args.measure)
        print(json.dumps(rows, indent=2, default=float))
        return
    results = run(args.data, args.models_dir or settings.models_dir,
                  args.cache_dir or settings.cache_dir, quick=args.quick,
                  input_ablation=not args.no_input_ablation)
    _print_summary(results)


if __name__ == "__main__":
    sys.exit(main())
