"""Readable at a glance: every text in every kvlab figure, drawn at 100 dpi (the lowest dpi the
notebooks and the explorer show figures at), is at least 11 px tall, has WCAG AA contrast
(4.5:1) against what it sits on, stays inside the picture, and (where a view lays its labels
out) overlaps no other text.

How the background of a text is found: the figure is drawn a second time with every text's
glyphs made fully transparent (a text's own bbox patch still drawn), and the pixels under the
text's window extent are read back. Every colour covering at least a fifth of that area is a
background the text must contrast with: the figure or axes facecolor, the text's bbox patch
(composited over what is under it), or the filled shape it is placed on (a WAL row, a state
box, a version box, a partition band). So nothing has to declare its background, and a text
moved onto a fill is checked against that fill.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.text import Text

import kvlab
from kvlab import viz
from kvlab.viz import style as st
from kvlab.viz.cluster_view import ClusterView
from kvlab.viz.common import new_figure
from kvlab.viz.scene import scene_of
from kvlab.viz.sequence import SequenceView
from kvlab.viz.versions import VersionsView

matplotlib.use("Agg")

DPI = 100
MIN_PX = 11.0
MIN_CONTRAST = 4.5
BACKGROUND_SHARE = 0.2  # a colour under at least this much of a text's box is its background
NODES = ["n1", "n2", "n3"]


@pytest.fixture(autouse=True)
def dpi_100(monkeypatch):
    """Figures are created at rcParams["figure.dpi"]: the notebooks' (and explorer's) 100."""
    monkeypatch.setitem(matplotlib.rcParams, "figure.dpi", DPI)


# -- scenarios, through the public API only ------------------------------------------------------
def commit(c: kvlab.Cluster, node: str, **values: object) -> str:
    n = c.node(node)
    tx = n.begin()
    for k, v in values.items():
        n.put(tx, k, v)
    n.commit(tx)
    return tx


def start(c: kvlab.Cluster, node: str, **values: object) -> str:
    n = c.node(node)
    tx = n.begin()
    for k, v in values.items():
        n.put(tx, k, v)
    n.commit_async(tx)
    return tx


def busy_cluster() -> kvlab.Cluster:
    """Every kind of label: commits, an abort (a write-write conflict), a participant that
    crashes mid-commit and sits out a partition, a restart, a checkpoint, a torn crash, and a
    transaction still in flight across a fresh partition."""
    c = kvlab.Cluster(NODES, seed=0)
    commit(c, "n1", x=1, y=1)
    commit(c, "n2", x=2)
    start(c, "n1", x=3)
    for _ in range(6):
        c.step()
    c.crash("n2")
    c.partition({"n1"}, {"n2", "n3"})
    c.run()
    c.heal()
    c.restart("n2")
    c.run()
    a, b = c.node("n1").begin(), c.node("n3").begin()
    c.node("n1").put(a, "z", 1)
    c.node("n3").put(b, "z", 2)
    c.node("n1").commit(a)
    c.node("n3").commit(b)
    c.checkpoint("n2")
    reader = c.node("n2").begin()
    c.node("n2").get(reader, "x")
    start(c, "n1", w=5, x=6)
    for _ in range(4):
        c.step()
    c.partition({"n3"}, {"n1", "n2"})
    c.crash("n3", torn=True)
    return c


@pytest.fixture(scope="module")
def busy() -> kvlab.Cluster:
    return busy_cluster()


@pytest.fixture(scope="module")
def committed() -> kvlab.Cluster:
    """One 3-node commit, where the coordinator n1 is also a participant (self-messages)."""
    c = kvlab.Cluster(NODES, seed=0)
    commit(c, "n1", x=1, y=2)
    c.run()
    return c


def write_skew_report():
    checker = pytest.importorskip("kvlab.checker")
    c = kvlab.Cluster(["n1", "n2"], seed=0)
    commit(c, "n1", x=0, y=0)
    n1, n2 = c.node("n1"), c.node("n2")
    a, b = n1.begin(), n2.begin()
    for n, tx in ((n1, a), (n2, b)):
        n.get(tx, "x")
        n.get(tx, "y")
    n1.put(a, "x", 1)
    n2.put(b, "y", 1)
    n1.commit(a)
    n2.commit(b)
    return checker.check(c.history, "serializable")


# the explorer's panel sizes (inches): as kvlab.widgets has them, and as proposed for 100 dpi
# (they fit side by side in a 960 px output area)
PANELS = {"widgets": dict(cluster=(4.6, 4.4), sequence=(6.6, 5.6), versions=(6.2, 2.8)),
          "proposed": dict(cluster=(4.2, 4.2), sequence=(5.2, 5.6), versions=(5.6, 2.8))}


def explorer_views(c: kvlab.Cluster, sizes: dict[str, tuple[float, float]]
                   ) -> dict[str, Figure]:
    """The three panels as kvlab.widgets builds them (margins, window, compact), at 100 dpi."""
    cv = ClusterView(c.ids, legend=False, size=sizes["cluster"])
    sv = SequenceView(c.ids, size=sizes["sequence"], compact=True)
    sv.fig.subplots_adjust(left=0.1, right=0.99, top=0.99, bottom=0.01)
    vv = VersionsView(size=sizes["versions"])
    vv.fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02)
    for view in (cv, sv, vv):
        view.fig.set_dpi(DPI)
    return {"explorer cluster": cv.update(scene_of(c)),
            "explorer sequence": sv.update(c.trace, last=40, states=False, calls=False),
            "explorer versions": vv.update(c, "n1")}


def figures(c: kvlab.Cluster) -> dict[str, Callable[[], Figure]]:
    first = c.ids[0]
    return {
        "cluster view": lambda: viz.cluster_view(c),
        "sequence diagram": lambda: viz.sequence_diagram(c, last=80),
        "version chains": lambda: viz.version_chains(c, first, snapshot=2),
        "timeline": lambda: viz.transaction_timeline(c),
        "coordinator states": lambda: viz.state_diagram("coordinator", c),
        "participant states": lambda: viz.state_diagram("participant", c),
        **{f"wal view {n}": (lambda n=n: viz.wal_view(c, n)) for n in c.ids},
    }


# -- the checks ----------------------------------------------------------------------------------
@contextmanager
def recording_drawn_texts() -> Iterator[set[int]]:
    """The ids of the Text artists that actually draw glyphs during the block's draws."""
    drawn: set[int] = set()
    original = Text.draw

    def draw(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn.add(id(self))
        return original(self, renderer)

    Text.draw = draw
    try:
        yield drawn
    finally:
        Text.draw = original


def visible_texts(fig: Figure) -> list[Text]:
    """Every Text of the figure (fig.findobj) that the last draw really drew."""
    with recording_drawn_texts() as drawn:
        fig.canvas.draw()
    return [t for t in fig.findobj(Text) if id(t) in drawn]


def luminance(rgb) -> float:
    return st.luminance(tuple(float(c) for c in rgb[:3]))


def contrast(fg, bg) -> float:
    la, lb = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def backgrounds(fig: Figure, texts: list[Text]) -> dict[int, list[np.ndarray]]:
    """For each text, the colours under it (see the module docstring)."""
    extents = {id(t): t.get_window_extent() for t in texts}
    colors = {id(t): t.get_color() for t in texts}
    try:
        for t in texts:
            t.set_color((0, 0, 0, 0))  # glyphs gone; bbox patches stay
        fig.canvas.draw()
        pixels = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    finally:
        for t in texts:
            t.set_color(colors[id(t)])
        fig.canvas.draw()
    height, width = pixels.shape[:2]
    out = {}
    for t in texts:
        box = extents[id(t)]
        x0, x1 = max(0, int(box.x0)), min(width, int(np.ceil(box.x1)))
        y0, y1 = max(0, int(height - box.y1)), min(height, int(np.ceil(height - box.y0)))
        patch = pixels[y0:y1, x0:x1].reshape(-1, 3)
        if not len(patch):
            out[id(t)] = []
            continue
        counts = Counter(map(tuple, patch))
        out[id(t)] = [np.array(c) / 255 for c, k in counts.items()
                      if k >= BACKGROUND_SHARE * len(patch)]
    return out


def text_rgb(t: Text, bg: np.ndarray) -> np.ndarray:
    r, g, b, a = to_rgba(t.get_color())
    a *= t.get_alpha() if t.get_alpha() is not None else 1.0
    return np.array([r, g, b]) * a + bg * (1 - a)


def problems(fig: Figure, overlaps: bool = True) -> list[str]:
    """What is wrong with the figure's texts, as readable lines (empty: all good)."""
    assert fig.dpi == DPI, f"the figure is at {fig.dpi} dpi"
    texts = visible_texts(fig)
    assert texts, "no text drawn at all"
    found = []
    for t in texts:
        px = t.get_fontsize() * fig.dpi / 72
        if px < MIN_PX - 1e-6:
            found.append(f"{t.get_text()!r}: {px:.1f} px")
    bgs = backgrounds(fig, texts)
    for t in texts:
        for bg in bgs[id(t)]:
            ratio = contrast(text_rgb(t, bg), bg)
            if ratio < MIN_CONTRAST:
                found.append(f"{t.get_text()!r}: contrast {ratio:.2f} on "
                             f"{matplotlib.colors.to_hex(bg)}")
    W, H = fig.bbox.width, fig.bbox.height
    for t in texts:
        e = t.get_window_extent()
        clip = t.axes.bbox if (t.axes is not None and t.get_clip_on()
                               and t.get_clip_path() is not None) else None
        inside = e.x0 >= -1 and e.y0 >= -1 and e.x1 <= W + 1 and e.y1 <= H + 1
        if clip is not None:
            inside = inside and (e.x0 >= clip.x0 - 1 and e.x1 <= clip.x1 + 1
                                 and e.y0 >= clip.y0 - 1 and e.y1 <= clip.y1 + 1)
        if not inside:
            found.append(f"{t.get_text()!r}: clipped at the edge ({e})")
    if overlaps:
        boxes = [(t, t.get_window_extent()) for t in texts]
        for i, (a, ea) in enumerate(boxes):
            for b, eb in boxes[i + 1:]:
                if (ea.x0 < eb.x1 - 0.5 and eb.x0 < ea.x1 - 0.5 and ea.y0 < eb.y1 - 0.5
                        and eb.y0 < ea.y1 - 0.5):
                    found.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    return found


def smallest_and_lowest(fig: Figure) -> tuple[float, float]:
    texts = visible_texts(fig)
    bgs = backgrounds(fig, texts)
    px = min(t.get_fontsize() * fig.dpi / 72 for t in texts)
    ratio = min((contrast(text_rgb(t, bg), bg) for t in texts for bg in bgs[id(t)]),
                default=21.0)
    return px, ratio


# -- the checker itself can fail -----------------------------------------------------------------
def test_the_checker_catches_small_pale_clipped_and_overlapping_text():
    fig = new_figure(3, 2)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.1, 0.8, "tiny", fontsize=7)
    ax.text(0.1, 0.5, "T1 -> AWAIT_TS", fontsize=st.SMALL, color=st.YELLOW)
    ax.text(0.1, 0.2, "ACK on its own row", fontsize=st.SMALL, color=st.SKY_BLUE)
    ax.text(0.1, 0.21, "ACK T1", fontsize=st.SMALL)
    ax.text(0.6, 0.5, "in a box", fontsize=st.SMALL,
            bbox=dict(facecolor=st.BLUE, edgecolor="none"))
    ax.text(0.9, 0.8, "off the edge", fontsize=st.SMALL, clip_on=False)
    found = "\n".join(problems(fig))
    assert "'tiny': 9.7 px" in found
    assert "'T1 -> AWAIT_TS': contrast 1.32" in found
    assert "'ACK on its own row': contrast" in found
    assert "'in a box': contrast" in found  # black on the blue of its own bbox
    assert "'off the edge': clipped" in found
    assert "overlaps 'ACK T1'" in found


