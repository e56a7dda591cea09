"""Nothing leaves the machine: a label job inside a network namespace with no interfaces,
traced with strace, makes no network system call and writes no file outside its own places.

onnxruntime's telemetry uploader starts its DNS lookups some 10-20 s after the first session is
created (measured: 9.4 s on an idle machine), so the traced process keeps an encoder session
open for ``LINGER_SECONDS`` in all after the job. The child's environment drops the variables
that make onnxruntime suppress telemetry by itself on CI machines (``CI``, ``GITHUB_ACTIONS``...):
with them the test would pass whatever mollia-edge does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_label_job import write_input

LINGER_SECONDS = 40
CI_SUPPRESSORS = ("CI", "GITHUB_ACTIONS", "TF_BUILD", "ORT_RUNNING_UNIT_TESTS", "ORT_DISABLE_TELEMETRY")
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT")
DRIVER = """
import sys, time
started = time.monotonic()
from mollia_edge.cli import main
code = main(sys.argv[1:])
from mollia_edge.al.encoder import Encoder
encoder = Encoder()  # an onnxruntime session stays open, as in a long job
encoder.encode(["one more text"])
time.sleep(max(0.0, {linger} - (time.monotonic() - started)))
sys.exit(code)
"""


def _namespace_problem() -> str | None:
    for tool in ("unshare", "strace"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: apt-get install util-linux strace)"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a network namespace (`unshare -n` needs root): {probe.stderr.strip()}"
    return None


def _network_calls(trace: str) -> list[str]:
    calls = [line for line in trace.splitlines() if re.search(r"\b(connect|sendto|sendmsg)\(", line)]
    return [line for line in calls if "AF_UNIX" not in line and "AF_NETLINK" not in line]


def _written_paths(trace: str) -> set[str]:
    """Paths opened for writing or created (openat / mkdir / rename targets), as strace printed them."""
    paths = set()
    for line in trace.splitlines():
        if re.search(r"\bopenat\(", line) and WRITE_FLAGS.search(line):
            found = re.search(r'openat\([^,]+, "([^"]+)"', line)
        elif re.search(r"\b(mkdir|mkdirat|rename|renameat2?|creat)\(", line):
            found = re.search(r'"([^"]+)"[^"]*\)\s*=\s*0', line)
        else:
            continue
        if found and "= -1" not in line:
            paths.add(found.group(1))
    return paths


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.skipif(_namespace_problem() is not None, reason=str(_namespace_problem()))
def test_label_job_makes_no_network_call_and_writes_only_its_own_files(tiny_model_path, tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    (home / "notes.txt").write_text("the user's own file\n")
    write_input(work / "in.csv", n=40, seeds=12)
    before = _listing(home)
    env = {k: v for k, v in os.environ.items() if k not in CI_SUPPRESSORS and not k.startswith(("XDG_", "MPL"))}
    env |= {"HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    trace_file = tmp_path / "trace.txt"
    argv = ["label", "in.csv", "--labels", "pos,neg", "--models", str(tiny_model_path), "--chat-format", "chatml",
            "--rounds", "2", "--batch", "5", "--llm-sample", "15", "--quiet", "-o", "out.csv"]
    command = ["unshare", "-n", "strace", "-f", "-qq", "-o", str(trace_file),
               "-e", "trace=connect,sendto,sendmsg,openat,mkdir,mkdirat,rename,renameat,renameat2,creat",
               sys.executable, "-c", DRIVER.format(linger=LINGER_SECONDS), *argv]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (work / "out.csv").is_file()
    trace = trace_file.read_text(errors="replace")

    allowed = (str(work) + "/", str(home / ".cache" / "mollia-edge"), "/dev/", "/proc/", "/sys/")
    written = {os.path.normpath(os.path.join(work, p)) for p in _written_paths(trace)}
    new_in_home = _listing(home) - before
    problems = {
        "network calls": _network_calls(trace),
        "files written outside the job's folder and mollia-edge's own": sorted(
            p for p in written if not p.startswith(allowed)),
        "new in $HOME": sorted(p for p in new_in_home if p != ".cache" and not p.startswith(".cache/mollia-edge")),
    }
    assert not any(problems.values()), problems
