"""The SID trie: a tensorised trie over the token ids of every valid completion.

The answer space is closed: every valid completion is the token ids of `data.build_response(sid)`
(the SID's level tokens, then "\\n"), tokenised exactly as SFT tokenises responses, followed by EOS.
Node ids are assigned per depth (the distinct prefixes of that length, sorted), so a node's children
are one contiguous range of the next depth's nodes (CSR), and looking up a prefix is one
`searchsorted` per generated position. Every operation is a tensor operation over all rows at once.

Variable-length completions (SIDs with an extra collision level) are padded after EOS with EOS
(`lengths` says where each ends); the trie continues a finished path with EOS only.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict

import torch

import data

logger = logging.getLogger(__name__)

_SID_TOKEN = re.compile(r"<[^<>]+>")


class ConstrainedDecodingError(RuntimeError):
    """A generation state has no allowed continuation: a bug to surface, never a fall-back."""


# ---------------------------------------------------------------------------------------------
# the trie


class SidTrie:
    """Tensorised trie over the token ids of every valid completion (SID tokens, "\\n", EOS).

    Attributes: `sids` (distinct valid SIDs, item order; the answer texts of a trie built by
    `from_texts`), `item_ids` (the catalogue item ids of each SID; more than one only for colliding
    SIDs), `completion_ids` LongTensor [n, depth]
    (padded after EOS with EOS), `lengths` LongTensor [n] (tokens up to and including EOS),
    `depth`, `eos_token_id`, `sid_to_index`.
    """

    def __init__(self, sids, completions, eos_token_id: int, item_ids=None, vocab_size=None):
        if eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; every SID completion ends with EOS")
        if not sids:
            raise ValueError("no SIDs to build a trie from")
        if len(set(sids)) != len(sids):
            raise ValueError("SidTrie needs distinct SIDs (use from_sids, which de-duplicates)")
        eos = int(eos_token_id)
        for sid, ids in zip(sids, completions):
            if not ids or ids[-1] != eos or eos in ids[:-1]:
                raise ValueError(f"completion of {sid!r} must end with EOS ({eos}) and contain it once: {ids}")
        self.sids = list(sids)
        self.item_ids = [list(x) for x in item_ids] if item_ids is not None else [[s] for s in sids]
        self.sid_to_index = {sid: i for i, sid in enumerate(self.sids)}
        self.eos_token_id = eos
        n = len(sids)
        self.lengths = torch.tensor([len(c) for c in completions], dtype=torch.long)
        self.depth = int(self.lengths.max())
        comp = torch.full((n, self.depth), eos, dtype=torch.long)
        for i, ids in enumerate(completions):
            comp[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        self.completion_ids = comp
        self.max_token_id = int(comp.max())
        self.vocab_size = max(int(vocab_size or 0), self.max_token_id + 1)
        self._base = self.vocab_size  # key = parent node * base + token
        if len({tuple(c) for c in completions}) != n:
            raise ValueError("two different SIDs tokenise to the same token ids")

        # per depth t (0 <= t < depth): nodes at depth t+1 = distinct prefixes of length t+1,
        # sorted by key (parent, token); their parents' children are contiguous ranges (CSR).
        self._keys, self._tokens, self._ptr, self._max_children = [], [], [], []
        self._node_of_item = [torch.zeros(n, dtype=torch.long)]  # node of each item at depth t
        n_nodes = [1]
        node = torch.zeros(n, dtype=torch.long)
        for t in range(self.depth):
            keys, inverse = torch.unique(node * self._base + comp[:, t], sorted=True, return_inverse=True)
            parents = keys // self._base
            ptr = torch.searchsorted(parents, torch.arange(n_nodes[-1] + 1))
            self._keys.append(keys)
            self._tokens.append(keys % self._base)
            self._ptr.append(ptr)
            self._max_children.append(int((ptr[1:] - ptr[:-1]).max()))
            node = inverse
            self._node_of_item.append(node)
            n_nodes.append(len(keys))
        self.n_nodes = n_nodes
        # leaf item of the node reached by an item's (first) EOS; single-item subtrees (forced tails)
        self._leaf_item, self._single_item = [], []
        for t in range(self.depth + 1):
            leaf = torch.full((n_nodes[t],), -1, dtype=torch.long)
            ends_here = (self.lengths == t).nonzero().flatten()
            leaf[self._node_of_item[t][ends_here]] = ends_here
            self._leaf_item.append(leaf)
            count = torch.bincount(self._node_of_item[t], minlength=n_nodes[t])
            single = torch.full((n_nodes[t],), -1, dtype=torch.long)
            ones = count[self._node_of_item[t]] == 1
            single[self._node_of_item[t][ones]] = torch.arange(n)[ones]
            self._single_item.append(single)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_sids(cls, sids, tokenizer, item_ids=None) -> "SidTrie":
        """Trie of the distinct SIDs (first-appearance order; `item_ids[i]` is the catalogue id of
        `sids[i]`, colliding SIDs collect all of theirs). Every SID token must be one token of
        the tokenizer (raises otherwise, as `data.require_sid_tokens`)."""
        grouped: "OrderedDict[str, list]" = OrderedDict()
        for i, sid in enumerate(sids):
            sid = str(sid).strip()
            grouped.setdefault(sid, []).append(item_ids[i] if item_ids is not None else sid)
        distinct = list(grouped)
        pseudo_index = {}
        for i, sid in enumerate(distinct):
            tokens = _SID_TOKEN.findall(sid)
            if not tokens or "".join(tokens) != sid:
                raise ValueError(f"not a SID (concatenated level tokens like '<a_1><b_2>'): {sid!r}")
            pseudo_index[str(i)] = tokens
        data.require_sid_tokens(tokenizer, pseudo_index)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; every SID completion ends with EOS")
        encoded = tokenizer([data.build_response(s) for s in distinct], add_special_tokens=False)["input_ids"]
        completions = [list(ids) + [tokenizer.eos_token_id] for ids in encoded]
        return cls(distinct, completions, tokenizer.eos_token_id, list(grouped.values()), len(tokenizer))

    @classmethod
    def from_index(cls, index: dict, tokenizer) -> "SidTrie":
        """From an index.json mapping {item_id: [level tokens]} (item order)."""
        ids = list(index)
        return cls.from_sids([data.sid_string(index[i]) for i in ids], tokenizer, item_ids=ids)

    @classmethod
    def from_info_file(cls, path, tokenizer) -> "SidTrie":
        """From info.txt lines `SID<TAB>title<TAB>item_id` (item order)."""
        rows = data.read_info(path)
        trie = cls.from_sids([r[0] for r in rows], tokenizer, item_ids=[r[2] for r in rows])
        shared = sum(len(x) for x in trie.item_ids if len(x) > 1)
        if shared:
            logger.warning("%s: %d of %d items share their SID with another item; a predicted SID "
                           "is reported as the first of its items", path, shared, len(rows))
        return trie

    @classmethod
    def from_texts(cls, texts, tokenizer, item_ids=None) -> "SidTrie":
        """Trie over any answer texts, e.g. the catalogue's titles for the SID -> title tasks: each
        completion is `data.build_response(text)` tokenised as SFT tokenises responses, then EOS.
        `sids` holds the distinct texts (first-appearance order); texts that tokenise alike are one
        completion (the first text names it) and collect the item ids of all of them."""
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; every completion ends with EOS")
        texts = [str(text).strip() for text in texts]
        encoded = tokenizer([data.build_response(t) for t in texts], add_special_tokens=False)["input_ids"]
        grouped: "OrderedDict[tuple, tuple[str, list]]" = OrderedDict()
        for i, (text, ids) in enumerate(zip(texts, encoded)):
            completion = tuple(ids) + (tokenizer.eos_token_id,)
            grouped.setdefault(completion, (text, []))[1].append(item_ids[i] if item_ids is not None else text)
        return cls([text for text, _ in grouped.values()], [list(c) for c in grouped],
                   tokenizer.eos_token_id, [ids for _, ids in grouped.values()], len(tokenizer))

    def __len__(self):
        return len(self.sids)

    def __repr__(self):
        return f"SidTrie({len(self.sids)} SIDs, depth {self.depth}, nodes per depth {self.n_nodes})"

    # -- lookups ------------------------------------------------------------------------------

    def _to(self, device):
        """The trie tensors on `device` (cached per device)."""
        key = str(device)
        cache = self.__dict__.setdefault("_device_cache", {})
        if key not in cache:
            if torch.device(device).type == "cpu":
                cache[key] = self
            else:
                clone = object.__new__(SidTrie)
                clone.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_device_cache"})
                for name in ("_keys", "_tokens", "_ptr", "_leaf_item", "_single_item", "_node_of_item"):
                    setattr(clone, name, [x.to(device) for x in getattr(self, name)])
                clone.completion_ids = self.completion_ids.to(device)
                clone.lengths = self.lengths.to(device)
                cache[key] = clone
        return cache[key]

    def prefix_nodes(self, prefixes: torch.Tensor):
        """(node ids at depth t, valid) for generated prefixes [N, t] with t <= depth."""
        n, t = prefixes.shape
        node = torch.zeros(n, dtype=torch.long, device=prefixes.device)
        valid = torch.ones(n, dtype=torch.bool, device=prefixes.device)
        for j in range(min(t, self.depth)):  # a loop over positions (<= depth), not over rows
            keys = self._keys[j]
            key = node * self._base + prefixes[:, j].long()
            pos = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
            found = keys[pos] == key
            valid &= found
            node = torch.where(found, pos, 0)
        if t > self.depth:
            valid &= False
        return node, valid

    def children(self, nodes: torch.Tensor, depth: int):
        """Children of `nodes` (at `depth`), padded to the widest node of that depth:
        (tokens [N, C] with -1 padding, child node ids [N, C], present [N, C])."""
        ptr = self._ptr[depth]
        start = ptr[nodes]
        count = ptr[nodes + 1] - start
        width = self._max_children[depth]
        offs = torch.arange(width, device=nodes.device)
        present = offs[None, :] < count[:, None]
        child = torch.where(present, start[:, None] + offs[None, :], 0)
        tokens = torch.where(present, self._tokens[depth][child], -1)
        return tokens, child, present

    def allowed_mask(self, prefixes: torch.Tensor, vocab_size: int | None = None) -> torch.Tensor:
        """BoolTensor [N, vocab]: the tokens allowed after each generated prefix [N, t]. A prefix
        that already contains EOS is finished and may only continue with EOS (padding); a prefix
        that is not a trie path gets an all-False row."""
        trie = self._to(prefixes.device)
        vocab_size = vocab_size or self.vocab_size
        if self.max_token_id >= vocab_size:
            raise ValueError(f"the trie uses token id {self.max_token_id}, above the vocabulary width "
                             f"{vocab_size} of the scores: tokenizer and model do not match")
        n, t = prefixes.shape
        mask = torch.zeros(n, vocab_size, dtype=torch.bool, device=prefixes.device)
        finished = (prefixes == self.eos_token_id).any(dim=1)
        if t < self.depth:
            node, valid = trie.prefix_nodes(prefixes)
            ptr = trie._ptr[t]
            start = ptr[node]
            count = torch.where(valid & ~finished, ptr[node + 1] - start, 0)
            rows = torch.repeat_interleave(torch.arange(n, device=prefixes.device), count)
            first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
            edges = torch.repeat_interleave(start, count) + torch.arange(len(rows), device=prefixes.device) - first
            mask[rows, trie._tokens[t][edges]] = True
        mask[finished, self.eos_token_id] = True
        return mask

    def describe_prefix(self, prefix, tokenizer=None) -> str:
        ids = [int(x) for x in prefix]
        if tokenizer is not None:
            return f"{ids} = {tokenizer.convert_ids_to_tokens(ids)}"
        return str(ids)
