"""Issue 10's file, process, CLI and Trajectory failures, measured (before/after; not a test).

    PYTHONPATH=src python tests/fault_repro.py                 # this checkout
    git archive 102798d src | tar -x -C /tmp/old && PYTHONPATH=/tmp/old/src python tests/fault_repro.py

(the second line runs it against the code before issue 10). It runs tests/fault_driver.py's
stand-in experiments, never the real ones; about two minutes.
"""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from curvdyn import reproduce
from curvdyn.simulate import Trajectory

PY = sys.executable
TESTS = Path(__file__).resolve().parent
ENV = dict(os.environ, MPLBACKEND="Agg")
tmp = Path(tempfile.mkdtemp(prefix="repro-"))


def alive(pid):
    try:
        st = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in st


# 1. kill during writes of data.npz (save_data) and Trajectory.save
writer = tmp / "writer.py"
writer.write_text("""
import sys, numpy as np
from pathlib import Path
from curvdyn import reproduce
from curvdyn.simulate import Trajectory
out = Path(sys.argv[1]); k = 0
try:
    from curvdyn import io
    rec = io.run_record(seeds=[0], resolution="quick")
    save = lambda path, data: reproduce.save_data(path, data, rec)
except ImportError:
    save = reproduce.save_data
rng = np.random.default_rng(0)
big = rng.standard_normal((400, 16, 16))
while True:
    k += 1
    save(out / "data.npz", {"x": big + k, "k": np.array(k)})
    tr = Trajectory(t=np.arange(400.0) + k, weights=(big, big, big), loss=np.ones(400), map=big, conserved=(big, big),
                    update_norm=np.ones(400), status="completed", message="m", config={"k": k})
    tr.save(out / "traj.npz")
    print(k, flush=True)
""")
bad = {"data.npz": 0, "traj.npz": 0}
n = 8
for i in range(n):
    d = tmp / f"w{i}"
    d.mkdir()
    p = subprocess.Popen([PY, str(writer), str(d)], stdout=subprocess.PIPE, env=ENV, text=True)
    assert p.stdout.readline(), "the writer failed before its first complete write"
    time.sleep(random.uniform(0.05, 0.6))
    p.kill()
    p.wait()

    try:
        reproduce.load_data(d / "data.npz")
    except Exception:
        bad["data.npz"] += 1
    try:
        Trajectory.load(d / "traj.npz")
    except Exception:
        bad["traj.npz"] += 1
print(
    f"[files] {n} SIGKILLs during rewrite: corrupt data.npz {bad['data.npz']}/{n}, corrupt trajectory {bad['traj.npz']}/{n}"
)

