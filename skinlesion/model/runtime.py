"""Inference runtimes: a registered version's network exported once to ONNX Runtime or OpenVINO.

Eager torch stays the reference (and the runtime for training, CUDA and the fallback). For CPU
serving, the network over its test-time views (:class:`~skinlesion.model.neural.ViewsNet`: all views
in one batched forward, the upright view's pooled features and texture statistics beside the
averaged logits) is exported in fp32 only:

- ``onnxruntime``: traced to ONNX (``model.onnx``), run by an ONNX Runtime CPU session;
- ``openvino``: the same ONNX graph converted to OpenVINO IR (``model.xml``/``model.bin``, fp32
  weights), compiled for the CPU with fp32 inference precision.

:func:`export` writes an export into the version's folder (skinlesion.model.exports: cached under a
hash of the weights and the export settings, so it is done once) and runs the **accuracy gate** on
the version's reference images against eager: largest |Δp| at most 1e-4, no changed referral
decision or predicted class, monitoring embedding within 1e-4, texture statistics (the OOD gate's
texture check) within a relative 1e-3 (:meth:`Agreement.of`: fp32 runtimes differ from eager by about
1e-6 of the statistics' size; the check standardises each statistic by its training spread, so a
relative error of 1e-3 moves its distance by well under 1 %). An export that fails is kept as a
refusal with its reason. :func:`select_runtime` hands a classifier the runtime the ``runtime`` setting
asks for (``auto``: the fastest of the gated ones and eager torch, timed on this machine at load);
a runtime that is refused or missing leaves the version on eager torch with a
:class:`RuntimeFallbackWarning` that says why and what to run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import secrets
import shutil
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import openvino as ov
import pandas as pd
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from skinlesion.model.exports import REPORT_FILE, GateReport, export_folder
from skinlesion.model.neural import (TEXTURE_BLOCKS, InferenceEngine, NeuralClassifier, TorchEngine,
                                     batch_views)
from skinlesion.model.threads import ThreadPolicy

RUNTIMES: tuple[str, ...] = ("auto", "openvino", "onnxruntime", "torch")
#: the runtimes a version is exported to (``torch`` is eager, nothing to export)
EXPORTED_RUNTIMES: tuple[str, ...] = ("openvino", "onnxruntime")
ONNX_FILE = "model.onnx"
OPENVINO_FILE = "model.xml"
INPUT_NAMES = ("images", "metadata")
OUTPUT_NAMES = ("logits", "pooled", "texture")
#: Most view images (images x test-time views) concurrent calls are coalesced into: on the 2-core
#: development machine (measured under load from other jobs) the reference network at 256x192 cost
#: about the same per image with 2 to 8 stacked view images and 1.5 to 4 times as much per image
#: with 16 or 32 (the activations outgrow the caches), so a larger forward only makes its callers
#: wait longer.
MAX_STACKED_VIEWS = 8

log = logging.getLogger("skinlesion.runtime")


class RuntimeFallbackWarning(UserWarning):
    """A runtime was asked for but the version serves on eager torch (refused or not exported)."""


def check_runtime(name: str) -> str:
    if name not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {name!r}")
    return name


class ExportSettings(BaseModel):
    """How a version is exported, and the gate it must pass."""

    model_config = ConfigDict(frozen=True)

    opset: int = Field(18, ge=18, le=23)
    precision: Literal["fp32"] = "fp32"
    max_abs_dp: float = Field(1e-4, gt=0)
    max_abs_embedding: float = Field(1e-4, gt=0)
    #: largest |Δ| / (|eager| + 1e-3) of the texture statistics
    max_rel_texture: float = Field(1e-3, gt=0)


@dataclass(frozen=True)
class ExportTarget:
    """What an export needs to know of a version: its folder, its classifier (eager, on the CPU),
    and how its answers are decided (operating ``threshold``, boolean ``malignant`` class mask)."""

    version_id: str
    version_dir: Path
    classifier: NeuralClassifier
    threshold: float
    malignant: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.classifier, NeuralClassifier) or not self.classifier.net.uses_image:
            raise ValueError(f"version {self.version_id!r} has no image network to export; it "
                             "runs in its own code (rule-based fallback or metadata-only model)")
        if self.classifier.device.type != "cpu":
            raise ValueError("runtimes are exported from and gated against eager torch on the CPU; "
                             "load the version with device='cpu'")


# --- identity of an export -------------------------------------------------------------------------


def weights_digest(net: torch.nn.Module) -> str:
    """sha256 of the network's weights (names, dtypes, shapes and values, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy()
                      .tobytes())
    return digest.hexdigest()


