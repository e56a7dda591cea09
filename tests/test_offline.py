"""Nothing leaves the machine: a label job inside a network namespace with no interfaces,
traced with strace, makes no network system call and writes no file outside its own places.

onnxruntime's telemetry uploader starts its DNS lookups some 10-20 s after the first session is
created (measured: 9.4 s on an idle machine), so the traced process keeps an encoder session
open from before the job until ``LINGER_SECONDS`` after the job began. The child's environment drops the variables
that make onnxruntime suppress telemetry by itself on CI machines (``CI``, ``GITHUB_ACTIONS``...):
with them the test would pass whatever mollia-edge does.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import write_input

LINGER_SECONDS = 25
"""From the driver's own onnxruntime session, opened before the job: onnxruntime's uploader
starts 10-20 s after a session."""
CI_SUPPRESSORS = ("CI", "GITHUB_ACTIONS", "TF_BUILD", "ORT_RUNNING_UNIT_TESTS", "ORT_DISABLE_TELEMETRY")
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT")
DRIVER = """
import sys, time
from mollia_edge.al.encoder import Encoder
encoder = Encoder()  # an onnxruntime session stays open through the job and after, as in a long job
started = time.monotonic()
from mollia_edge.cli import main
code = main(sys.argv[1:])
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


LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|inet_pton\(AF_INET6, "::ffff:127\.')


def _network_calls(trace: str, loopback: bool = False) -> list[str]:
    """connect/send calls to a network address (with ``loopback``: to one not on this machine)."""
    calls = [line for line in trace.splitlines() if re.search(r"\b(connect|sendto|sendmsg|sendmmsg)\(", line)]
    calls = [line for line in calls if "AF_UNIX" not in line and "AF_NETLINK" not in line]
    if loopback:  # a send on a connected socket names no address: its connect was checked
        calls = [line for line in calls if "AF_INET" in line and not LOOPBACK.search(line)]
    return calls


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
               "-e", "trace=connect,sendto,sendmsg,sendmmsg,openat,mkdir,mkdirat,rename,renameat,renameat2,creat",
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


RAY_DRIVER = """
import sys
from mollia_edge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(_namespace_problem() is not None, reason=str(_namespace_problem()))
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (the cluster extra)")
def test_a_ray_local_job_talks_to_nothing_but_loopback(tiny_model_path, tmp_path):
    """Every process Ray starts (raylet, GCS, the dashboard process, workers) inherits the job's
    settings: with loopback up and a resolver and a network left out, strace sees no call to an
    address off this machine (Ray would ask 8.8.8.8 and cloud metadata servers otherwise)."""
    if shutil.which("ip") is None:
        pytest.skip("`ip` is not installed (Debian: apt-get install iproute2)")
    work = tmp_path / "work"
    work.mkdir()
    write_input(work / "in.csv", n=30, seeds=12)
    env = {k: v for k, v in os.environ.items() if k not in CI_SUPPRESSORS and not k.startswith(("XDG_", "MPL"))}
    env |= {"HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    trace_file = tmp_path / "trace.txt"
    argv = ["label", "in.csv", "--labels", "pos,neg", "--models", str(tiny_model_path), "--chat-format", "chatml",
            "--rounds", "1", "--batch", "5", "--llm-sample", "10", "--classifier", "head", "--quiet", "-o", "out.csv",
            "--ray", "local", "--ray-actors", "1"]
    traced = shlex.join(["strace", "-f", "-qq", "-o", str(trace_file), "-e", "trace=connect,sendto,sendmsg,sendmmsg",
                         sys.executable, "-c", RAY_DRIVER, *argv])
    done = subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && {traced}"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (work / "out.csv").is_file()
    trace = trace_file.read_text(errors="replace")
    assert "127.0.0.1" in trace  # Ray did talk, over loopback
    assert _network_calls(trace, loopback=True) == []


@pytest.mark.skipif(_namespace_problem() is not None, reason=str(_namespace_problem()))
def test_ray_local_without_loopback_is_one_line_at_once(tiny_model_path, tmp_path):
    write_input(tmp_path / "in.csv", n=30, seeds=12)
    argv = ["label", "in.csv", "--labels", "pos,neg", "--models", str(tiny_model_path), "--chat-format", "chatml",
            "--quiet", "-o", "out.csv", "--ray", "local"]
    started = time.monotonic()
    done = subprocess.run(["unshare", "-n", sys.executable, "-c", RAY_DRIVER, *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and lines[-1].startswith("error: --ray local needs the loopback interface"), done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 30


TELEMETRY_TEST = """
import onnxruntime as ort  # first, as a test module may import it before mollia_edge
from onnx import TensorProto, helper


def test_a_session():
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    ort.InferenceSession(helper.make_model(graph).SerializeToString())
"""


def test_a_test_run_writes_nothing_under_the_home_folder(tmp_path):
    """A test module that imports onnxruntime before mollia-edge, run with this folder's conftest:
    no telemetry database, no device id, nothing new under $HOME."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "test_first.py").write_text(TELEMETRY_TEST)
    env = {k: v for k, v in os.environ.items() if k not in CI_SUPPRESSORS and not k.startswith(("XDG_", "MPL"))}
    env |= {"HOME": str(home), "PYTHONPATH": str(Path(__file__).parent), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           str(tmp_path / "test_first.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
