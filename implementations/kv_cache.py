"""The self-attention K/V cache of decoding, as small as the attention pattern allows.

A causal decode step at absolute position ``i`` attends to the keys its pattern allows among
``0..i``. Each attention strategy declares what that step must keep and read
(``strategy.cache_policy() -> CachePolicy``); the cache keeps exactly that:

    pattern          keeps (slots per layer)            reads at position i
    dense            every position (max_len)            0 .. i                      (i + 1 keys)
    local(w)         ring of the last w + 1              i - w .. i                  (<= w + 1)
    block(b)         ring of b (the current block)       b floor(i/b) .. i           (i % b + 1)
    atrous(k)        every position (any residue may     i, i - k, i - 2k, ... >= 0  (floor(i/k) + 1)
                     be read later)
    atrous(k, w)     ring of k (floor(w/k) + 1)          i, i - k, ... >= i - w      (<= floor(w/k) + 1)

Position ``p`` lives in slot ``p % slots``. A ring's slot count is a multiple of the stride
(atrous), so the keys of one residue class ``p % k`` stay in the slots of that class, read as one
strided view; a block's ring starts each block at slot 0, so the current block is a prefix. Keys
are stored after RoPE, rotated at their absolute positions, so where a key sits in the ring does
not matter: attention is invariant to the order of its keys. Decode cost and memory are
therefore O(keys allowed), not O(S).

    cache = KVCache(max_len, policy)      # one per decoder layer (``Transformer.new_cache``)
    k, v, q_offset, exact = cache.append(k_new, v_new)    # (B, H, S, D) each

``append`` of the prompt (an empty cache, any ``S``) stores what the policy keeps and returns the
prompt's own keys (``exact=False``: the pattern's self-attention masks them); ``append`` of one
token returns exactly the keys that token may attend (``exact=True``: no mask needed). Several
tokens onto a non-empty cache are allowed only for a policy that keeps everything (dense), with
the keys so far returned in order and masked by the pattern (``exact=False``), as is every step
of a pattern that declares no policy (``cache_policy() -> None``: keep everything, mask each
step, O(S) per token: correct, not lean). ``length`` is the
number of positions seen (the absolute position of the next token), ``slots`` what is kept.

``held_bytes(obj)`` measures what a cache (or a list of them, a ``DecodeState``) really holds:
it walks the object's attributes and containers to every tensor and sums the bytes of their
distinct storages (a view counts its whole storage, once), independently of ``slots()``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CachePolicy:
    """What a causal decode step must keep and read (see the module docstring's table)."""

    keep: int | None = None  # ring of the last `keep` positions; None: every position
    stride: int = 1  # read every stride-th key back from the query (atrous k); keep % stride == 0
    block: int | None = None  # read only the query's block of this size (keep == block)

    def __post_init__(self):
        if self.keep is not None and self.keep % self.stride:
            raise ValueError(f"CachePolicy.keep ({self.keep}) must be a multiple of stride "
                             f"({self.stride}) so one residue class stays in one set of slots")
        if self.block is not None and self.keep != self.block:
            raise ValueError(f"CachePolicy.block needs keep == block; got {self.keep}, {self.block}")

    def slots(self, max_len: int) -> int:
        """Positions one layer keeps when decoding up to ``max_len`` positions."""
        return max_len if self.keep is None else min(self.keep, max_len)

    def reads(self, i: int, max_len: int) -> int:
        """Keys the decode step at absolute position ``i`` reads (its own included)."""
        return len(self.read_range(i, max_len))

    def read_range(self, i: int, max_len: int) -> range:
        """The slots the step at position ``i`` reads, with ``i`` already written."""
        slots = self.slots(max_len)
        if self.block is not None:
            return range(0, i % self.block + 1)  # slots == block, or no wrap-around (i < slots)
        filled = min(i + 1, slots)
        return range((i % slots) % self.stride, filled, self.stride)

    def cache_bytes(self, batch: int, heads: int, head_dim: int, max_len: int, layers: int,
                    element_size: int) -> int:
        """Analytic bytes of the K and V caches of ``layers`` layers."""
        return 2 * layers * batch * heads * self.slots(max_len) * head_dim * element_size


DENSE = CachePolicy()


def held_bytes(obj) -> int:
    """Bytes of the distinct storages of every tensor reachable from ``obj`` through attributes,
    lists, tuples and dicts (module docstring): the memory the object keeps alive."""
    storages, seen, todo = {}, set(), [obj]
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            s = o.untyped_storage()
            storages[(o.device, s.data_ptr())] = s.nbytes()
        elif isinstance(o, (list, tuple, set, frozenset)):
            todo.extend(o)
        elif isinstance(o, dict):
            todo.extend(o.values())
        elif hasattr(o, "__dict__") and not isinstance(o, (type, torch.nn.Module)):
            todo.extend(vars(o).values())
    return sum(storages.values())


class KVCache:
    """K/V of one self-attention layer for decoding: ``(B, H, slots, D)`` each, allocated on the
    first append (or by :meth:`allocate`)."""

    def __init__(self, max_len: int, policy: CachePolicy | None = DENSE):
        self.k = self.v = None
        self.length, self.max_len = 0, max_len
        self.masked = policy is None  # a pattern without a policy: keep everything, mask each step
        self.policy = DENSE if policy is None else policy
        self.slots = self.policy.slots(max_len)

    def allocate(self, batch: int, heads: int, head_dim: int, dtype, device) -> None:
        """Allocate the (empty) K and V buffers now, e.g. to measure what they take."""
        self.k = torch.empty(batch, heads, self.slots, head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)  # (B, H, slots, D)

    @property
    def nbytes(self) -> int:
        """Bytes of the storage the K and V buffers hold (0 before the first append)."""
        if self.k is None:
            return 0
        return self.k.untyped_storage().nbytes() + self.v.untyped_storage().nbytes()

    def append(self, k: torch.Tensor, v: torch.Tensor):
        """Store ``k, v (B, H, S, D)`` at positions ``length .. length + S - 1``; returns
        ``(k, v, q_offset, exact)`` for attending from those positions (module docstring)."""
        B, H, S, D = k.shape
        start, end = self.length, self.length + S
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked for {end}")
        if self.k is None:
            self.allocate(B, H, D, k.dtype, k.device)
        if start and S > 1 and self.policy.keep is not None:
            raise ValueError(f"a {self.slots}-slot ring cache takes one token at a time after the "
                             f"prompt; got {S} tokens at position {start}")
        n = min(S, self.slots)  # only the last `slots` of the new positions are kept
        pos = torch.arange(end - n, end, device=k.device) % self.slots
        self.k.index_copy_(2, pos, k[:, :, S - n:])
        self.v.index_copy_(2, pos, v[:, :, S - n:])
        self.length = end
        if start == 0:
            return k, v, 0, False  # the prompt attends to itself under the pattern's own mask
        if S > 1 or self.masked:  # every key so far, in order, masked by the pattern
            return self.k[:, :, :end], self.v[:, :, :end], start, False
        r = self.policy.read_range(start, self.max_len)
        sel = slice(r.start, r.stop, r.step)
        return self.k[:, :, sel], self.v[:, :, sel], start, True  # (B, H, reads, D)
