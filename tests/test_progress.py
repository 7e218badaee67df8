"""The progress line: in a notebook, one display updated in place that ends as a summary."""

from __future__ import annotations

from kvlab import workloads
from kvlab.progress import Progress


class Handle:
    """Stands in for IPython's DisplayHandle: keeps what each update showed."""

    def __init__(self) -> None:
        self.shown: list[dict[str, str]] = []

    def update(self, bundle: dict[str, str], raw: bool = False) -> None:
        assert raw
        self.shown.append(bundle)


def test_notebook_progress_ends_as_the_finished_line():
    p = Progress(10, "bank workload", notebook=True)
    p._handle = handle = Handle()
    p.EVERY = 0.0
    p.update(4)
    assert handle.shown[-1]["text/plain"] == "bank workload: 4/10 transactions …"
    assert "<progress value='4' max='10'" in handle.shown[-1]["text/html"]
    p.update(3)  # the last batch may be short of the total (a begin that timed out)
    p.close()
    assert handle.shown[-1]["text/plain"] == "bank workload: 10/10 transactions, done"
    assert "<progress" not in handle.shown[-1]["text/html"]  # a stored notebook: no 0% bar


def test_terminal_progress_is_a_tqdm_bar(capsys):
    r = workloads.run("register", transactions=16, concurrency=8, keys=5, seed=0,
                      progress=True)
    assert r.committed + r.aborted == 16
    assert "16/16" in capsys.readouterr().err
