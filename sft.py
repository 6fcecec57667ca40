"""SFT stage: teach a causal LM to write the next item's SID (and to align SIDs with item text).

    python sft.py --base_model MODEL_DIR_OR_GGUF --train_file train.csv --eval_file valid.csv \
        --sid_index_path index.json --item_meta_path item.json --output_dir out/sft

or on several processes: `torchrun --nproc_per_node N sft.py ...` (see sft.sh).

The original's recipe by default (its sft.py): its five tasks with --sample rows each, its prompts
(data.py, prompt_style upstream), warm-up 20 steps then linear decay, evaluation and a checkpoint
every 5% of the steps, the best kept (save_total_limit 1) and loaded at the end, early stopping
after 3 evaluations without improvement, loss logged every step, bf16 where supported, the model
saved in output_dir and model + tokenizer in output_dir/final_checkpoint. Every setting is a flag.

Reads top to bottom as named steps that tests and benchmarks call too: checks, Catalogue (files
read and cross-checked once), prepare_model_and_tokenizer, build_train_data / build_eval_data,
build_training_arguments, train, save_outputs.
"""

from __future__ import annotations

import logging
import math
import os

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
from transformers.training_args import OptimizerNames

import data
from checkpoints import RunCheckpoints, flag_defaults, run_record, save_outputs
from runtime import InputError, report_to, require_paths, run_cli
from modeling import default_dtype, load_causal_lm, load_tokenizer, positions_from_mask, trains_with_checkpointing

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


def prepare_model_and_tokenizer(base_model, sid_index, precision="auto",
                                train_from_scratch=False, freeze_LLM=False, seed=42):
    """Tokenizer with the SID tokens of `sid_index` (an index.json path or its loaded dict) added,
    and the model with its embeddings resized to it (new rows drawn around the mean of the
    existing ones, at their scale: init_new_rows). Pad = EOS, left padding, as the original."""
    index = sid_index if isinstance(sid_index, dict) else data.read_index(sid_index)
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
            raise InputError("--freeze_LLM trains only new SID tokens, but the tokenizer already has them all")
        freeze_all_but_new_rows(model, original_vocab_size)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("model: %d parameters, %d trainable, %s", model.num_parameters(), n_trainable, dtype)
    return model, tokenizer


MIN_SHARED_PREFIX = 8  # tokens; a shorter common prefix is not worth a second forward call


def shared_prefix_length(inputs, sid_slot: torch.Tensor | None = None) -> int:
    """Length of the token prefix that every row of a left-padded batch starts with and that holds
    nothing to predict: it ends before the position that predicts any row's first response token
    (or, given `sid_slot`, first SID token, the history loss's targets)."""
    ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    if not bool((mask[:, 1:] >= mask[:, :-1]).all()):
        return 0  # not left-padded: no common start to share
    starts = (mask == 0).sum(1)  # left padding: real tokens start here
    width = int((mask.shape[1] - starts).min())
    aligned = ids.gather(1, starts[:, None] + torch.arange(width, device=ids.device))
    differs = (aligned != aligned[:1]).any(0)
    common = int(differs.int().argmax()) if bool(differs.any()) else width
    target = labels.gather(1, starts[:, None] + torch.arange(width, device=ids.device)) != -100
    if sid_slot is not None:
        target |= sid_slot.to(ids.device)[aligned] >= 0
    first_target = int(target.any(0).int().argmax()) if bool(target.any()) else width
    return max(0, min(common, first_target - 1))


