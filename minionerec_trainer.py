"""ReReTrainer: GRPO for generative recommendation, on TRL's GRPOTrainer.

TRL already provides what GRPO needs: a sampler that repeats each prompt `num_generations` times,
group-normalised advantages, the k3 KL to a reference model (created only when beta > 0), reference
syncing, and the loss variants (GRPO, DAPO token-level, GSPO sequence-level ratio). ReReTrainer
changes only what recommendation needs:

- rollouts come from the constrained decoder (decoding.py) over the row's answer catalogue: the
  SID trie, or for title-answer rows (`answer_type` "title") the trie of the catalogue's titles;
  a group never mixes the two. `beam_search=True` gives G distinct valid answers per prompt in
  beam order, otherwise G constrained samples at `temperature`; one group is decoded together
  (its prompt is encoded once);
- `dynamic_sampling` over-generates 1.5x and keeps the target and the most frequent others;
  `add_gt` puts the ground truth into a group that missed it;
- `mask_all_zero` drops groups whose rewards are all equal from the loss;
- `objective` "listwise" replaces GRPO's clipped policy-gradient loss by the KL from each group's
  share of the KL-regularised optimum, pi_ref * exp(advantage / beta) renormalised over the group's
  G candidates, to the policy's share (listwise_kl): the re-ranking of the group by the reward,
  learnt directly instead of through sampled advantages;
- TRL shuffles the rows of a generation batch; each micro-batch is put back in group order
  (rows_in_group_order) so completion_logits runs each group's prompt once in the policy pass;
- `test_during_training` reports HR@K / NDCG@K (K in 3, 5, 10, 20 up to `test_beam`) of
  `test_beam`-beam search: as the original, on the current batch's prompts at every step; or,
  given `test_prompts`, on those every `test_steps`. The decoder is stateless, so this does not
  disturb the rollouts;
- extra logs: item diversity per group, and seconds per step in generation, the per-batch test,
  reference log-probs, rewards and the policy forward+backward.
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

from checkpoints import RunCheckpoints
from decoding import constrained_sample, sid_beam_search
from modeling import positions_from_mask, trains_with_checkpointing
from sid_trie import SidTrie
from metrics import hr_ndcg, target_ranks

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
    test_during_training: bool = field(default=True, metadata={
        "help": "Report HR@K/NDCG@K of the current batch's prompts at every step (the original), or "
                "of the trainer's test_prompts every test_steps optimiser steps."})
    test_beam: int = field(default=20, metadata={"help": "Beams for test_during_training."})
    test_steps: int = field(default=100, metadata={
        "help": "Optimiser steps between tests on test_prompts."})
    decode_batch_size: int = field(default=8, metadata={
        "help": "Prompts decoded together in rollouts and tests (x beams rows)."})
    objective: str = field(default="grpo", metadata={
        "help": "grpo (TRL's loss_type: the original's GRPO, or DAPO/GSPO) or listwise: the KL from each "
                "group's share of pi_ref * exp(advantage / beta) to the policy's share of the group "
                "(needs beta > 0; the k3 KL term and clipping do not apply)."})


OBJECTIVES = ("grpo", "listwise")


TEST_KS = (3, 5, 10, 20)  # the original's test_during_training cut-offs


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


def rows_in_group_order(batch: dict) -> dict:
    """`batch` with its rows sorted by `group_ids` (stable: a group keeps its rollout order);
    every tensor with a row per completion is permuted, scalars and the rest pass through."""
    order = batch["group_ids"].argsort(stable=True)
    rows = len(order)
    return {key: value[order] if torch.is_tensor(value) and value.dim() and len(value) == rows else value
            for key, value in batch.items()}


def group_log_softmax(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """log softmax of `scores` [rows] within each group of `group_ids` [rows] (any order, groups
    may be partial)."""
    n_groups = int(group_ids.max()) + 1
    peak = scores.new_full((n_groups,), -math.inf).scatter_reduce(0, group_ids, scores.detach(), "amax")
    shifted = scores - peak[group_ids]
    total = scores.new_zeros(n_groups).index_add(0, group_ids, shifted.exp())
    return shifted - total.log()[group_ids]


def listwise_kl(policy_scores: torch.Tensor, target_scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Mean over groups of KL(target || policy), both softmaxes of their scores [rows] within each
    group: its gradient in a row's policy score is policy share - target share."""
    target = group_log_softmax(target_scores.detach(), group_ids)
    per_row = target.exp() * (target - group_log_softmax(policy_scores, group_ids))
    n_groups = group_ids.unique().numel()
    return per_row.sum() / n_groups


def completion_logits(model, input_ids, attention_mask, logits_to_keep: int) -> torch.Tensor:
    """Logits [rows, logits_to_keep, vocab] that predict the last `logits_to_keep` tokens of each
    row (prompt + completion). Consecutive rows with the same prompt (a GRPO group: G completions
    of one prompt) share one forward pass of that prompt: its KV cache is computed once, with
    gradients, and expanded to the group's rows, so the policy and reference passes cost one prompt
    plus G completions instead of G prompts. The same values as one forward over whole rows up to
    float rounding (tests/test_rl.py); rows that share nothing, and a model training with gradient
    checkpointing (which builds no KV cache), take that plain forward."""
    prompt_len = input_ids.size(1) - logits_to_keep
    prompt, prompt_mask = input_ids[:, :prompt_len], attention_mask[:, :prompt_len]
    new_prompt = torch.ones(len(prompt), dtype=torch.bool, device=prompt.device)
    new_prompt[1:] = (prompt[1:] != prompt[:-1]).any(1) | (prompt_mask[1:] != prompt_mask[:-1]).any(1)
    if prompt_len == 0 or trains_with_checkpointing(model) or bool(new_prompt.all()):
        return model(input_ids=input_ids, attention_mask=attention_mask,
                     position_ids=positions_from_mask(attention_mask),
                     logits_to_keep=logits_to_keep + 1, use_cache=False).logits[:, :-1]
    firsts = new_prompt.nonzero().squeeze(1)
    group_of_row = new_prompt.long().cumsum(0) - 1
    shared = model(input_ids=prompt[firsts], attention_mask=prompt_mask[firsts],
                   position_ids=positions_from_mask(prompt_mask[firsts]), logits_to_keep=1, use_cache=True)
    cache = shared.past_key_values
    cache.reorder_cache(group_of_row)  # index_select: differentiable, gradients reach the shared prompt
    first = shared.logits[group_of_row]  # predicts each row's first completion token
    if logits_to_keep == 1:
        return first
    mask = attention_mask[:, :-1]
    rest = model(input_ids=input_ids[:, prompt_len:-1], attention_mask=mask,
                 position_ids=positions_from_mask(mask)[:, prompt_len:], past_key_values=cache,
                 use_cache=True, logits_to_keep=logits_to_keep - 1).logits
    return torch.cat([first, rest], dim=1)


