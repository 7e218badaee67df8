"""A progress line that ends as a summary.

In a notebook it is one display output updated in place, so a stored notebook shows the
finished line ("bank workload: 2000/2000 transactions, done") rather than a bar frozen at 0%,
also where no widget manager runs (GitHub, nbviewer). Elsewhere it is a ``tqdm`` bar.
"""

from __future__ import annotations

import html
import time
from typing import Any


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebook extra
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class Progress:
    """``update(n)`` after each piece of work, ``close()`` at the end."""

    EVERY = 0.25  # seconds between notebook updates

    def __init__(self, total: int, desc: str, unit: str = "transactions",
                 notebook: bool | None = None) -> None:
        self.total, self.desc, self.unit, self.done = total, desc, unit, 0
        self._last = 0.0
        self._bar: Any = None
        self._handle: Any = None
        if _in_notebook() if notebook is None else notebook:
            from IPython.display import display
            self._handle = display(self._bundle(False), raw=True, display_id=True)
        else:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc=desc, unit="tx")

    def text(self, finished: bool) -> str:
        """The line as plain text."""
        return (f"{self.desc}: {self.done}/{self.total} {self.unit}"
                + (", done" if finished else " …"))

    def _bundle(self, finished: bool) -> dict[str, str]:
        share = self.done / self.total if self.total else 1.0
        bar = (f"<progress value='{self.done}' max='{self.total}' style='width:240px;"
               f"vertical-align:middle'></progress> " if not finished else "")
        return {"text/plain": self.text(finished),
                "text/html": f"<div style='font-size:13px'>{bar}"
                             f"{html.escape(self.text(finished))}"
                             + ("" if finished else f" ({share:.0%})") + "</div>"}

    def update(self, n: int) -> None:
        self.done = min(self.total, self.done + n)
        if self._bar is not None:
            self._bar.update(n)
        elif self._handle is not None and time.monotonic() - self._last >= self.EVERY:
            self._last = time.monotonic()
            self._handle.update(self._bundle(False), raw=True)

    def close(self) -> None:
        """The work is over: every piece of it counts as done."""
        if self._handle is not None:
            self.done = self.total
        if self._bar is not None:
            self._bar.close()
        elif self._handle is not None:
            self._handle.update(self._bundle(True), raw=True)


__all__ = ["Progress"]
