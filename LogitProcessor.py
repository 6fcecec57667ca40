"""The HF logits processor of constrained decoding (the documents' name), and explicit generation
settings for HF `generate`.

`ConstrainedLogitsProcessor` drops into HF `generate` (beam search, greedy and sampling): anchored at
`prompt_length` (the padded prompt width: the first generated position), stateless between calls,
so one object can serve any number of `generate` calls. The trie is `sid_trie.SidTrie`; the fast
decoder used by evaluation and RL is `decoding.py`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import GenerationConfig, LogitsProcessor

from sid_trie import ConstrainedDecodingError, SidTrie


class ConstrainedLogitsProcessor(LogitsProcessor):
    """Masks every token that does not continue a valid completion, as one tensor operation.

    `prompt_length` is the width of the (left-padded) prompt batch given to `generate`: generated
    tokens start there. Stateless: the prefix is read from `input_ids` at every call.

    With `num_beams == 1` (greedy, sampling) every row is a live sequence, and a row with no
    allowed token raises `ConstrainedDecodingError` naming its prefix. HF beam search keeps
    filler beams with score -inf when fewer than 2 x num_beams continuations are valid; their
    prefixes can be outside the trie, so with `num_beams > 1` such rows are masked entirely (they
    stay dead) and only a call where no row at all has an allowed token raises.
    """

    def __init__(self, trie: SidTrie, prompt_length: int, num_beams: int = 1, tokenizer=None):
        self.trie = trie
        self.prompt_length = int(prompt_length)
        self.num_beams = int(num_beams)
        self.tokenizer = tokenizer

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] < self.prompt_length:
            raise ConstrainedDecodingError(
                f"input_ids have {input_ids.shape[1]} positions, fewer than prompt_length={self.prompt_length}"
            )
        prefixes = input_ids[:, self.prompt_length:]
        mask = self.trie.allowed_mask(prefixes, vocab_size=scores.shape[-1])
        dead = ~mask.any(dim=1)
        if dead.any() and (self.num_beams == 1 or bool(dead.all())):
            row = int(dead.nonzero()[0])
            raise ConstrainedDecodingError(
                f"no valid SID continues the generated prefix {self.trie.describe_prefix(prefixes[row], self.tokenizer)} "
                f"(row {row}, prompt_length={self.prompt_length}); is prompt_length the padded prompt width, "
                f"and was the trie built with this model's tokenizer?"
            )
        return scores.masked_fill(~mask, float("-inf"))


# ---------------------------------------------------------------------------------------------
# explicit generation settings


def explicit_generation_config(**overrides) -> GenerationConfig:
    """A fresh GenerationConfig with every filter neutral (no top-k/top-p/min-p/temperature/
    repetition/no-repeat-ngram), so nothing is inherited from a checkpoint's generation_config."""
    settings = dict(
        do_sample=False, num_beams=1, repetition_penalty=1.0, encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0, num_return_sequences=1, renormalize_logits=False, use_cache=True,
    )
    settings.update(overrides)
    if settings["num_beams"] > 1:  # sum of log-probs (not length-normalised) unless overridden
        settings.setdefault("length_penalty", 0.0)
        settings.setdefault("early_stopping", False)
    if settings["do_sample"]:
        # the sampling filters only act when sampling; set them (neutral unless overridden)
        for name, neutral in (("temperature", 1.0), ("top_k", 0), ("top_p", 1.0), ("typical_p", 1.0),
                              ("epsilon_cutoff", 0.0), ("eta_cutoff", 0.0)):
            settings.setdefault(name, neutral)
    return GenerationConfig(**settings)


@contextmanager
def neutral_model_generation_config(model):
    """generate() fills unset fields from model.generation_config (a checkpoint's
    generation_config.json); swap in a blank one for the duration of a call."""
    saved = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved
