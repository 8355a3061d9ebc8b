"""Streaming first and second moments of rows (mean, variances, covariance) in float64, in
one pass and O(D^2) memory: what the preprocessing transforms fit on."""

from __future__ import annotations

import torch
from torch import Tensor

# The covariance's X^T X is taken over at least max(D, this many) buffered rows at a time:
# each product is then one large BLAS call, and its float64 accumulation (a D x D pass over
# memory) happens once per D rows rather than once per small batch. The buffer holds at most
# about D x D float32, half the float64 accumulator, so memory stays O(D^2).
_PRODUCT_MIN_ROWS = 1024
# X^T X is symmetric, so only its upper triangle is computed, in at most 4 column blocks of
# at least 256 columns: 62.5% of the full product's flops in 4 BLAS calls. 8 blocks (56%)
# measured no faster here on 2 shared cores: more, smaller calls wait more on each other.
_PRODUCT_MIN_BLOCK = 256
_PRODUCT_BLOCKS = 4


class _Moments:
    """Streaming count, sum and sum of squares or outer products of rows, in float64.

    The rows are shifted by the first batch's mean before they are accumulated. The one-pass
    formula cov = (sum x x^T - n mu mu^T) / (n - 1) subtracts two nearly equal large numbers
    when |mu| >> sigma and loses about 2 log10(|mu| / sigma) digits (Chan, Golub & LeVeque,
    "Algorithms for computing the sample variance", 1983). The covariance is the same for
    any shift K; with K close to mu both terms are small and nothing cancels.
    """

    def __init__(self, second: str | None):
        self.second = second  # None, "diag" (variances) or "full" (covariance)
        self.count = 0

    def update(self, rows: Tensor) -> None:
        if self.count == 0:
            self.total = rows.new_zeros(rows.shape[1], dtype=torch.float64)
            self.sum = torch.zeros_like(self.total)  # of the shifted rows
            # The shift is rounded to the dtype the products are taken in (float32 unless the
            # data is float64), so that every batch is shifted by exactly the same constant.
            self.dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
            self.shift = rows.mean(dim=0, dtype=torch.float64).to(self.dtype)
            if self.second == "diag":
                self.squares = torch.zeros_like(self.total)
            elif self.second == "full":
                self.products = self.total.new_zeros(rows.shape[1], rows.shape[1])
                self.buffer: Tensor | None = None  # shifted rows awaiting their product
                self.filled = 0
        rows = rows.to(self.total.device)
        self.count += len(rows)
        self.total += rows.sum(dim=0, dtype=torch.float64)
        if self.second == "diag":  # O(N * D): float64 throughout costs little
            z = rows.to(torch.float64) - self.shift.to(torch.float64)
            self.sum += z.sum(dim=0)
            self.squares += z.square().sum(dim=0)
        elif self.second == "full":
            capacity = max(rows.shape[1], _PRODUCT_MIN_ROWS)
            if self.filled + len(rows) > capacity:
                self._flush()
            if len(rows) >= capacity:  # big enough on its own
                z = rows.to(self.dtype) - self.shift
                self.sum += z.sum(dim=0, dtype=torch.float64)
                self._accumulate(z)
                return
            if self.buffer is None:
                self.buffer = rows.new_empty(capacity, rows.shape[1], dtype=self.dtype)
            z = self.buffer[self.filled : self.filled + len(rows)]
            torch.sub(rows.to(self.dtype), self.shift, out=z)
            self.sum += z.sum(dim=0, dtype=torch.float64)
            self.filled += len(rows)

    def _flush(self) -> None:
        if self.filled:
            self._accumulate(self.buffer[: self.filled])
            self.filled = 0

    def _accumulate(self, z: Tensor) -> None:
        if z.dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
            z = z.double()  # TF32/bf16 matmuls keep ~3 digits: too few for a covariance
        # O(N * D^2): float32 BLAS calls, accumulated in float64. With the shift, a float32
        # product over a few thousand rows keeps ~6 digits of each entry.
        features = z.shape[1]
        width = max(_PRODUCT_MIN_BLOCK, -(-features // _PRODUCT_BLOCKS))
        for start in range(0, features, width):
            block = z[:, start : start + width].T @ z[:, start:]
            self.products[start : start + width, start:] += block.to(torch.float64)

    def mean(self) -> Tensor:
        return self.total / self.count

    def variance(self, ddof: int) -> Tensor:
        centre = self.sum / self.count
        return ((self.squares - self.count * centre.square()) / (self.count - ddof)).clamp_min(0)

    def covariance(self, ddof: int) -> Tensor:
        """The sample covariance; it takes over the accumulator, so call it once, last."""
        self._flush()
        self.buffer = None
        centre = self.sum / self.count
        cov, self.products = self.products, None  # in place: one D x D temporary at most
        cov.triu_()
        cov += cov.triu(1).T  # the lower triangle, never accumulated
        cov.addr_(centre, centre, alpha=-self.count)
        return cov.div_(self.count - ddof)
