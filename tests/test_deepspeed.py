"""DeepSpeed ZeRO-2 (config/zero2_ds.json): the config resolves through transformers' DeepSpeed
integration with the arguments sft.py and rl.py build (every "auto" filled, batch sizes
consistent), and both scripts train under it on 2 CPU processes (DeepSpeed's CPU accelerator, gloo;
it JIT-builds its shared-memory comm op once, which needs a C++ compiler)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import tiny

deepspeed = pytest.importorskip("deepspeed", reason="deepspeed is not installed (requirements.txt lists it)")
from transformers import TrainingArguments  # noqa: E402

from minionerec_trainer import ReReConfig  # noqa: E402

CONFIG = tiny.REPO / "config" / "zero2_ds.json"


def autos(node, path=""):
    """Paths of every value still "auto" in a DeepSpeed config."""
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in autos(value, f"{path}.{key}")]
    return [path] if node == "auto" else []


@pytest.mark.parametrize("make_args", [
    lambda **kw: TrainingArguments(**kw),
    lambda **kw: ReReConfig(num_generations=4, remove_unused_columns=False, **kw),
], ids=["sft_TrainingArguments", "rl_ReReConfig"])
@pytest.mark.parametrize("bf16", [False, True])
def test_zero2_config_resolves_with_our_arguments(tmp_path, make_args, bf16):
    assert autos(json.loads(CONFIG.read_text()))  # the file relies on "auto": the test has work to do
    args = make_args(output_dir=str(tmp_path), per_device_train_batch_size=8, gradient_accumulation_steps=3,
                     learning_rate=1e-4, max_grad_norm=0.5, max_steps=10, bf16=bf16, use_cpu=True,
                     deepspeed=str(CONFIG))
    model = tiny.make_model(tiny.make_tokenizer())
    ds_config = args.hf_deepspeed_config
    ds_config.trainer_config_finalize(args, model, num_training_steps=10)
    config = ds_config.config
    assert autos(config) == []
    assert config["zero_optimization"]["stage"] == 2
    assert config["train_micro_batch_size_per_gpu"] == 8
    assert config["gradient_accumulation_steps"] == 3
    assert config["train_batch_size"] == 8 * 3 * args.world_size
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"]["enabled"] is bf16


def test_zero2_config_rejects_inconsistent_batch_sizes(tmp_path):
    """A hard-coded value that disagrees with the flags fails at argument time, before any model
    is loaded (transformers' check), so the JSON keeps batch sizes on "auto"."""
    bad = json.loads(CONFIG.read_text())
    bad["train_micro_batch_size_per_gpu"] = 4
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, use_cpu=True,
                             deepspeed=str(path))
    with pytest.raises(ValueError, match="train_micro_batch_size_per_gpu"):
        args.hf_deepspeed_config.trainer_config_finalize(args, tiny.make_model(tiny.make_tokenizer()), 10)


def _torchrun(script, flags, tmp_path):
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tiny.REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tiny.REPO / script), *[f"--{k}={v}" for k, v in flags.items()], f"--deepspeed={CONFIG}"]
    return subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=1200,
                          cwd=tmp_path)


needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="DeepSpeed's CPU accelerator JIT-builds its comm op: no C++ compiler")


@pytest.mark.slow
@needs_compiler
def test_sft_and_rl_train_under_zero2_on_two_cpu_processes(tmp_path):
    import data

    paths = tiny.write_dataset(tmp_path / "data", n_items=8, n_users=16, seq_len=5)
    tiny.write_base_model(tmp_path / "base")
    common = {"train_file": paths["train"], "eval_file": paths["valid"], "sid_index_path": paths["index"],
              "item_meta_path": paths["item"], "category": paths["category"], "seed": 0}
    sft_out = tmp_path / "sft"
    result = _torchrun("sft.py", {**common, "base_model": tmp_path / "base", "output_dir": sft_out,
                                  "batch_size": 16, "micro_batch_size": 8, "num_epochs": 1, "max_steps": 2,
                                  "learning_rate": 1e-3, "cutoff_len": 512}, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank} of 2 finished training at step 2" in result.stderr
    # ZeRO's own checkpoint layout: the DeepSpeed engine really ran (not a silent DDP fall-back)
    assert list(sft_out.glob("checkpoint-*/global_step2/*optim_states.pt"))

    sid_tok = tiny.tokenizer_with_sids("gpt2_bpe", data.read_index(paths["index"]))
    tiny.make_model(sid_tok).save_pretrained(tmp_path / "ckpt")
    sid_tok.save_pretrained(tmp_path / "ckpt")
    rl_out = tmp_path / "rl"
    result = _torchrun("rl.py", {**common, "model_path": tmp_path / "ckpt", "info_file": paths["info"],
                                 "output_dir": rl_out, "train_batch_size": 8, "eval_batch_size": 8,
                                 "num_generations": 4, "beam_search": True, "reward_type": "ranking",
                                 "max_steps": 2, "eval_step": 1000, "save_steps": 2, "learning_rate": 1e-3,
                                 "beta": 0.04, "eval_sample": 8}, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank} of 2 finished RL at step 2" in result.stderr
    assert list(rl_out.glob("checkpoint-*/global_step2/*optim_states.pt"))
    assert (rl_out / "final_checkpoint" / "model.safetensors").is_file()
