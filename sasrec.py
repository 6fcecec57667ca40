"""Sequential recommendation baselines on the split CSVs: SASRec, GRU4Rec, Caser, and popularity.

They are the traditional baselines of the paper's table, and SASRec is the `sasrec` reward of rl.py.

Input convention (upstream's, kept so rewards and baselines agree):
- items are the CSV `item_id`s 0..item_num-1; the padding id is `item_num` (a zero embedding row);
- `states` [B, L] holds each history's most recent <= state_size items from the left, padded on
  the RIGHT with the padding id; `len_states` [B] are the true lengths (>= 1). Every model reads
  its representation at position len-1, so whatever sits at positions >= len is ignored;
- `forward(states, len_states)` and `forward_eval(...)` return scores over all items, [B, item_num].
`model.states_from_histories(histories)` builds (states, len_states) without knowing any of this.

Checkpoints keep the hyper-parameters next to the weights, so `load_sasrec_checkpoint(path)`
rebuilds the right model with no hard-coded sizes; it also loads the bare state dict the original
MiniOneRec sasrec.py saves (its SASRec, sizes read from the tensors).

    python sasrec.py --model SASRec --train_file train.csv --valid_file valid.csv \
        --test_file test.csv --result_json_path out/SASRec.json --checkpoint_path out/SASRec.pt
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data import DataFormatError, atomic_write, read_index, read_item_meta, read_split_csv, write_json
from runtime import ArgumentParser, InputError, positive_int, run_main
from metrics import DEFAULT_KS, format_table, hr_ndcg, ks_up_to, ranks_from_scores
from SASRecModules_ori import MultiHeadAttention, PositionwiseFeedForward

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "minionerec-sequential-recommender-v1"


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pad_histories(histories, state_size, pad_id):
    """(states [N, state_size], len_states [N]): histories right-padded with `pad_id`; a history
    longer than state_size keeps its most recent items."""
    recent = [list(history)[-state_size:] for history in histories]
    if not recent:
        raise ValueError("no histories to pad")
    for i, items in enumerate(recent):
        if not items:
            raise ValueError(f"history {i} is empty; a sequential model needs at least one item")
    states = torch.tensor([items + [pad_id] * (state_size - len(items)) for items in recent])
    return states, torch.tensor([len(items) for items in recent])


def last_position(hidden, len_states):
    """hidden [B, L, D] -> [B, D], the vector at each sequence's last real item (len - 1)."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), len_states - 1]


# ---------------------------------------------------------------------------------------------
# models


class SequentialRecommender(nn.Module):
    """What the three models share: the item table with its zero padding row, input checks, the
    output layer over all items, and the hyper-parameters a checkpoint needs to rebuild the model.
    Subclasses define `encode(states, len_states) -> [B, D]` and `output_layer` (D -> item_num)."""

    def __init__(self, item_num, hidden_size, state_size, dropout_rate, **architecture):
        super().__init__()
        if item_num < 2:
            raise ValueError(f"item_num must be at least 2, got {item_num}")
        self.hyper_parameters = dict(
            item_num=item_num, hidden_size=hidden_size, state_size=state_size,
            dropout_rate=dropout_rate, **architecture,
        )
        self.item_num = item_num
        self.pad_id = item_num
        self.hidden_size = hidden_size
        self.state_size = state_size
        self.item_embeddings = nn.Embedding(item_num + 1, hidden_size, padding_idx=self.pad_id)
        nn.init.normal_(self.item_embeddings.weight, 0, 0.01)  # upstream's init
        with torch.no_grad():
            self.item_embeddings.weight[self.pad_id].zero_()
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, states, len_states):
        len_states = torch.as_tensor(len_states, dtype=torch.long, device=states.device)
        self._check_inputs(states, len_states)
        return self.output_layer(self.encode(states, len_states))

    @torch.no_grad()
    def forward_eval(self, states, len_states):
        """Scores [B, item_num] without gradients, for ranking and rewards. Use a model in eval
        mode (as load_sasrec_checkpoint returns it): in train mode dropout is active."""
        return self.forward(states, len_states)

    def states_from_histories(self, histories):
        """(states, len_states) on the model's device for a list of item-id histories."""
        states, len_states = pad_histories(histories, self.state_size, self.pad_id)
        device = self.item_embeddings.weight.device
        return states.to(device), len_states.to(device)

    def _check_inputs(self, states, len_states):
        if states.dim() != 2 or len_states.shape != states.shape[:1]:
            raise ValueError(
                f"expected states [B, L] and len_states [B], got {tuple(states.shape)} and "
                f"{tuple(len_states.shape)}"
            )
        width = states.shape[1]
        if width > self.state_size:
            raise ValueError(
                f"states are {width} items wide, above the model's state_size {self.state_size}; "
                "build them with model.states_from_histories (it keeps the most recent items)"
            )
        if len_states.min() < 1 or len_states.max() > width:
            raise ValueError(f"len_states must be in 1..{width} (the width of states)")
        if states.min() < 0 or states.max() > self.pad_id:
            raise ValueError(f"item ids must be in 0..{self.item_num - 1} (padding id {self.pad_id})")

    @staticmethod
    def _item_mask(states, len_states):
        """[B, L] bool, True at positions holding a real item (position < len)."""
        return torch.arange(states.shape[1], device=states.device)[None, :] < len_states[:, None]


