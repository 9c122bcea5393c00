"""``benchmarks/pipeline.py --quick`` runs and prints one table row per method and batch size."""
import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_benchmark_quick(capsys):
    pytest.importorskip("pydicom")
    spec = importlib.util.spec_from_file_location("bench_pipeline", REPO_ROOT / "benchmarks" / "pipeline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--quick", "--methods", "fbp,cgls", "--batch-sizes", "1,2", "--device", "cpu", "--repeat", "1"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| cpu |")]
    cells = [r.split("|")[2].strip() + ":" + r.split("|")[3].strip() for r in rows]
    assert cells == ["fbp:1", "fbp:2", "cgls:1", "cgls:2"]
    assert rows[0].split("|")[6].strip() == "1.000"  # batch 1 against itself