def response_loss(model, inputs, history: HistorySidLoss | None = None):
    """Cross-entropy over the response tokens, with the LM head computed only where it is needed.
    Batches are left-padded, so every response ends at the last position; the logits of the last
    `keep` positions cover all responses of the batch. Prompts are most of each sequence and the
    vocabulary is large (49k for SmolLM2), so this skips most of the head's work. Position ids
    follow the attention mask, as in generation, so left padding does not shift positions.

    The instruction text that opens every prompt (the same for every row of a task) runs once per
    batch: its KV cache is computed with gradients and expanded to the rows, which then run only
    their own tokens (shared_prefix_length; the same values as whole rows up to float rounding,
    tests/test_sft.py). A model training with gradient checkpointing builds no cache and runs
    whole rows. `history` adds its weighted auxiliary loss on the prompt's SID tokens."""
    labels = inputs["labels"]
    is_response = labels != -100
    first_response = torch.where(is_response.any(1), is_response.int().argmax(1), labels.shape[1])
    keep = int((labels.shape[1] - first_response).max()) + 1
    prefix = 0 if trains_with_checkpointing(model) else shared_prefix_length(inputs, history.slot if history is not None else None)
    cache, rows = None, inputs
    if prefix >= MIN_SHARED_PREFIX:
        starts = (inputs["attention_mask"] == 0).sum(1)
        shared = inputs["input_ids"][:1, int(starts[0]):int(starts[0]) + prefix]
        cache = model(input_ids=shared, position_ids=torch.arange(prefix, device=shared.device)[None],
                      logits_to_keep=1, use_cache=True).past_key_values
        cache.reorder_cache(torch.zeros(len(labels), dtype=torch.long, device=shared.device))
        rest = labels.shape[1] - int(starts.min()) - prefix  # each row's own tokens, still left-padded
        columns = torch.arange(labels.shape[1] - rest, labels.shape[1], device=labels.device)
        rows = {"input_ids": inputs["input_ids"][:, -rest:], "labels": labels[:, -rest:],
                "attention_mask": (columns[None] >= (starts + prefix)[:, None]).long()}
    attention_mask = rows["attention_mask"]
    if cache is not None:  # the rows see the shared prefix, then their own tokens
        attention_mask = torch.cat([attention_mask.new_ones(len(labels), prefix), attention_mask], 1)
    outputs = model(
        input_ids=rows["input_ids"],
        attention_mask=attention_mask,
        position_ids=positions_from_mask(attention_mask)[:, attention_mask.shape[1] - rows["input_ids"].shape[1]:],
        past_key_values=cache,
        logits_to_keep=keep,
        use_cache=cache is not None,  # a training forward needs no KV cache of its own
        output_hidden_states=history is not None,
    )
    logits = outputs.logits[:, :-1].float()
    targets = labels[:, labels.shape[1] - keep + 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
    )
    if history is not None:
        loss = loss + history.weight * history(outputs, rows)
    return loss, outputs


class HistorySidLoss:
    """Auxiliary next-item supervision inside the prompt: every SID token of the history is
    predicted from the tokens before it, as SASRec supervises every position of a sequence, so one
    example teaches up to ten transitions instead of one. The softmax runs over the SID tokens only
    (a few hundred rows of the output embedding, not the whole vocabulary), which keeps it cheap;
    the response keeps its full-vocabulary loss, and the model reads the same tokens either way.

    `head` is the model's output embedding; the loss needs logits = head(final hidden state),
    which is checked once on the first batch (a model that scales or caps its logits is refused)."""

    def __init__(self, head: torch.nn.Module, sid_token_ids: list[int], vocab_size: int, weight: float):
        self.head = head
        self.weight = weight
        self.sid_ids = torch.tensor(sorted(sid_token_ids), dtype=torch.long)
        # token id -> its slot among the SID rows (-1: not a SID token)
        self.slot = torch.full((vocab_size,), -1, dtype=torch.long)
        self.slot[self.sid_ids] = torch.arange(len(self.sid_ids))
        self.checked = False

    def __call__(self, outputs, inputs) -> torch.Tensor:
        hidden = outputs.hidden_states[-1]
        if not self.checked:
            self._check_head(hidden, outputs.logits)
        next_ids = inputs["input_ids"][:, 1:]
        slot = self.slot.to(next_ids.device)[next_ids]
        in_prompt = (inputs["labels"][:, 1:] == -100) & inputs["attention_mask"][:, 1:].bool()
        predicts_sid = in_prompt & (slot >= 0)
        if not bool(predicts_sid.any()):
            return hidden.sum() * 0.0  # no SID in these prompts: a zero that keeps the graph whole
        states = hidden[:, :-1][predicts_sid].float()
        rows = self.head.weight[self.sid_ids.to(hidden.device)].float()
        logits = states @ rows.T
        if self.head.bias is not None:
            logits = logits + self.head.bias[self.sid_ids.to(hidden.device)].float()
        return torch.nn.functional.cross_entropy(logits, slot[predicts_sid])

    @torch.no_grad()
    def _check_head(self, hidden, logits):
        # accelerate's mixed precision hands the outputs back in fp32 around bf16 weights
        own = self.head(hidden[:, -1:].to(self.head.weight.dtype)).float()
        if not torch.allclose(own, logits[:, -1:].float(), atol=1e-3, rtol=1e-3):
            raise InputError("--history_loss_weight needs a model whose logits are its output embedding applied to "
                             "the final hidden state; this model scales or caps its logits")
        self.checked = True