# 2. parent killed -> workers left alive
out = tmp / "killparent"
pids = tmp / "pids"
pids.mkdir()
env = dict(ENV, FAULT_SLEEP="alpha=60,beta=60,gamma=60", FAULT_PIDS=str(pids))
p = subprocess.Popen(
    [PY, str(TESTS / "fault_driver.py"), "reproduce", "--jobs", "2", "--no-progress", "--out", str(out)],
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
t0 = time.time()
while len(list(pids.glob("*.pid"))) < 2 and time.time() - t0 < 60:
    time.sleep(0.1)
wpids = [int(f.read_text()) for f in pids.glob("*.pid")]
p.kill()
p.wait()
time.sleep(5)
print(f"[processes] parent SIGKILLed; 5 s later workers alive: {sum(alive(w) for w in wpids)} of {len(wpids)}")
for w in wpids:
    if alive(w):
        os.kill(w, signal.SIGKILL)

# 3. Ctrl-C
out = tmp / "ctrlc"
pids2 = tmp / "pids2"
pids2.mkdir()
env = dict(ENV, FAULT_SLEEP="alpha=60,beta=60,gamma=60", FAULT_PIDS=str(pids2))
p = subprocess.Popen(
    [PY, str(TESTS / "fault_driver.py"), "reproduce", "--jobs", "2", "--no-progress", "--out", str(out)],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
)
t0 = time.time()
while len(list(pids2.glob("*.pid"))) < 2 and time.time() - t0 < 60:
    time.sleep(0.1)
os.killpg(p.pid, signal.SIGINT)
try:
    _, err = p.communicate(timeout=20)
    print(
        f"[ctrl-c] exit {p.returncode}, stderr {len(err.splitlines())} lines, traceback: {'Traceback' in err}: {err.strip()[:300]}"
    )
    if (out / "manifest.json").exists():
        print("[ctrl-c] manifest status:", json.loads((out / "manifest.json").read_text())["status"])
except subprocess.TimeoutExpired:
    print("[ctrl-c] still running 20 s after SIGINT")
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
for f in pids2.glob("*.pid"):
    w = int(f.read_text())
    if alive(w):
        os.kill(w, signal.SIGKILL)

# 4. interrupted re-run with another seed over complete results
out = tmp / "mixed"


def drv(*args, env_extra=None, **kw):
    return subprocess.run(
        [PY, str(TESTS / "fault_driver.py"), *args],
        env=dict(ENV, **(env_extra or {})),
        capture_output=True,
        text=True,
        **kw,
    )


r = drv("reproduce", "--jobs", "1", "--no-progress", "--out", str(out))
print("[mixed] run A seed 0 exit", r.returncode)
pids3 = tmp / "pids3"
pids3.mkdir()
p = subprocess.Popen(
    [PY, str(TESTS / "fault_driver.py"), "reproduce", "--jobs", "1", "--seed", "1", "--no-progress", "--out", str(out)],
    env=dict(ENV, FAULT_SLEEP="beta=60", FAULT_PIDS=str(pids3)),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
while not (pids3 / "beta.pid").exists():
    time.sleep(0.1)
p.kill()
p.wait()
md = (out / "report.md").read_text()
print(
    "[mixed] after run B (seed 1) killed in its 2nd figure, report.md says:",
    [l for l in md.splitlines() if "seed" in l or "Result" in l or "IN PROGRESS" in l][:3],
)
if (out / "manifest.json").exists():
    print("[mixed] manifest status:", json.loads((out / "manifest.json").read_text())["status"])
r = drv("reproduce", "--replot", "--jobs", "1", "--no-progress", "--check", "--out", str(out))
md = (out / "report.md").read_text()
print(
    "[mixed] --replot --check exit",
    r.returncode,
    "; stderr:",
    r.stderr.strip()[:400],
    "; report:",
    [l for l in md.splitlines() if "seed" in l][:1],
)

# 5. CLI errors
f = tmp / "afile"
f.write_text("x")
for args in (
    ["reproduce", "--out", str(f)],
    ["simulate", "--out", str(f), "--t-end", "0.1", "--n-save", "3", "--no-plot"],
    ["simulate", "--n-save", "1", "--no-plot", "--out", str(tmp / "s1")],
    ["simulate", "--init-scale", "1e200", "--no-plot", "--out", str(tmp / "s2")],
    ["reproduce", "nosuchfig"],
):
    r = subprocess.run([PY, "-m", "curvdyn.cli", *args], capture_output=True, text=True, env=ENV)
    print(
        f"[cli] {' '.join(a if len(a) < 40 else '...' for a in args)}: exit {r.returncode}, stderr lines {len(r.stderr.splitlines())}, traceback {'Traceback' in r.stderr}"
        + (f": {r.stderr.strip()}" if len(r.stderr.splitlines()) == 1 else "")
    )

# 6. Trajectory: missing layer, suffix

w = np.zeros((3, 2, 2))
tr = Trajectory(
    t=np.arange(3.0),
    weights=(w, w, w),
    loss=np.ones(3),
    map=w,
    conserved=(w, w),
    update_norm=np.ones(3),
    status="completed",
    message="m",
    config={"widths": [2, 2, 2, 2]},
)
tr.save(tmp / "t.npz")
with np.load(tmp / "t.npz") as z:
    arrs = {k: z[k] for k in z.files if k != "weights_2"}
np.savez(tmp / "t_missing.npz", **arrs)
try:
    back = Trajectory.load(tmp / "t_missing.npz")
    print(f"[trajectory] file without weights_2 loads: {len(back.weights)} layers of 3")
except Exception as exc:
    print(f"[trajectory] file without weights_2: {type(exc).__name__}: {exc}")
tr.save(tmp / "x_b")
try:
    Trajectory.load(tmp / "x_b")
    print("[trajectory] save('x_b') then load('x_b'): OK")
except Exception as exc:
    print(f"[trajectory] save('x_b') then load('x_b'): {type(exc).__name__}: {exc}")
