"""The fast constrained decoder used by evaluation and the RL rollouts.

- `sid_beam_search`: encodes the prompts' common prefix (the instruction template) once per call
  and each prompt's own tokens once, and shares the prompt's KV cache across the beams: the beams'
  tokens sit side by side in the prompt's cache row under a 4D attention mask (nothing is copied
  per beam or per reorder; models whose attention cannot take such a mask expand the cache to one
  row per beam instead). Each step scores only the allowed tokens (top-k over beams x children);
  the forced tail of the completions ("\\n", EOS) is scored in one forward call; the LM head is
  applied in row chunks.
- `constrained_sample`: the same machinery for sampling (RL rollouts).

The plain reference versions (teacher-forced scoring of every item, HF `generate` with
`ConstrainedLogitsProcessor`) are in decoding_reference.py; tests check that the two agree.

The beam search treats EOS as terminal: a completed item leaves the running beams for a pool of
finished items (as HF beam search does), so it never occupies a running slot.

Scores are sequence log-probabilities: the sum over the completion tokens (SID tokens, "\\n" and
EOS; the forced tokens are included so the ranking equals the full sequence log-probability) of
the model's log-softmax over the whole vocabulary (no renormalisation over allowed tokens).

The decoding phases (prefill, SID levels, LM head, log-softmax, top-k, bookkeeping) are marked with
`_phase`: a no-op unless benchmarks/profile_decoding.py installs its recorder (PHASE_RECORDER).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import weakref
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicLayer

from modeling import left_pad
from sid_trie import ConstrainedDecodingError, SidTrie


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class BeamResult:
    """Per prompt: `sids[b]` (best first), `scores` [B, K] sequence log-probabilities,
    `completion_ids` [B, K, depth] (padded after EOS with EOS), `item_index` [B, K] (index into
    `trie.sids`). K = min(num_beams, number of valid items) for beam search."""

    sids: list
    scores: torch.Tensor
    completion_ids: torch.Tensor
    item_index: torch.Tensor
    eos_token_id: int | None = None

    @property
    def completion_mask(self) -> torch.Tensor:
        """True on the tokens of each completion up to and including its first EOS."""
        is_eos = self.completion_ids == self.eos_token_id
        after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
        return ~after


def result_of(trie: SidTrie, item_index: torch.Tensor, scores: torch.Tensor) -> BeamResult:
    item_index = item_index.cpu()
    return BeamResult(
        sids=[[trie.sids[j] for j in row] for row in item_index.tolist()],
        scores=scores.float().cpu(),
        completion_ids=trie.completion_ids[item_index],
        item_index=item_index,
        eos_token_id=trie.eos_token_id,
    )


# ---------------------------------------------------------------------------------------------
# profiling hook

PHASE_RECORDER = None  # benchmarks/profile_decoding.py installs one: name -> context manager timing it


def _phase(name: str):
    """A named phase of decoding (prefill, a SID level, LM head, top-k...), timed by
    PHASE_RECORDER when one is installed; phases nest. Without a recorder: a no-op context."""
    return contextlib.nullcontext() if PHASE_RECORDER is None else PHASE_RECORDER(name)


# ---------------------------------------------------------------------------------------------
# the fast path


def plan_batches(prompt_ids, batch_size: int) -> list[list[int]]:
    """Batches of prompt positions, prompts of similar length together (less padding). The plan
    depends only on the lengths and batch_size, so shards made of whole batches compute exactly
    what one process computes."""
    order = sorted(range(len(prompt_ids)), key=lambda i: (len(prompt_ids[i]), i))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def forward_kwargs(model):
    params = inspect.signature(model.forward).parameters
    return {"logits_to_keep": True} if "logits_to_keep" in params else {}


MIN_SHARED_PREFIX = 8  # tokens: a shorter common prefix is not worth its own forward call
SHARE_PREFIX = True  # tests switch it off to check the shared-prefix path against plain prompts


class SharedPrefix:
    """The leading tokens common to all prompts of a call (the instruction template: about 70% of
    an evaluation prompt), encoded once; each batch starts from a copy of their KV cache and
    encodes only its prompts' own tokens. Causal attention makes the prefix's keys/values
    independent of what follows, so scores are those of the whole prompts (to float rounding)."""

    def __init__(self, length, cache):
        self.length, self.cache = length, cache

    @classmethod
    @torch.inference_mode()
    def of(cls, model, prompt_ids, split=None):
        """The prompts' shared prefix (at least one own token left per prompt), or None when it is
        shorter than MIN_SHARED_PREFIX or the model's cache is not a plain DynamicCache."""
        if not SHARE_PREFIX:
            return None
        common = os.path.commonprefix([[int(t) for t in p] for p in prompt_ids])
        length = min(len(common), min(len(p) for p in prompt_ids) - 1)
        if length < MIN_SHARED_PREFIX:
            return None
        device = next(model.parameters()).device
        runner = model if split is None else split[0]
        with _phase("prefill shared prefix"):
            cache = runner(input_ids=torch.tensor([common[:length]], device=device), use_cache=True).past_key_values
        layers = getattr(cache, "layers", None)
        if not layers or not all(type(x) is DynamicLayer for x in layers):
            return None
        return cls(length, cache)

    def cache_for(self, rows):
        with _phase("copy shared prefix cache"):
            cache = copy.deepcopy(self.cache)
            cache.batch_repeat_interleave(rows)
        return cache


