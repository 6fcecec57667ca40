"""SFT stage on tiny from-scratch models: loss falls, checkpoints reload, freeze_LLM, resume,
clear errors, and two processes under torchrun (gloo on CPU)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

import data
import sft
from runtime import InputError
from tests import tiny


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    paths = tiny.write_dataset(root / "data", n_items=16, n_users=40)
    tiny.write_base_model(root / "base")
    return root, paths


def _args(root, paths, out, **overrides):
    args = dict(
        base_model=str(root / "base"), train_file=str(paths["train"]), eval_file=str(paths["valid"]),
        sid_index_path=str(paths["index"]), item_meta_path=str(paths["item"]), output_dir=str(out),
        category=paths["category"], batch_size=16, micro_batch_size=8, num_epochs=2,
        learning_rate=3e-3, cutoff_len=512, logging_steps=1, seed=0,
        precision="fp32",  # auto is bf16 on a CPU with bf16 instructions; tests run the same math everywhere
    )
    args.update(overrides)
    return args


def test_loss_falls_and_checkpoint_reloads_with_same_logits(workspace, tmp_path):
    root, paths = workspace
    trainer = sft.train(**_args(root, paths, tmp_path / "out", group_by_length=True))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) >= 20
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5

    final = tmp_path / "out" / "final_checkpoint"
    tok = AutoTokenizer.from_pretrained(final)
    assert tok.padding_side == "left" and tok.pad_token == tok.eos_token
    index = data.read_index(paths["index"])
    data.require_sid_tokens(tok, index)
    reloaded = AutoModelForCausalLM.from_pretrained(final).eval()
    trained = trainer.model.eval()
    ids = torch.tensor([tok("### Response:\n<a_0><b_1>")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, trained(ids).logits)
    assert "quantization_config" not in json.loads((final / "config.json").read_text())
    assert (tmp_path / "out" / "model.safetensors").exists()  # trainer.save_model(output_dir), as the original


def test_new_sid_rows_start_at_the_scale_of_existing_rows(workspace):
    root, paths = workspace
    model, tok = sft.prepare_model_and_tokenizer(str(root / "base"), str(paths["index"]), seed=0)
    n_original = len(tiny.make_tokenizer("gpt2_bpe"))
    weight = model.get_input_embeddings().weight.detach().float()  # bf16 where --precision auto picks it
    old, new = weight[:n_original], weight[n_original:]
    assert new.shape[0] == len(tok) - n_original > 0
    # distinct rows: pairwise distances like those between existing rows, not ~1e-5 of them
    new_spread = torch.pdist(new).median()
    old_spread = torch.pdist(old[:200]).median()
    assert 0.5 < float(new_spread / old_spread) < 2.0
    assert torch.allclose(new.std(0).mean(), old.std(0).mean(), rtol=0.3)
    again, _ = sft.prepare_model_and_tokenizer(str(root / "base"), str(paths["index"]), seed=0)
    assert torch.equal(again.get_input_embeddings().weight, model.get_input_embeddings().weight)


@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_torch_fused"])
def test_freeze_llm_moves_only_new_rows(workspace, tmp_path, optim):
    root, paths = workspace
    set_seed(0)
    initial, tok = sft.prepare_model_and_tokenizer(
        str(root / "base"), str(paths["index"]), freeze_LLM=True, seed=0, precision="fp32"
    )
    initial_state = {n: p.detach().clone() for n, p in initial.state_dict().items()}
    n_original = len(tiny.make_tokenizer("gpt2_bpe"))
    new_ids = tok.convert_tokens_to_ids(data.sid_tokens_of_index(data.read_index(paths["index"])))
    assert min(new_ids) == n_original and max(new_ids) == len(tok) - 1

    trainer = sft.train(**_args(root, paths, tmp_path / "out", freeze_LLM=True, num_epochs=1, optim=optim))
    assert bool(trainer.optimizer.defaults["fused"]) == (optim == "adamw_torch_fused")
    trained = trainer.model.state_dict()
    emb_name = next(n for n in trained if "embed_tokens" in n)
    for name, value in trained.items():
        if value.data_ptr() == trained[emb_name].data_ptr():  # the embedding, or a head tied to it
            continue
        assert torch.equal(value, initial_state[name]), f"{name} changed"
    emb, emb0 = trained[emb_name], initial_state[emb_name]
    assert torch.equal(emb[:n_original], emb0[:n_original]), "an original embedding row changed"
    moved = (emb[n_original:] - emb0[n_original:]).abs().amax(dim=1)
    assert bool((moved > 0).all()), f"{int((moved == 0).sum())} new rows did not move"


def test_errors_before_training(workspace, tmp_path):
    root, paths = workspace
    with pytest.raises(InputError, match="--base_model"):
        sft.train(**_args(root, paths, tmp_path / "o", base_model=str(tmp_path / "nope")))
    with pytest.raises(InputError, match="--sid_index_path"):
        sft.train(**_args(root, paths, tmp_path / "o", sid_index_path=str(tmp_path / "none.json")))
    with pytest.raises(InputError, match="--optim 'adamw_nope'"):
        sft.train(**_args(root, paths, tmp_path / "o", optim="adamw_nope"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(data.DataFormatError, match="empty"):
        sft.train(**_args(root, paths, tmp_path / "o", train_file=str(empty)))
    with pytest.raises(ValueError, match="not divisible"):
        sft.train(**_args(root, paths, tmp_path / "o", batch_size=12, micro_batch_size=8))


def _cli(args):
    cmd = []
    for key, value in args.items():
        cmd.append(f"--{key}={value}")
    return cmd


def _env():
    env = dict(os.environ, PYTHONPATH=str(tiny.REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def test_resume_after_kill_reaches_same_step_count(workspace, tmp_path):
    root, paths = workspace
    out = tmp_path / "out"
    args = _args(root, paths, out, num_epochs=4, eval_per_epoch=4)
    proc = subprocess.Popen(
        [sys.executable, str(tiny.REPO / "sft.py"), *_cli(args)], env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoints = list(out.glob("checkpoint-*"))
    assert checkpoints and not (out / "final_checkpoint").exists()
    killed_at = max(int(c.name.split("-")[1]) for c in checkpoints)

    reference = sft.train(**_args(root, paths, tmp_path / "ref", num_epochs=4, eval_per_epoch=4))
    resumed = sft.train(**dict(args, resume_from_checkpoint=True))
    assert killed_at < resumed.state.global_step == reference.state.global_step
    assert (out / "final_checkpoint" / "model.safetensors").exists()


def test_two_processes_under_torchrun(workspace, tmp_path):
    root, paths = workspace
    out = tmp_path / "ddp"
    args = _args(root, paths, out, num_epochs=1, max_steps=3)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(tiny.REPO / "sft.py"), *_cli(args)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert (out / "final_checkpoint" / "model.safetensors").exists()
    for rank in (0, 1):
        assert f"rank {rank} of 2 finished training at step 3" in result.stderr


def test_response_only_loss_equals_full_loss(workspace):
    """The fast loss (LM head on the last positions of left-padded batches) against the plain
    reference: HF's own loss over full logits with the same position ids."""
    root, paths = workspace
    from transformers import DataCollatorForSeq2Seq

    model, tok = sft.prepare_model_and_tokenizer(str(root / "base"), str(paths["index"]), precision="fp32")
    items = data.SidSFTDataset(train_file=paths["train"], tokenizer=tok, max_len=512, sample=6).items
    items += data.SFTData(train_file=paths["train"], tokenizer=tok, max_len=512, sample=6).items
    batch = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, return_tensors="pt")(items)
    assert batch["input_ids"].shape[1] > max(len(x["input_ids"]) for x in items) - 1
    assert bool((batch["attention_mask"][:, 0] == 0).any()), "the batch is left-padded"
    with torch.no_grad():
        fast, _ = sft.response_loss(model, batch)
        positions = (batch["attention_mask"].cumsum(1) - 1).clamp(min=0)
        full = model(**batch, position_ids=positions).loss
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)


def test_shared_prefix_gives_the_loss_and_gradients_of_whole_rows(workspace, monkeypatch):
    """The instruction prefix that every row opens with runs once per batch (its KV cache expanded
    to the rows); loss and parameter gradients, with the history loss on, equal whole-row forwards."""
    root, paths = workspace
    from transformers import DataCollatorForSeq2Seq

    model, tok = sft.prepare_model_and_tokenizer(str(root / "base"), str(paths["index"]), precision="fp32")
    model.train()
    items = data.SidSFTDataset(train_file=paths["train"], tokenizer=tok, max_len=512, sample=8).items
    batch = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, return_tensors="pt")(items)
    assert bool((batch["attention_mask"][:, 0] == 0).any()), "the batch is left-padded"
    sid_ids = tok.convert_tokens_to_ids(data.sid_tokens_of_index(data.read_index(paths["index"])))
    head = model.get_output_embeddings()
    history = sft.HistorySidLoss(head, sid_ids, head.weight.shape[0], weight=1.0)
    prefix = sft.shared_prefix_length(batch, history.slot)
    assert prefix >= sft.MIN_SHARED_PREFIX
    first_target = min(int((row != -100).int().argmax()) for row in batch["labels"])
    assert prefix < first_target
    right_padded = {key: value.flip(1) for key, value in batch.items()}  # padding at the end: no common start
    assert sft.shared_prefix_length(right_padded) == 0

    def loss_and_grads():
        model.zero_grad()
        loss, _ = sft.response_loss(model, batch, history)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    shared_loss, shared_grads = loss_and_grads()
    monkeypatch.setattr(sft, "MIN_SHARED_PREFIX", 10**9)  # whole rows
    plain_loss, plain_grads = loss_and_grads()
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    for a, b in zip(shared_grads, plain_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_history_sid_loss_equals_plain_reference(workspace):
    """The history loss (SID-row softmax on the final hidden states of the prompt's SID positions)
    against a plain loop over full logits: every prompt position whose next token is a SID token,
    log-softmax over the SID columns, mean negative log-likelihood."""
    root, paths = workspace
    from transformers import DataCollatorForSeq2Seq

    model, tok = sft.prepare_model_and_tokenizer(str(root / "base"), str(paths["index"]), precision="fp32")
    items = data.SidSFTDataset(train_file=paths["train"], tokenizer=tok, max_len=512, sample=6).items
    batch = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, return_tensors="pt")(items)
    sid_ids = tok.convert_tokens_to_ids(data.sid_tokens_of_index(data.read_index(paths["index"])))
    head = model.get_output_embeddings()
    history = sft.HistorySidLoss(head, sid_ids, head.weight.shape[0], weight=0.5)
    with torch.no_grad():
        response, _ = sft.response_loss(model, batch)
        both, _ = sft.response_loss(model, batch, history)
        positions = (batch["attention_mask"].cumsum(1) - 1).clamp(min=0)
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=positions).logits
    nll = []
    for b in range(full.shape[0]):
        for t in range(full.shape[1] - 1):
            token = int(batch["input_ids"][b, t + 1])
            if batch["attention_mask"][b, t + 1] and batch["labels"][b, t + 1] == -100 and token in sid_ids:
                logp = torch.log_softmax(full[b, t, sid_ids], -1)
                nll.append(-float(logp[sid_ids.index(token)]))
    assert len(nll) >= 6 * 3, "every prompt holds at least one history SID"
    reference = sum(nll) / len(nll)
    assert (both - response).item() == pytest.approx(0.5 * reference, rel=1e-5)


def test_history_loss_trains_the_history_positions(workspace, tmp_path):
    """With --history_loss_weight the prompt's SID tokens become predictable (the tiny log's next
    item is a fixed rule of the last one); without it they stay at chance. The evaluation loss
    stays the response's alone."""
    root, paths = workspace
    index = data.read_index(paths["index"])

    def history_nll(trainer):
        tok = AutoTokenizer.from_pretrained(tmp_path / name / "final_checkpoint")
        sid_ids = tok.convert_tokens_to_ids(data.sid_tokens_of_index(index))
        head = trainer.model.get_output_embeddings()
        probe = sft.HistorySidLoss(head, sid_ids, head.weight.shape[0], weight=1.0)
        items = data.SidSFTDataset(train_file=paths["valid"], tokenizer=tok, max_len=512, sample=8).items
        batch = sft.sft_collator(tok)(items)
        trainer.model.eval()
        with torch.no_grad():
            response, _ = sft.response_loss(trainer.model, batch)
            both, _ = sft.response_loss(trainer.model, batch, probe)
        return (both - response).item()

    nll = {}
    for name, weight in (("plain", 0.0), ("history", 1.0)):
        trainer = sft.train(**_args(root, paths, tmp_path / name, history_loss_weight=weight, num_epochs=1))
        nll[name] = history_nll(trainer)
        assert all("eval_loss" in h for h in trainer.state.log_history if "eval_runtime" in h)
    assert nll["history"] < 0.7 * nll["plain"], nll


