"""Binary tree-LSTMs evaluated level by level (SGB's ``utils_treelstm.py``, used by VCTree).

A batch of binary trees (one per image) is a :class:`BinaryForest`: every node knows its binary
parent, whether it is that parent's left or right child, and its depth. The cells are then run one
depth at a time for all images of the batch together:

* up (SGB "foreward", leaves -> root): depth ``max .. 0``; a node reads the ``(c, h)`` of its left
  and right child (zeros where absent), which lie one level deeper;
* down (SGB "backward", root -> leaves): depth ``0 .. max``; a node reads the state of its binary
  parent (zeros for the root).

This gives exactly the node-by-node recursion of SGB (a node's state depends only on its children
resp. its parent), with ``depth`` Python steps per pass instead of ``N``. The input projections of
all nodes are computed once before the level loop.

Module and parameter names follow SGB (``multi_layer_lstm.<k>.treeLSTM_foreward.treeLSTM.px`` ...,
``decoderLSTM.iofux`` ...) so that SGB state dicts map key for key.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BinaryForest", "BiTreeLSTMLayer", "DownTreeLSTMCell", "MultiLayerBiTreeLSTM", "TreeLSTMDecoder",
           "UpTreeLSTMCell", "block_orthogonal_", "dropout_masks"]


@torch.no_grad()
def block_orthogonal_(weight: torch.Tensor, block_rows: int, gain: float = 1.0) -> torch.Tensor:
    """SGB's ``block_orthogonal(weight, [block_rows, in])``: each ``[block_rows, in]`` row block is
    the top-left corner of a random orthogonal ``max(block_rows, in)`` square matrix."""
    rows, cols = weight.shape
    if rows % block_rows:
        raise ValueError(f"{rows} rows are not a multiple of the block size {block_rows}")
    for start in range(0, rows, block_rows):
        square = weight.new_empty(max(block_rows, cols), max(block_rows, cols))
        nn.init.orthogonal_(square, gain=gain)
        weight[start:start + block_rows] = square[:block_rows, :cols]
    return weight


def dropout_masks(num_images: int, dim: int, rate: float, device, dtype) -> Optional[torch.Tensor]:
    """``[num_images, dim]`` recurrent dropout masks, one per image (SGB draws one ``(1, dim)`` mask
    per tree), scaled by ``1 / (1 - rate)``; drawn from the CPU RNG so a seed gives the same masks
    on any device. None for ``rate <= 0``."""
    if rate <= 0:
        return None
    keep = (torch.rand(num_images, dim) > rate).to(dtype)
    return (keep / (1.0 - rate)).to(device)


class BinaryForest:
    """One binary tree per image, flattened over the batch, with the level schedule of the passes.

    Args:
        parent: int64 ``[N]`` global index of each node's binary parent, -1 for a root.
        is_left: bool ``[N]`` whether the node is its parent's left child (roots: ignored).
        depth: int64 ``[N]`` depth in the binary tree (roots 0).
        image: int64 ``[N]`` image of each node (for the per-image dropout masks).
        device: where the schedule's index tensors live (the features' device).

    All arguments are CPU tensors; the schedule is built on the CPU and moved in one transfer.
    """

    def __init__(self, parent: torch.Tensor, is_left: torch.Tensor, depth: torch.Tensor,
                 image: torch.Tensor, device=None) -> None:
        parent, is_left, depth, image = (t.cpu() for t in (parent, is_left.bool(), depth.long(), image.long()))
        n = int(parent.numel())
        self.num_nodes = n
        self.parent, self.is_left, self.depth = parent, is_left, depth
        order = torch.sort(depth, stable=True).indices
        counts = torch.bincount(depth, minlength=1) if n else torch.zeros(0, dtype=torch.long)
        sizes = counts.tolist()
        self.level_sizes: List[int] = sizes
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.empty(n, dtype=torch.long)
        pos[order] = torch.arange(n) - starts[depth[order]]
        has_parent = parent >= 0
        left = torch.full((n,), -1, dtype=torch.long)
        right = torch.full((n,), -1, dtype=torch.long)
        kids = torch.nonzero(has_parent).view(-1)
        lk, rk = kids[is_left[kids]], kids[~is_left[kids]]
        left[parent[lk]] = lk
        right[parent[rk]] = rk
        if len(torch.unique(parent[lk])) != len(lk) or len(torch.unique(parent[rk])) != len(rk):
            raise ValueError("a node of a binary tree has two left or two right children")
        # child positions index the next level's states with one zero row appended (row = its size)
        nxt = torch.tensor(sizes[1:] + [0], dtype=torch.long)
        lvl_of = depth
        up_left = torch.where(left >= 0, pos[left.clamp(min=0)], nxt[lvl_of])
        up_right = torch.where(right >= 0, pos[right.clamp(min=0)], nxt[lvl_of])
        # parent positions index the previous level's states (roots: row 0 of a zero row)
        down_parent = torch.where(has_parent, pos[parent.clamp(min=0)], torch.zeros_like(parent))
        inverse = torch.empty(n, dtype=torch.long)
        inverse[order] = torch.arange(n)
        # one transfer: [order | up_left | up_right | down_parent | image] in level order, + inverse
        packed = torch.cat([order, up_left[order], up_right[order], down_parent[order], image[order], inverse])
        packed = packed.to(device) if device is not None else packed
        o, ul, ur, dp, im, inv = packed.split([n] * 6)
        self.levels = list(o.split(sizes))
        self.up_left = list(ul.split(sizes))
        self.up_right = list(ur.split(sizes))
        self.down_parent = list(dp.split(sizes))
        self.level_image = list(im.split(sizes))
        self.inverse = inv

    @property
    def num_levels(self) -> int:
        return len(self.level_sizes)

    def unlevel(self, per_level: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-level rows (level order) -> ``[N, ...]`` in node order."""
        return torch.cat(list(per_level), dim=0)[self.inverse]


