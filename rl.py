"""RL stage: GRPO from the SFT checkpoint with rollouts constrained to the catalogue.

    python rl.py --model_path out/sft/final_checkpoint --train_file train.csv --eval_file valid.csv \
        --info_file info.txt --sid_index_path index.json --item_meta_path item.json \
        --category Office_Products --output_dir out/rl --beam_search True --reward_type ranking

or on several processes: `accelerate launch --config_file config/zero2_opt.yaml --num_processes N
rl.py ...` (see rl.sh). The original's rl.sh command line runs unchanged; every flag of the
original's rl.py keeps its meaning and default, and so does its training recipe: max_grad_norm 0.3,
cosine schedule, warmup ratio 0.03, paged_adamw_32bit (adamw_torch where bitsandbytes or CUDA is
missing), a checkpoint every 10% of the steps (20 kept), logging every step, evaluation on every
validation row, HR/NDCG of each batch's prompts logged every step (test_during_training), bf16
where the GPU supports it. Outputs as the original: the model in output_dir and model + tokenizer
in output_dir/final_checkpoint.

Reads top to bottom as named steps, each a public function tests and benchmarks call:
check_flags, load_policy, build_catalogues, build_datasets, build_arguments, then ReReTrainer.train
and save.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import runtime

if __name__ == "__main__":
    runtime.check_flags_early(__file__)  # a bad flag or --help answers before torch loads

import torch
from datasets import Dataset as HFDataset
from transformers import set_seed

import data
from checkpoints import flag_defaults, run_record, save_outputs
from minionerec_trainer import OBJECTIVES, ReReConfig, ReReTrainer
from modeling import check_vocab_matches, default_dtype, load_causal_lm, load_tokenizer
from rewards import SASREC_SCORES, build_reward_funcs
from runtime import InputError, report_to, require_paths, run_cli
from sid_trie import SidTrie

logger = logging.getLogger("rl")

# per RL task (data.RL_TASKS makes its rows): the catalogue its answers come from, and the files
# its dataset class takes positionally, as the original's rl.py calls it
RL_TASK_SPECS = {
    "sid_history_to_sid": ("sid", ("train",)),
    "title_description_to_sid": ("sid", ("item", "index")),
    "title_history_to_sid": ("sid", ("train",)),
    "sid_to_title": ("title", ("item", "index")),
    "sid_history_to_title": ("title", ("train", "item", "index")),
}
# the dataset columns ReReTrainer and the reward functions read
ROW_COLUMNS = ("prompt", "target", "answer_type", "target_sid", "target_item_id", "history_item_ids", "task")
# optimisers that need bitsandbytes on a GPU (the original's default, paged_adamw_32bit, is one)
BITSANDBYTES_OPTIMS = ("paged", "8bit", "bnb")


# --- rows -------------------------------------------------------------------------------------


def rl_rows(items, answer_type: str = "sid") -> list[dict]:
    """The ROW_COLUMNS of RL dataset items: `target` is the row's answer text (its completion
    without the trailing newline: a SID, or a title for the SID -> title tasks)."""
    return [{"prompt": x["prompt"], "target": x["completion"].strip(), "answer_type": answer_type,
             "target_sid": x["target_sid"], "target_item_id": x["target_item_id"],
             "history_item_ids": list(x["history_item_ids"]), "task": x["task"]} for x in items]


def to_hf_dataset(rows) -> HFDataset:
    return HFDataset.from_dict({key: [row[key] for row in rows] for key in ROW_COLUMNS})


def parse_rl_tasks(rl_tasks) -> list[tuple[str, int]]:
    """`name[:rows],...` -> [(task, rows)], rows -1 = all. Names are data.RL_TASKS'."""
    entries = rl_tasks.split(",") if isinstance(rl_tasks, str) else list(rl_tasks)
    tasks = []
    for entry in (str(e).strip() for e in entries):
        if not entry:
            continue
        name, _, count = entry.partition(":")
        if name not in RL_TASK_SPECS:
            raise InputError(f"--rl_tasks {entry!r}: unknown task; choose from {', '.join(RL_TASK_SPECS)}")
        try:
            rows = int(count) if count else -1
        except ValueError:
            raise InputError(f"--rl_tasks {entry!r}: the row count after ':' must be an integer") from None
        if rows == 0 or rows < -1:
            raise InputError(f"--rl_tasks {entry!r}: the row count must be positive (or -1 for all)")
        if name in {t for t, _ in tasks}:
            raise InputError(f"--rl_tasks: {name} is listed twice")
        tasks.append((name, rows))
    if not tasks:
        raise InputError("--rl_tasks lists no task")
    return tasks


# --- steps ------------------------------------------------------------------------------------


SCALE_REWARDS = ("group", "batch", "none")


def check_flags(output_dir, dapo, gspo, num_generations, train_batch_size, eval_batch_size, sample_train,
                prompt_style="upstream", sasrec_score="logit", scale_rewards="group", objective="grpo",
                beta=0.04):
    """The flag values and combinations that must fail before any work."""
    if not output_dir:
        raise InputError("--output_dir is required")
    if dapo and gspo:
        raise InputError("--dapo and --gspo are alternatives: choose one")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    for flag, size in [("--train_batch_size", train_batch_size), ("--eval_batch_size", eval_batch_size)]:
        if size % num_generations:
            raise InputError(
                f"{flag} {size} x {world_size} processes is not divisible by --num_generations "
                f"{num_generations} per process: each group of G rollouts must stay on one process"
            )
    if not isinstance(sample_train, bool) and (sample_train == 0 or sample_train < -1):
        raise InputError(f"--sample_train {sample_train}: True/False, a positive row count, or -1 for all")
    if prompt_style not in data.PROMPT_STYLES:
        raise InputError(f"--prompt_style {prompt_style!r}: choose one of {data.PROMPT_STYLES}")
    if sasrec_score not in SASREC_SCORES:
        raise InputError(f"--sasrec_score {sasrec_score!r}: choose one of {SASREC_SCORES}")
    if scale_rewards not in SCALE_REWARDS:
        raise InputError(f"--scale_rewards {scale_rewards!r}: choose one of {SCALE_REWARDS}")
    if objective not in OBJECTIVES:
        raise InputError(f"--objective {objective!r}: choose one of {OBJECTIVES}")
    if objective == "listwise" and beta <= 0:
        raise InputError(f"--objective listwise learns pi_ref * exp(advantage / beta): it needs --beta > 0, "
                         f"not {beta}")
    if objective == "listwise" and (dapo or gspo):
        raise InputError("--dapo and --gspo shape GRPO's loss: not with --objective listwise")


def load_policy(model_path, index, precision="auto"):
    """(model, tokenizer) of the SFT checkpoint: the tokenizer left-padded and holding every SID
    token of the index; the model in bf16 where the GPU supports it (precision auto), else in the
    checkpoint's own dtype."""
    tokenizer = load_tokenizer(model_path, padding_side="left")
    data.require_sid_tokens(tokenizer, index, source=model_path)
    if precision == "auto":
        dtype = torch.bfloat16 if default_dtype("auto") == torch.bfloat16 else None
    else:
        dtype = default_dtype(precision)
    model = load_causal_lm(model_path, dtype=dtype)
    check_vocab_matches(model, tokenizer, model_path)
    return model, tokenizer


def catalogue_titles(catalogue) -> tuple[list[str], list[str]]:
    """(titles, item ids) of the catalogue's items that have a title in item.json: the answers of
    the SID -> title tasks."""
    meta = catalogue.require_item_meta("the SID -> title RL tasks")
    pairs = [(str(meta[item_id]["title"]).strip(), item_id) for item_id in catalogue.index
             if item_id in meta and str(meta[item_id].get("title") or "").strip()]
    return [title for title, _ in pairs], [item_id for _, item_id in pairs]


def build_catalogues(catalogue, info_file, tokenizer, with_titles: bool):
    """(SID trie over info.txt's SIDs, title trie over the catalogue's titles or None). Every
    completion is the answer + "\\n" + EOS, tokenised as SFT tokenises responses."""
    sid_trie = SidTrie.from_info_file(info_file, tokenizer)
    if not with_titles:
        return sid_trie, None
    titles, item_ids = catalogue_titles(catalogue)
    return sid_trie, SidTrie.from_texts(titles, tokenizer, item_ids=item_ids)


