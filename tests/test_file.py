"""ecnn/file.py: whole files from records encoded one by one."""

import numpy as np
import pytest

from ecnn import codec, dtypes, file
from ecnn.config import EncodeConfig
from ecnn.errors import InvalidOption, InvalidTensorName


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "w": (rng.standard_normal((16, 8)).astype(np.float32), dtypes.get("float32")),
        "n": (np.arange(5, dtype=np.int64), dtypes.get("int64")),
    }


def test_encode_records_writes_what_encode_writes():
    arrays, cfg, md = _arrays(), EncodeConfig(bits=6, align=64), {"k": "v"}
    recs, pays = zip(*(codec.encode_tensor(n, a, dt, cfg) for n, (a, dt) in arrays.items()))
    kept = [dict(r) for r in recs]
    assert b"".join(file.encode_records(list(recs), list(pays), md, cfg.align)) == file.encode(arrays, cfg, md)
    assert list(recs) == kept  # the records are not filled in


@pytest.mark.parametrize(
    "names, md, err",
    [(["w", "w"], {}, InvalidTensorName), (["", "n"], {}, InvalidTensorName), (["w", "n"], {"k": 1}, InvalidOption)],
)
def test_encode_records_checks_names_and_metadata(names, md, err):
    cfg = EncodeConfig(lossless=True)
    recs, pays = [], []
    for name, (a, dt) in zip(names, _arrays().values()):
        rec, pay = codec.encode_tensor(name, a, dt, cfg)
        recs.append(rec)
        pays.append(pay)
    with pytest.raises(err):
        file.encode_records(recs, pays, md)
