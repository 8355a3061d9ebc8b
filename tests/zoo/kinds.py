"""A small model holding one layer of every kind in babysit.nn.layers, for the probes' and
the Monitor's tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D


class Tagger(nn.Module):
    """Embedding -> LSTM -> LayerNorm -> attention -> RMSNorm -> Conv1D -> Linear, with the
    head registered first, so that registration order is not forward order."""

    def __init__(self, vocab=20, width=8, classes=3):
        super().__init__()
        self.head = nn.Linear(width, classes)
        self.embedding = nn.Embedding(vocab, width)
        self.rnn = nn.LSTM(width, width, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.rms = nn.RMSNorm(width)
        self.proj = Conv1D(width, width)
        self.mask: Tensor | None = None

    def forward(self, ids: Tensor) -> Tensor:
        h, _ = self.rnn(self.embedding(ids))
        h = self.norm(h)
        a, _ = self.attn(h, h, h, attn_mask=self.mask)
        return self.head(torch.relu(self.proj(self.rms(a))))[:, -1]