class SASRecBlock(nn.Module):
    """Causal self-attention then feed-forward, both on layer-normed inputs, as upstream."""

    def __init__(self, hidden_size, num_heads, dropout_rate):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.attention = MultiHeadAttention(hidden_size, num_heads, dropout_rate)
        self.feed_forward_norm = nn.LayerNorm(hidden_size)
        self.feed_forward = PositionwiseFeedForward(hidden_size, hidden_size, dropout_rate)

    def forward(self, x, is_item):
        x = self.attention(self.attention_norm(x), x, is_item)
        return self.feed_forward(self.feed_forward_norm(x)) * is_item[..., None]


class SASRec(SequentialRecommender):
    """Self-attentive sequential recommendation: item + learned positional embeddings, causal
    self-attention blocks, layer norm, dropout; scores from the last real position."""

    def __init__(self, item_num, hidden_size=64, state_size=10, dropout_rate=0.1, num_heads=1,
                 num_blocks=1):
        super().__init__(item_num, hidden_size, state_size, dropout_rate,
                         num_heads=num_heads, num_blocks=num_blocks)
        self.positional_embeddings = nn.Embedding(state_size, hidden_size)
        self.blocks = nn.ModuleList(
            SASRecBlock(hidden_size, num_heads, dropout_rate) for _ in range(num_blocks)
        )
        self.final_norm = nn.LayerNorm(hidden_size)
        self.output_layer = nn.Linear(hidden_size, item_num)

    def encode(self, states, len_states):
        is_item = self._item_mask(states, len_states)
        positions = torch.arange(states.shape[1], device=states.device)
        x = self.dropout(self.item_embeddings(states) + self.positional_embeddings(positions))
        x = x * is_item[..., None]
        for block in self.blocks:
            x = block(x, is_item)
        return last_position(self.final_norm(x), len_states)


class GRU4Rec(SequentialRecommender):
    """A GRU over the item embeddings; scores from its state after the last real item."""

    def __init__(self, item_num, hidden_size=64, state_size=10, dropout_rate=0.1, gru_layers=1):
        super().__init__(item_num, hidden_size, state_size, dropout_rate, gru_layers=gru_layers)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=gru_layers, batch_first=True)
        self.output_layer = nn.Linear(hidden_size, item_num)

    def encode(self, states, len_states):
        # The GRU is causal, so its output at len - 1 has seen only real items: no packing needed.
        outputs, _ = self.gru(self.dropout(self.item_embeddings(states)))
        return last_position(outputs, len_states)


class Caser(SequentialRecommender):
    """Convolutional sequence embedding: horizontal filters over windows of `filter_sizes`
    consecutive items (max-pooled over time) and one vertical filter over the whole history."""

    def __init__(self, item_num, hidden_size=64, state_size=10, dropout_rate=0.1, num_filters=16,
                 filter_sizes=(2, 3, 4)):
        filter_sizes = [int(size) for size in filter_sizes]
        if not filter_sizes or min(filter_sizes) < 1 or max(filter_sizes) > state_size:
            raise ValueError(f"filter_sizes {filter_sizes} must lie in 1..state_size ({state_size})")
        super().__init__(item_num, hidden_size, state_size, dropout_rate,
                         num_filters=num_filters, filter_sizes=filter_sizes)
        self.horizontal_convs = nn.ModuleList(
            nn.Conv2d(1, num_filters, (size, hidden_size)) for size in filter_sizes
        )
        self.vertical_conv = nn.Conv2d(1, 1, (state_size, 1))
        for conv in [*self.horizontal_convs, self.vertical_conv]:
            nn.init.xavier_normal_(conv.weight)
            nn.init.constant_(conv.bias, 0.1)
        self.output_layer = nn.Linear(hidden_size + num_filters * len(filter_sizes), item_num)

    def encode(self, states, len_states):
        # The vertical filter spans exactly state_size positions, so narrower batches are padded.
        states = F.pad(states, (0, self.state_size - states.shape[1]), value=self.pad_id)
        is_item = self._item_mask(states, len_states)
        x = (self.item_embeddings(states) * is_item[..., None]).unsqueeze(1)  # [B, 1, L, H]
        horizontal = [F.relu(conv(x)).squeeze(3).amax(dim=2) for conv in self.horizontal_convs]
        vertical = F.relu(self.vertical_conv(x)).flatten(1)  # [B, H]
        return self.dropout(torch.cat(horizontal + [vertical], dim=1))


