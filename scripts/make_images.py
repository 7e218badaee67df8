"""Regenerate the pictures under images/ that the README uses.

    python scripts/make_images.py            # static diagrams only
    python scripts/make_images.py --browser  # also the explorer screenshot (needs chromium)

The static diagrams come from kvlab.viz on a seeded cluster, so they are reproducible; the
explorer screenshot is taken by the browser test (tests/test_browser.py) in real JupyterLab.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import kvlab  # noqa: E402
from kvlab import viz  # noqa: E402

IMAGES = Path(__file__).resolve().parent.parent / "images"


def static() -> list[Path]:
    c = kvlab.Cluster(["n1", "n2", "n3"], seed=0)
    n1, n2 = c["n1"], c["n2"]
    t1 = n1.begin()
    n1.put(t1, "x", 1)
    t2 = n2.begin()
    n2.put(t2, "x", 2)
    n1.commit_async(t1)
    n2.commit_async(t2)
    c.run()
    out = []
    for name, fig in (("sequence.png", viz.sequence_diagram(c, tx=t1)),
                      ("coordinator.png", viz.state_diagram("coordinator")),
                      ("participant.png", viz.state_diagram("participant")),
                      ("versions.png", viz.version_chains(c, "n2", keys=["x"]))):
        path = IMAGES / name
        fig.savefig(path, dpi=90, bbox_inches="tight")
        out.append(path)
    return out


def explorer() -> Path:
    path = IMAGES / "explorer.png"
    env = dict(os.environ, KVLAB_SCREENSHOT=str(path), KVLAB_UPDATE_IMAGES="1")
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "tests/test_browser.py"], check=True, env=env,
                   cwd=IMAGES.parent)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--browser", action="store_true", help="also take the explorer screenshot")
    args = ap.parse_args()
    IMAGES.mkdir(exist_ok=True)
    made = static() + ([explorer()] if args.browser else [])
    for p in made:
        print(f"wrote {p.relative_to(IMAGES.parent)} ({p.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
