"""The size of a compute buffer: ggml's graph allocator replayed over a graph's tensors. Pure.

llama.cpp sizes its compute buffer by laying out one worst-case graph (llama-context.cpp,
``graph_reserve``) with ggml's graph allocator (ggml/src/ggml-alloc.c: ``ggml_gallocr_reserve_n``,
which plans with ``ggml_gallocr_alloc_graph_impl`` and a ``ggml_dyn_tallocr``): the buffer is the
high-water mark of that plan. The rules this module follows (our own implementation of them):

- graph inputs are placed first and kept to the end, so nothing overwrites them;
- then each node in graph order: an op that may work in place (``ggml_op_can_inplace``: add, mul,
  rms_norm, rope, soft_max, ...) takes over the memory of a source that nothing else reads any more,
  that is its own (not a view) and not an input; any other node gets the smallest free block that
  fits (the first of equal ones), else the end of the buffer;
- after a node, each source that has no reader left is freed (a view keeps its source alive until
  the view itself is done), and freed blocks merge with their free neighbours;
- every size is rounded up to the buffer's alignment (32 bytes on the CPU, 128 on CUDA).

Replayed over ``graph.py``'s llama graph this gives the pinned release's compute buffer to the byte
for most shapes measured (docs/decisions/fit-estimate.md has the figures and the misses).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CPU_ALIGNMENT = 32  # ggml-cpu's TENSOR_ALIGNMENT
GPU_ALIGNMENT = 128  # ggml-cuda's buffer alignment


@dataclass(eq=False)  # one tensor is one object: compared and hashed by identity
class Tensor:
    """One tensor of a graph. ``external``: it lives elsewhere (weights, the KV cache), so it takes
    nothing from the compute buffer; ``view_of``: it shares another tensor's memory (a reshape, a
    permute, a slice); ``input``: set before the graph runs (token ids, positions, the KQ mask)."""

    name: str
    size: int
    sources: tuple[Tensor, ...] = ()
    inplace: bool = False  # its op may overwrite a source (ggml_op_can_inplace)
    view_of: Tensor | None = None
    external: bool = False
    input: bool = False
    # the allocator's bookkeeping
    readers: int = field(default=0, repr=False)
    views: int = field(default=0, repr=False)
    offset: int | None = field(default=None, repr=False)
    owner: bool = field(default=False, repr=False)  # its memory is its own, to free


def _padded(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


class _Blocks:
    """Free space of one buffer: sorted free blocks, the last one open-ended; the high-water mark."""

    def __init__(self, alignment: int) -> None:
        self.alignment = alignment
        self.free: list[list[int]] = [[0, 1 << 62]]  # [offset, size], by offset
        self.high = 0

    def take(self, size: int) -> int:
        size = _padded(size, self.alignment)
        best = -1
        for index, (_, free) in enumerate(self.free[:-1]):
            if free >= size and (best < 0 or free < self.free[best][1]):
                best = index  # the smallest block that fits, the first of equal ones
        if best < 0:
            best = len(self.free) - 1
        offset = self.free[best][0]
        self.free[best][0] += size
        self.free[best][1] -= size
        if self.free[best][1] == 0:
            del self.free[best]
        self.high = max(self.high, offset + size)
        return offset

    def give(self, offset: int, size: int) -> None:
        size = _padded(size, self.alignment)
        for index, block in enumerate(self.free):
            if block[0] + block[1] == offset:  # after this block: extend it, maybe into the next
                block[1] += size
                after = self.free[index + 1] if index + 1 < len(self.free) else None
                if after and block[0] + block[1] == after[0]:
                    block[1] += after[1]
                    del self.free[index + 1]
                return
            if offset + size == block[0]:  # before this block: extend it backwards, maybe into the previous
                block[0], block[1] = offset, block[1] + size
                before = self.free[index - 1] if index else None
                if before and before[0] + before[1] == block[0]:
                    before[1] += block[1]
                    del self.free[index]
                return
        self.free.append([offset, size])
        self.free.sort()


def _allocatable(tensor: Tensor) -> bool:
    return not tensor.external and tensor.view_of is None


def buffer_size(nodes: list[Tensor], alignment: int = CPU_ALIGNMENT) -> int:
    """The compute buffer that holds ``nodes`` (a graph's nodes in execution order; their sources
    may be inputs, externals or earlier nodes): the high-water mark of ggml's allocation plan."""
    blocks = _Blocks(alignment)
    for node in nodes:
        for source in node.sources:
            source.readers += 1
        if node.view_of is not None:
            node.view_of.views += 1
    inputs = [s for node in nodes for s in (node, *node.sources) if s.input and _allocatable(s)]
    for tensor in dict.fromkeys(inputs):
        _place(tensor, blocks)
    for node in nodes:
        for source in node.sources:
            if _allocatable(source) and source.offset is None:
                _place(source, blocks)
        fresh = _allocatable(node) and node.offset is None
        if fresh and not (node.inplace and _reuse_a_source(node, blocks)):
            _place(node, blocks)
        for source in node.sources:
            source.readers -= 1
            if source.readers == 0 and source.views == 0 and not source.input:
                _release(source, blocks)
    return blocks.high


def _place(tensor: Tensor, blocks: _Blocks) -> None:
    tensor.offset = blocks.take(tensor.size)
    tensor.owner = True


def _release(tensor: Tensor, blocks: _Blocks) -> None:
    """A tensor nobody reads any more: its memory (or, for a view, its source's, once the source
    has no reader and no view left) goes back to the free blocks."""
    if tensor.view_of is not None:
        source = tensor.view_of
        source.views -= 1
        if source.views == 0 and source.readers == 0:
            _release(source, blocks)
        return
    if tensor.owner and tensor.offset is not None:
        blocks.give(tensor.offset, tensor.size)
        tensor.owner = False


def _reuse_a_source(node: Tensor, blocks: _Blocks) -> bool:
    """Take over a source's memory when nothing else will read it (ggml's in-place reuse)."""
    for source in node.sources:
        if source.external or source.input or source.readers != 1 or source.views != 0:
            continue
        if source.size != node.size:  # ggml reuses a source of the same layout only
            continue
        if source.view_of is not None or not source.owner or source.offset is None:
            continue  # a view's memory is not its own: ggml does not count it as the node's to take
        node.offset, node.owner = source.offset, True
        source.owner = False
        return True
    return False
