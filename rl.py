"""RL stage: GRPO from the SFT checkpoint with rollouts constrained to the SID catalogue.

    python rl.py --model_path out/sft/final_checkpoint --train_file train.csv --eval_file valid.csv \
        --info_file info.txt --sid_index_path index.json --item_meta_path item.json \
        --output_dir out/rl --beam_search True --reward_type ranking

or on several processes: `accelerate launch --config_file config/zero2_opt.yaml --num_processes N
rl.py ...` (see rl.sh). Reads top to bottom: checks, policy + tokenizer, catalogue trie, datasets,
rewards, ReReTrainer, save.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from datasets import Dataset as HFDataset
from transformers import set_seed

import data
from sid_trie import SidTrie
from minionerec_trainer import ReReConfig, ReReTrainer
from runtime import report_to, require_paths, run_cli
from modeling import check_vocab_matches, load_causal_lm, load_tokenizer, save_pretrained_atomic
from rewards import build_reward_funcs

logger = logging.getLogger("rl")
REWARD_COLUMNS = ("prompt", "target_sid", "target_item_id", "history_item_ids", "task")


def _to_hf(items):
    return HFDataset.from_dict({key: [item[key] for item in items] for key in REWARD_COLUMNS})


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
    test_during_training: bool = False,
    dynamic_sampling: bool = False,
    mask_all_zero: bool = False,
    sync_ref_model: bool = False,
    test_beam: int = 20,
    reward_type: str = "rule",
    sample_train: int = -1,
    ada_path: str = "",
    cf_path: str = "",
    sid_index_path: str = "",
    item_meta_path: str = "",
    dapo: bool = False,
    gspo: bool = False,
    # additions (not in the documents' script)
    cutoff_len: int = 512,
    seq_title_sample: int = 10000,
    eval_sample: int = 200,
    test_file: str = "",
    test_sample: int = 200,
    max_steps: int = -1,
    logging_steps: int = 1,
    save_steps: int = 50,
    precision: str = "auto",
    decode_batch_size: int = 8,
    resume_from_checkpoint: str | bool | None = None,
    deepspeed: str = "",
    log_completions: bool = False,
    gradient_checkpointing: bool = False,
):
    """GRPO (ReReTrainer) over the RL tasks: SID history -> next SID, title and description ->
    SID, title history -> next SID.

    Args:
        model_path: the SFT checkpoint (final_checkpoint folder with its tokenizer).
        seed: random seed of the row sampling and the rollouts.
        train_file: training split CSV (the SID-history and title-history tasks).
        eval_file: validation split CSV; eval is SID history -> next SID (reward on eval rows).
        info_file: catalogue (info.txt); the rollouts can only produce its SIDs.
        category: item category, worded into the prompts (e.g. Industrial_and_Scientific).
        wandb_project: log to wandb (offline unless WANDB_MODE/WANDB_API_KEY say otherwise).
        wandb_run_name: the run's name in wandb (empty: the Trainer's default).
        output_dir: checkpoints go here; model + tokenizer to output_dir/final_checkpoint.
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
        beam_search: G distinct items per prompt by constrained beam search (else sampling).
        test_during_training: HR@K/NDCG@K on test_file (or eval_file) with test_beam beams, every
            eval_step steps (every 100 when eval_step is a fraction).
        dynamic_sampling: over-generate 1.5x, keep the target and the most frequent others.
        mask_all_zero: drop groups whose rewards are all equal from the loss.
        sync_ref_model: refresh the reference model from the policy periodically (TRL).
        test_beam: beams of test_during_training (K up to test_beam).
        reward_type: rule | ranking (rule + NDCG-aware) | ranking_only | semantic | sasrec.
        sample_train: rows of the SID-history task (-1: all).
        ada_path: item embeddings .npy for the semantic reward.
        cf_path: sasrec.py checkpoint for the sasrec reward.
        sid_index_path: index.json (the items' SIDs).
        item_meta_path: item.json (item titles and descriptions for the title tasks).
        dapo: token-level loss (DAPO).
        gspo: sequence-level importance ratio (GSPO); not together with dapo.
        cutoff_len: max tokens of prompt + answer; a longer prompt loses its oldest history items,
            then the end of its item text.
        seq_title_sample: rows of the title-history task (the documents use 10k).
        eval_sample: validation rows (-1: all).
        test_file: test split CSV of test_during_training (empty: eval_file).
        test_sample: test rows of test_during_training (-1: all).
        max_steps: stop after this many optimiser steps (-1: num_train_epochs).
        logging_steps: optimiser steps between logged metrics.
        save_steps: optimiser steps between checkpoints (the last two are kept).
        precision: auto (the checkpoint's dtype), bf16 or fp32.
        decode_batch_size: prompts decoded together in rollouts and tests (x beams rows).
        resume_from_checkpoint: a checkpoint folder, or True for the latest in output_dir.
        deepspeed: DeepSpeed JSON config (GPUs), e.g. config/zero2_ds.json for ZeRO-2.
        log_completions: write every logged step's prompts, completions, rewards and advantages
            to output_dir/completions/*.parquet (TRL).
        gradient_checkpointing: recompute activations in the backward pass (TRL's default is on;
            it only pays for large models on GPUs).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # --- checks that must fail before any work -----------------------------------------------
    require_paths(model_path=model_path, train_file=train_file, eval_file=eval_file, info_file=info_file,
                  sid_index_path=sid_index_path, item_meta_path=item_meta_path)
    if not output_dir:
        raise ValueError("--output_dir is required")
    if dapo and gspo:
        raise ValueError("--dapo and --gspo are alternatives: choose one")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    for flag, size in [("--train_batch_size", train_batch_size), ("--eval_batch_size", eval_batch_size)]:
        if size % num_generations:
            raise ValueError(
                f"{flag} {size} x {world_size} processes is not divisible by --num_generations "
                f"{num_generations} per process: each group of G rollouts must stay on one process"
            )
    index = data.read_index(sid_index_path)
    reward_funcs = build_reward_funcs(reward_type, num_generations, index, beam_search, ada_path, cf_path)
    set_seed(seed)

    # --- policy (loaded once, in the checkpoint's dtype) and the catalogue ----------------------
    tokenizer = load_tokenizer(model_path, padding_side="left")
    data.require_sid_tokens(tokenizer, index, source=model_path)
    dtype = {"auto": None, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    model = load_causal_lm(model_path, dtype=dtype)
    check_vocab_matches(model, tokenizer, model_path)
    trie = SidTrie.from_info_file(info_file, tokenizer)
    logger.info("policy %s (%s), %s", model_path, model.dtype, trie)

    # --- data: the row's own target travels with its prompt -------------------------------------
    common = dict(tokenizer=tokenizer, max_len=cutoff_len, seed=seed, category=category)
    train_sets = [
        data.SidDataset(train_file=train_file, index_file=sid_index_path, sample=sample_train, **common),
        data.RLTitle2SidDataset(item_file=item_meta_path, index_file=sid_index_path, **common),
        data.RLSeqTitle2SidDataset(train_file=train_file, item_file=item_meta_path,
                                   index_file=sid_index_path, sample=seq_title_sample, **common),
    ]
    for ds in train_sets:
        logger.info("%-24s %6d prompts", type(ds).__name__, len(ds))
    train_data = _to_hf([item for ds in train_sets for item in ds.items])
    eval_data = _to_hf(data.SidDataset(train_file=eval_file, index_file=sid_index_path,
                                       sample=eval_sample, **common).items)
    test_prompts = None
    if test_during_training:
        test_prompts = data.EvalSidDataset(train_file=test_file or eval_file, index_file=sid_index_path,
                                           sample=test_sample, **common).items

    args = ReReConfig(
        output_dir=output_dir,
        seed=seed,
        per_device_train_batch_size=train_batch_size,
        per_device_eval_batch_size=eval_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_generations=num_generations,
        max_completion_length=trie.depth,
        temperature=temperature,
        num_train_epochs=num_train_epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        beta=beta,
        loss_type="dapo" if dapo else "grpo",
        importance_sampling_level="sequence" if gspo else "token",
        sync_ref_model=sync_ref_model,
        scale_rewards="group",
        bf16=model.dtype == torch.bfloat16,
        logging_steps=logging_steps,
        # transformers 5 also evaluates at the last step: an eval_step past max_steps means none
        eval_strategy="no" if 0 < max_steps <= eval_step else "steps",
        eval_steps=eval_step,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
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
    trainer = ReReTrainer(
        model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_data,
        eval_dataset=eval_data, trie=trie, processing_class=tokenizer, test_prompts=test_prompts,
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    # the accelerator's own count: proves the processes really trained together
    logger.info("rank %d of %d finished RL at step %d",
                trainer.args.process_index, trainer.accelerator.num_processes, trainer.state.global_step)

    # --- save ---------------------------------------------------------------------------------
    if trainer.is_world_process_zero():
        trainer.save_state()
        save_pretrained_atomic(trainer.accelerator.unwrap_model(trainer.model), tokenizer,
                               Path(output_dir) / "final_checkpoint")
        logger.info("saved %s", Path(output_dir) / "final_checkpoint")
    return trainer


if __name__ == "__main__":
    run_cli(train)
