import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread for the whole session (torch's own setting is one per core).

    Every model in the tests and in README.md is tiny: on a busy 2-core machine
    the OpenMP threads of a second core spin-wait, and made the README's training
    examples up to ten times slower. No test depends on the thread count.
    """
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def splits(monkeypatch) -> list:
    """How many pool threads each split :func:`ecnn.chunkrun.run` or ``imap_packed`` asked for during the test."""
    from ecnn import chunkrun

    asked = []
    real = chunkrun._submit

    def submit(task, copies):
        asked.append(copies)
        real(task, copies)

    monkeypatch.setattr(chunkrun, "_submit", submit)
    return asked


@pytest.fixture(scope="session")
def determinism(tmp_path_factory) -> tuple[dict, dict]:
    """The files of tests/_determinism.py made here and in ONE child interpreter, for every determinism test.

    The child runs with another hash seed (``PYTHONHASHSEED``) than this process and
    encodes with 2 workers where this one encodes with one; both run
    at once. Returns ``(here, child)``: ``here`` maps each case to its digest; ``child``
    holds the child's ``digests``, its ``hash`` of :data:`_determinism.HASH_PROBE`
    and its ``workers``.
    """
    import json
    import subprocess

    import _determinism

    from ecnn import chunkrun

    out = tmp_path_factory.mktemp("determinism")
    _determinism.cli_input(out)
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"
    env = dict(os.environ, PYTHONHASHSEED=seed, ECNN_WORKERS="2")
    tests = str(ROOT / "tests")
    code = f"import sys; sys.path.insert(0, {tests!r}); import _determinism; _determinism.child(sys.argv[1])"
    cmd = [sys.executable, "-c", code, str(out)]
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            with chunkrun.using(1):
                here = _determinism.digests(out, "here")
        finally:
            try:
                stdout, stderr = p.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                p.kill()
                raise
    assert p.returncode == 0, stderr[-3000:]
    return here, json.loads(stdout)


_LEAN_IMPORT = """
import json, sys
import ecnn
after_import = sorted(sys.modules)
import numpy as np
import ecnn.numpy as en
data = en.encode({"w": np.ones((8, 8), np.float32)}, bits=4)
round_trip = bool((en.decode(data)["w"] == 1).all())
print(json.dumps({"import ecnn": after_import, "numpy round trip": round_trip, "after numpy api": sorted(sys.modules)}))
"""


@pytest.fixture(scope="session")
def lean_import() -> dict:
    """What ONE fresh interpreter holds in ``sys.modules`` after ``import ecnn``, and after
    encoding and decoding with ``ecnn.numpy`` (``"import ecnn"``, ``"after numpy api"``),
    and whether that round trip gave back its values (``"numpy round trip"``).

    Shared by the lean-import tests of tests/test_imports.py and tests/test_train.py.
    """
    import json
    import subprocess

    r = subprocess.run([sys.executable, "-c", _LEAN_IMPORT], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)