def build_datasets(tasks, catalogue, train_file, eval_file, item_meta_path, sid_index_path, tokenizer,
                   cutoff_len, sample_train=False, model_path="", eval_sample=-1, prompt_style="upstream",
                   seed=42, tries=None):
    """(train, eval) HF datasets of ROW_COLUMNS, as the original's rl.py builds them: the tasks'
    rows concatenated and shuffled with `seed`; `sample_train` True drops the first 20% of the
    shuffled rows when "sft" is in model_path (the original's rule), an integer sets the rows of
    sid_history_to_sid; eval = sid_history_to_sid on `eval_sample` validation rows (-1: all).
    Rows are sampled with the datasets' own seed, as the original. Prompts longer than cutoff_len
    minus the answer lose their oldest history items, then the end of their item text. `tries`
    ({answer type: trie}) checks that every row's answer is a completion of its catalogue."""
    common = dict(category=catalogue.category, prompt_style=prompt_style, catalogue=catalogue,
                  tokenizer=tokenizer, max_len=cutoff_len)
    files = {"train": train_file, "item": item_meta_path, "index": sid_index_path}
    rows = []
    for task, count in tasks:
        if task == "sid_history_to_sid" and not isinstance(sample_train, bool):
            count = sample_train
        answer_type, file_keys = RL_TASK_SPECS[task]
        dataset = data.RL_TASKS[task](*(files[key] for key in file_keys), sample=count, **common)
        logger.info("%-26s %6d prompts (%s answers)", task, len(dataset), answer_type)
        rows += rl_rows(dataset.inputs, answer_type)
    eval_rows = rl_rows(data.RL_TASKS["sid_history_to_sid"](eval_file, sample=eval_sample, **common).inputs)
    if tries is not None:
        for row in rows + eval_rows:
            if row["target"] not in tries[row["answer_type"]].sid_to_index:
                raise InputError(f"a {row['task']} row's answer {row['target']!r} is not among the "
                                 f"{row['answer_type']} answers the rollouts can produce (item "
                                 f"{row['target_item_id']})")
    train_data = to_hf_dataset(rows).shuffle(seed=seed)
    if sample_train is True and "sft" in model_path:
        train_data = train_data.select(range(int(0.2 * len(train_data)), len(train_data)))
        logger.info("--sample_train True with an SFT model_path: dropped the first 20%% of the shuffled rows")
    return train_data, to_hf_dataset(eval_rows).shuffle(seed=seed)


def choose_optimizer(optim: str) -> str:
    """`optim`, or adamw_torch (one logged line) when it needs bitsandbytes on CUDA and this
    machine lacks either."""
    if not any(marker in optim for marker in BITSANDBYTES_OPTIMS):
        return optim
    if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None:
        return optim
    logger.warning("--optim %s needs bitsandbytes on CUDA, missing here: using adamw_torch", optim)
    return "adamw_torch"


def build_arguments(model, max_completion_length, *, output_dir, seed, train_batch_size, eval_batch_size,
                    gradient_accumulation_steps, num_generations, temperature, num_train_epochs, max_steps,
                    learning_rate, beta, dapo, gspo, sync_ref_model, logging_steps, eval_step, save_steps,
                    save_total_limit, max_grad_norm, lr_scheduler_type, warmup_ratio, optim, wandb_project,
                    wandb_run_name, deepspeed, log_completions, gradient_checkpointing, beam_search,
                    dynamic_sampling, add_gt, mask_all_zero, test_during_training, test_beam,
                    decode_batch_size, scale_rewards="group", objective="grpo") -> ReReConfig:
    """The ReReConfig (TRL GRPOConfig + the recommendation options) of rl.py's flags."""
    return ReReConfig(
        output_dir=output_dir,
        seed=seed,
        per_device_train_batch_size=train_batch_size,
        per_device_eval_batch_size=eval_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        temperature=temperature,
        num_train_epochs=num_train_epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        beta=beta,
        loss_type="dapo" if dapo else "grpo",
        importance_sampling_level="sequence" if gspo else "token",
        sync_ref_model=sync_ref_model,
        scale_rewards=scale_rewards,
        objective=objective,
        bf16=model.dtype == torch.bfloat16,
        max_grad_norm=max_grad_norm,
        lr_scheduler_type=lr_scheduler_type,
        warmup_steps=warmup_ratio,  # transformers 5: a float below 1 is a ratio of all steps
        optim=choose_optimizer(optim),
        logging_steps=logging_steps,
        # transformers 5 also evaluates at the last step: an eval_step past max_steps means none
        eval_strategy="no" if 0 < max_steps <= eval_step else "steps",
        eval_steps=eval_step,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        report_to=report_to(wandb_project),
        run_name=wandb_run_name or None,
        use_cpu=not torch.cuda.is_available(),  # several CPU processes: accelerate's MULTI_CPU over gloo
        deepspeed=deepspeed or None,
        remove_unused_columns=False,
        log_completions=log_completions,
        gradient_checkpointing=gradient_checkpointing,
        beam_search=beam_search,
        dynamic_sampling=dynamic_sampling,
        add_gt=add_gt,
        mask_all_zero=mask_all_zero,
        test_during_training=test_during_training,
        test_beam=test_beam,
        test_steps=max(1, int(eval_step)) if eval_step >= 1 else 100,
        decode_batch_size=decode_batch_size,
    )