def test_history_loss_trains_in_bf16(workspace, tmp_path):
    """--precision bf16 (what auto picks on a CPU with bf16 instructions): accelerate's mixed
    precision returns the hidden states in fp32 around the bf16 head, and the history loss's head
    check must still run; the loss falls."""
    root, paths = workspace
    trainer = sft.train(**_args(root, paths, tmp_path / "out", precision="bf16", history_loss_weight=1.0))
    assert trainer.model.dtype == torch.bfloat16
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_task_mix_flag():
    assert sft.parse_tasks("", 7) == {task: 7 for task in data.SFT_TASKS}
    assert list(data.SFT_TASKS) == ["sid_history_to_sid", "sid_title", "sid_history_to_title",
                                    "title_history_to_title", "title_history_to_sid"]  # the original's order
    assert sft.parse_tasks(("sid_history_to_sid:30", "sid_title"), -1) == {"sid_history_to_sid": 30, "sid_title": -1}
    with pytest.raises(InputError, match="unknown task 'sid_to_nowhere'"):
        sft.parse_tasks("sid_to_nowhere:3", -1)
    with pytest.raises(InputError, match="--tasks 'sid_title:0' selects no rows"):
        sft.parse_tasks("sid_history_to_sid,sid_title:0", -1)
    with pytest.raises(InputError, match="--sample 0 selects no rows"):
        sft.parse_tasks("", 0)


UPSTREAM_SFT = tiny.REPO.parent / "shared" / "upstream" / "sft.py"


@pytest.mark.skipif(not UPSTREAM_SFT.is_file(), reason="/work/shared/upstream (the original) is absent")
def test_every_flag_of_the_original_sft_py_with_its_default():
    import ast
    import inspect

    tree = ast.parse(UPSTREAM_SFT.read_text())
    original = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train").args
    defaults = {a.arg: ast.literal_eval(d) for a, d in zip(original.args[-len(original.defaults):], original.defaults)}
    ours = inspect.signature(sft.train).parameters
    for name, default in defaults.items():
        assert name in ours and ours[name].default == default, name


def test_the_original_recipe_is_the_default():
    args = sft.build_training_arguments("unused_out", micro_batch_size=4, gradient_accumulation_steps=32,
                                        num_epochs=10, learning_rate=3e-4, bf16=False, seed=42)
    assert (args.warmup_steps, args.lr_scheduler_type) == (20, "linear")
    assert args.eval_steps == args.save_steps == 0.05 and args.save_total_limit == 1
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert args.logging_steps == 1 and args.per_device_eval_batch_size == args.per_device_train_batch_size == 4
    assert args.optim == "adamw_torch" and args.weight_decay == 0.0
    fused = sft.build_training_arguments("unused_out", 4, 32, 10, 3e-4, False, 42, optim="adamw_torch_fused")
    assert fused.optim == "adamw_torch_fused"
    cosine = sft.build_training_arguments("unused_out", 4, 32, 10, 3e-4, False, 42, lr_scheduler_type="cosine",
                                          warmup_ratio=0.03)
    assert (cosine.lr_scheduler_type, cosine.warmup_steps) == ("cosine", 0.03)


def test_sample_applies_to_every_task_and_to_validation(workspace, tmp_path):
    root, paths = workspace
    trainer = sft.train(**_args(root, paths, tmp_path / "out", sample=10, max_steps=1))
    assert len(trainer.eval_dataset) == 10  # the original samples its val set with --sample too
    assert len(trainer.train_dataset) == 5 * 10
    unified = sft.train(**_args(root, paths, tmp_path / "unified", sample=10, max_steps=1, prompt_style="unified",
                                tasks="sid_history_to_sid"))
    tok = AutoTokenizer.from_pretrained(tmp_path / "unified" / "final_checkpoint")
    text = tok.decode(unified.train_dataset[0]["input_ids"])
    assert "toy store items in chronological order" in text and len(unified.train_dataset) == 10
