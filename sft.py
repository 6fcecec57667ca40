"""SFT stage: teach a causal LM to write the next item's SID (and to align SIDs with item text).

    python sft.py --base_model MODEL_DIR_OR_GGUF --train_file train.csv --eval_file valid.csv \
        --sid_index_path index.json --item_meta_path item.json --output_dir out/sft

or on several processes: `torchrun --nproc_per_node N sft.py ...` (see sft.sh).
Reads top to bottom: checks, tokenizer + SID tokens, model, datasets, Trainer, save.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import runtime

if __name__ == "__main__":
    runtime.check_flags_early(__file__)  # a bad flag or --help answers before torch loads

import torch
from datasets import Dataset as HFDataset
from transformers import (
    DataCollatorForSeq2Seq,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

import data
from checkpoints import RunCheckpoints, run_record
from runtime import report_to, require_paths, run_cli
from modeling import default_dtype, load_causal_lm, load_tokenizer, positions_from_mask, save_pretrained_atomic

logger = logging.getLogger("sft")


def freeze_all_but_new_rows(model, first_new_row: int):
    """Train only the embedding rows of the added (SID) tokens: every other parameter is frozen and
    gradients of the original rows are zeroed. With tied embeddings the output head shares these
    rows; an untied head gets the same treatment. Weight decay must be 0 so frozen rows stay
    bit-identical (AdamW's decay would move them even with zero gradient)."""
    for param in model.parameters():
        param.requires_grad_(False)
    trainable = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not trainable[0]:
        trainable.append(head.weight)
    for weight in trainable:
        weight.requires_grad_(True)
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[first_new_row:] = 1
        weight.register_hook(lambda grad, mask=mask: grad * mask)
    return trainable


@torch.no_grad()
def init_new_rows(model, first_new_row: int, seed: int):
    """Draw the added rows of the input embeddings (and of an untied output head) from a normal with
    the mean and per-dimension std of the existing rows. HF's `mean_resizing` uses 1e-9 of their
    covariance, which leaves every new row ~1e-5 std apart: all SIDs tie until training separates
    them. At the real scale each new token starts as distinct as an existing one."""
    generator = torch.Generator().manual_seed(seed)
    weights = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not weights[0]:
        weights.append(head.weight)
    for weight in weights:
        old = weight[:first_new_row].float()
        noise = torch.randn(weight.shape[0] - first_new_row, weight.shape[1], generator=generator)
        weight[first_new_row:] = (old.mean(0) + noise * old.std(0)).to(weight.dtype)


def prepare_model_and_tokenizer(base_model, sid_index_path, precision="auto",
                                train_from_scratch=False, freeze_LLM=False, seed=42):
    """Tokenizer with the index's SID tokens added, and the model with its embeddings resized to
    it (new rows drawn around the mean of the existing ones, at their scale: init_new_rows)."""
    index = data.read_index(sid_index_path)
    tokenizer = load_tokenizer(base_model, padding_side="left")
    original_vocab_size = len(tokenizer)
    new_tokens = data.add_sid_tokens(tokenizer, index)
    logger.info("added %d SID tokens to a vocabulary of %d", len(new_tokens), original_vocab_size)

    dtype = default_dtype(precision)
    model = load_causal_lm(base_model, dtype=dtype, from_scratch=train_from_scratch, seed=seed)
    if model.get_input_embeddings().weight.shape[0] != len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if new_tokens:  # also when they land in a padded vocabulary's unused rows (Qwen2.5)
        init_new_rows(model, original_vocab_size, seed)
    model.config.pad_token_id = tokenizer.pad_token_id
    if freeze_LLM:
        if not new_tokens:
            raise ValueError("--freeze_LLM trains only new SID tokens, but the tokenizer already has them all")
        freeze_all_but_new_rows(model, original_vocab_size)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("model: %d parameters, %d trainable, %s", model.num_parameters(), n_trainable, dtype)
    return model, tokenizer


class ResponseOnlyTrainer(RunCheckpoints, Trainer):
    """Trainer whose loss computes the LM head only where it is needed. Batches are left-padded, so
    every response ends at the last position; the logits of the last `keep` positions cover all
    responses of the batch. Prompts are most of each sequence and the vocabulary is large (49k for
    SmolLM2), so this skips most of the head's work. Position ids follow the attention mask, as in
    generation, so left padding does not shift positions."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = False  # a per-micro-batch token mean; Trainer divides by GA

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        attention_mask = inputs["attention_mask"]
        is_response = labels != -100
        first_response = torch.where(is_response.any(1), is_response.int().argmax(1), labels.shape[1])
        keep = int((labels.shape[1] - first_response).max()) + 1
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=attention_mask,
            position_ids=positions_from_mask(attention_mask),
            logits_to_keep=keep,
        )
        logits = outputs.logits[:, :-1].float()
        targets = labels[:, labels.shape[1] - keep + 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
        )
        return (loss, outputs) if return_outputs else loss


def _world_size():
    return int(os.environ.get("WORLD_SIZE", "1"))


SFT_TASKS = ("sid_history_to_sid", "sid_title", "sid_history_to_title", "title_history_to_title",
             "title_history_to_sid")


def parse_tasks(tasks: str, sample: int) -> dict[str, int]:
    """`--tasks "name[:rows],..."` -> {task: rows sampled (-1: all)}; empty: all five at --sample."""
    if not tasks:
        return {task: sample for task in SFT_TASKS}
    if isinstance(tasks, (list, tuple)):  # fire turns "a,b" into a tuple
        tasks = ",".join(map(str, tasks))
    chosen = {}
    for part in str(tasks).split(","):
        name, _, rows = part.strip().partition(":")
        if name not in SFT_TASKS:
            raise ValueError(f"--tasks: unknown task {name!r}; choose from {SFT_TASKS}")
        chosen[name] = int(rows) if rows else sample
    return chosen


def _build_train_data(train_file, index_path, item_meta_path, tokenizer, cutoff_len, task_samples, seed, category):
    common = dict(tokenizer=tokenizer, max_len=cutoff_len, seed=seed, category=category)
    with_meta = dict(item_file=item_meta_path, index_file=index_path)
    builders = {
        "sid_history_to_sid": lambda n: data.SidSFTDataset(train_file=train_file, sample=n, **common),
        "sid_title": lambda n: data.SidItemFeatDataset(item_file=item_meta_path, index_file=index_path, sample=n, **common),
        "sid_history_to_title": lambda n: data.FusionSeqRecDataset(train_file=train_file, sample=n, **with_meta, **common),
        "title_history_to_title": lambda n: data.SFTData(train_file=train_file, sample=n, **common),
        "title_history_to_sid": lambda n: data.TitleHistory2SidSFTDataset(train_file=train_file, sample=n, **with_meta, **common),
    }
    datasets = [builders[task](rows) for task, rows in task_samples.items()]
    for ds in datasets:
        logger.info("%-28s %6d examples", type(ds).__name__, len(ds))
    items = [item for ds in datasets for item in ds.items]
    return _to_hf(items)


def _to_hf(items):
    columns = {key: [item[key] for item in items] for key in ("input_ids", "attention_mask", "labels")}
    columns["length"] = [len(ids) for ids in columns["input_ids"]]
    return HFDataset.from_dict(columns)


def train(
    # model / data
    base_model: str = "",
    train_file: str = "",
    eval_file: str = "",
    output_dir: str = "",
    sample: int = -1,
    seed: int = 42,
    # training hyper-parameters
    batch_size: int = 128,
    micro_batch_size: int = 4,
    num_epochs: int = 10,
    learning_rate: float = 3e-4,
    cutoff_len: int = 512,
    group_by_length: bool = False,
    freeze_LLM: bool = False,
    # logging and checkpoints
    wandb_project: str = "",
    wandb_run_name: str = "",
    resume_from_checkpoint: str | bool | None = None,
    category: str = "",
    train_from_scratch: bool = False,
    sid_index_path: str = "",
    item_meta_path: str = "",
    # additions (not in the documents' script)
    precision: str = "auto",
    eval_per_epoch: float = 2,
    early_stopping_patience: int = 3,
    warmup_ratio: float = 0.03,
    eval_sample: int = -1,
    max_steps: int = -1,
    logging_steps: int = 10,
    deepspeed: str = "",
    tasks: str = "",
):
    """Supervised fine-tuning on the five SFT tasks concatenated.

    Args:
        base_model: HF model folder or .gguf file (the SmolLM2 GGUF: see convert_gguf.py).
        train_file: training split CSV.
        eval_file: validation split CSV; validation is SID history -> next SID on its rows.
        output_dir: Trainer checkpoints go here; model + tokenizer to output_dir/final_checkpoint.
        sample: rows sampled from train_file per task (-1: all), reproducible by seed.
        seed: random seed of the row sampling, the new SID rows and the training order.
        batch_size: global batch; gradient accumulation = batch_size / micro_batch_size / world
            size (must divide exactly).
        micro_batch_size: examples per process per step.
        num_epochs: training epochs (unless max_steps is set).
        learning_rate: peak learning rate (after the warm-up, then a cosine schedule).
        cutoff_len: max tokens per example; the response is kept whole, the history cut from the left.
        group_by_length: batch examples of similar length (less padding).
        freeze_LLM: train only the embedding rows of the added SID tokens.
        wandb_project: log to wandb (offline unless WANDB_MODE/WANDB_API_KEY say otherwise).
        wandb_run_name: the run's name in wandb (empty: the Trainer's default).
        resume_from_checkpoint: a checkpoint folder, or True for the latest in output_dir.
        category: item category, worded into the prompts (e.g. Industrial_and_Scientific).
        train_from_scratch: random init from base_model's config instead of its weights.
        sid_index_path: index.json; its SID tokens are added to the tokenizer.
        item_meta_path: item.json (item text of the sid_title, sid_history_to_title and
            title_history_to_sid tasks).
        precision: auto (bf16 where supported, else fp32), bf16 or fp32.
        eval_per_epoch: evaluations (and checkpoints) per epoch; the best is kept.
        early_stopping_patience: stop after this many evaluations without a lower eval loss.
        warmup_ratio: linear warm-up share of all steps, then a cosine schedule.
        eval_sample: validation rows (-1: all).
        max_steps: stop after this many optimiser steps (-1: num_epochs).
        logging_steps: optimiser steps between logged losses.
        deepspeed: DeepSpeed JSON config (GPUs), e.g. config/zero2_ds.json for ZeRO-2.
        tasks: the SFT tasks and their rows, "name[:rows],..." of sid_history_to_sid, sid_title
            (both directions), sid_history_to_title, title_history_to_title, title_history_to_sid;
            empty: all five with --sample rows each (the documents' recipe).
    """
    run_settings = dict(locals())  # the flags as given, recorded with every checkpoint
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # --- checks that must fail before any work -----------------------------------------------
    require_paths(base_model=base_model, train_file=train_file, eval_file=eval_file,
                  sid_index_path=sid_index_path, item_meta_path=item_meta_path)
    if not output_dir:
        raise ValueError("--output_dir is required")
    task_samples = parse_tasks(tasks, sample)
    world_size = _world_size()
    if batch_size % (micro_batch_size * world_size):
        raise ValueError(
            f"--batch_size {batch_size} is not divisible by --micro_batch_size {micro_batch_size} x "
            f"{world_size} processes"
        )
    gradient_accumulation_steps = batch_size // (micro_batch_size * world_size)
    set_seed(seed)

    model, tokenizer = prepare_model_and_tokenizer(
        base_model, sid_index_path, precision, train_from_scratch, freeze_LLM, seed
    )

    # --- data ---------------------------------------------------------------------------------
    train_data = _build_train_data(
        train_file, sid_index_path, item_meta_path, tokenizer, cutoff_len, task_samples, seed,
        data.category_phrase(category)
    )
    eval_ds = data.SidSFTDataset(
        train_file=eval_file, tokenizer=tokenizer, max_len=cutoff_len, sample=eval_sample,
        seed=seed, category=data.category_phrase(category),
    )
    eval_data = _to_hf(eval_ds.items)
    logger.info("train %d examples, eval %d", len(train_data), len(eval_data))

    steps_per_epoch = max(1, math.ceil(len(train_data) / batch_size))
    eval_steps = max(1, round(steps_per_epoch / eval_per_epoch))
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=micro_batch_size,
        per_device_eval_batch_size=micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_train_epochs=num_epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        warmup_steps=warmup_ratio,
        lr_scheduler_type="cosine",
        weight_decay=0.0,
        bf16=model.dtype == torch.bfloat16,
        logging_steps=logging_steps,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        prediction_loss_only=True,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=True,
        ddp_find_unused_parameters=False if world_size > 1 else None,
        use_cpu=not torch.cuda.is_available(),  # several CPU processes: accelerate's MULTI_CPU over gloo
        report_to=report_to(wandb_project),
        deepspeed=deepspeed or None,
        run_name=wandb_run_name or None,
        seed=seed,
        data_seed=seed,
    )
    trainer = ResponseOnlyTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=early_stopping_patience)],
    )
    trainer.run_record = run_record(run_settings)  # resume only a checkpoint of these settings
    trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    # the accelerator's own count: proves the processes really trained together
    logger.info("rank %d of %d finished training at step %d",
                trainer.args.process_index, trainer.accelerator.num_processes, trainer.state.global_step)

    # --- save ---------------------------------------------------------------------------------
    if trainer.is_world_process_zero():
        trainer.save_state()
        save_pretrained_atomic(trainer.model, tokenizer, Path(output_dir) / "final_checkpoint")
        logger.info("saved %s", Path(output_dir) / "final_checkpoint")
    return trainer


if __name__ == "__main__":
    run_cli(train)
