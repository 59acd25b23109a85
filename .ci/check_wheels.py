#!/usr/bin/env python3
"""Check that each requirement in requirements.txt has a wheel on PyPI for Python 3.10-3.14 on
manylinux x86_64 (glibc 2.35, as Ubuntu 22.04), macOS 15 arm64 and Windows amd64:

    python .ci/check_wheels.py [--python-versions 3.12,3.13] [--platforms linux,macos] [-j 8]

Prints a markdown table of the version (--files: the file) of the wheel pip picks per
requirement and target; exits 1 where there is none (ALLOWED excepted). A line's extras add
what the Requires-Dist of the wheel picked gives them, markers evaluated for the target. pip
is asked as the target would ask (`pip install --dry-run --no-deps --only-binary=:all:
--python-version V --platform TAG...`), without pip's config files and PIP_* settings
(find-links, constraints); fast-deps reads only a wheel's metadata. Network only, ~2 minutes.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    from packaging import requirements, tags, utils
except ImportError:
    from pip._vendor.packaging import requirements, tags, utils

PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14"]
# The platform tags each target accepts, best first, as pip lists them on such a machine
# (pip matches --platform tags exactly, except that it adds older macOS ones itself).
_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
LINUX_TAGS = [f"{tag}_x86_64" for n in range(35, 4, -1)
              for tag in [f"manylinux_2_{n}", _LEGACY.get(n)] if tag]
MARKERS = ["sys_platform", "platform_system", "platform_machine", "os_name"]
PLATFORMS = {  # name: (platform tags, then the values of MARKERS)
    "linux": (LINUX_TAGS, "linux", "Linux", "x86_64", "posix"),
    "macos": (list(tags.mac_platforms((15, 0), "arm64")), "darwin", "Darwin", "arm64", "posix"),
    "windows": (["win_amd64"], "win32", "Windows", "AMD64", "nt"),
}
# The only requirements allowed to have no wheel: (name, Python version): why.
ALLOWED = {("box2d-py", "3.14"): "Box2D on Python 3.14 is box2d-py 2.3.8, which has no wheel "
           "and builds with swig, itself a wheel"}
# The PIP_* settings kept: how to reach the index, not what it offers.
KEEP_ENV = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY", "PIP_TRUSTED_HOST", "PIP_RETRIES",
            "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK"}


def marker_env(py, plat):
    """The environment markers are evaluated in for the target."""
    return {**dict(zip(MARKERS, PLATFORMS[plat][1:])), "python_version": py,
            "python_full_version": py + ".0", "implementation_name": "cpython",
            "implementation_version": py + ".0", "platform_python_implementation": "CPython",
            "extra": ""}


def read_requirements(path):
    lines = [line.split(" #")[0].strip() for line in Path(path).read_text().splitlines()]
    if any(line.startswith("-") for line in lines):
        sys.exit(f"{path}: pip options (lines starting with -) are not supported here")
    return [requirements.Requirement(line) for line in lines if line and line[0] != "#"]


def ask_pip(row, py, plat, index_url):
    """(metadata, file name) of the wheel pip picks for the requirement on the target; None
    where no wheel fits; pip's error message where it failed for another reason."""
    req = requirements.Requirement(row)
    req.marker = None  # evaluated for the target already; pip would evaluate it for this machine
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
               "--no-deps", "--only-binary=:all:", "--use-feature=fast-deps",
               "--index-url", index_url, "--python-version", py, "--implementation", "cp",
               "--target", f"{tmp}/target", "--report", f"{tmp}/report.json", str(req)]
        cmd += [arg for tag in PLATFORMS[plat][0] for arg in ("--platform", tag)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in KEEP_ENV}
        env["PIP_CONFIG_FILE"] = os.devnull

        def run(verbosity):
            return subprocess.run(cmd + [verbosity], capture_output=True, text=True, env=env)
        if (out := run("--quiet")).returncode:
            if "No matching distribution" not in out.stderr:
                return out.stderr.strip()
            out = run("-vv")  # was it the index that failed? pip says so in a debug line only
            return next((line for line in (out.stdout + out.stderr).splitlines()
                         if "Could not fetch URL" in line), None)
        item = json.loads(Path(tmp, "report.json").read_text())["install"][0]
    return item["metadata"], item["download_info"]["url"].rsplit("/", 1)[-1]


