"""Where a version's runtime exports live and what their gate said (no torch needed to read them).

An export is a folder ``<version>/exports/<runtime>-<key>/`` beside the version's weights: the
exported network and ``gate.json``, the :class:`GateReport` of the accuracy gate it went through
(refused exports keep their report too, so a failing runtime is not exported again at every start).
``key`` is a hash of the graph's outputs, the weights, the views, the preprocessing, the export settings and the library
versions (skinlesion.model.runtime.export_key): new weights or settings mean a new export.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

EXPORTS_DIR = "exports"
REPORT_FILE = "gate.json"


class GateReport(BaseModel):
    """The accuracy gate of one export against eager torch, on the version's reference images."""

    model_config = ConfigDict(frozen=True)

    runtime: str
    key: str
    passed: bool
    #: why it was refused ("" when it passed)
    reason: str = ""
    n_images: int = 0
    #: largest |probability difference| over images and classes
    max_abs_dp: float | None = None
    #: referral decisions (p_malignant >= the version's threshold) and predicted classes that differ
    changed_decisions: int | None = None
    changed_classes: int | None = None
    #: largest |difference| of the logged monitoring embedding
    max_abs_embedding: float | None = None
    #: largest relative difference of the texture statistics (the OOD gate's texture check)
    max_rel_texture: float | None = None
    settings: dict = {}
    versions: dict[str, str] = {}
    created: str = ""

    def summary(self) -> dict:
        """The card's line for this export."""
        return self.model_dump(include={"runtime", "key", "passed", "reason", "n_images",
                                        "max_abs_dp", "changed_decisions", "changed_classes",
                                        "max_abs_embedding", "max_rel_texture", "created"})


def export_folder(version_dir: Path, runtime: str, key: str) -> Path:
    """The folder of ``runtime``'s export under ``key`` (its first 16 hex digits name it)."""
    return Path(version_dir) / EXPORTS_DIR / f"{runtime}-{key[:16]}"


def read_reports(version_dir: Path) -> list[GateReport]:
    """The gate reports of every export of the version, by runtime then date."""
    root = Path(version_dir) / EXPORTS_DIR
    if not root.is_dir():
        return []
    reports = [GateReport.model_validate_json(path.read_text())
               for path in root.glob(f"*/{REPORT_FILE}")]
    return sorted(reports, key=lambda r: (r.runtime, r.created))