class _TestDuringTraining(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.test_steps == 0:
            self.trainer.log(self.trainer.test_metrics())


class ReReTrainer(RunCheckpoints, GRPOTrainer):
    """GRPOTrainer whose rollouts are constrained to the catalogue (see module docstring).

    Dataset rows carry `prompt`, the row's own `target` (its answer text: a SID or a title) and
    `answer_type` ("sid", the default when the column is absent, or "title"), plus what the rewards
    need (`target_sid`, `history_item_ids`); reward functions receive them as keyword arguments.
    `trie` is the SID catalogue, `title_trie` the titles' (needed only by title-answer rows).
    `test_prompts` (rows with `prompt` and `target`) switch test_during_training from the current
    batch to these rows every test_steps."""

    def __init__(self, model, reward_funcs, args: ReReConfig, train_dataset, trie: SidTrie,
                 processing_class, eval_dataset=None, test_prompts=None, callbacks=None,
                 title_trie: SidTrie | None = None):
        if args.per_device_train_batch_size % args.num_generations:
            raise ValueError(
                f"--train_batch_size {args.per_device_train_batch_size} (per process) is not divisible "
                f"by --num_generations {args.num_generations}: a group of G rollouts must stay on one "
                "process and in one micro-batch"
            )
        if args.objective not in OBJECTIVES:
            raise ValueError(f"objective {args.objective!r}: choose one of {OBJECTIVES}")
        if args.objective == "listwise" and args.beta <= 0:
            raise ValueError(f"the listwise objective learns pi_ref * exp(advantage / beta): it needs beta > 0, "
                             f"not {args.beta}")
        self.tries = {"sid": trie} if title_trie is None else {"sid": trie, "title": title_trie}
        for kind, catalogue in self.tries.items():
            if args.beam_search and args.num_generations > len(catalogue):
                raise ValueError(f"--num_generations {args.num_generations} distinct beams but only "
                                 f"{len(catalogue)} {kind} answers")
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks)
        self.trie = trie
        self.test_prompts = test_prompts
        self._rollout_rows = None
        self._seconds = defaultdict(float)
        self._seconds_in_test = 0.0
        self._seconds_since_step = 0
        if args.test_during_training and test_prompts is not None:
            if not test_prompts:
                raise ValueError("test_during_training on test prompts needs at least one")
            self.add_callback(_TestDuringTraining(self))

    # --- rollouts -----------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        # the rollout needs each group's catalogue and target (dynamic_sampling, add_gt, tests)
        self._rollout_rows = [(x.get("answer_type", "sid"), x["target"]) for x in inputs]
        unknown = {kind for kind, _ in self._rollout_rows} - set(self.tries)
        if unknown:
            raise ValueError(f"rows with answer_type {sorted(unknown)} but the trainer's catalogues are "
                             f"{sorted(self.tries)} (title-answer rows need title_trie)")
        output = super()._generate_and_score_completions(inputs)
        rows = len(output["advantages"])
        output["group_ids"] = torch.arange(rows, device=output["advantages"].device) // self.num_generations
        if self.args.mask_all_zero and self.model.training:
            g = self.num_generations
            zero_group = (output["advantages"].view(-1, g).abs() < 1e-6).all(dim=1)
            keep = (~zero_group).repeat_interleave(g).to(output["completion_mask"].dtype)
            output["completion_mask"] = output["completion_mask"] * keep[:, None]
            output["num_items_in_batch"] = self.accelerator.gather(output["completion_mask"].sum()).sum()
            self._metrics["train"]["groups_dropped_all_zero"].append(
                self.accelerator.gather(zero_group.float().mean()).mean().item())
        return output

    def _prepare_inputs(self, generation_batch):
        return rows_in_group_order(super()._prepare_inputs(generation_batch))

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        start = time.perf_counter()
        g = num_generations
        if len(prompt_ids) % g:
            raise RuntimeError(f"{len(prompt_ids)} prompts do not form groups of {g}")
        group_prompts = prompt_ids[::g]
        if any(prompt_ids[i] != prompt_ids[i - i % g] for i in range(len(prompt_ids))):
            raise RuntimeError("a rollout group mixes prompts: the sampler must repeat each prompt G times")
        group_rows = self._rollout_rows[::g]
        completion_ids = [None] * len(group_prompts)
        distinct = []
        test_hits = defaultdict(float)
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=self.args.ds3_gather_for_generation) as model:
            for kind, trie in self.tries.items():  # each group decodes over its own catalogue only
                groups = [i for i, (row_kind, _) in enumerate(group_rows) if row_kind == kind]
                if not groups:
                    continue
                prompts = [group_prompts[i] for i in groups]
                targets = [group_rows[i][1].strip() for i in groups]
                items = self._rollout_items(model, trie, prompts, targets, g)
                lengths = trie.lengths[items].tolist()
                for group, row, row_lengths in zip(groups, trie.completion_ids[items].tolist(), lengths):
                    completion_ids[group] = [ids[:n] for ids, n in zip(row, row_lengths)]
                distinct += [len(set(row)) / g for row in items.tolist()]
                if self.args.test_during_training and self.test_prompts is None and self.model.training:
                    for name, total in self._test_totals(model, trie, prompts, targets).items():
                        test_hits[name] += total
        completion_ids = [ids for group in completion_ids for ids in group]

        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["completions/distinct_items_per_group"].append(sum(distinct) / len(distinct))
        if test_hits:  # the original's test_during_training: the batch's prompts, over all processes
            totals = self.accelerator.gather(torch.tensor([[*test_hits.values(), len(group_prompts)]],
                                                          device=self.accelerator.device)).sum(0)
            for name, total in zip(test_hits, totals[:-1].tolist()):
                self._metrics["train"][f"test/{name}"].append(total / totals[-1].item())
        if self.model.training:
            self._seconds["generation"] += time.perf_counter() - start - self._seconds_in_test
            if self._seconds_in_test:
                self._seconds["test"] += self._seconds_in_test
                self._seconds_in_test = 0.0
        return completion_ids, None

    def _test_totals(self, model, trie: SidTrie, prompts, targets) -> dict[str, float]:
        """HR@K / NDCG@K summed over these prompts' test_beam-beam searches (the original's
        test_during_training on the batch)."""
        start = time.perf_counter()
        result = sid_beam_search(model, trie, prompts, self.args.test_beam, self.processing_class.pad_token_id,
                                 batch_size=self.args.decode_batch_size)
        metrics = hr_ndcg(target_ranks(result.sids, targets), self._test_ks())
        self._seconds_in_test += time.perf_counter() - start
        return {name: value * len(prompts) for name, value in metrics.items()}

    def _rollout_items(self, model, trie: SidTrie, prompts, targets, g) -> torch.Tensor:
        """[len(prompts), g] answer indices into `trie` of each group's rollouts."""
        target_items = torch.tensor([trie.sid_to_index.get(t, -1) for t in targets])
        n_candidates = math.ceil(1.5 * g) if self.args.dynamic_sampling else g
        pad = self.processing_class.pad_token_id
        if self.args.beam_search:
            result = sid_beam_search(model, trie, prompts, min(n_candidates, len(trie)), pad,
                                     batch_size=self.args.decode_batch_size, sort_by_length=False)
        else:
            result = constrained_sample(model, trie, prompts, n_candidates, self.args.temperature, pad,
                                        batch_size=self.args.decode_batch_size)
        return select_candidates(result.item_index, target_items, g, self.args.dynamic_sampling, self.args.add_gt)

    def _test_ks(self):
        return [k for k in TEST_KS if k <= self.args.test_beam]

    # --- timing of the other phases -------------------------------------------------------------

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                           **multimodal):
        """Log-probs (and entropies) of the completion tokens (completion_logits: each group's
        prompt runs once, the LM head only over the completions; off Triton devices (CPU) TRL's
        fused head scores every prompt position too, benchmarks/bench_rl.py measures the
        difference). Position ids follow the attention mask, as in generation and SFT."""
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
                logits = completion_logits(model, ids, mask, logits_to_keep)
            # the logits are only [batch, completion, vocab]: one log_softmax for all rows (TRL's
            # selective_log_softmax loops over the rows to save memory on full-sequence logits)
            log_softmax = (logits.float() / self.temperature).log_softmax(-1)
            padding = mask[:, -logits_to_keep:] == 0
            logps.append(log_softmax.gather(-1, ids[:, -logits_to_keep:, None]).squeeze(-1).masked_fill(padding, 0))
            if compute_entropy:  # logged only: no graph through it
                with torch.no_grad():
                    entropies.append(-(log_softmax.exp() * log_softmax).sum(-1).masked_fill(padding, 0))
        if model is self.ref_model and self.model.training:
            self._seconds["reference"] += time.perf_counter() - start
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

    # --- loss ----------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        if self.args.objective == "grpo":
            return super()._compute_loss(model, inputs)
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        completion_mask = inputs["completion_mask"]
        per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
            model, torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([inputs["prompt_mask"], completion_mask], dim=1), completion_ids.size(1))
        policy = (per_token_logps * completion_mask).sum(1)
        reference = (inputs["ref_per_token_logps"] * completion_mask).sum(1)
        loss = listwise_kl(policy, reference + inputs["advantages"] / self.beta, inputs["group_ids"])
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["listwise_kl"].append(self.accelerator.gather(loss.detach()).mean().item())
        return loss / (self.current_gradient_accumulation_steps if mode == "train" else 1.0)

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
        """HR@K / NDCG@K of the current policy on the test prompts (SID answers; the main process
        decodes)."""
        metrics = {}
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            prompts = self.processing_class(text=[x["prompt"] for x in self.test_prompts])["input_ids"]
            result = sid_beam_search(model, self.trie, prompts, self.args.test_beam,
                                     self.processing_class.pad_token_id,
                                     batch_size=self.args.decode_batch_size)
            ranks = target_ranks(result.sids, [x["target"] for x in self.test_prompts])
            metrics = {f"test/{k}": v for k, v in hr_ndcg(ranks, self._test_ks()).items()}
        self.accelerator.wait_for_everyone()
        return metrics
