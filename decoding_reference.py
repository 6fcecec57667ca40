"""Plain reference versions of constrained decoding, for tests and benchmarks.

- `score_completions` / `exhaustive_beam_search`: the teacher-forced sequence log-probability of
  every valid completion after each prompt (the exact ranking; for small catalogues);
- `hf_beam_search`: HF `generate(num_beams=...)` with `ConstrainedLogitsProcessor` and an
  explicit generation config (the documents' decoding, with the vectorised processor).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList

from decoding import BeamResult, forward_kwargs, result_of
from LogitProcessor import ConstrainedLogitsProcessor, explicit_generation_config, neutral_model_generation_config
from modeling import left_pad
from sid_trie import ConstrainedDecodingError, SidTrie


@torch.inference_mode()
def score_completions(model, trie: SidTrie, prompt_ids, batch_size: int = 64) -> torch.Tensor:
    """[B, n_items]: teacher-forced sequence log-probability of every valid completion after each
    prompt, one full forward pass per (prompt, item) without any cache. For small catalogues."""
    device = next(model.parameters()).device
    pad = trie.eos_token_id
    out = torch.empty(len(prompt_ids), len(trie.sids))
    comps = [trie.completion_ids[i, : int(trie.lengths[i])].tolist() for i in range(len(trie.sids))]
    pairs = [(p, i) for p in range(len(prompt_ids)) for i in range(len(comps))]
    keep = trie.depth + 1  # logits of the last positions only (the completion's predictions)
    extra = {"logits_to_keep": keep} if forward_kwargs(model) else {}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start: start + batch_size]
        seqs = [list(prompt_ids[p]) + comps[i] for p, i in chunk]
        ids, attn, pos = left_pad(seqs, pad, device)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, **extra).logits.float()
        logp = torch.log_softmax(logits[:, -keep:], dim=-1)  # position j predicts token width-keep+j+1
        width = ids.shape[1]
        for row, (p, i) in enumerate(chunk):
            m = len(comps[i])
            positions = torch.arange(keep - m - 1, keep - 1, device=device)
            targets = ids[row, width - m:]
            out[p, i] = logp[row, positions, targets].sum().item()
    return out


def exhaustive_beam_search(model, trie: SidTrie, prompt_ids, num_beams: int, length_penalty: float = 0.0) -> BeamResult:
    """The exact answer: every item ranked by sequence log-probability (top num_beams kept)."""
    scores = score_completions(model, trie, prompt_ids)
    rank = scores / trie.lengths.float() ** length_penalty if length_penalty else scores
    k = min(num_beams, len(trie.sids))
    top = rank.topk(k, dim=1).indices
    return result_of(trie, top, scores.gather(1, top))


@torch.inference_mode()
def hf_beam_search(model, trie: SidTrie, prompt_ids, num_beams: int, pad_token_id: int,
                   batch_size: int = 8, length_penalty: float = 0.0, tokenizer=None) -> BeamResult:
    """HF `generate(num_beams=...)` with `ConstrainedLogitsProcessor` and an explicit generation
    config (the documents' decoding, with the vectorised processor). Batches in the given order."""
    device = next(model.parameters()).device
    k_final = min(num_beams, len(trie.sids))
    all_items, all_scores = [], []
    for start in range(0, len(prompt_ids), batch_size):
        batch = prompt_ids[start: start + batch_size]
        ids, attn, _ = left_pad(batch, pad_token_id, device)
        search = (dict(num_beams=num_beams, num_return_sequences=num_beams, length_penalty=length_penalty,
                       output_scores=True) if num_beams > 1 else dict(output_logits=True))  # 1 = greedy
        config = explicit_generation_config(
            max_new_tokens=trie.depth, pad_token_id=pad_token_id, eos_token_id=trie.eos_token_id,
            bos_token_id=None, return_dict_in_generate=True, **search,
        )
        processor = ConstrainedLogitsProcessor(trie, ids.shape[1], num_beams=num_beams, tokenizer=tokenizer)
        with neutral_model_generation_config(model):
            out = model.generate(input_ids=ids, attention_mask=attn, generation_config=config,
                                 logits_processor=LogitsProcessorList([processor]))
        gen = out.sequences[:, ids.shape[1]:].cpu()
        if num_beams > 1:
            seq_scores = out.sequences_scores.float().cpu()
        else:  # greedy: sum the model's log-probs of the chosen tokens up to EOS
            logp = torch.stack([torch.log_softmax(x.float(), -1) for x in out.logits], 1).cpu()
            tok_logp = logp.gather(2, gen[:, : logp.shape[1], None]).squeeze(2)
            is_eos = gen[:, : logp.shape[1]] == trie.eos_token_id
            upto = (is_eos.long().cumsum(1) - is_eos.long()) == 0
            seq_scores = (tok_logp * upto).sum(1)
        for row in range(len(batch)):
            found, found_scores = [], []
            for j in range(row * num_beams, (row + 1) * num_beams):
                if not torch.isfinite(seq_scores[j]) or seq_scores[j] < -1e8:
                    continue
                toks = gen[j].tolist()
                if trie.eos_token_id in toks:
                    toks = toks[: toks.index(trie.eos_token_id) + 1]
                item = _item_of_tokens(trie, toks)
                if item is not None and item not in found:
                    found.append(item)
                    found_scores.append(float(seq_scores[j]))
            if len(found) < k_final:
                raise ConstrainedDecodingError(f"HF beam search returned {len(found)} valid items, expected {k_final}")
            all_items.append(found[:k_final])
            all_scores.append(found_scores[:k_final])
    return result_of(trie, torch.tensor(all_items, dtype=torch.long), torch.tensor(all_scores))


def _item_of_tokens(trie: SidTrie, tokens):
    index = trie.__dict__.get("_token_index")
    if index is None:
        index = {tuple(trie.completion_ids[i, : int(trie.lengths[i])].tolist()): i for i in range(len(trie.sids))}
        trie._token_index = index
    return index.get(tuple(tokens))
