#!/usr/bin/env bash
# Check what Binder builds from binder/, without Docker. In a venv of its own (under a temporary
# directory) it installs jupyter-repo2docker, asks it for the build plan of a copy of this
# repository (`repo2docker --no-build --no-run --debug` prints the Dockerfile), and fails unless
#   - repo2docker picks the Python of binder/runtime.txt,
#   - it installs binder/requirements.txt, every line of which is pinned with ==,
#   - it runs binder/postBuild (which installs kvlab),
#   - pip resolves the pins to exactly the pinned set (nothing floats), and together with the
#     Jupyter packages of repo2docker's base environment without a conflict.
# Needs PyPI (tests/test_binder.py has the offline checks). PYTHON=python3.11 picks the Python.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ -f binder/runtime.txt ] || { echo "FAIL: no binder/runtime.txt"; exit 1; }
want=$(sed -n 's/^python-\([0-9][0-9]*\.[0-9][0-9]*\)$/\1/p' binder/runtime.txt)
if [ -z "$want" ]; then
  echo "FAIL: binder/runtime.txt should read python-X.Y, not '$(cat binder/runtime.txt)'"; exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvlab-binder.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
PY=${PYTHON:-$(command -v "python$want" || command -v python3)}

echo "== installing jupyter-repo2docker into $tmp/venv ($("$PY" --version))"
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check jupyter-repo2docker 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
echo "repo2docker $("$tmp/venv/bin/repo2docker" --version)"

echo "== asking repo2docker for the build plan of a copy of the repository"
mkdir "$tmp/repo"
tar -C "$ROOT" --exclude=./.venv --exclude=./venv --exclude=./.git --exclude=./build \
  --exclude=./dist --exclude=__pycache__ --exclude=./.hypothesis --exclude=./.ruff_cache \
  --exclude=./.pytest_cache --exclude='*.egg-info' -cf - . | tar -C "$tmp/repo" -xf -
"$tmp/venv/bin/repo2docker" --no-build --no-run --debug --user-id 1000 --user-name jovyan \
  "$tmp/repo" > "$tmp/plan.txt" 2>&1 || { cat "$tmp/plan.txt"; echo "FAIL: repo2docker"; exit 1; }

echo "== checking the plan and the pins"
"$tmp/venv/bin/python" - "$tmp" "$want" <<'PY'
import json, re, subprocess, sys
from pathlib import Path

import repo2docker.buildpacks.conda as conda

tmp, want = Path(sys.argv[1]), sys.argv[2]
plan = (tmp / "plan.txt").read_text()
failures = []

m = re.search(r"Building conda environment for python=(\d+\.\d+)", plan)
chosen = m[1] if m else None
# the lock file is COPY'd under an escaped name: "." is "-2e" and "-" is "-2d"
lock = re.search(r"environment-2epy-2d(\d+)-2e(\d+)-2dlinux-2d64-2elock", plan)
locked_py = f"{lock[1]}.{lock[2]}" if lock else None
print(f"repo2docker chose Python {chosen} "
      f"(base environment: environment.py-{locked_py}-linux-64.lock)")
if chosen != want or locked_py != want:
    failures.append(f"repo2docker chose Python {chosen}, binder/runtime.txt says {want}")
if "KERNEL_PYTHON_PREFIX=${NB_PYTHON_PREFIX}" in plan:
    print("the kernel runs in the server's environment, so the pins apply to both")
else:
    failures.append("the kernel gets an environment of its own: the pins may not reach it")
install = re.search(r'RUN \$\{KERNEL_PYTHON_PREFIX\}/bin/pip install --no-cache-dir -r '
                    r'"binder/requirements.txt"', plan)
print("it installs:", "binder/requirements.txt" if install else "NOT binder/requirements.txt",
      "then", "binder/postBuild" if "./binder/postBuild" in plan else "NO postBuild")
if not install:
    failures.append("repo2docker does not install binder/requirements.txt")
if "RUN ./binder/postBuild" not in plan:
    failures.append("repo2docker does not run binder/postBuild")

pins, bad = {}, []
for line in (tmp / "repo/binder/requirements.txt").read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    p = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
    if p:
        pins[re.sub(r"[-_.]+", "-", p[1]).lower()] = p[2]
    else:
        bad.append(line)
print(f"binder/requirements.txt: {len(pins)} pins with =="
      + (f", NOT pinned: {bad}" if bad else ""))
if bad:
    failures.append(f"not pinned with ==: {bad}")


def resolve(extra: list[str], report: Path) -> dict[str, str] | None:
    """What pip would install for the pins (+ extra) on this Python, or None if it can't."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--disable-pip-version-check", "--report", str(report),
           "-r", str(tmp / "repo/binder/requirements.txt"), *extra]
    if f"{sys.version_info.major}.{sys.version_info.minor}" != want:
        cmd += ["--python-version", want, "--only-binary=:all:", "--target", str(tmp / "t")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(done.stdout + "\n".join(
            line for line in done.stderr.splitlines() if "is ignored" not in line))
        return None
    got = json.loads(report.read_text())["install"]
    return {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
            for i in got}


alone = resolve([], tmp / "alone.json")
if alone is None:
    failures.append("pip cannot resolve binder/requirements.txt")
else:
    floating = sorted(f"{n}=={v}" for n, v in alone.items() if n not in pins)
    unused = sorted(n for n in pins if n not in alone)
    print(f"pip resolves the pins alone to {len(alone)} packages"
          + (f"; unpinned: {floating}" if floating else ", every one of them pinned"))
    if floating:
        failures.append(f"these would float on Binder, pin them: {floating}")
    if unused:
        print(f"(pinned but not needed: {unused})")

# The server packages repo2docker's base environment brings (conda names, lock versions).
base_dir = Path(conda.__file__).parent
wanted = re.findall(r"^- ([A-Za-z0-9_.-]+)[=<>]", (base_dir / f"environment.py-{want}.yml")
                    .read_text(), flags=re.M)
locked = dict(re.findall(
    r"/(?:noarch|linux-64)/([A-Za-z0-9_.-]+?)-(\d[^-]*)-[^-/]+\.(?:conda|tar\.bz2)",
    (base_dir / f"environment.py-{want}-linux-64.lock").read_text()))
rename = {"jupyterhub-singleuser": "jupyterhub-base"}  # conda metapackage -> what it locks
base = []
for name in wanted:
    if name in ("python", "nodejs", "pip"):
        continue
    version = locked.get(rename.get(name, name))
    pypi = "jupyterhub" if name == "jupyterhub-singleuser" else name
    key = re.sub(r"[-_.]+", "-", pypi).lower()
    if key in pins:
        print(f"the base environment's {pypi} {version} is replaced by the pin {pins[key]}")
    elif version:
        base.append(f"{pypi}=={version}")
together = resolve(base, tmp / "together.json")
print(f"pip resolves the pins with the base environment's {base}:",
      "ok" if together is not None else "CONFLICT")
if together is None:
    failures.append("the pins conflict with repo2docker's base environment (see above): "
                    "pin a matching release of the conflicting package")

if failures:
    print("\nFAIL:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("\nOK: Binder gets Python", want, "and exactly the pinned packages")
PY
