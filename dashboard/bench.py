"""Overview render time with 10k / 100k / 1M logged predictions, merged into bench/results.json.

Lives beside the dashboard (it drives Streamlit's AppTest); ``make bench`` runs it after
``python -m skinlesion.bench``. Each size: a fresh home whose store holds a calibrated synthetic
30-day log (skinlesion.bench.synthetic_log); the page is rendered cold (empty caches) and warm.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from skinlesion.auth import User
from skinlesion.bench import synthetic_log
from skinlesion.store import Store

PAGES = Path(__file__).resolve().parent / "views"


def render_seconds(page: str, *, timeout: float = 600) -> float:
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=timeout)
    at.session_state["skinlesion_user"] = User(name="bench", role="viewer")
    start = time.perf_counter()
    at.run()
    if at.exception:
        raise RuntimeError(f"{page} raised: {at.exception[0].message}")
    return time.perf_counter() - start


def bench_overview(sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)) -> dict:
    out = {}
    for n in (1_000, *sizes):  # the first size, not reported, pays the page's one-time imports
        with tempfile.TemporaryDirectory() as home:
            os.environ["SKINLESION_HOME"] = home
            frame, labels = synthetic_log(n)
            Store(Path(home) / "data" / "skinlesion.duckdb").bulk_load(frame, labels)
            out[str(n)] = {"cold_s": render_seconds("overview"), "warm_s": render_seconds("overview")}
    del out["1000"]
    return {"what": "Overview page rendered by AppTest over a 30-day log (24 h window, default "
                    "filters) after a warm-up render of a 1,000-row log (imports); cold = first "
                    "render of the store, warm = the next one (cached queries)",
            "by_size": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(PAGES.parent))  # pages import `components` as `streamlit run` allows
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["dashboard_overview"] = bench_overview()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(str(args.out))


if __name__ == "__main__":
    main()