def train(
    model_path: str = "",
    seed: int = 42,
    train_file: str = "",
    eval_file: str = "",
    info_file: str = "",
    category: str = "",
    wandb_project: str = "",
    wandb_run_name: str = "",
    output_dir: str = "",
    train_batch_size: int = 32,
    eval_batch_size: int = 32,
    gradient_accumulation_steps: int = 1,
    temperature: float = 1.0,
    add_gt: bool = False,
    eval_step: float = 0.199,
    num_generations: int = 16,
    num_train_epochs: int = 1,
    learning_rate: float = 1e-6,
    beta: float = 0.04,
    beam_search: bool = False,
    test_during_training: bool = True,
    dynamic_sampling: bool = False,
    mask_all_zero: bool = False,
    sync_ref_model: bool = False,
    test_beam: int = 20,
    reward_type: str = "rule",
    sample_train: bool | int = False,
    ada_path: str = "",
    cf_path: str = "",
    sid_index_path: str = "",
    item_meta_path: str = "",
    dapo: bool = False,
    gspo: bool = False,
    # additions (not flags of the original's rl.py)
    rl_tasks: str = "sid_history_to_sid,title_description_to_sid,title_history_to_sid:10000",
    prompt_style: str = "upstream",
    sasrec_score: str = "logit",
    cutoff_len: int = 512,
    eval_sample: int = -1,
    test_file: str = "",
    test_sample: int = 200,
    max_steps: int = -1,
    logging_steps: int = 1,
    save_steps: float = 0.1,
    save_total_limit: int = 20,
    max_grad_norm: float = 0.3,
    lr_scheduler_type: str = "cosine",
    warmup_ratio: float = 0.03,
    optim: str = "paged_adamw_32bit",
    precision: str = "auto",
    decode_batch_size: int = 8,
    allow_unreachable_targets: bool = False,
    resume_from_checkpoint: str | bool | None = None,
    deepspeed: str = "",
    log_completions: bool = False,
    gradient_checkpointing: bool = False,
    scale_rewards: str = "group",
    objective: str = "grpo",
):
    """GRPO (ReReTrainer) over the RL tasks: by default the original's SID history -> next SID,
    title and description -> SID, title history -> next SID.

    Args:
        model_path: the SFT checkpoint (final_checkpoint folder with its tokenizer).
        seed: random seed of the shuffling and the rollouts.
        train_file: training split CSV (the sequential tasks).
        eval_file: validation split CSV; eval is SID history -> next SID (reward on eval rows).
        info_file: catalogue (info.txt); the SID rollouts can only produce its SIDs.
        category: item category, worded into the prompts (e.g. Industrial_and_Scientific).
        wandb_project: log to wandb (offline unless WANDB_MODE/WANDB_API_KEY say otherwise).
        wandb_run_name: the run's name in wandb (empty: the Trainer's default).
        output_dir: the model is saved here (and checkpoints); model + tokenizer to
            output_dir/final_checkpoint.
        train_batch_size: prompts x generations per process per step (a multiple of num_generations).
        eval_batch_size: prompts x generations per process per evaluation step (a multiple of
            num_generations).
        gradient_accumulation_steps: steps accumulated into one optimiser step.
        temperature: sampling temperature of non-beam rollouts.
        add_gt: put the ground truth into groups that miss it.
        eval_step: evaluation interval in steps (a float below 1 is a fraction of all steps).
        num_generations: G, rollouts per prompt.
        num_train_epochs: passes over the RL prompts (unless max_steps is set).
        learning_rate: learning rate of the policy.
        beta: weight of the k3 KL to the reference model (no reference is loaded when 0).
        beam_search: G distinct answers per prompt by constrained beam search (else sampling).
        test_during_training: log HR@K/NDCG@K (K 3, 5, 10, 20 up to test_beam) of test_beam-beam
            search on each batch's prompts at every step (the original); with --test_file, on that
            file's rows every eval_step steps instead (every 100 when eval_step is a fraction).
        dynamic_sampling: over-generate 1.5x, keep the target and the most frequent others.
        mask_all_zero: drop groups whose rewards are all equal from the loss.
        sync_ref_model: refresh the reference model from the policy periodically (TRL).
        test_beam: beams of test_during_training (K up to test_beam).
        reward_type: rule | ranking (rule + NDCG-aware) | ranking_only | semantic | sasrec. Title
            answers are scored by text; semantic and sasrec give the rule reward on rows they cannot
            score (title answers; for sasrec rows without a history).
        sample_train: True: drop the first 20% of the shuffled train rows when "sft" is in
            model_path (the original); False: keep all; an integer: rows of sid_history_to_sid
            (-1: all).
        ada_path: item embeddings .npy (rows = item ids) for the semantic reward.
        cf_path: SASRec checkpoint for the sasrec reward: a sasrec.py checkpoint or the state dict
            the original's sasrec.py saves.
        sid_index_path: index.json (the items' SIDs).
        item_meta_path: item.json (item titles and descriptions for the title tasks).
        dapo: token-level loss (DAPO).
        gspo: sequence-level importance ratio (GSPO); not together with dapo.
        rl_tasks: comma-separated RL tasks, each optionally `:rows` (default all rows): any of
            sid_history_to_sid, title_description_to_sid, title_history_to_sid, sid_to_title,
            sid_history_to_title. The default is the original's three (title history sampled
            to 10k rows as its rl.py does).
        prompt_style: upstream (the original's RL prompts) or unified (the project's wording).
        sasrec_score: the sasrec reward's score: logit (the original's raw SASRec logit), prob
            (its softmax probability over the catalogue) or pmi (its log-probability minus the log
            of the item's share of train_file's targets: the popularity SFT already learnt, not
            counted twice).
        cutoff_len: max tokens of prompt + answer; a longer prompt loses its oldest history items,
            then the end of its item text.
        eval_sample: validation rows evaluated (-1: all, as the original).
        test_file: test split CSV: test_during_training on its rows every eval_step steps instead
            of on each batch.
        test_sample: rows of test_file (-1: all).
        max_steps: stop after this many optimiser steps (-1: num_train_epochs).
        logging_steps: optimiser steps between logged metrics.
        save_steps: steps between checkpoints (a float below 1 is a fraction of all steps).
        save_total_limit: checkpoints kept (the oldest are deleted).
        max_grad_norm: gradient clipping norm.
        lr_scheduler_type: learning-rate schedule (transformers' names: cosine, linear, constant...).
        warmup_ratio: fraction of all steps of linear learning-rate warmup.
        optim: optimiser (transformers' names); paged and 8-bit ones need bitsandbytes on CUDA and
            fall back to adamw_torch without it.
        precision: auto (bf16 on a GPU that supports it, else the checkpoint's dtype), bf16 or fp32.
        decode_batch_size: prompts decoded together in rollouts and tests (x beams rows).
        allow_unreachable_targets: proceed when split rows have targets the catalogue cannot
            produce (they are counted and reported; they can never be hit).
        resume_from_checkpoint: a checkpoint folder, or True for the latest in output_dir.
        deepspeed: DeepSpeed JSON config (GPUs), e.g. config/zero2_ds.json for ZeRO-2.
        log_completions: write every logged step's prompts, completions, rewards and advantages
            to output_dir/completions/*.parquet (TRL).
        gradient_checkpointing: recompute activations in the backward pass (TRL's default is on;
            it only pays for large models on GPUs).
        scale_rewards: how advantages are scaled (TRL): group (reward minus the group mean, divided
            by the group's std: the original's), batch (by the batch's std), or none (reward minus the
            group mean, in the reward's own units: with the sasrec reward, a SASRec log-probability,
            and beta 1, the KL-regularised optimum is the reference policy times SASRec's probability).
        objective: grpo (the original's GRPO loss; DAPO/GSPO with --dapo/--gspo) or listwise: per
            group, the KL from the KL-regularised optimum restricted to the group's G candidates,
            pi_ref * exp(advantage / beta) renormalised, to the policy's renormalised share: the
            group re-ranked by the reward, learnt directly (needs beta > 0; no clipping, no k3 term).
    """
    run_settings = dict(locals())  # the flags as given, recorded with every checkpoint
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # --- checks that must fail before any work -----------------------------------------------
    require_paths(model_path=model_path, train_file=train_file, eval_file=eval_file, info_file=info_file,
                  sid_index_path=sid_index_path, item_meta_path=item_meta_path)
    if test_file:
        require_paths(test_file=test_file)
    check_flags(output_dir, dapo, gspo, num_generations, train_batch_size, eval_batch_size, sample_train,
                prompt_style, sasrec_score, scale_rewards, objective, beta)
    tasks = parse_rl_tasks(rl_tasks)
    catalogue = data.Catalogue(sid_index_path, item_meta_path, info_file, category,
                               allow_unreachable_targets=allow_unreachable_targets)
    reward_funcs = build_reward_funcs(reward_type, num_generations, catalogue.index, beam_search, ada_path,
                                      cf_path, sasrec_score, train_file)
    set_seed(seed)

    # --- policy (loaded once) and the answer catalogues ----------------------------------------
    model, tokenizer = load_policy(model_path, catalogue.index, precision)
    with_titles = any(RL_TASK_SPECS[task][0] == "title" for task, _ in tasks)
    sid_trie, title_trie = build_catalogues(catalogue, info_file, tokenizer, with_titles)
    logger.info("policy %s (%s), %s", model_path, model.dtype, sid_trie)
    if title_trie is not None:
        logger.info("title answers: %d distinct titles, up to %d tokens", len(title_trie), title_trie.depth)

    # --- data: the row's own target travels with its prompt -------------------------------------
    tries = {"sid": sid_trie, "title": title_trie}
    train_data, eval_data = build_datasets(
        tasks, catalogue, train_file, eval_file, item_meta_path, sid_index_path, tokenizer, cutoff_len,
        sample_train, model_path, eval_sample, prompt_style, seed,
        tries=None if allow_unreachable_targets else tries)
    test_rows = None
    if test_during_training and test_file:
        test_rows = rl_rows(data.SidDataset(test_file, sample=test_sample, category=catalogue.category,
                                            prompt_style=prompt_style, catalogue=catalogue,
                                            tokenizer=tokenizer, max_len=cutoff_len).inputs)

    # --- arguments and training -----------------------------------------------------------------
    args = build_arguments(
        model, max(trie.depth for trie in tries.values() if trie is not None), output_dir=output_dir,
        seed=seed, train_batch_size=train_batch_size, eval_batch_size=eval_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, num_generations=num_generations,
        temperature=temperature, num_train_epochs=num_train_epochs, max_steps=max_steps,
        learning_rate=learning_rate, beta=beta, dapo=dapo, gspo=gspo, sync_ref_model=sync_ref_model,
        logging_steps=logging_steps, eval_step=eval_step, save_steps=save_steps,
        save_total_limit=save_total_limit, max_grad_norm=max_grad_norm, lr_scheduler_type=lr_scheduler_type,
        warmup_ratio=warmup_ratio, optim=optim, wandb_project=wandb_project, wandb_run_name=wandb_run_name,
        deepspeed=deepspeed, log_completions=log_completions, gradient_checkpointing=gradient_checkpointing,
        beam_search=beam_search, dynamic_sampling=dynamic_sampling, add_gt=add_gt,
        mask_all_zero=mask_all_zero, test_during_training=test_during_training, test_beam=test_beam,
        decode_batch_size=decode_batch_size, scale_rewards=scale_rewards, objective=objective)
    trainer = ReReTrainer(
        model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_data,
        eval_dataset=eval_data, trie=sid_trie, title_trie=title_trie, processing_class=tokenizer,
        test_prompts=test_rows,
    )
    trainer.run_record = run_record(run_settings, flag_defaults(train))  # resume only a checkpoint of these settings
    trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    # the accelerator's own count: proves the processes really trained together
    logger.info("rank %d of %d finished RL at step %d",
                trainer.args.process_index, trainer.accelerator.num_processes, trainer.state.global_step)
    save_outputs(trainer, tokenizer, output_dir)
    return trainer


if __name__ == "__main__":
    run_cli(train)