def test_the_text_colours_pass_and_the_fills_they_need():
    """The style's text inks meet AA on white and on the lightest band text sits on."""
    for color in (*st.KIND_COLORS.values(), *st.STATE_COLORS.values(),
                  *st.OUTCOME_COLORS.values(), st.GREY, st.YELLOW):
        assert st.contrast(st.ink(color), "white") >= MIN_CONTRAST
        assert st.contrast(st.ink(color), st.BAND) >= MIN_CONTRAST
    assert st.contrast(st.text_on(st.BLUE), st.BLUE) >= MIN_CONTRAST
    assert st.contrast(st.text_on(st.tint(st.BLUE, 0.2)), st.tint(st.BLUE, 0.2)) >= 4.5


def test_cached_text_renders_like_matplotlib(committed):
    """kvlab's canvas stamps each string's glyphs from a cache: the picture must match what
    plain Agg draws (up to a pixel of placement), or the cache must have switched itself off."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    from kvlab.viz.common import _TEXT_CACHE, png_bytes

    for make in (lambda: viz.sequence_diagram(committed),
                 lambda: viz.state_diagram("coordinator", committed)):
        fig = make()
        cached = np.asarray(Image.open(io.BytesIO(png_bytes(fig))), dtype=float)
        FigureCanvasAgg(fig)
        plain = np.asarray(Image.open(io.BytesIO(png_bytes(fig))), dtype=float)
        assert cached.shape == plain.shape
        # same ink in the same places: blurred by a pixel, the two pictures agree closely
        def blur(a):
            return (a[:-2, :-2] + a[1:-1, 1:-1] + a[2:, 2:] + a[:-2, 2:] + a[2:, :-2]) / 5
        assert np.abs(blur(cached) - blur(plain)).mean() < 1.5
        assert abs(cached.mean() - plain.mean()) < 0.5
    assert _TEXT_CACHE["ok"] or matplotlib.__version__ < "3.11"


# -- every figure --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(figures(kvlab.Cluster(NODES, seed=0))))
def test_every_figure_is_legible(name, busy):
    fig = figures(busy)[name]()
    overlaps = name != "timeline"  # the time axis and the bars are matplotlib's own layout
    assert problems(fig, overlaps=overlaps) == []


def test_every_figure_of_a_fresh_cluster_is_legible():
    c = kvlab.Cluster(NODES, seed=0)
    for name, make in figures(c).items():
        assert problems(make(), overlaps=name != "timeline") == [], name


@pytest.mark.parametrize("sizes", list(PANELS))
def test_the_explorer_panels_are_legible(sizes, busy, committed):
    for c in (busy, committed):
        for name, fig in explorer_views(c, PANELS[sizes]).items():
            assert problems(fig) == [], name


def test_the_explorer_panels_stay_legible_while_stepping():
    """Every step of a 2PC round with a crash in it, as the explorer redraws its panels."""
    c = kvlab.Cluster(NODES, seed=1)
    for i in range(4):
        start(c, NODES[i % 3], **{f"k{i}": i, "shared": i})
    views = None
    for step in range(60):
        if step == 20:
            c.crash("n2")
        if step == 30:
            c.restart("n2")
        if not c.step() and step > 30:
            break
        if step % 6 == 0:
            views = explorer_views(c, PANELS["proposed"])
            for name, fig in views.items():
                assert problems(fig) == [], f"step {step}, {name}"
    assert views is not None


def test_dependency_graph_is_legible():
    assert problems(viz.dependency_graph(write_skew_report())) == []


def test_animation_frames_are_legible(busy):
    anim = viz.animate(busy, last=40)
    assert anim._fig.dpi == DPI  # frames are embedded at their own pixel size
    for i in range(0, len(anim.scenes), 7):
        anim._func(i)
        assert problems(anim._fig) == [], f"frame {i}: {anim.scenes[i].event}"


def test_sequence_labels_of_a_commit_never_overlap(committed):
    """The coordinator is also a participant: its PREPARE/VOTE/COMMIT/ACK to itself loop
    beside its lane, next to its log records; no label may cover another."""
    fig = viz.sequence_diagram(committed)
    texts = visible_texts(fig)
    labels = [t.get_text() for t in texts]
    assert any(s.startswith("log PREPARE") for s in labels)
    assert sum(s == "PREPARE T1" for s in labels) == 3  # every message is labelled
    boxes = [t.get_window_extent() for t in texts]
    for i, a in enumerate(boxes):
        for j, b in enumerate(boxes[i + 1:], i + 1):
            assert not a.overlaps(b), f"{labels[i]!r} overlaps {labels[j]!r}"
    assert problems(fig) == []


def test_partition_groups_are_in_both_legends(busy):
    fig = viz.cluster_view(busy)  # n3 is cut off from n1 n2
    legend = fig.axes[0].get_legend()
    entries = [t.get_text() for t in legend.get_texts()]
    assert any("group 0" in e for e in entries) and any("group 1" in e for e in entries)
    html = st.legend_html()
    assert "partition group" in html
    for color in st.GROUP_COLORS[:2]:
        assert color in html