MODELS = {"SASRec": SASRec, "GRU4Rec": GRU4Rec, "Caser": Caser}


class Popularity:
    """Recommends the most frequent training targets to everyone: the floor every model must
    clear. Ties are broken by item id so the ranking is one definite list (the metric counts
    tied scores against the target)."""

    def __init__(self, train_targets, item_num):
        counts = torch.bincount(train_targets.cpu(), minlength=item_num)
        order = torch.argsort(counts, descending=True, stable=True)
        scores = torch.empty(item_num)
        scores[order] = torch.arange(item_num, 0, -1, dtype=torch.float)
        self.scores = scores.to(train_targets.device)

    def forward_eval(self, states, len_states):
        return self.scores.expand(states.shape[0], -1)


# ---------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(model, path, training=None):
    """Weights + model type + hyper-parameters (+ a JSON-able `training` summary), atomically."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model_type": type(model).__name__,
        "hyper_parameters": model.hyper_parameters,
        "state_dict": model.state_dict(),
        "training": training or {},
    }
    with atomic_write(path, "wb") as f:
        torch.save(checkpoint, f)


# The original MiniOneRec SASRec (upstream sasrec.py) saves a bare state dict of
# SASRec(hidden_size, item_num, state_size, dropout) with one attention block and one head: same
# computation as ours, other parameter names, and a Conv1d (kernel 1) feed-forward.
ORIGINAL_SASREC_PARAMETERS = {  # the original's name prefix -> ours
    "item_embeddings.": "item_embeddings.",
    "positional_embeddings.": "positional_embeddings.",
    "ln_1.": "blocks.0.attention_norm.",
    "mh_attn.": "blocks.0.attention.",
    "ln_2.": "blocks.0.feed_forward_norm.",
    "feed_forward.": "blocks.0.feed_forward.",
    "ln_3.": "final_norm.",
    "s_fc.": "output_layer.",
}
ORIGINAL_CONV1D_WEIGHTS = ("feed_forward.w_1.weight", "feed_forward.w_2.weight")


def is_original_sasrec_state_dict(state_dict) -> bool:
    return isinstance(state_dict, dict) and {"item_embeddings.weight", "s_fc.weight", "ln_3.weight",
                                             *ORIGINAL_CONV1D_WEIGHTS} <= set(state_dict)


def sasrec_from_original_state_dict(state_dict, source="state dict") -> SASRec:
    """Our SASRec holding the weights of an original MiniOneRec SASRec state dict (eval mode).
    Sizes come from the tensors: item_num from the output layer, hidden size from the item table,
    state_size from the positional table; one head, as the original builds it (with one head its
    sqrt(hidden size) scaling is ours). Scores (`forward_eval`) are the original's raw logits."""
    renamed = {}
    for name, tensor in state_dict.items():
        prefix = next((p for p in ORIGINAL_SASREC_PARAMETERS if name.startswith(p)), None)
        if prefix is None:
            raise InputError(f"{source}: parameter {name!r} is not one of the original SASRec's")
        if name in ORIGINAL_CONV1D_WEIGHTS:
            tensor = tensor.squeeze(-1)  # Conv1d kernel 1 [out, in, 1] = Linear [out, in]
        renamed[ORIGINAL_SASREC_PARAMETERS[prefix] + name[len(prefix):]] = tensor
    item_num, hidden_size = state_dict["s_fc.weight"].shape
    state_size = state_dict["positional_embeddings.weight"].shape[0]
    model = SASRec(item_num, hidden_size=hidden_size, state_size=state_size, dropout_rate=0.3)
    try:
        model.load_state_dict(renamed)
    except RuntimeError as error:
        raise InputError(f"{source}: an original SASRec state dict with unexpected shapes: "
                         f"{str(error).splitlines()[-1].strip()}") from None
    return model.eval()