class ResponseOnlyTrainer(RunCheckpoints, Trainer):
    """Trainer whose loss is `response_loss` (LM head only over the responses), plus the history
    SID loss when `history` is given."""

    def __init__(self, *args, history: HistorySidLoss | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.history = history
        self.loss_is_scaled_for_ga = False  # a per-micro-batch token mean; Trainer divides by GA

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # the history loss trains; evaluation loss stays the response's, comparable across runs
        loss, outputs = response_loss(model, inputs, self.history if model.training else None)
        return (loss, outputs) if return_outputs else loss


def sft_collator(tokenizer) -> DataCollatorForSeq2Seq:
    """Micro-batches as the Trainer gets them: padded on the tokenizer's side (left) to a multiple of
    8, labels padded with -100."""
    return DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def parse_tasks(tasks: str, sample: int) -> dict[str, int]:
    """`--tasks "name[:rows],..."` -> {task: rows sampled (-1: all)} over data.SFT_TASKS; empty:
    all five at --sample (the original's recipe)."""
    if sample == 0:
        raise InputError("--sample 0 selects no rows: use -1 for all rows, or a positive count")
    if not tasks:
        return {task: sample for task in data.SFT_TASKS}
    if isinstance(tasks, (list, tuple)):  # fire turns "a,b" into a tuple
        tasks = ",".join(map(str, tasks))
    chosen = {}
    for part in str(tasks).split(","):
        name, _, rows = part.strip().partition(":")
        if name not in data.SFT_TASKS:
            raise InputError(f"--tasks: unknown task {name!r}; choose from {tuple(data.SFT_TASKS)}")
        try:
            chosen[name] = int(rows) if rows else sample
        except ValueError:
            raise InputError(f"--tasks {part!r}: the row count after ':' must be an integer") from None
        if chosen[name] == 0:
            raise InputError(f"--tasks {part!r} selects no rows: drop the task, or give -1 / a positive count")
    return chosen


def to_hf_dataset(items, shuffle_seed: int | None = None) -> HFDataset:
    """The Trainer's dataset of SFT items (+ a `length` column for --group_by_length), shuffled
    with `shuffle_seed` as the original shuffles its sets."""
    columns = {key: [item[key] for item in items] for key in ("input_ids", "attention_mask", "labels")}
    columns["length"] = [len(ids) for ids in columns["input_ids"]]
    dataset = HFDataset.from_dict(columns)
    return dataset if shuffle_seed is None else dataset.shuffle(seed=shuffle_seed)


def build_train_data(catalogue: data.Catalogue, train_file, tokenizer, cutoff_len, task_samples: dict, seed,
                     prompt_style="upstream") -> HFDataset:
    """The SFT tasks' datasets concatenated in the original's order and shuffled with seed 42."""
    common = dict(tokenizer=tokenizer, max_len=cutoff_len, seed=seed, category=catalogue.category,
                  prompt_style=prompt_style, catalogue=catalogue)
    paths = dict(item_file=catalogue.item_file, index_file=catalogue.index_file)
    datasets = []
    for task, rows in task_samples.items():
        cls = data.SFT_TASKS[task]
        if cls is data.SidItemFeatDataset:
            ds = cls(sample=rows, **paths, **common)
        elif cls in (data.FusionSeqRecDataset, data.TitleHistory2SidSFTDataset):
            ds = cls(train_file=train_file, sample=rows, **paths, **common)
        else:
            ds = cls(train_file=train_file, sample=rows, **common)
        logger.info("%-28s %6d examples", type(ds).__name__, len(ds))
        datasets.append(ds)
    return to_hf_dataset([item for ds in datasets for item in ds.inputs], shuffle_seed=42)


def build_eval_data(catalogue: data.Catalogue, eval_file, tokenizer, cutoff_len, sample, seed,
                    prompt_style="upstream") -> HFDataset:
    """Validation: SID history -> next SID on the eval split (the original's val_data), shuffled
    with the seed and then with 42 as the original does."""
    ds = data.SidSFTDataset(train_file=eval_file, tokenizer=tokenizer, max_len=cutoff_len, sample=sample, seed=seed,
                            category=catalogue.category, prompt_style=prompt_style, catalogue=catalogue)
    return to_hf_dataset(ds.inputs, shuffle_seed=seed).shuffle(seed=42)


def build_training_arguments(output_dir, micro_batch_size, gradient_accumulation_steps, num_epochs, learning_rate,
                             bf16, seed, group_by_length=False, wandb_project="", wandb_run_name="",
                             lr_scheduler_type="linear", warmup_steps=20, warmup_ratio=0.0, eval_steps=0.05,
                             logging_steps=1, max_steps=-1, deepspeed="",
                             optim="adamw_torch") -> TrainingArguments:
    """The original's TrainingArguments: warm-up of 20 steps then a linear decay, evaluation and a
    checkpoint every 5% of all steps, the best checkpoint (eval loss) kept and loaded at the end,
    eval batch = micro batch, loss logged every step; each is one flag away. The optimiser is the
    original's AdamW (adamw_torch); adamw_torch_fused is the same update in torch's fused kernel (one
    pass over each parameter's memory instead of about ten elementwise kernels), equal up to float
    rounding, so a run with it does not repeat an adamw_torch run bit for bit."""
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=micro_batch_size,
        per_device_eval_batch_size=micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_train_epochs=num_epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        warmup_steps=warmup_ratio if warmup_ratio > 0 else warmup_steps,  # a float below 1 is a ratio
        lr_scheduler_type=lr_scheduler_type,
        weight_decay=0.0,  # freeze_LLM relies on it: decay would move frozen rows
        optim=optim,
        bf16=bf16,
        logging_steps=logging_steps,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        prediction_loss_only=True,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=True,
        ddp_find_unused_parameters=False if world_size() > 1 else None,
        use_cpu=not torch.cuda.is_available(),  # several CPU processes: accelerate's MULTI_CPU over gloo
        report_to=report_to(wandb_project),
        deepspeed=deepspeed or None,
        run_name=wandb_run_name or None,
        seed=seed,
        data_seed=seed,
    )


