"""benchmarks/gpu_smoke.py runs end to end here (CPU, tiny model), and skips what is not installed, in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_smoke.py"


def smoke(*args, pythonpath: str = ""):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(filter(None, [pythonpath,
                                                                                         os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], check=False, capture_output=True,
                          text=True, env=env, timeout=600)


def test_judge_and_tune_phases_run_and_write_their_table(tmp_path):
    result = smoke("--device", "cpu", "--tiny", "--phases", "judge,tune", "--out", tmp_path / "out",
                   "--assets", tmp_path / "no-assets")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_smoke.json").read_text())
    judge, tune = report["phases"]["judge"], report["phases"]["tune"]
    assert judge["status"] == tune["status"] == "ok"
    assert judge["figures"]["texts_per_s_bfloat16"] > 0 and judge["figures"]["max_abs_logodds_bf16_vs_fp32"] < 0.05
    assert tune["figures"]["steps"] == 2 and tune["figures"]["s_per_step_generation"] > 0
    assert tune["figures"]["s_per_step"] >= tune["figures"]["s_per_step_train_judge"] > 0
    table = (tmp_path / "out" / "gpu_smoke.md").read_text()
    assert "| judge | ok |" in table and "| tune | ok |" in table and "tiny Gemma 3" in table


def test_a_phase_whose_packages_are_missing_or_broken_is_skipped_with_one_line(tmp_path):
    path = tmp_path / "path"
    path.mkdir()
    # trl absent, as on a machine without it: the import system finds no such module
    (path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'trl':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n")
    (path / "fastapi").mkdir()  # fastapi installed but broken
    (path / "fastapi" / "__init__.py").write_text("raise ImportError('fastapi broken on purpose')\n")
    result = smoke("--device", "cpu", "--tiny", "--phases", "sft,serve", "--out", tmp_path / "out",
                   "--assets", tmp_path / "no-assets", pythonpath=str(path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "  sft    skipped: trl not installed\n" in result.stdout
    assert "  serve  skipped: fastapi does not import (ImportError: fastapi broken on purpose)\n" in result.stdout
    report = json.loads((tmp_path / "out" / "gpu_smoke.json").read_text())
    assert {p["status"] for p in report["phases"].values()} == {"skipped"}
    assert "| sft | skipped |" in (tmp_path / "out" / "gpu_smoke.md").read_text()

def test_the_shipped_accelerate_configs_load_with_accelerates_own_reader():
    from accelerate.commands.config.config_args import ClusterConfig

    folder = SCRIPT.parent.parent / "examples" / "accelerate"
    ddp = ClusterConfig.from_yaml_file(str(folder / "ddp.yaml"))
    zero2 = ClusterConfig.from_yaml_file(str(folder / "zero2.yaml"))
    assert ddp.distributed_type == "MULTI_GPU" and zero2.distributed_type == "DEEPSPEED"
    assert zero2.deepspeed_config["zero_stage"] == 2