def load_sasrec_checkpoint(path, device="cpu"):
    """The SASRec / GRU4Rec / Caser saved at `path`, in eval mode: a sasrec.py checkpoint (rebuilt
    from its hyper-parameters) or an original MiniOneRec SASRec state dict (the `.pth` its
    sasrec.py saves). Anything else raises InputError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # torch raises several types (pickle, zip, key, runtime) for a non-checkpoint
        raise InputError(
            f"{path}: not a SASRec checkpoint (torch cannot read it); expected a sasrec.py checkpoint "
            "or the state dict the original MiniOneRec sasrec.py saves"
        ) from None
    if is_original_sasrec_state_dict(checkpoint):
        return sasrec_from_original_state_dict(checkpoint, source=str(path)).to(device)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"{path}: not a sasrec.py checkpoint (no hyper-parameters saved with the weights) nor an "
            "original MiniOneRec SASRec state dict. Train one with sasrec.py."
        )
    model_type = checkpoint["model_type"]
    if model_type not in MODELS:
        raise InputError(f"{path}: unknown model type {model_type!r}; expected one of {list(MODELS)}")
    model = MODELS[model_type](**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class Sequences:
    """A split as tensors: right-padded histories, their lengths and the next items."""

    states: torch.Tensor
    len_states: torch.Tensor
    targets: torch.Tensor

    def __len__(self):
        return len(self.targets)

    def to(self, device):
        return Sequences(self.states.to(device), self.len_states.to(device), self.targets.to(device))


def sequences_from_rows(rows, path, item_num, state_size):
    """Tensors of split rows read from `path`; an item id outside 0..item_num-1 is an error that
    names the file, line and field."""
    for row in rows:
        for field, item_ids in (("history_item_id", row.history_item_id), ("item_id", (row.item_id,))):
            for item_id in item_ids:
                if not 0 <= item_id < item_num:
                    raise DataFormatError(
                        path,
                        f"item id {item_id} is outside the training catalogue of {item_num} items "
                        f"(ids 0..{item_num - 1}); size the catalogue to cover it "
                        "(--index_file / --item_file / --item_num)",
                        line=row.line, field=field,
                    )
    states, len_states = pad_histories([row.history_item_id for row in rows], state_size, item_num)
    return Sequences(states, len_states, torch.tensor([row.item_id for row in rows]))


def load_sequences(path, item_num, state_size=10):
    return sequences_from_rows(read_split_csv(path), path, item_num, state_size)


def catalogue_size(split_rows, index_file=None, item_file=None):
    """Number of items = largest item id + 1, over index.json / item.json when given (the full
    catalogue), else over the split rows."""
    catalogue_ids = []
    for path, reader in ((index_file, read_index), (item_file, read_item_meta)):
        if path is None:
            continue
        for key in reader(path):
            try:
                catalogue_ids.append(int(key))
            except ValueError:
                raise DataFormatError(path, f"item id {key!r} is not an integer") from None
    if catalogue_ids:
        return max(catalogue_ids) + 1
    return 1 + max(
        max(max(row.history_item_id), row.item_id) for rows in split_rows for row in rows
    )


# ---------------------------------------------------------------------------------------------
# training and evaluation


def next_item_loss(scores, targets, loss_type, generator):
    """`ce`: softmax cross-entropy over all items. `bce` (upstream's default): logistic loss on
    the target against one uniformly sampled other item per row."""
    if loss_type == "ce":
        return F.cross_entropy(scores, targets)
    if loss_type == "bce":
        negatives = torch.randint(scores.shape[1] - 1, targets.shape, generator=generator)
        negatives = negatives.to(targets.device)
        negatives += negatives >= targets  # skip the target: uniform over the other items
        logits = torch.cat([scores.gather(1, targets[:, None]), scores.gather(1, negatives[:, None])])
        labels = torch.cat([torch.ones_like(targets), torch.zeros_like(targets)]).float()[:, None]
        return F.binary_cross_entropy_with_logits(logits, labels)
    raise ValueError(f"unknown loss_type {loss_type!r}; expected 'bce' or 'ce'")


@torch.no_grad()
def evaluate(recommender, sequences, ks, batch_size=1024):
    """HR@K / NDCG@K of full ranking over all items (metrics.py, the one implementation).
    `recommender` is anything with forward_eval(states, len_states) -> [B, item_num] scores."""
    ranks = [
        ranks_from_scores(
            recommender.forward_eval(
                sequences.states[start:start + batch_size],
                sequences.len_states[start:start + batch_size],
            ),
            sequences.targets[start:start + batch_size],
        )
        for start in range(0, len(sequences), batch_size)
    ]
    return hr_ndcg(np.concatenate(ranks), ks)


def train_model(model, train, valid, *, epochs, batch_size, lr, l2_decay, loss_type, early_stop,
                seed, ks, monitor="NDCG@10", eval_batch_size=1024):
    """Adam on next-item prediction. After every epoch the model is ranked on `valid`; the best
    weights by `monitor` are kept and training stops after `early_stop` epochs without
    improvement. Returns the model (best weights, eval mode) and a JSON-able summary."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if monitor not in {f"{name}@{k}" for k in ks for name in ("HR", "NDCG")}:
        raise ValueError(f"monitor {monitor!r} is not one of the HR@K / NDCG@K for K in {list(ks)}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-8, weight_decay=l2_decay)
    generator = torch.Generator().manual_seed(seed)  # batch order and sampled negatives
    best = {"epoch": -1, "valid": None, "value": -1.0}
    best_state = None
    history = []
    progress = tqdm(range(epochs), desc=f"{type(model).__name__}", unit="epoch", disable=None)
    for epoch in progress:
        model.train()
        order = torch.randperm(len(train), generator=generator).to(train.targets.device)
        epoch_loss = 0.0
        for start in range(0, len(train), batch_size):
            batch = order[start:start + batch_size]
            scores = model(train.states[batch], train.len_states[batch])
            loss = next_item_loss(scores, train.targets[batch], loss_type, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(batch)
        model.eval()
        valid_metrics = evaluate(model, valid, ks, eval_batch_size)
        history.append({"epoch": epoch, "loss": epoch_loss / len(train), monitor: valid_metrics[monitor]})
        logger.debug("epoch %d: loss %.4f, valid %s %.4f", epoch, history[-1]["loss"], monitor,
                     valid_metrics[monitor])
        if valid_metrics[monitor] > best["value"]:
            best = {"epoch": epoch, "valid": valid_metrics, "value": valid_metrics[monitor]}
            best_state = copy.deepcopy(model.state_dict())
        progress.set_postfix(loss=f"{history[-1]['loss']:.3f}", **{monitor: f"{valid_metrics[monitor]:.4f}"},
                             best=f"{best['value']:.4f}@{best['epoch']}")
        if epoch - best["epoch"] >= early_stop:
            logger.info("early stop after epoch %d: valid %s last improved at epoch %d",
                        epoch, monitor, best["epoch"])
            break
    model.load_state_dict(best_state)
    model.eval()
    summary = {"best_epoch": best["epoch"], "epochs_run": len(history), "monitor": monitor,
               "valid": best["valid"], "history": history}
    return model, summary


# ---------------------------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    parser = ArgumentParser(
        description="Train a sequential recommender (SASRec, GRU4Rec, Caser) on MiniOneRec split "
                    "CSVs by item_id; rank all items on valid (early stopping) and test, beside a "
                    "popularity baseline; write the metrics JSON and a checkpoint."
    )
    parser.add_argument("--model", choices=list(MODELS), default="SASRec", help="recommender architecture")
    parser.add_argument("--train_file", required=True, help="training split CSV")
    parser.add_argument("--valid_file", required=True, help="validation split CSV (early stopping)")
    parser.add_argument("--test_file", required=True, help="test split CSV")
    parser.add_argument("--index_file", help="index.json: sizes the catalogue (else the split files do)")
    parser.add_argument("--item_file", help="item.json: sizes the catalogue (else the split files do)")
    parser.add_argument("--item_num", type=int, help="catalogue size; overrides the files")
    parser.add_argument("--state_size", type=int, default=10, help="history length kept (most recent items)")
    parser.add_argument("--hidden_factor", type=int, default=64, help="embedding / hidden size")
    parser.add_argument("--num_heads", type=int, default=1, help="SASRec attention heads")
    parser.add_argument("--num_blocks", type=int, default=1, help="SASRec attention blocks")
    parser.add_argument("--gru_layers", type=int, default=1, help="GRU4Rec layers")
    parser.add_argument("--num_filters", type=int, default=16, help="Caser horizontal filters per size")
    parser.add_argument("--filter_sizes", default="2,3,4", help="Caser horizontal filter heights")
    parser.add_argument("--lr", type=float, default=0.001, help="Adam learning rate")
    parser.add_argument("--batch_size", type=positive_int, default=256, help="training sequences per step")
    parser.add_argument("--eval_batch_size", type=positive_int, default=1024, help="sequences ranked together in evaluation")
    parser.add_argument("--epoch", type=int, default=200, help="maximum epochs")
    parser.add_argument("--dropout_rate", type=float, default=0.3, help="dropout probability")
    parser.add_argument("--l2_decay", type=float, default=1e-5, help="Adam weight decay")
    parser.add_argument("--loss_type", choices=["bce", "ce"], default="ce",
                        help="ce: softmax cross-entropy over all items; bce: logistic loss against one "
                             "sampled other item (upstream's default)")
    parser.add_argument("--early_stop", type=int, default=10,
                        help="stop after this many epochs without a better valid --monitor")
    parser.add_argument("--monitor", default="NDCG@10", help="valid metric for early stopping")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--num_threads", type=int, default=1,
                        help="CPU threads; 0 keeps torch's default. These models are small: one "
                             "thread is about as fast, and several threads stall when the cores are "
                             "shared with other jobs")
    parser.add_argument("--result_json_path", help="metrics JSON (default output/sasrec/<model>.json)")
    parser.add_argument("--checkpoint_path", help="checkpoint (default: the JSON path with .pt)")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.result_json_path = Path(args.result_json_path or f"output/sasrec/{args.model}.json")
    args.checkpoint_path = Path(args.checkpoint_path or args.result_json_path.with_suffix(".pt"))
    return args


def build_model(args, item_num):
    architecture = {
        "SASRec": dict(num_heads=args.num_heads, num_blocks=args.num_blocks),
        "GRU4Rec": dict(gru_layers=args.gru_layers),
        "Caser": dict(num_filters=args.num_filters,
                      filter_sizes=[int(size) for size in args.filter_sizes.split(",")]),
    }[args.model]
    return MODELS[args.model](item_num, args.hidden_factor, args.state_size, args.dropout_rate,
                              **architecture)


def main(argv=None):
    """Train, evaluate and save; returns the results written to --result_json_path."""
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    set_seed(args.seed)
    files = {"train": args.train_file, "valid": args.valid_file, "test": args.test_file}
    rows = {split: read_split_csv(path) for split, path in files.items()}
    item_num = args.item_num or catalogue_size(rows.values(), args.index_file, args.item_file)
    sequences = {
        split: sequences_from_rows(rows[split], files[split], item_num, args.state_size).to(args.device)
        for split in files
    }
    logger.info("%d items; %s rows", item_num, {split: len(s) for split, s in sequences.items()})
    ks = ks_up_to(item_num, DEFAULT_KS)

    model = build_model(args, item_num).to(args.device)
    started = time.perf_counter()
    model, summary = train_model(
        model, sequences["train"], sequences["valid"], epochs=args.epoch, batch_size=args.batch_size,
        lr=args.lr, l2_decay=args.l2_decay, loss_type=args.loss_type, early_stop=args.early_stop,
        seed=args.seed, ks=ks, monitor=args.monitor, eval_batch_size=args.eval_batch_size,
    )
    train_seconds = time.perf_counter() - started
    test_metrics = evaluate(model, sequences["test"], ks, args.eval_batch_size)
    popularity = Popularity(sequences["train"].targets, item_num)
    popularity_test = evaluate(popularity, sequences["test"], ks, args.eval_batch_size)
    print(format_table({"Popularity": popularity_test, args.model: test_metrics}, ks))

    results = {
        "model": args.model,
        "item_num": item_num,
        "ks": ks,
        "test": test_metrics,
        "popularity_test": popularity_test,
        "train_seconds": round(train_seconds, 2),
        **summary,
        "hyper_parameters": model.hyper_parameters,
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "checkpoint_path": str(args.checkpoint_path),
    }
    save_checkpoint(model, args.checkpoint_path, training={
        key: results[key] for key in ("best_epoch", "epochs_run", "monitor", "valid", "test", "args")
    })
    write_json(results, args.result_json_path, indent=2)
    logger.info("wrote %s and %s", args.result_json_path, args.checkpoint_path)
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_main(lambda: main() and None)