def _pad_zero_row(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros(1, x.shape[1])], dim=0)


class UpTreeLSTMCell(nn.Module):
    """SGB's ``BiTreeLSTM_Foreward`` cell (leaves -> root): gates ``i, o, f_left, f_right, u`` and a
    highway gate ``r`` mixing ``h`` with ``px(x)``.

    ``c = i*u + f_l*c_left + f_r*c_right``; ``h = r * o*tanh(c) + (1-r) * px(x)``; then the dropout mask.
    """

    def __init__(self, in_dim: int, h_dim: int) -> None:
        super().__init__()
        self.in_dim, self.h_dim = in_dim, h_dim
        self.px = nn.Linear(in_dim, h_dim)
        self.ioffux = nn.Linear(in_dim, 6 * h_dim)
        self.ioffuh_left = nn.Linear(h_dim, 6 * h_dim)
        self.ioffuh_right = nn.Linear(h_dim, 6 * h_dim)
        with torch.no_grad():
            block_orthogonal_(self.px.weight, h_dim)
            block_orthogonal_(self.ioffux.weight, h_dim)
            block_orthogonal_(self.ioffuh_left.weight, h_dim)
            block_orthogonal_(self.ioffuh_right.weight, h_dim)
            for lin in (self.px, self.ioffux, self.ioffuh_left, self.ioffuh_right):
                lin.bias.zero_()
            # both forget gates start at 0.5 + 0.5 = 1.0 (Jozefowicz et al., 2015)
            self.ioffuh_left.bias[2 * h_dim:4 * h_dim].fill_(0.5)
            self.ioffuh_right.bias[2 * h_dim:4 * h_dim].fill_(0.5)

    def step(self, px: torch.Tensor, gx: torch.Tensor, left: Tuple[torch.Tensor, torch.Tensor],
             right: Tuple[torch.Tensor, torch.Tensor], mask: Optional[torch.Tensor]
             ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One level: projected inputs ``px`` ``[n, h]``, ``gx`` ``[n, 6h]``, children ``(c, h)``."""
        g = gx + self.ioffuh_left(left[1]) + self.ioffuh_right(right[1])
        i, o, f_l, f_r, u, r = g.chunk(6, dim=1)
        c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f_l) * left[0] + torch.sigmoid(f_r) * right[0]
        h = torch.sigmoid(o) * torch.tanh(c)
        r = torch.sigmoid(r)
        h = r * h + (1 - r) * px
        if mask is not None and self.training:
            h = h * mask
        return c, h

    def forward(self, x: torch.Tensor, forest: BinaryForest, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` ``[N, in]`` in node order -> ``h`` ``[N, h_dim]``; ``masks`` ``[B, h_dim]`` per image."""
        if forest.num_nodes == 0:
            return x.new_zeros(0, self.h_dim)
        px_all, gx_all = self.px(x), self.ioffux(x)
        out: List[torch.Tensor] = [x.new_empty(0)] * forest.num_levels
        below_c = below_h = None
        for d in reversed(range(forest.num_levels)):
            idx = forest.levels[d]
            if below_h is None:
                zeros = x.new_zeros(idx.shape[0], self.h_dim)
                left = right = (zeros, zeros)
            else:
                cz, hz = _pad_zero_row(below_c), _pad_zero_row(below_h)
                ul, ur = forest.up_left[d], forest.up_right[d]
                left, right = (cz[ul], hz[ul]), (cz[ur], hz[ur])
            mask = masks[forest.level_image[d]] if masks is not None else None
            below_c, below_h = self.step(px_all[idx], gx_all[idx], left, right, mask)
            out[d] = below_h
        return forest.unlevel(out)


class DownTreeLSTMCell(nn.Module):
    """SGB's ``BiTreeLSTM_Backward`` cell (root -> leaves): gates ``i, o, f, u`` and a highway gate
    ``r``; ``c = i*u + f*c_parent``, ``h = r * o*tanh(c) + (1-r) * px(x)``, then the dropout mask."""

    def __init__(self, in_dim: int, h_dim: int) -> None:
        super().__init__()
        self.in_dim, self.h_dim = in_dim, h_dim
        self.px = nn.Linear(in_dim, h_dim)
        self.iofux = nn.Linear(in_dim, 5 * h_dim)
        self.iofuh = nn.Linear(h_dim, 5 * h_dim)
        with torch.no_grad():
            block_orthogonal_(self.px.weight, h_dim)
            block_orthogonal_(self.iofux.weight, h_dim)
            block_orthogonal_(self.iofuh.weight, h_dim)
            for lin in (self.px, self.iofux, self.iofuh):
                lin.bias.zero_()
            self.iofuh.bias[2 * h_dim:3 * h_dim].fill_(1.0)  # forget gate

    def step(self, px: torch.Tensor, gx: torch.Tensor, parent: Tuple[torch.Tensor, torch.Tensor],
             mask: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        g = gx + self.iofuh(parent[1])
        i, o, f, u, r = g.chunk(5, dim=1)
        c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f) * parent[0]
        h = torch.sigmoid(o) * torch.tanh(c)
        r = torch.sigmoid(r)
        h = r * h + (1 - r) * px
        if mask is not None and self.training:
            h = h * mask
        return c, h

    def parent_state(self, forest: BinaryForest, d: int, above: Optional[Tuple[torch.Tensor, torch.Tensor]],
                     ref: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if above is None:  # the roots
            zeros = ref.new_zeros(forest.level_sizes[d], self.h_dim)
            return zeros, zeros
        p = forest.down_parent[d]
        return above[0][p], above[1][p]

    def forward(self, x: torch.Tensor, forest: BinaryForest, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        if forest.num_nodes == 0:
            return x.new_zeros(0, self.h_dim)
        px_all, gx_all = self.px(x), self.iofux(x)
        out: List[torch.Tensor] = []
        above = None
        for d in range(forest.num_levels):
            idx = forest.levels[d]
            mask = masks[forest.level_image[d]] if masks is not None else None
            above = self.step(px_all[idx], gx_all[idx], self.parent_state(forest, d, above, x), mask)
            out.append(above[1])
        return forest.unlevel(out)


class _OneDirection(nn.Module):
    """Holds a cell as ``treeLSTM`` (SGB's ``OneDirectionalTreeLSTM`` naming)."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.treeLSTM = cell


class BiTreeLSTMLayer(nn.Module):
    """SGB's ``BidirectionalTreeLSTM``: ``[up(x), down(x)]``, each direction ``out_dim / 2`` wide,
    each with its own per-image dropout mask of rate ``dropout`` (training only)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if out_dim % 2:
            raise ValueError(f"a bidirectional tree-LSTM needs an even output size, got {out_dim}")
        self.dropout = float(dropout)
        self.h_dim = out_dim // 2
        self.treeLSTM_foreward = _OneDirection(UpTreeLSTMCell(in_dim, self.h_dim))
        self.treeLSTM_backward = _OneDirection(DownTreeLSTMCell(in_dim, self.h_dim))

    def forward(self, x: torch.Tensor, forest: BinaryForest, num_images: int) -> torch.Tensor:
        masks_up = masks_down = None
        if self.training and self.dropout > 0:
            masks_up = dropout_masks(num_images, self.h_dim, self.dropout, x.device, x.dtype)
            masks_down = dropout_masks(num_images, self.h_dim, self.dropout, x.device, x.dtype)
        up = self.treeLSTM_foreward.treeLSTM(x, forest, masks_up)
        down = self.treeLSTM_backward.treeLSTM(x, forest, masks_down)
        return torch.cat([up, down], dim=1)


class MultiLayerBiTreeLSTM(nn.Module):
    """SGB's ``MultiLayer_BTreeLSTM``: ``num_layers`` stacked :class:`BiTreeLSTMLayer` (first
    ``in_dim -> out_dim``, then ``out_dim -> out_dim``), all with dropout ``dropout``."""

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("a tree-LSTM needs at least one layer")
        self.out_dim = out_dim
        self.multi_layer_lstm = nn.ModuleList(
            [BiTreeLSTMLayer(in_dim if k == 0 else out_dim, out_dim, dropout) for k in range(num_layers)])

    def forward(self, x: torch.Tensor, forest: BinaryForest, num_images: int) -> torch.Tensor:
        """``x`` ``[N, in_dim]`` (node order) -> ``[N, out_dim]``."""
        for layer in self.multi_layer_lstm:
            x = layer(x, forest, num_images)
        return x


class TreeLSTMDecoder(nn.Module):
    """SGB's ``DecoderTreeLSTM`` (direction 'backward'): a :class:`DownTreeLSTMCell` of width
    ``hidden_dim`` over ``[inputs, embedding of the binary parent's label]`` (the roots get row 0,
    "start"), ``out`` ``Linear(hidden, C+1)`` per node.

    The label passed to the children is drawn from ``softmax(logits[1:])`` in training and is the
    argmax over ``1..C`` at test; the committed label is always that argmax (no teacher forcing).
    ``obj_embed`` rows: 0 = "start", ``k + 1`` = class ``k``.
    """

    def __init__(self, num_obj_classes: int, embed_dim: int, inputs_dim: int, hidden_dim: int,
                 dropout: float = 0.2, embed_vectors: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.num_obj_classes = num_obj_classes
        self.embed_dim = embed_dim
        self.inputs_dim = inputs_dim
        self.hidden_dim = hidden_dim
        self.dropout = float(dropout)
        self.obj_embed = nn.Embedding(num_obj_classes + 1, embed_dim)
        if embed_vectors is not None:
            with torch.no_grad():
                self.obj_embed.weight.copy_(embed_vectors)
        self.out = nn.Linear(hidden_dim, num_obj_classes)
        self.decoderLSTM = DownTreeLSTMCell(inputs_dim + embed_dim, hidden_dim)

    def forward(self, x: torch.Tensor, forest: BinaryForest, num_images: int
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[N, inputs_dim]`` (node order) -> (logits ``[N, C+1]``, committed labels ``[N]``)."""
        n = forest.num_nodes
        if n == 0:
            return x.new_zeros(0, self.num_obj_classes), torch.zeros(0, dtype=torch.long, device=x.device)
        cell, k = self.decoderLSTM, self.inputs_dim
        masks = None
        if self.training and self.dropout > 0:
            masks = dropout_masks(num_images, self.hidden_dim, self.dropout, x.device, x.dtype)
        # the input part of the projections for all nodes at once; the label part per level
        px_all = F.linear(x, cell.px.weight[:, :k], cell.px.bias)
        gx_all = F.linear(x, cell.iofux.weight[:, :k], cell.iofux.bias)
        w_px_e, w_g_e = cell.px.weight[:, k:], cell.iofux.weight[:, k:]
        dists: List[torch.Tensor] = []
        commits: List[torch.Tensor] = []
        above = None
        passed = None  # embedded labels of the level above
        for d in range(forest.num_levels):
            idx = forest.levels[d]
            if passed is None:
                emb = self.obj_embed.weight[0].to(x.dtype).unsqueeze(0).expand(idx.shape[0], self.embed_dim)
            else:
                emb = passed[forest.down_parent[d]]
            px = px_all[idx] + F.linear(emb, w_px_e)
            gx = gx_all[idx] + F.linear(emb, w_g_e)
            mask = masks[forest.level_image[d]] if masks is not None else None
            above = cell.step(px, gx, cell.parent_state(forest, d, above, x), mask)
            dist = self.out(above[1])
            fg = dist[:, 1:].detach()
            best = fg.argmax(dim=1) + 1
            if self.training:
                label = torch.multinomial(F.softmax(fg.float(), dim=1), 1).view(-1) + 1
            else:
                label = best
            passed = self.obj_embed(label + 1).to(x.dtype)
            dists.append(dist)
            commits.append(best)
        return forest.unlevel(dists), forest.unlevel(commits)
