"""The HDF5 layout documented in the README is what a real run file contains."""
import re
from pathlib import Path

import h5py
import pytest

from fastres.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"


def documented_entries():
    """(path, attribute or None) pairs from the README's HDF5 table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## HDF5 run file", 1)[1].split("\n## ", 1)[0]
    entries = []
    for line in section.splitlines():
        if not line.startswith("| `/"):
            continue
        cell = line.split("|")[1]
        base = None
        for tok in re.findall(r"`([^`]+)`", cell):
            if tok.startswith("/"):
                base = tok
                entries.append((tok, None))
            elif tok.startswith(".../"):
                entries.append((base.rsplit("/", 1)[0] + tok[3:], None))
            else:
                entries.append((base, tok))
    return entries


def expand(path, epoch, layers):
    path = path.replace("<epoch:06d>", f"{epoch:06d}")
    if "<l>" in path:
        return [path.replace("<l>", str(l)) for l in range(1, layers + 1)]
    return [path]


@pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(), reason=f"MNIST not found at {MNIST}")
def test_readme_layout_matches_a_real_run(tmp_path):
    path = tmp_path / "run.h5"
    cfg = TrainConfig(arch="784-10-10", n_train=100, n_test=50, epochs=1, data=str(MNIST), store_samples=8)
    train(cfg, path, log=lambda s: None, progress=False)
    entries = documented_entries()
    assert len(entries) > 20
    with h5py.File(path, "r") as f:
        for p, attr in entries:
            for q in expand(p, 1, 2):
                assert q in f, f"README documents {q}, missing from the run file"
                if attr is not None:
                    assert attr in f[q].attrs, f"README documents attribute {attr} of {q}"