HEAD_CHUNK_BYTES = 24 << 20  # LM-head output per chunk: reused heap memory, no page faults


class _StepLogProbs:
    """Log-probabilities of the next token; `at` reads only the allowed tokens' values.

    Given the model's logits ([..., vocab]) it log-softmaxes them whole. Given final hidden states
    and the LM head (see `split_head`), it computes head + log-softmax + gather in row chunks of
    about 24 MB, so the [rows x vocab] log-probabilities are never materialised (on CPU, for small models
    projecting onto a 50k vocabulary dominates a step)."""

    def __init__(self, logits=None, hidden=None, head=None):
        self.logp = None
        if logits is not None:
            with _phase("log-softmax"):
                self.logp = torch.log_softmax(logits.float(), dim=-1)
        self.hidden, self.head = hidden, head

    def at(self, tokens, rows=None):
        """log p(tokens[i, ..., j] | row i), or of row rows[i] when given."""
        if self.logp is not None:
            with _phase("gather allowed"):
                return self.logp.gather(-1, tokens) if rows is None else self.logp[rows[:, None], tokens]
        hidden = self.hidden if rows is None else self.hidden[rows]
        flat_h = hidden.reshape(-1, hidden.shape[-1])
        flat_t = tokens.reshape(flat_h.shape[0], -1)
        out = torch.empty(flat_t.shape, dtype=torch.float32, device=flat_h.device)
        step = max(1, HEAD_CHUNK_BYTES // (4 * self.head.weight.shape[0]))
        for s in range(0, flat_h.shape[0], step):
            with _phase("lm head"):
                logits = self.head(flat_h[s: s + step]).float()
            with _phase("log-softmax"):  # in place (each row is read whole before it is written): no second buffer
                out[s: s + step] = torch.log_softmax(logits, dim=-1, out=logits).gather(1, flat_t[s: s + step])
        return out.view(tokens.shape)


# model -> whether its logits are head(base(...)): a property of its architecture, so probed once per
# model object (RL calls the decoder every step; the probe runs the model twice)
_HEAD_SPLITS = weakref.WeakKeyDictionary()


def split_head(model, probe_ids):
    """(base model, LM head) when logits == head(base(...).last_hidden_state) for this model
    (checked on a short probe the first time a model is seen; models with logit scaling or
    soft-capping fail it), else None."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "base_model", model)
    if not isinstance(head, torch.nn.Linear) or base is model:
        return None
    if model not in _HEAD_SPLITS:
        _HEAD_SPLITS[model] = _logits_are_head_of_base(model, base, head, probe_ids)
    return (base, head) if _HEAD_SPLITS[model] else None


@torch.inference_mode()
def _logits_are_head_of_base(model, base, head, probe_ids):
    device = next(model.parameters()).device
    ids = torch.tensor([list(probe_ids)[:8]], device=device)
    try:
        full = model(input_ids=ids).logits[:, -1].float()
        split = head(base(input_ids=ids).last_hidden_state[:, -1]).float()
    except Exception:  # noqa: BLE001 - any model whose base cannot run alone uses the full forward
        return False
    return full.shape == split.shape and torch.allclose(full, split, atol=1e-4, rtol=1e-4)


class _BeamLayer(DynamicLayer):
    """A DynamicLayer for beams that share their prompt: the prompt's keys/values are copied into a
    buffer with room for the completion once (when the prompts are expanded to beams); new tokens
    are written in place (no concatenation of the whole cache per step); a reorder that keeps every
    row within its prompt moves only the generated positions (the prompt part is identical for all
    beams of a prompt)."""

    def __init__(self, keys, values, origin, room, shared):
        super().__init__()
        n, (h, length, d) = len(origin), keys.shape[1:]
        self._k = keys.new_empty(n, h, length + room, d)
        self._v = values.new_empty(n, values.shape[1], length + room, values.shape[-1])
        self._k[:, :, :length] = keys.index_select(0, origin)
        self._v[:, :, :length] = values.index_select(0, origin)
        self.length = length
        self.shared = shared  # positions [0, shared) are the prompt: the same for all rows of a prompt
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self._views()

    def _views(self):
        self.keys = self._k[:, :, : self.length]
        self.values = self._v[:, :, : self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        if self.length + n > self._k.shape[-2]:  # out of room (not expected): grow
            grow = self.length + n - self._k.shape[-2]
            self._k = torch.cat([self._k, self._k.new_empty(*self._k.shape[:2], grow, self._k.shape[-1])], dim=2)
            self._v = torch.cat([self._v, self._v.new_empty(*self._v.shape[:2], grow, self._v.shape[-1])], dim=2)
        self._k[:, :, self.length: self.length + n] = key_states
        self._v[:, :, self.length: self.length + n] = value_states
        self.length += n
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def reorder_within_prompts(self, origin):
        if self.length > self.shared:
            g = slice(self.shared, self.length)
            self._k[:, :, g] = self._k[origin, :, g]
            self._v[:, :, g] = self._v[origin, :, g]
        self._views()


TREE_ATTENTION = True  # tests switch it off to check the expanded-cache path against it


class Decoder:
    """Runs the model for a batch of prompts and their beams (rows), prompt encoded once.

    Two layouts, same results:
    - tree (default for sdpa/eager attention with a plain DynamicCache): the cache keeps one row
      per prompt; the tokens of all beams of a prompt are appended to that row side by side, and a
      4D attention mask lets each token see only the prompt and its own beam's earlier tokens. A
      beam reorder only changes which cached slots a row sees: nothing is copied, and the prompt's
      keys/values are never repeated per beam.
    - expanded (any other model): prompts are expanded to one cache row per beam once (into
      `_BeamLayer` buffers with room for the completion) and reordered by beam origin.
    """

    def __init__(self, model, prompt_ids, pad_token_id, split=None, room=8, prefix: SharedPrefix | None = None):
        self.model = model
        self.split = split
        self.room = room
        self.device = next(model.parameters()).device
        self.keep = bool(forward_kwargs(model))
        cache = None
        with _phase("prefill prompts"):
            if prefix is not None:  # [shared prefix][left padding][own tokens]: pads masked, positions continue
                ids, own_attn, pos = left_pad([p[prefix.length:] for p in prompt_ids], pad_token_id, self.device)
                self.attn = torch.cat([own_attn.new_ones(len(prompt_ids), prefix.length), own_attn], dim=1)
                pos = pos + prefix.length
                cache = prefix.cache_for(len(prompt_ids))
            else:
                ids, self.attn, pos = left_pad(prompt_ids, pad_token_id, self.device)
            self.n_prompts = len(prompt_ids)
            self.last_pos = pos[:, -1]
            self.prompt_width = self.attn.shape[1]
            self.group = torch.arange(len(prompt_ids), device=self.device)  # prompt of each row
            self.first = self._wrap(self._forward(ids, pos, cache, 1, self.attn), True)
        impl = getattr(model.config, "_attn_implementation", None)
        layers = getattr(self.cache, "layers", None)
        self.tree = bool(TREE_ATTENTION and impl in ("sdpa", "eager") and layers
                         and all(type(x) is DynamicLayer for x in layers))
        self.eager = impl == "eager"
        self.visible = self.attn.bool()  # tree layout: the cache slots each row attends to

    def _forward(self, ids, pos, cache, m, mask):
        """Final hidden states (split head) or logits of the last m positions."""
        if self.split is not None:
            with _phase("model body"):
                out = self.split[0](input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                    use_cache=True)
            states = out.last_hidden_state[:, -m:]
        else:
            with _phase("model body + lm head"):
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                 use_cache=True, **({"logits_to_keep": m} if self.keep else {}))
            states = out.logits[:, -m:]
        self.cache = out.past_key_values
        return states

    def _wrap(self, states, last_only):
        states = states[:, -1] if last_only else states
        if self.split is not None:
            return _StepLogProbs(hidden=states, head=self.split[1])
        return _StepLogProbs(logits=states)

    def reorder(self, origin: torch.Tensor):
        """Rows of the next step = rows `origin` of this one (also expands prompts to beams).
        Rows must stay grouped by prompt, the same number per prompt."""
        with _phase("cache reorder"):
            self._reorder(origin)

    def _reorder(self, origin):
        new_group = self.group[origin]
        if self.tree:
            self.visible = self.visible[origin]
        else:
            layers = getattr(self.cache, "layers", None)
            if layers is not None and all(type(x) is _BeamLayer for x in layers) and len(origin) == len(self.group) \
                    and bool((new_group == self.group).all()):
                for layer in layers:  # rows stay within their prompt: move only the generated part
                    layer.reorder_within_prompts(origin)
            elif layers is not None and all(type(x) in (DynamicLayer, _BeamLayer) for x in layers):
                for i, layer in enumerate(layers):
                    layers[i] = _BeamLayer(layer.keys, layer.values, origin, self.room, self.prompt_width)
            else:  # other cache layouts (sliding windows, linear attention): the cache's own reorder
                self.cache.reorder_cache(origin)
            self.attn = self.attn[origin]
        self.group = new_group
        self.last_pos = self.last_pos[origin]

    def feed(self, tokens: torch.Tensor, last_only: bool = False) -> _StepLogProbs:
        """Feed tokens [N, m] (row = prompt x beam) after the cached ones; log-probs of the next
        tokens ([N, m, V]; of the last position only, [N, V], with last_only)."""
        n, m = tokens.shape
        pos = self.last_pos[:, None] + torch.arange(1, m + 1, device=self.device)[None, :]
        self.last_pos = pos[:, -1]
        if not self.tree:
            self.attn = torch.cat([self.attn, self.attn.new_ones(n, m)], dim=1)
            return self._wrap(self._forward(tokens, pos, self.cache, m, self.attn), last_only)
        b = self.n_prompts
        k = n // b
        if k * b != n or not bool((self.group == torch.arange(b, device=self.device).repeat_interleave(k)).all()):
            raise AssertionError("tree decoding needs the rows grouped by prompt, the same number per prompt")
        with _phase("attention mask"):
            km, width = k * m, self.visible.shape[1]
            beam = torch.arange(km, device=self.device) // m
            step = torch.arange(km, device=self.device) % m
            own = (beam[:, None] == beam[None, :]) & (step[None, :] <= step[:, None])  # [query, new slot]
            seen = self.visible.view(b, k, width).repeat_interleave(m, dim=1)  # [b, km, width]
            mask = torch.cat([seen, own.expand(b, km, km)], dim=2)[:, None]
            if self.eager:
                dtype = next(self.model.parameters()).dtype
                mask = torch.zeros(mask.shape, dtype=dtype, device=self.device).masked_fill(~mask,
                                                                                            torch.finfo(dtype).min)
        states = self._forward(tokens.reshape(b, km), pos.reshape(b, km), self.cache, km, mask)
        with _phase("attention mask"):
            mine = (beam[None, :] == torch.arange(k, device=self.device)[:, None]).repeat(b, 1)  # [n, km]
            self.visible = torch.cat([self.visible, mine], dim=1)
        return self._wrap(states.reshape(n, m, -1), last_only)


def _forced_tail(trie: SidTrie, decoder: Decoder, nodes, depth, fed_tokens, alive):
    """All live rows sit in single-item subtrees: score their remaining tokens with one forward
    call ([last chosen token, forced tokens but EOS] in, log-probs of the forced tokens out).
    Returns (items [N], tail log-prob [N], completion lengths [N])."""
    items = trie._single_item[depth][nodes]
    items = torch.where(alive, items, 0)
    lengths = trie.lengths[items]
    tail = trie.completion_ids[items][:, depth:]  # [N, D - depth], padded with EOS
    m = int((lengths - depth).max())
    tail = tail[:, :m]
    inputs = torch.cat([fed_tokens[:, None], tail[:, : m - 1]], dim=1)
    tok_logp = decoder.feed(inputs).at(tail[:, :, None]).squeeze(2)  # [N, m]
    within = torch.arange(m, device=tail.device)[None, :] < (lengths - depth)[:, None]
    return items, (tok_logp * within).sum(1), lengths


@torch.inference_mode()
def _beam_search_batch(model, trie: SidTrie, prompt_ids, num_beams, pad_token_id, length_penalty, split=None,
                       prefix=None):
    trie = trie._to(next(model.parameters()).device)
    dec = Decoder(model, prompt_ids, pad_token_id, split, room=trie.depth, prefix=prefix)
    device = dec.device
    b = len(prompt_ids)
    k_final = min(num_beams, len(trie.sids))
    ninf = float("-inf")
    # running beams: node at depth d, sequence log-prob; finished pool: items, raw and ranking scores
    nodes = torch.zeros(b, 1, dtype=torch.long, device=device)
    score = torch.zeros(b, 1, device=device)
    pool_item = torch.full((b, k_final), -1, dtype=torch.long, device=device)
    pool_score = torch.full((b, k_final), ninf, device=device)
    pool_rank = torch.full((b, k_final), ninf, device=device)
    logp = dec.first
    rows = torch.arange(b, device=device)

    def add_to_pool(items, raw, lengths):
        nonlocal pool_item, pool_score, pool_rank
        rank = raw / lengths.float() ** length_penalty if length_penalty else raw
        all_items = torch.cat([pool_item, items], 1)
        all_raw = torch.cat([pool_score, raw], 1)
        all_rank = torch.cat([pool_rank, torch.where(torch.isfinite(raw), rank, ninf)], 1)
        top = all_rank.topk(k_final, dim=1).indices
        pool_item, pool_score, pool_rank = all_items.gather(1, top), all_raw.gather(1, top), all_rank.gather(1, top)

    for depth in range(trie.depth):
        with _phase(f"level {depth}"):  # level d: score and choose the d-th completion token
            k = nodes.shape[1]
            with _phase("trie children"):
                tokens, child, present = trie.children(nodes.reshape(-1), depth)  # [b*k, C]
            width = tokens.shape[1]
            allowed = logp.at(tokens.clamp(min=0))
            with _phase("trie masking"):
                cand = (score.reshape(-1, 1) + allowed).masked_fill(~present, ninf)
                is_eos = tokens == trie.eos_token_id
            # completed items (EOS) go to the pool
            if bool(is_eos.any()):
                with _phase("finished pool"):
                    leaf = torch.where(is_eos, trie._leaf_item[depth + 1][child], 0)
                    fin = cand.masked_fill(~is_eos, ninf)
                    add_to_pool(leaf.view(b, k * width), fin.view(b, k * width),
                                torch.full((b, k * width), depth + 1, device=device))
            with _phase("top-k"):
                run = cand.masked_fill(is_eos, ninf).view(b, k * width)
                n_live = int(torch.isfinite(run).sum(1).max())
                if n_live == 0:
                    break
                top = run.topk(min(num_beams, n_live), dim=1)
            with _phase("beam bookkeeping"):
                alive = torch.isfinite(top.values)
                origin = top.indices // width + (rows * k)[:, None]  # flat row of the parent beam
                new_tokens = tokens.view(b, k * width).gather(1, top.indices)
                new_nodes = child.view(b, k * width).gather(1, top.indices)
                new_tokens = torch.where(alive, new_tokens, trie.eos_token_id)
                new_nodes = torch.where(alive, new_nodes, 0)
                score = top.values
                nodes = new_nodes
            dec.reorder(origin.reshape(-1))
            with _phase("beam bookkeeping"):
                flat_alive = alive.reshape(-1)
                forced = bool((trie._single_item[depth + 1][nodes.reshape(-1)] >= 0)[flat_alive].all())
            if forced:
                with _phase("forced tail"):
                    items, tail_logp, lengths = _forced_tail(trie, dec, nodes.reshape(-1), depth + 1,
                                                             new_tokens.reshape(-1), flat_alive)
                    raw = (score.reshape(-1) + tail_logp).masked_fill(~flat_alive, ninf)
                    add_to_pool(items.view(b, -1), raw.view(b, -1), lengths.view(b, -1))
                break
        with _phase(f"level {depth + 1}"):  # the model's distribution over level d + 1's tokens
            logp = dec.feed(new_tokens.reshape(-1, 1), last_only=True)
    if bool((pool_item < 0).any()):
        raise ConstrainedDecodingError("beam search ended with fewer valid items than expected")
    return pool_item, pool_score


def sid_beam_search(model, trie: SidTrie, prompt_ids, num_beams: int, pad_token_id: int,
                    batch_size: int = 8, length_penalty: float = 0.0, progress: bool = False,
                    sort_by_length: bool = True) -> BeamResult:
    """Constrained beam search returning, per prompt, min(num_beams, len(trie)) distinct valid
    SIDs ordered by sequence log-probability (divided by completion length ** length_penalty when
    length_penalty != 0; lengths only differ with collision levels). When num_beams exceeds the
    number of valid items, every item is returned (fewer than num_beams columns).

    `prompt_ids`: token ids per prompt (with BOS if the tokenizer adds one), not padded.
    `batch_size` prompts are decoded together (batch_size x num_beams rows).
    `sort_by_length=False` keeps the given order (batches are consecutive prompts)."""
    if num_beams < 1:
        raise ValueError("num_beams must be >= 1")
    if not len(prompt_ids):
        raise ValueError("no prompts")
    was_training = model.training
    model.eval()
    batches = (plan_batches(prompt_ids, batch_size) if sort_by_length
               else [list(range(i, min(i + batch_size, len(prompt_ids)))) for i in range(0, len(prompt_ids), batch_size)])
    k_final = min(num_beams, len(trie.sids))
    items = torch.empty(len(prompt_ids), k_final, dtype=torch.long)
    scores = torch.empty(len(prompt_ids), k_final)
    bar = _progress(len(prompt_ids), progress)
    try:
        with _phase("probe split head"):
            split = split_head(model, prompt_ids[0])
        prefix = SharedPrefix.of(model, prompt_ids, split)
        for batch in batches:
            it, sc = _beam_search_batch(model, trie, [prompt_ids[i] for i in batch], num_beams,
                                        pad_token_id, length_penalty, split, prefix)
            items[batch], scores[batch] = it.cpu(), sc.float().cpu()
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return result_of(trie, items, scores)


class _progress:
    """tqdm with a users/s rate when asked for, else a no-op."""

    def __init__(self, total, enabled):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            desc = enabled if isinstance(enabled, str) else "beam search"
            self.bar = tqdm(total=total, unit="user", desc=desc, dynamic_ncols=True)

    def update(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# sampling (RL rollouts)


@torch.inference_mode()
def _sample_batch(model, trie, prompt_ids, num_samples, temperature, pad_token_id, generator, split=None,
                  prefix=None):
    trie = trie._to(next(model.parameters()).device)
    dec = Decoder(model, prompt_ids, pad_token_id, split, room=trie.depth, prefix=prefix)
    device = dec.device
    b = len(prompt_ids)
    n = b * num_samples
    first_rows = torch.arange(b, device=device).repeat_interleave(num_samples)
    dec.reorder(first_rows)
    logp, logp_rows = dec.first, first_rows
    nodes = torch.zeros(n, dtype=torch.long, device=device)
    score = torch.zeros(n, device=device)
    item = torch.full((n,), -1, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for depth in range(trie.depth):
        tokens, child, present = trie.children(nodes, depth)
        tok_logp = logp.at(tokens.clamp(min=0), logp_rows).masked_fill(~present, float("-inf"))
        if temperature <= 0:
            pick = tok_logp.argmax(1, keepdim=True)
        else:
            probs = torch.softmax(tok_logp / temperature, dim=1)
            pick = torch.multinomial(probs.float().cpu(), 1, generator=generator).to(device)
        chosen = tokens.gather(1, pick).squeeze(1)
        score = torch.where(done, score, score + tok_logp.gather(1, pick).squeeze(1))
        nodes = torch.where(done, 0, child.gather(1, pick).squeeze(1))
        ends = ~done & (chosen == trie.eos_token_id)
        item = torch.where(ends, trie._leaf_item[depth + 1][nodes], item)
        done = done | ends
        if bool(done.all()):
            break
        fed = torch.where(done, trie.eos_token_id, chosen)
        live = ~done
        if bool((trie._single_item[depth + 1][nodes] >= 0)[live].all()):
            items, tail_logp, _ = _forced_tail(trie, dec, nodes, depth + 1, fed, live)
            score = torch.where(live, score + tail_logp, score)
            item = torch.where(live, items, item)
            break
        logp, logp_rows = dec.feed(fed[:, None], last_only=True), None
    return item.view(b, num_samples), score.view(b, num_samples)


def constrained_sample(model, trie: SidTrie, prompt_ids, num_samples: int, temperature: float,
                       pad_token_id: int, batch_size: int = 8, generator=None) -> BeamResult:
    """`num_samples` valid SIDs per prompt (with replacement), each step sampled from the model's
    distribution restricted to the allowed tokens at `temperature` (0 = greedy). `scores` are the
    sequence log-probabilities under the model (temperature 1, not renormalised), as for beam
    search. `generator`: an optional CPU torch.Generator for reproducible draws."""
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    was_training = model.training
    model.eval()
    items = torch.empty(len(prompt_ids), num_samples, dtype=torch.long)
    scores = torch.empty(len(prompt_ids), num_samples)
    try:
        split = split_head(model, prompt_ids[0])
        prefix = SharedPrefix.of(model, prompt_ids, split)
        for start in range(0, len(prompt_ids), batch_size):
            batch = list(range(start, min(start + batch_size, len(prompt_ids))))
            it, sc = _sample_batch(model, trie, [prompt_ids[i] for i in batch], num_samples,
                                   float(temperature), pad_token_id, generator, split, prefix)
            items[batch], scores[batch] = it.cpu(), sc.float().cpu()
    finally:
        model.train(was_training)
    return result_of(trie, items, scores)
