"""SASRec's building blocks: multi-head self-attention and the position-wise feed-forward layer.

Shapes follow the upstream modules: inputs are [batch, length, hidden]. Two deliberate departures,
both about correctness rather than architecture:
- padding comes in as an explicit boolean mask (True = real item) instead of being inferred from
  all-zero key vectors, so a padded position can never leak into attention;
- scores are scaled by sqrt(head size), the standard Transformer scaling (upstream divides by
  sqrt(hidden size), which only equals it with one head).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention with a residual connection (queries + attention output).

    As upstream, queries and keys may differ (SASRec feeds layer-normed queries, raw keys), and
    there is no output projection.
    """

    def __init__(self, hidden_size, num_heads=1, dropout_rate=0.0):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate
        self.linear_q = nn.Linear(hidden_size, hidden_size)
        self.linear_k = nn.Linear(hidden_size, hidden_size)
        self.linear_v = nn.Linear(hidden_size, hidden_size)

    def forward(self, queries, keys, key_is_item):
        """queries [B, Tq, C], keys [B, Tk, C], key_is_item [B, Tk] bool -> [B, Tq, C].

        Query t attends to keys 0..t that are real items. With right-padded sequences key 0 is
        always an item, so no query row is fully masked (which would give NaN).
        """
        batch, q_len, hidden = queries.shape
        k_len = keys.shape[1]

        def split_heads(x, length):  # [B, T, C] -> [B, heads, T, C / heads]
            return x.view(batch, length, self.num_heads, hidden // self.num_heads).transpose(1, 2)

        q = split_heads(self.linear_q(queries), q_len)
        k = split_heads(self.linear_k(keys), k_len)
        v = split_heads(self.linear_v(keys), k_len)
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=queries.device).tril()
        allowed = causal[None, None] & key_is_item[:, None, None, :]  # [B, 1, Tq, Tk]
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout_rate if self.training else 0.0
        )
        return queries + attended.transpose(1, 2).reshape(batch, q_len, hidden)


class PositionwiseFeedForward(nn.Module):
    """LayerNorm(x + Dropout(W2 ReLU(W1 x))), applied to every position independently."""

    def __init__(self, d_in, d_hid, dropout=0.1):
        super().__init__()
        self.w_1 = nn.Linear(d_in, d_hid)
        self.w_2 = nn.Linear(d_hid, d_in)
        self.layer_norm = nn.LayerNorm(d_in)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.layer_norm(x + self.dropout(self.w_2(F.relu(self.w_1(x)))))
