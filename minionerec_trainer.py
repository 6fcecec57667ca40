"""ReReTrainer: GRPO for generative recommendation, on TRL's GRPOTrainer.

TRL already provides what GRPO needs: a sampler that repeats each prompt `num_generations` times,
group-normalised advantages, the k3 KL to a reference model (created only when beta > 0), reference
syncing, and the loss variants (GRPO, DAPO token-level, GSPO sequence-level ratio). ReReTrainer
changes only what recommendation needs:

- rollouts come from the constrained SID decoder (decoding.py): `beam_search=True` gives G
  distinct valid items per prompt in beam order, otherwise G constrained samples at `temperature`;
  one group is decoded together (its prompt is encoded once);
- `dynamic_sampling` over-generates 1.5x and keeps the target and the most frequent others;
  `add_gt` puts the ground truth into a group that missed it;
- `mask_all_zero` drops groups whose rewards are all equal from the loss;
- `test_during_training` reports HR@K / NDCG@K with `test_beam` beams every `test_steps`; the
  decoder is stateless, so this does not disturb the rollouts;
- extra logs: item diversity per group, and seconds per step in generation, reference log-probs,
  rewards and the policy forward+backward.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.models import unwrap_model_for_generation

from decoding import constrained_sample, sid_beam_search
from modeling import positions_from_mask
from sid_trie import SidTrie
from metrics import hr_ndcg, ks_up_to, target_ranks

logger = logging.getLogger(__name__)


@dataclass
class ReReConfig(GRPOConfig):
    """GRPOConfig plus the recommendation options of rl.py (each documented below)."""

    beam_search: bool = field(default=False, metadata={
        "help": "Rollouts by constrained beam search: G distinct valid items per prompt, in beam order."})
    dynamic_sampling: bool = field(default=False, metadata={
        "help": "Generate ceil(1.5 G) candidates, keep the target and the most frequent others."})
    add_gt: bool = field(default=False, metadata={
        "help": "Replace the last candidate of a group that misses the ground truth by it."})
    mask_all_zero: bool = field(default=False, metadata={
        "help": "Drop groups whose rewards are all equal (zero advantage) from the loss."})
    test_during_training: bool = field(default=False, metadata={
        "help": "Report HR@K/NDCG@K on the test prompts every test_steps optimiser steps."})
    test_beam: int = field(default=20, metadata={"help": "Beams for test_during_training."})
    test_steps: int = field(default=100, metadata={"help": "Optimiser steps between tests."})
    decode_batch_size: int = field(default=8, metadata={
        "help": "Prompts decoded together in rollouts and tests (x beams rows)."})


def select_candidates(items: torch.Tensor, targets: torch.Tensor, group_size: int,
                      dynamic_sampling: bool, add_gt: bool) -> torch.Tensor:
    """Pick `group_size` of each row's candidates (item indices, rollout order) -> [P, group_size].

    dynamic_sampling: priority to the target, then to first occurrences of items, then to frequent
    items, then to early positions; the kept ones stay in rollout order.
    add_gt: a row whose kept candidates miss its target gets it in the last slot.
    Rows of `targets` are item indices (-1: the target is not a valid item)."""
    n_rows, n_cand = items.shape
    if dynamic_sampling and n_cand > group_size:
        same = items[:, :, None] == items[:, None, :]
        count = same.sum(-1)
        position = torch.arange(n_cand)
        first = ~(same & (position[None, None, :] < position[None, :, None])).any(-1)
        is_target = (items == targets[:, None]) & first
        key = ((is_target.long() * 2 + first.long()) * (n_cand + 1) + count) * n_cand + (n_cand - 1 - position)
        keep = key.topk(group_size, dim=1).indices.sort(dim=1).values
        items = items.gather(1, keep)
    else:
        items = items[:, :group_size]
    if add_gt:
        missing = ~(items == targets[:, None]).any(1) & (targets >= 0)
        items = items.clone()
        items[missing, -1] = targets[missing]
    return items


class _TestDuringTraining(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.test_steps == 0:
            self.trainer.log(self.trainer.test_metrics())


class ReReTrainer(GRPOTrainer):
    """GRPOTrainer whose rollouts are constrained to the SID catalogue (see module docstring).

    Dataset rows carry `prompt` and the row's own `target_sid` (and `history_item_ids` for the
    SASRec reward); reward functions receive them as keyword arguments."""

    def __init__(self, model, reward_funcs, args: ReReConfig, train_dataset, trie: SidTrie,
                 processing_class, eval_dataset=None, test_prompts=None, callbacks=None):
        if args.per_device_train_batch_size % args.num_generations:
            raise ValueError(
                f"--train_batch_size {args.per_device_train_batch_size} (per process) is not divisible "
                f"by --num_generations {args.num_generations}: a group of G rollouts must stay on one "
                "process and in one micro-batch"
            )
        if args.beam_search and args.num_generations > len(trie):
            raise ValueError(f"--num_generations {args.num_generations} distinct beams but only {len(trie)} items")
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks)
        self.trie = trie
        self.item_of_sid = {sid: i for i, sid in enumerate(trie.sids)}
        self.test_prompts = test_prompts
        self._rollout_targets = None
        self._seconds = defaultdict(float)
        self._seconds_since_step = 0
        if args.test_during_training:
            if not test_prompts:
                raise ValueError("test_during_training needs test prompts")
            self.add_callback(_TestDuringTraining(self))

    # --- rollouts -----------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        # the rollout needs each group's target (dynamic_sampling, add_gt)
        self._rollout_targets = [x["target_sid"] for x in inputs]
        output = super()._generate_and_score_completions(inputs)
        if self.args.mask_all_zero and self.model.training:
            g = self.num_generations
            zero_group = (output["advantages"].view(-1, g).abs() < 1e-6).all(dim=1)
            keep = (~zero_group).repeat_interleave(g).to(output["completion_mask"].dtype)
            output["completion_mask"] = output["completion_mask"] * keep[:, None]
            output["num_items_in_batch"] = self.accelerator.gather(output["completion_mask"].sum()).sum()
            self._metrics["train"]["groups_dropped_all_zero"].append(
                self.accelerator.gather(zero_group.float().mean()).mean().item())
        return output

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        start = time.perf_counter()
        g = num_generations
        if len(prompt_ids) % g:
            raise RuntimeError(f"{len(prompt_ids)} prompts do not form groups of {g}")
        group_prompts = prompt_ids[::g]
        if any(prompt_ids[i] != prompt_ids[i - i % g] for i in range(len(prompt_ids))):
            raise RuntimeError("a rollout group mixes prompts: the sampler must repeat each prompt G times")
        targets = torch.tensor([self.item_of_sid.get(t.strip(), -1) for t in self._rollout_targets[::g]])
        n_candidates = math.ceil(1.5 * g) if self.args.dynamic_sampling else g
        pad = self.processing_class.pad_token_id
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=self.args.ds3_gather_for_generation) as model:
            if self.args.beam_search:
                n_candidates = min(n_candidates, len(self.trie))
                result = sid_beam_search(model, self.trie, group_prompts, n_candidates, pad,
                                         batch_size=self.args.decode_batch_size, sort_by_length=False)
            else:
                result = constrained_sample(model, self.trie, group_prompts, n_candidates,
                                            self.args.temperature, pad, batch_size=self.args.decode_batch_size)
        items = select_candidates(result.item_index, targets, g, self.args.dynamic_sampling, self.args.add_gt)
        flat = items.flatten()
        lengths = self.trie.lengths[flat].tolist()
        completion_ids = [row[:n] for row, n in zip(self.trie.completion_ids[flat].tolist(), lengths)]

        mode = "train" if self.model.training else "eval"
        distinct = torch.tensor([len(set(row)) / g for row in items.tolist()])
        self._metrics[mode]["completions/distinct_items_per_group"].append(distinct.mean().item())
        if self.model.training:
            self._seconds["generation"] += time.perf_counter() - start
        return completion_ids, None

    # --- timing of the other phases -------------------------------------------------------------

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                           **multimodal):
        """Log-probs (and entropies) of the completion tokens. The backbone runs over whole sequences,
        the LM head only over the last logits_to_keep positions: off Triton devices (CPU) TRL's
        fused head scores every prompt position too, 13.4x slower for a hidden-128 model
        (benchmarks/bench_rl.py). Position ids follow the attention mask, as in generation and SFT."""
        if compute_aux_loss or any(v is not None for v in multimodal.values()):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy,
                compute_aux_loss, **multimodal)
        start = time.perf_counter()
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for lo in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[lo:lo + batch_size], attention_mask[lo:lo + batch_size]
            with self.accelerator.autocast():
                logits = model(input_ids=ids, attention_mask=mask,
                               position_ids=positions_from_mask(mask),
                               logits_to_keep=logits_to_keep + 1, use_cache=False).logits
            # the logits are only [batch, completion, vocab]: one log_softmax for all rows (TRL's
            # selective_log_softmax loops over the rows to save memory on full-sequence logits)
            log_softmax = (logits[:, :-1].float() / self.temperature).log_softmax(-1)
            padding = mask[:, -logits_to_keep:] == 0
            logps.append(log_softmax.gather(-1, ids[:, -logits_to_keep:, None]).squeeze(-1).masked_fill(padding, 0))
            if compute_entropy:
                entropies.append(-(log_softmax.exp() * log_softmax).sum(-1).masked_fill(padding, 0))
        if model is self.ref_model and self.model.training:
            self._seconds["reference"] += time.perf_counter() - start
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

    def _calculate_rewards(self, *args, **kwargs):
        start = time.perf_counter()
        out = super()._calculate_rewards(*args, **kwargs)
        if self.model.training:
            self._seconds["rewards"] += time.perf_counter() - start
        return out

    def training_step(self, model, inputs, num_items_in_batch=None):
        before = sum(self._seconds.values())
        start = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        elapsed = time.perf_counter() - start
        self._seconds["policy"] += elapsed - (sum(self._seconds.values()) - before)
        return loss

    def log(self, logs, start_time=None):
        if self.model.training and self._seconds and "loss" in logs:
            steps = max(1, self.state.global_step - self._seconds_since_step)
            for phase, seconds in self._seconds.items():
                logs[f"time/{phase}_s_per_step"] = seconds / steps
            self._seconds.clear()
            self._seconds_since_step = self.state.global_step
        super().log(logs, start_time)

    # --- test during training -----------------------------------------------------------------

    @torch.no_grad()
    def test_metrics(self) -> dict[str, float]:
        """HR@K / NDCG@K of the current policy on the test prompts (main process decodes)."""
        metrics = {}
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            prompts = [x["prompt_ids"] for x in self.test_prompts]
            result = sid_beam_search(model, self.trie, prompts, self.args.test_beam,
                                     self.processing_class.pad_token_id,
                                     batch_size=self.args.decode_batch_size)
            ranks = target_ranks(result.sids, [x["target_sid"] for x in self.test_prompts])
            metrics = {f"test/{k}": v for k, v in hr_ndcg(ranks, ks_up_to(self.args.test_beam)).items()}
        self.accelerator.wait_for_everyone()
        return metrics