def library_versions(runtime: str) -> dict[str, str]:
    """The libraries an export of ``runtime`` depends on, with their versions."""
    versions = {"torch": torch.__version__, "onnxruntime": ort.__version__}
    if runtime == "openvino":
        versions["openvino"] = ov.__version__
    return versions


def export_key(classifier: NeuralClassifier, runtime: str, settings: ExportSettings) -> str:
    """The hash an export is cached under: the graph's outputs (an export of an older graph, e.g.
    without the texture statistics, is made again, not loaded), weights, views, preprocessing,
    metadata width, export settings, runtime and library versions."""
    payload = {"outputs": list(OUTPUT_NAMES), "texture_blocks": TEXTURE_BLOCKS,
               "weights": weights_digest(classifier.net), "views": list(classifier.tta),
               "preprocessing": classifier.preprocessing.to_dict(),
               "n_metadata": len(classifier.encoder.feature_names_),
               "settings": settings.model_dump(), "runtime": runtime,
               "versions": library_versions(runtime)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --- writing an export -----------------------------------------------------------------------------


def _example_inputs(classifier: NeuralClassifier, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    p = classifier.preprocessing
    return (torch.zeros(n, 3, p.height, p.width),
            torch.zeros(n, len(classifier.encoder.feature_names_)))


def export_onnx(classifier: NeuralClassifier, path: Path, settings: ExportSettings) -> Path:
    """Export the classifier's :class:`ViewsNet` (a private copy: exporting switches module modes)
    to ONNX at ``path`` with torch's dynamo exporter, the batch dimension dynamic."""
    views_net = copy.deepcopy(classifier.views_net()).cpu()
    batch = torch.export.Dim("n", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name: n will not be used.*")
        torch.onnx.export(views_net, _example_inputs(classifier), str(path),
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          dynamic_shapes={name: {0: batch} for name in INPUT_NAMES},
                          opset_version=settings.opset, dynamo=True, external_data=False,
                          verbose=False)
    return path


def convert_openvino(onnx_path: Path, xml_path: Path) -> Path:
    """The ONNX graph as OpenVINO IR, weights kept in fp32 (no fp16 compression)."""
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def write_export(classifier: NeuralClassifier, runtime: str, folder: Path,
                 settings: ExportSettings) -> None:
    """Write ``runtime``'s export of ``classifier`` into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(classifier, folder / ONNX_FILE, settings)
    if runtime == "openvino":
        convert_openvino(onnx_path, folder / OPENVINO_FILE)
        onnx_path.unlink()


# --- running an export -----------------------------------------------------------------------------


def as_array(tensor: torch.Tensor) -> np.ndarray:
    """A C-contiguous (NCHW) numpy array of a CPU tensor, what the runtimes take. Preprocessed
    images come in channels-last memory (for eager torch's convolutions); numpy reorders them about
    25 times faster than ``tensor.contiguous()`` (0.16 against 4.2 ms for one 256x192 image on the
    2-core development machine)."""
    return np.ascontiguousarray(tensor.numpy())


class OnnxRuntimeEngine:
    """An ONNX Runtime CPU session on ``model.onnx`` (thread-safe: concurrent runs share it)."""

    name = "onnxruntime"

    def __init__(self, folder: Path, policy: ThreadPolicy):
        options = ort.SessionOptions()
        settings = policy.onnxruntime_options()
        options.intra_op_num_threads = int(settings.pop("intra_op_num_threads"))
        options.inter_op_num_threads = int(settings.pop("inter_op_num_threads"))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for key, value in settings.items():
            options.add_session_config_entry(key, str(value))
        self.session = ort.InferenceSession(str(Path(folder) / ONNX_FILE), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor, metadata: torch.Tensor
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, pooled, texture = self.session.run(list(OUTPUT_NAMES), {
            "images": as_array(images), "metadata": as_array(metadata)})
        return logits.astype(np.float64), pooled, texture


class OpenVinoEngine:
    """An OpenVINO model compiled for the CPU (fp32), one infer request per calling thread."""

    name = "openvino"

    def __init__(self, folder: Path, policy: ThreadPolicy):
        self.compiled = ov.Core().compile_model(str(Path(folder) / OPENVINO_FILE), "CPU",
                                                policy.openvino_config())
        self._local = threading.local()

    def __call__(self, images: torch.Tensor, metadata: torch.Tensor
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer({"images": as_array(images), "metadata": as_array(metadata)})
        return (np.asarray(out["logits"], dtype=np.float64),
                np.array(out["pooled"], dtype=np.float32), np.array(out["texture"], dtype=np.float32))


class _Call:
    """One caller's images waiting in a :class:`BatchingEngine`."""

    def __init__(self, images: torch.Tensor, metadata: torch.Tensor):
        self.images, self.metadata = images, metadata
        self.result: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.error: BaseException | None = None


class BatchingEngine:
    """Concurrent calls coalesced into one forward of ``engine``.

    A caller that finds the engine idle runs at once with everything queued (itself included), so a
    lone request waits for nothing; calls that arrive while a forward runs queue up and go together
    in the next one (at most ``max_images`` images), instead of competing for the same cores with
    forwards of their own. Answers are split back to their callers; an error reaches every caller of
    the forward that raised it."""

    def __init__(self, engine: InferenceEngine, *, max_images: int = 16):
        if max_images < 1:
            raise ValueError(f"max_images must be at least 1, got {max_images}")
        self.engine, self.max_images = engine, max_images
        self.name = engine.name
        self._queue: list[_Call] = []
        self._busy = False
        self._cond = threading.Condition()
        #: forwards run and images they carried (their ratio: how much concurrent calls shared)
        self.forwards = 0
        self.images = 0

    @property
    def queued(self) -> int:
        """Calls waiting for the next forward."""
        with self._cond:
            return len(self._queue)

    def __call__(self, images: torch.Tensor, metadata: torch.Tensor
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        call = _Call(images, metadata)
        with self._cond:
            self._queue.append(call)
            while call.result is None and call.error is None and self._busy:
                self._cond.wait()
            if call.result is None and call.error is None:
                self._busy = True
                batch = self._take(call)
        if call.result is None and call.error is None:
            self._run(batch)
        if call.error is not None:
            raise call.error
        return call.result

    def _take(self, own: _Call) -> list[_Call]:
        """The calls of the next forward (the leader's own first), off the queue."""
        self._queue.remove(own)
        batch, n = [own], len(own.images)
        while self._queue and n + len(self._queue[0].images) <= self.max_images:
            n += len(self._queue[0].images)
            batch.append(self._queue.pop(0))
        self.forwards += 1
        self.images += n
        return batch

    def _run(self, batch: list[_Call]) -> None:
        try:
            if len(batch) == 1:  # a lone call: its own tensors, no copy
                outputs = self.engine(batch[0].images, batch[0].metadata)
            else:
                outputs = self.engine(torch.cat([c.images for c in batch]),
                                      torch.cat([c.metadata for c in batch]))
            start = 0
            for c in batch:
                logits, pooled, texture = (out[start:start + len(c.images)] for out in outputs)
                c.result = (logits, pooled, texture)
                start += len(c.images)
        except Exception as err:  # not swallowed: every caller of this forward re-raises it
            for c in batch:
                c.error = err
        finally:
            with self._cond:
                for c in batch:  # interrupted (KeyboardInterrupt, SystemExit): nobody waits forever
                    if c.result is None and c.error is None:
                        c.error = RuntimeError("the batched forward was interrupted")
                self._busy = False
                self._cond.notify_all()


def open_engine(runtime: str, folder: Path, policy: ThreadPolicy | None = None) -> InferenceEngine:
    """The engine running ``runtime``'s export in ``folder``."""
    policy = policy or ThreadPolicy.for_machine()
    if runtime == "onnxruntime":
        return OnnxRuntimeEngine(folder, policy)
    if runtime == "openvino":
        return OpenVinoEngine(folder, policy)
    raise ValueError(f"no export for runtime {runtime!r}; exported runtimes: "
                     f"{', '.join(EXPORTED_RUNTIMES)}")


# --- the accuracy gate ------------------------------------------------------------------------------


def answers(classifier: NeuralClassifier, engine: InferenceEngine | None, images: Sequence[Image.Image],
            metadata: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and monitoring embeddings of ``classifier`` run in ``engine`` (None:
    eager torch), leaving the classifier's own engine as it was."""
    probs, embeddings, _ = answers_with_texture(classifier, engine, images, metadata)
    return probs, embeddings


def answers_with_texture(classifier: NeuralClassifier, engine: InferenceEngine | None,
                         images: Sequence[Image.Image], metadata: pd.DataFrame
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`answers` and the texture statistics of the upright views."""
    runner = copy.copy(classifier)
    runner.use_engine(engine if engine is not None else TorchEngine(classifier.views_net(),
                                                                    classifier.device))
    return runner.predict_with_features(images, metadata)


def relative_error(reference: np.ndarray, values: np.ndarray) -> float:
    """Largest |values - reference| / (|reference| + 1e-3): relative where the statistics are
    large, absolute (to 1e-3) where they are near zero."""
    return float((np.abs(values - reference) / (np.abs(reference) + 1e-3)).max(initial=0.0))


@dataclass(frozen=True)
class Agreement:
    """How far a runtime's answers are from eager torch's on the same images."""

    n_images: int
    max_abs_dp: float
    changed_decisions: int
    changed_classes: int
    max_abs_embedding: float | None = None
    max_rel_texture: float | None = None

    @classmethod
    def of(cls, reference: np.ndarray, probs: np.ndarray, *, threshold: float,
           malignant: np.ndarray, reference_embedding: np.ndarray | None = None,
           embedding: np.ndarray | None = None, reference_texture: np.ndarray | None = None,
           texture: np.ndarray | None = None) -> Agreement:
        """Compare ``probs`` (n, 8) with the ``reference`` answers (and their embeddings and
        texture statistics, :func:`relative_error`)."""
        refer = reference[:, malignant].sum(1) >= threshold
        emb = (float(np.abs(embedding - reference_embedding).max(initial=0.0))
               if embedding is not None and reference_embedding is not None else None)
        tex = (relative_error(reference_texture, texture)
               if texture is not None and reference_texture is not None else None)
        return cls(n_images=len(probs),
                   max_abs_dp=float(np.abs(probs - reference).max(initial=0.0)),
                   changed_decisions=int((refer != (probs[:, malignant].sum(1) >= threshold)).sum()),
                   changed_classes=int((reference.argmax(1) != probs.argmax(1)).sum()),
                   max_abs_embedding=emb, max_rel_texture=tex)

    def failures(self, settings: ExportSettings) -> list[str]:
        """What breaks the gate (empty: passed)."""
        out = []
        if self.max_abs_dp > settings.max_abs_dp:
            out.append(f"max |Δp| {self.max_abs_dp:.2g} > {settings.max_abs_dp:g}")
        if self.changed_decisions:
            out.append(f"{self.changed_decisions} referral decision(s) changed")
        if self.changed_classes:
            out.append(f"{self.changed_classes} predicted class(es) changed")
        if self.max_abs_embedding is not None and self.max_abs_embedding > settings.max_abs_embedding:
            out.append(f"monitoring embedding off by {self.max_abs_embedding:.2g} > "
                       f"{settings.max_abs_embedding:g}")
        if self.max_rel_texture is not None and self.max_rel_texture > settings.max_rel_texture:
            out.append(f"texture statistics off by a relative {self.max_rel_texture:.2g} > "
                       f"{settings.max_rel_texture:g}")
        return out


def run_gate(target: ExportTarget, engine: InferenceEngine, images: Sequence[Image.Image],
             metadata: pd.DataFrame, settings: ExportSettings, *, key: str) -> GateReport:
    """The gate of ``engine`` against eager torch on ``images`` (the version's reference images)."""
    if not len(images):
        raise ValueError("the accuracy gate needs the version's reference images; got none")
    eager_p, eager_e, eager_t = answers_with_texture(target.classifier, None, images, metadata)
    probs, emb, texture = answers_with_texture(target.classifier, engine, images, metadata)
    agreement = Agreement.of(eager_p, probs, threshold=target.threshold,
                             malignant=target.malignant, reference_embedding=eager_e,
                             embedding=emb, reference_texture=eager_t, texture=texture)
    failures = agreement.failures(settings)
    return GateReport(runtime=engine.name, key=key, passed=not failures,
                      reason="; ".join(failures), n_images=agreement.n_images,
                      max_abs_dp=agreement.max_abs_dp,
                      changed_decisions=agreement.changed_decisions,
                      changed_classes=agreement.changed_classes,
                      max_abs_embedding=agreement.max_abs_embedding,
                      max_rel_texture=agreement.max_rel_texture,
                      settings=settings.model_dump(), versions=library_versions(engine.name),
                      created=datetime.now(UTC).isoformat(timespec="seconds"))


def export(target: ExportTarget, runtime: str, images: Sequence[Image.Image],
           metadata: pd.DataFrame, *, settings: ExportSettings | None = None,
           policy: ThreadPolicy | None = None) -> GateReport:
    """Export the version to ``runtime`` and gate it on ``images`` (its reference images), once:
    an export already made under the same key (weights, settings, library versions) is reused,
    passed or refused. The folder appears atomically (written under a temporary name)."""
    if runtime not in EXPORTED_RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(EXPORTED_RUNTIMES)} to be exported, "
                         f"got {runtime!r}")
    settings = settings or ExportSettings()
    key = export_key(target.classifier, runtime, settings)
    final = export_folder(target.version_dir, runtime, key)
    if (final / REPORT_FILE).is_file():
        return GateReport.model_validate_json((final / REPORT_FILE).read_text())
    tmp = final.with_name(f".tmp-{final.name}-{secrets.token_hex(3)}")
    try:
        report = _export_and_gate(target, runtime, tmp, images, metadata, settings, policy, key)
        (tmp / REPORT_FILE).write_text(report.model_dump_json(indent=2) + "\n")
        if final.exists():  # another process exported it meanwhile: keep theirs
            return GateReport.model_validate_json((final / REPORT_FILE).read_text())
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return report


def _export_and_gate(target: ExportTarget, runtime: str, folder: Path,
                     images: Sequence[Image.Image], metadata: pd.DataFrame,
                     settings: ExportSettings, policy: ThreadPolicy | None, key: str) -> GateReport:
    """Write and gate one export; an exporter or runtime that cannot handle the network is a
    refusal with its error as the reason (the folder then keeps the report only)."""
    try:
        write_export(target.classifier, runtime, folder, settings)
        engine = open_engine(runtime, folder, policy)
    except RuntimeError as err:  # torch.onnx, OpenVINO and ONNX Runtime failures are RuntimeErrors
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return GateReport(runtime=runtime, key=key, passed=False,
                          reason=f"export failed: {str(err).splitlines()[0] if str(err) else err!r}",
                          settings=settings.model_dump(), versions=library_versions(runtime),
                          created=datetime.now(UTC).isoformat(timespec="seconds"))
    report = run_gate(target, engine, images, metadata, settings, key=key)
    if not report.passed:  # keep the refusal, not the refused network
        for path in folder.iterdir():
            path.unlink()
    return report


# --- choosing the runtime at load -------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a loaded version answers with, and why."""

    runtime: str
    engine: InferenceEngine | None
    #: median ms of one single-image forward (all views) per candidate, when ``auto`` timed them
    #: (:func:`time_engines`)
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: the warning given when the version fell back to eager torch ("" otherwise)
    warning: str = ""


def timing_inputs(classifier: NeuralClassifier, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One image as the engines see it when timed: seeded noise through the version's own
    preprocessing (a constant input such as zeros can take a kernel's fast or slow path that real
    images never take, and mislead the choice), with one encoded metadata row."""
    p = classifier.preprocessing
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (p.height, p.width, 3), dtype=np.uint8))
    return p([image]), torch.zeros(1, len(classifier.encoder.feature_names_))


def time_engines(engines: dict[str, InferenceEngine], classifier: NeuralClassifier, *,
                 rounds: int = 7) -> dict[str, float]:
    """Median ms of a single-image forward (all views) in each engine, after one warm-up each. The
    engines take turns, one forward each per round, so a burst of load from other processes falls
    on all of them alike instead of on whichever was being timed."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    images, metadata = timing_inputs(classifier)
    for engine in engines.values():
        engine(images, metadata)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine(images, metadata)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: float(np.median(ms)) for name, ms in times.items()}


def _fallback(warning: str) -> RuntimeChoice:
    warnings.warn(warning, RuntimeFallbackWarning, stacklevel=3)
    return RuntimeChoice("torch", None, warning=warning)


def select_runtime(classifier: object, version_id: str, version_dir: Path, requested: str, *,
                   settings: ExportSettings | None = None,
                   policy: ThreadPolicy | None = None) -> RuntimeChoice:
    """The runtime ``classifier`` (the version ``version_id`` in ``version_dir``) should answer
    with under the ``runtime`` setting ``requested``: ``torch`` always; ``openvino`` or
    ``onnxruntime`` when its export passed the gate; ``auto`` the fastest of eager torch and the
    passed exports, timed here. A runtime that cannot be used gives eager torch and a
    :class:`RuntimeFallbackWarning` (for ``auto`` only when an export was refused; a version not
    exported at all is logged at info level)."""
    check_runtime(requested)
    if requested == "torch":
        return RuntimeChoice("torch", None)
    if not isinstance(classifier, NeuralClassifier) or not classifier.net.uses_image:
        if requested == "auto":
            return RuntimeChoice("torch", None)
        return _fallback(f"version {version_id!r} has no image network to export; runtime "
                         f"{requested!r} does not apply and it answers in its own code")
    if classifier.device.type != "cpu":
        if requested == "auto":
            return RuntimeChoice("torch", None)
        return _fallback(f"runtime {requested!r} runs on the CPU; version {version_id!r} is loaded "
                         f"on {classifier.device.type} and answers with eager torch there")
    settings = settings or ExportSettings()
    candidates = [requested] if requested != "auto" else list(EXPORTED_RUNTIMES)
    passed, problems, refused = {}, [], []
    for runtime in candidates:
        key = export_key(classifier, runtime, settings)
        folder = export_folder(version_dir, runtime, key)
        if not (folder / REPORT_FILE).is_file():
            problems.append(f"{runtime}: not exported")
            continue
        report = GateReport.model_validate_json((folder / REPORT_FILE).read_text())
        if report.passed:
            passed[runtime] = open_engine(runtime, folder, policy)
        else:
            refused.append(runtime)
            problems.append(f"{runtime}: refused by the accuracy gate ({report.reason})")
    if not passed:
        message = (f"version {version_id!r} answers with eager torch (runtime={requested}): "
                   f"{'; '.join(problems)}. Export and gate it with `skinlesion models export "
                   f"{version_id} --data DATASET` (the dataset it was trained on)")
        if requested == "auto" and not refused:  # nothing exported yet: the usual eager version
            log.info(message)
            return RuntimeChoice("torch", None)
        return _fallback(message)
    if requested != "auto":
        return RuntimeChoice(requested, passed[requested])
    timings = time_engines({"torch": TorchEngine(classifier.views_net(), classifier.device),
                            **passed}, classifier)
    fastest = min(timings, key=timings.__getitem__)
    log.info("version %r: runtime auto picks %s (median ms of one forward: %s)", version_id, fastest,
             ", ".join(f"{name} {ms:.1f}" for name, ms in timings.items()))
    return RuntimeChoice(fastest, passed.get(fastest), timings_ms=timings)


def use_runtime(classifier: object, version_id: str, version_dir: Path, requested: str, *,
                settings: ExportSettings | None = None,
                policy: ThreadPolicy | None = None) -> RuntimeChoice:
    """:func:`select_runtime`, then hand the chosen engine (eager torch when the choice is torch) to
    the classifier (a neural one), behind a :class:`BatchingEngine` so that concurrent requests
    share forwards (at most :data:`MAX_STACKED_VIEWS` view images each). Returns the choice."""
    choice = select_runtime(classifier, version_id, version_dir, requested, settings=settings,
                            policy=policy)
    if isinstance(classifier, NeuralClassifier) and classifier.net.uses_image:
        engine = choice.engine or TorchEngine(classifier.views_net(), classifier.device)
        views = len(batch_views(classifier.tta))
        classifier.use_engine(BatchingEngine(engine, max_images=max(1, MAX_STACKED_VIEWS // views)))
    return choice