def extras_added(req, metadata, env):
    """{requirement: [extras]} that req's extras add on the target, from its Requires-Dist."""
    added = {}
    for dep in map(requirements.Requirement, metadata.get("requires_dist", [])):
        if dep.marker is not None and not dep.marker.evaluate(env):  # else: not an extra's
            extras = [e for e in sorted(req.extras) if dep.marker.evaluate({**env, "extra": e})]
            dep.marker = None
            if extras:
                added[str(dep)] = added.get(str(dep), []) + extras
    return added


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requirements", default=Path(__file__).parent.parent / "requirements.txt")
    ap.add_argument("--python-versions", default=",".join(PYTHONS))
    ap.add_argument("--platforms", default=",".join(PLATFORMS))
    ap.add_argument("-j", "--jobs", type=int, default=8, help="pip calls at once")
    ap.add_argument("--index-url", default="https://pypi.org/simple")
    ap.add_argument("--files", action="store_true", help="wheel file names, not versions")
    args = ap.parse_args()
    if unknown := set(args.platforms.split(",")) - set(PLATFORMS):
        ap.error(f"unknown platform(s) {', '.join(sorted(unknown))}; known: {', '.join(PLATFORMS)}")
    targets = [(py, plat) for py in args.python_versions.split(",")
               for plat in args.platforms.split(",")]
    reqs, start, results = read_requirements(args.requirements), time.monotonic(), {}

    def check(jobs):  # [(row, target)] -> results[row, target]: what ask_pip answers
        def one(n, row, target):
            results[row, target] = answer = ask_pip(row, *target, args.index_url)
            shown = answer[1] if isinstance(answer, tuple) else answer and "pip failed"
            print(f"[{n}/{len(jobs)}] {' '.join(target)}: {row} -> {shown or 'no wheel'}",
                  file=sys.stderr, flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(one, range(1, len(jobs) + 1), *zip(*jobs)))

    check([(str(r), t) for t in targets for r in reqs
           if r.marker is None or r.marker.evaluate(marker_env(*t))])
    rows = {}  # requirement: where from; after each line, the requirements its extras add
    for req in reqs:
        rows[str(req)], added = "", {}
        for t in targets:
            if req.extras and isinstance(results.get((str(req), t)), tuple):
                for dep, es in extras_added(req, results[str(req), t][0], marker_env(*t)).items():
                    added[dep] = sorted(set(added.get(dep, []) + es))
                    results[dep, t] = "?"
        rows.update({dep: f" ({req.name}[{','.join(es)}])" for dep, es in added.items()})
    check([row_target for row_target, answer in results.items() if answer == "?"])

    allowed, failed = {}, {}

    def cell(row, py, plat):
        answer = results.get((row, (py, plat)), "n/a")  # n/a: not a requirement there
        why = ALLOWED.get((utils.canonicalize_name(requirements.Requirement(row).name), py))
        if isinstance(answer, tuple):
            return answer[1] if args.files else answer[0]["version"]
        if answer == "n/a":
            return "–"
        if answer is None and why:
            allowed.setdefault(row, [why]).append(f"{py} {plat}")
            return "source (allowed)"
        failed.setdefault(row, []).append(f"{py} {plat}")
        print(f"{row} on {py} {plat}: {answer or 'no wheel'}", file=sys.stderr)
        return "**no wheel**" if answer is None else "**pip failed**"
    print("| requirement | " + " | ".join(f"{py} {plat}" for py, plat in targets) + " |")
    print("|---|" + "---|" * len(targets))
    for row, where in rows.items():
        print(f"| `{row}`{where} | " + " | ".join(cell(row, *t) for t in targets) + " |")

    excepted = "; ".join(f"`{row}` on {', '.join(ts)}: no wheel: builds from source (allowed: "
                         f"{why})" for row, (why, *ts) in allowed.items())
    print("\n" + (f"all {len(rows)} requirements have a wheel for every target" if not failed
                  else f"FAILED: {len(failed)} of {len(rows)} requirements lack a wheel: " +
                  "; ".join(f"`{row}` on {', '.join(ts)}" for row, ts in failed.items()))
          + (f", except {excepted}" if excepted else ""))
    print(f"{time.monotonic() - start:.0f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
