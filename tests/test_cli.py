"""The ``kvlab`` command: ``kvlab solutions`` writes out the packaged solutions notebook, which
stays correct because it is executed here (through nbval, like the notebooks in notebooks/)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

import kvlab
from kvlab import cli

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = ROOT / "kvlab" / "solutions" / cli.SOLUTIONS
REFRESH = (f"if the engine's output changed on purpose, refresh the stored outputs with: "
           f"jupyter nbconvert --to notebook --execute --inplace "
           f"{PACKAGED.relative_to(ROOT)}")


def test_solutions_ship_in_the_package_not_next_to_the_exercises():
    assert cli.solutions_notebook() == PACKAGED.read_bytes()
    assert not (ROOT / "notebooks" / cli.SOLUTIONS).exists()
    assert (ROOT / "notebooks" / "07_workshop_exercises.ipynb").exists()


def test_nothing_links_the_old_location():
    texts = {p: p.read_text(encoding="utf-8") for p in [
        ROOT / "README.md", *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "docs").glob("*.md"),
        *(p for p in (ROOT / "binder").iterdir() if p.is_file())]}
    link = re.compile(r"\]\((\./)?(notebooks/)?" + re.escape(cli.SOLUTIONS) + r"\)")
    stale = [str(p.relative_to(ROOT)) for p, text in texts.items() if link.search(text)]
    assert not stale, f"{stale} still link {cli.SOLUTIONS} beside the exercises: point to " \
                      f"`kvlab solutions` (docs/workshop.md) instead"


def test_writes_the_notebook_and_says_where(tmp_path, capsys):
    assert cli.main(["solutions", str(tmp_path)]) == 0
    target = tmp_path / cli.SOLUTIONS
    assert target.read_bytes() == PACKAGED.read_bytes()
    assert capsys.readouterr().out == f"wrote {target.resolve()}\n"


def test_default_directory_is_the_current_one_and_missing_ones_are_created(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["solutions"]) == 0
    assert (tmp_path / cli.SOLUTIONS).exists()
    assert cli.main(["solutions", "handouts/day2"]) == 0
    assert (tmp_path / "handouts" / "day2" / cli.SOLUTIONS).read_bytes() == PACKAGED.read_bytes()


def test_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    target = tmp_path / cli.SOLUTIONS
    target.write_text("my annotated copy")
    assert cli.main(["solutions", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert target.read_text() == "my annotated copy"
    assert cli.main(["solutions", "--force", str(tmp_path)]) == 0
    assert target.read_bytes() == PACKAGED.read_bytes()
    with pytest.raises(FileExistsError):
        cli.write_solutions(tmp_path)
    assert cli.write_solutions(tmp_path, force=True) == target


def test_refuses_a_file_as_directory(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert cli.main(["solutions", str(tmp_path / "notes.txt")]) == 1
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(NotADirectoryError):
        cli.write_solutions(tmp_path / "notes.txt")


def test_usage_errors_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"kvlab {kvlab.__version__}"


def test_python_dash_m_kvlab_runs_the_same_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kvlab", "solutions", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {(tmp_path / cli.SOLUTIONS).resolve()}"


def test_pyproject_declares_the_command_and_ships_the_notebook():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert setup["project"]["scripts"]["kvlab"] == "kvlab.cli:main"
    globs = setup["tool"]["setuptools"]["package-data"]["kvlab.solutions"]
    assert any(fnmatch(cli.SOLUTIONS, g) for g in globs)


def test_the_stored_solutions_all_say_correct():
    nb = json.loads(PACKAGED.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    checks = [c for c in code if "workshop.check_" in "".join(c["source"])]
    assert len(checks) == 6
    for cell in checks:
        shown = json.dumps(cell["outputs"], ensure_ascii=False)
        assert "✔ correct" in shown, f"{''.join(cell['source'])} does not say correct: {shown}"


def test_the_solutions_notebook_runs_and_matches_its_stored_outputs(tmp_path):
    pytest.importorskip("nbval")
    assert cli.main(["solutions", str(tmp_path)]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--color=no", "-p", "no:cacheprovider",
         f"--rootdir={tmp_path}",
         "--nbval", "--nbval-current-env", "--nbval-sanitize-with",
         str(ROOT / "notebooks" / "sanitize.cfg"), cli.SOLUTIONS],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{REFRESH}\n{done.stdout[-6000:]}{done.stderr[-2000:]}"