def train(
    # model / data (the original's flags, its defaults)
    base_model: str = "",
    train_file: str = "",
    eval_file: str = "",
    output_dir: str = "",
    sample: int = -1,
    seed: int = 42,
    batch_size: int = 128,
    micro_batch_size: int = 4,
    num_epochs: int = 10,
    learning_rate: float = 3e-4,
    cutoff_len: int = 512,
    group_by_length: bool = False,
    freeze_LLM: bool = False,
    wandb_project: str = "",
    wandb_run_name: str = "",
    resume_from_checkpoint: str | bool | None = None,
    category: str = "",
    train_from_scratch: bool = False,
    sid_index_path: str = "",
    item_meta_path: str = "",
    # additions: the original's fixed settings made flags, and improvements one flag away
    prompt_style: str = "upstream",
    tasks: str = "",
    eval_sample: int | None = None,
    precision: str = "auto",
    lr_scheduler_type: str = "linear",
    warmup_steps: int = 20,
    warmup_ratio: float = 0.0,
    eval_step: float = 0.05,
    eval_per_epoch: float = 0,
    early_stopping_patience: int = 3,
    logging_steps: int = 1,
    max_steps: int = -1,
    deepspeed: str = "",
    allow_unreachable_targets: bool = False,
    optim: str = "adamw_torch",
    history_loss_weight: float = 0.0,
):
    """Supervised fine-tuning on the original's five SFT tasks concatenated.

    Args:
        base_model: HF model folder or .gguf file (the SmolLM2 GGUF: see convert_gguf.py).
        train_file: training split CSV.
        eval_file: validation split CSV; validation is SID history -> next SID on its rows.
        output_dir: Trainer checkpoints and the best model go here; model + tokenizer also to
            output_dir/final_checkpoint.
        sample: rows sampled per task and from eval_file (-1: all), reproducible by seed.
        seed: random seed of the row sampling, the new SID rows and the training order.
        batch_size: global batch; gradient accumulation = batch_size / micro_batch_size / world
            size (must divide exactly).
        micro_batch_size: examples per process per step (training and evaluation).
        num_epochs: training epochs (unless max_steps is set).
        learning_rate: peak learning rate (after the warm-up).
        cutoff_len: max tokens per example; an over-long example keeps its response and loses its
            oldest history items (the original cuts the head of its instruction).
        group_by_length: batch examples of similar length (less padding).
        freeze_LLM: train only the embedding rows of the added SID tokens.
        wandb_project: log to wandb (offline unless WANDB_MODE/WANDB_API_KEY say otherwise).
        wandb_run_name: the run's name in wandb (empty: the Trainer's default).
        resume_from_checkpoint: a checkpoint folder, or True for the latest in output_dir.
        category: item category (e.g. Office_Products); the original's five names map to its
            phrases, any other name is humanised (data.category_phrase).
        train_from_scratch: random init from base_model's config instead of its weights.
        sid_index_path: index.json; its SID tokens are added to the tokenizer.
        item_meta_path: item.json (item titles of the SID/title tasks).
        prompt_style: upstream (the original's wording and tokenisation per task) or unified (one
            consistent wording for every task and stage).
        tasks: the SFT tasks and their rows, "name[:rows],..." of sid_history_to_sid, sid_title
            (both directions), sid_history_to_title, title_history_to_title, title_history_to_sid;
            empty: all five with --sample rows each (the original's recipe).
        eval_sample: validation rows (-1: all; default: --sample, as the original).
        precision: auto (bf16 where supported, else fp32), bf16 or fp32.
        lr_scheduler_type: learning-rate schedule after the warm-up (linear as the original;
            e.g. cosine).
        warmup_steps: optimiser steps of linear warm-up (the original's 20).
        warmup_ratio: warm-up as a share of all steps instead (0: use warmup_steps).
        eval_step: evaluate and checkpoint every this share of all steps (the original's 0.05).
        eval_per_epoch: evaluations (and checkpoints) per epoch instead (0: use eval_step).
        early_stopping_patience: stop after this many evaluations without a lower eval loss.
        logging_steps: optimiser steps between logged losses.
        max_steps: stop after this many optimiser steps (-1: num_epochs).
        deepspeed: DeepSpeed JSON config (GPUs), e.g. config/zero2_ds.json for ZeRO-2.
        allow_unreachable_targets: proceed when split rows have targets the catalogue cannot
            produce (the count is reported); otherwise such rows are an error.
        optim: the Trainer's optimiser (transformers' names): adamw_torch (the original's), or
            adamw_torch_fused, the same update in torch's fused kernel (equal up to float rounding,
            faster steps).
        history_loss_weight: weight of an auxiliary loss that predicts every SID token of each
            prompt's history from the tokens before it, over the SID tokens (SASRec-style
            supervision of every history position; the inputs are the same tokens). 0: the
            original's loss on the response only.
    """
    run_settings = dict(locals())  # the flags as given, recorded with every checkpoint
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # --- checks that must fail before any work -----------------------------------------------
    require_paths(base_model=base_model, train_file=train_file, eval_file=eval_file,
                  sid_index_path=sid_index_path, item_meta_path=item_meta_path)
    if not output_dir:
        raise InputError("--output_dir is required")
    if prompt_style not in data.PROMPT_STYLES:
        raise InputError(f"--prompt_style {prompt_style!r}: choose one of {data.PROMPT_STYLES}")
    task_samples = parse_tasks(tasks, sample)
    if optim not in {name.value for name in OptimizerNames}:
        raise InputError(f"--optim {optim!r}: not an optimiser of transformers' Trainer; e.g. adamw_torch_fused, "
                         f"adamw_torch (choices: transformers.training_args.OptimizerNames)")
    if history_loss_weight < 0:
        raise InputError(f"--history_loss_weight {history_loss_weight}: must be 0 (off) or positive")
    if eval_sample == 0:
        raise InputError("--eval_sample 0 selects no validation rows: use -1 for all, or a positive count")
    n_processes = world_size()
    if batch_size % (micro_batch_size * n_processes):
        raise InputError(
            f"--batch_size {batch_size} is not divisible by --micro_batch_size {micro_batch_size} x "
            f"{n_processes} processes"
        )
    gradient_accumulation_steps = batch_size // (micro_batch_size * n_processes)
    set_seed(seed)

    # --- catalogue: index, item text and both splits read and cross-checked once -------------
    catalogue = data.Catalogue(sid_index_path, item_meta_path, category=category,
                               allow_unreachable_targets=allow_unreachable_targets)
    catalogue.split(train_file)
    catalogue.split(eval_file)

    # --- policy and tokenizer -------------------------------------------------------------------
    model, tokenizer = prepare_model_and_tokenizer(
        base_model, catalogue.index, precision, train_from_scratch, freeze_LLM, seed
    )

    # --- data ---------------------------------------------------------------------------------
    train_data = build_train_data(catalogue, train_file, tokenizer, cutoff_len, task_samples, seed, prompt_style)
    eval_data = build_eval_data(catalogue, eval_file, tokenizer, cutoff_len,
                                sample if eval_sample is None else eval_sample, seed, prompt_style)
    logger.info("train %d examples, eval %d", len(train_data), len(eval_data))

    # --- arguments and trainer ----------------------------------------------------------------
    if eval_per_epoch > 0:
        eval_step = max(1, round(math.ceil(len(train_data) / batch_size) / eval_per_epoch))
    args = build_training_arguments(
        output_dir, micro_batch_size, gradient_accumulation_steps, num_epochs, learning_rate,
        model.dtype == torch.bfloat16, seed, group_by_length, wandb_project, wandb_run_name,
        lr_scheduler_type, warmup_steps, warmup_ratio, eval_step, logging_steps, max_steps, deepspeed, optim,
    )
    history = None
    if history_loss_weight > 0:
        sid_ids = tokenizer.convert_tokens_to_ids(data.sid_tokens_of_index(catalogue.index))
        head = model.get_output_embeddings()
        history = HistorySidLoss(head, sid_ids, head.weight.shape[0], history_loss_weight)
    trainer = ResponseOnlyTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=sft_collator(tokenizer),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=early_stopping_patience)],
        history=history,
    )
    model.config.use_cache = False
    trainer.run_record = run_record(run_settings, flag_defaults(train))  # resume only a checkpoint of these settings

    # --- train and save -----------------------------------------------------------------------
    trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    # the accelerator's own count: proves the processes really trained together
    logger.info("rank %d of %d finished training at step %d",
                trainer.args.process_index, trainer.accelerator.num_processes, trainer.state.global_step)
    save_outputs(trainer, tokenizer, output_dir)
    return trainer


if __name__ == "__main__":
    run_cli(train)
