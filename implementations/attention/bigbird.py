"""BigBird attention: a window of blocks, global blocks and random blocks (Zaheer et al., 2020)."""
from __future__ import annotations

import torch
from pydantic import Field

from implementations.attention.base import AttentionStrategy
from implementations.attention.grid import Grid, Groups, Rows
from implementations.registry import LENGTH_CAP, SEED_CAP, register

MASK32 = 0xFFFFFFFF


def mix(x):
    """A 32-bit integer hash (the lowbias32 finaliser) of non-negative ints, written with only
    ``&``, ``^``, ``>>`` and ``*`` so that Python ints and int64 tensors give the same values."""
    x = x & MASK32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & MASK32
    x = ((x ^ (x >> 15)) * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


@register("attention", "bigbird")
class BigBirdAttention(AttentionStrategy):
    """BigBird attention: a window of blocks, global blocks and random blocks.

    Over blocks of ``b`` positions, query block ``I`` sees key block ``J`` iff
    ``|I - J| <= window_blocks`` (the sliding window), or ``I`` or ``J`` is one of the first
    ``global_blocks`` (global tokens see and are seen by everything), or ``J`` is one of ``I``'s
    ``random_blocks`` random blocks.

    The random blocks of ``I`` are a seeded hash of ``(seed, I, r)``, drawn from the blocks
    ``0..I``: deterministic, the same causal or not, and independent of S, so a prefix keeps its
    pattern as the sequence grows (cached decoding is exact). The paper draws them from every
    block, which would tie the pattern to S; a draw may repeat a block already seen (it then
    adds nothing). Each query block runs against its candidate blocks gathered (O(S * b * (2 w +
    1 + g + r))); the global queries run as whole rows (O(S * g * b)). Decoding keeps every key
    and masks each step (O(S) per token).
    """

    length_params = ('block_size',)  # in tokens: at most the model's max_seq_len

    block_size: int = Field(64, ge=1, le=LENGTH_CAP, description="b: positions per block")
    window_blocks: int = Field(1, ge=0, le=LENGTH_CAP, description="w: query block I sees key blocks |I - J| <= w")
    global_blocks: int = Field(1, ge=0, le=LENGTH_CAP, description="g: the first g blocks are global tokens")
    random_blocks: int = Field(3, ge=0, le=LENGTH_CAP, description="r: random key blocks per query block, "
                                                    "drawn from blocks 0..I")
    seed: int = Field(0, ge=0, le=SEED_CAP, description="seed of the random blocks")

    @property
    def pattern_label(self) -> str:
        return (f"bigbird_b{self.block_size}_w{self.window_blocks}_g{self.global_blocks}"
                f"_r{self.random_blocks}" + (f"_s{self.seed}" if self.seed else ""))

    def random_block(self, I, r: int):
        """The ``r``-th random key block of query block ``I`` (an int or an int64 tensor)."""
        return mix(mix(I * 0x9E3779B1 + self.seed) + r * 0x85EBCA77 + 1) % (I + 1)

    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        I, J = i // self.block_size, j // self.block_size
        ok = ((I - J).abs() <= self.window_blocks) | (I < self.global_blocks) | (
            J < self.global_blocks)
        I = I.clamp(min=0)  # (a padding position's block is never drawn from)
        for r in range(self.random_blocks):
            ok = ok | (J == self.random_block(I, r))
        return ok

    def key_blocks(self, I: int, n: int) -> set[int]:
        """The key blocks query block ``I`` sees, of ``n`` blocks (``I`` not global)."""
        w, g = self.window_blocks, min(self.global_blocks, n)
        found = set(range(max(0, I - w), min(n, I + w + 1))) | set(range(g))
        return found | {self.random_block(I, r) for r in range(self.random_blocks)}

    def groups(self, S: int, causal: bool) -> Groups:
        b = min(self.block_size, S)
        n = -(-S // self.block_size)  # blocks, the last one possibly partial
        q = Grid((n, b), (b, 1)) if b == self.block_size else Grid((1, S), (S, 1))
        blocks = torch.arange(n)[:, None]  # (n, 1) query blocks
        w, g = self.window_blocks, self.global_blocks
        cand = [blocks + t for t in range(-w, w + 1)]  # outside 0..n-1: padding, masked below
        cand += [torch.full_like(blocks, t) for t in range(g)]
        cand += [self.random_block(blocks, r) for r in range(self.random_blocks)]
        cand = torch.cat(cand, dim=1)  # (n, 2w + 1 + g + r) key blocks
        cand = torch.where((cand >= 0) & (cand < n), cand, -1)
        keys = (cand[:, :, None] * self.block_size + torch.arange(self.block_size))  # (n, c, b)
        keys = torch.where(cand[:, :, None] >= 0, keys, -1).flatten(1)
        rows = tuple(range(min(g * self.block_size, S)))
        return Groups(q, Rows.of(keys), rows=rows)

    def allowed_pairs(self, S: int, causal: bool) -> int:
        b = self.block_size
        n = -(-S // b)
        size = [min(b, S - J * b) for J in range(n)]  # positions of each block
        total = 0
        for I in range(n):
            seen = range(n) if I < self.global_blocks else self.key_blocks(I, n)
            for J in seen:
                if not causal or J < I:
                    total += size[I] * size[J]
                elif J == I:  # the causal rule inside the query's own block
                    total += size[I] * (size[I] + 1) // 2
        return total

    def cache_policy(self):
        return None  # keep every key (random and global blocks stay readable), mask each step
