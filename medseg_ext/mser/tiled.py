"""Tiled component tree (csrc/mser/tiled_tree.h): tile sizes, the canonical parent form of B images
on the CPU or a CUDA device, and its node form computed with torch ops on the tensors' device.

Canonical parent form of one image (flat C-order pixel index p): ``par[p]`` = -1 outside the mask;
for a non-canonical pixel the canonical pixel of its node; for a canonical pixel the canonical pixel
of its parent node, or p itself at a root. ``area[p]`` = the node's area at its canonical pixel, 0
elsewhere. The canonical pixel of a node is the largest index among its own-level pixels, so ``par``
is the level-compressed union-find parent array and the node form equals
``component_tree(algorithm="union_find")`` array for array.

The CUDA driver (tiled_tree_cuda.cu) is tested on the CPU emulator (python_tests/cuda_emu); it has not
been run on a GPU yet.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from .. import _dispatch
from .._dispatch import cuda_kernels_usable, extension

DEFAULT_TILE_CPU = {2: (256, 256), 3: (32, 32, 32)}
DEFAULT_TILE_CUDA = {2: (32, 32), 3: (8, 16, 16)}
CUDA_MAX_LOCAL_PIXELS = 3400  # the CUDA tile kernel keeps a tile and a 1-pixel border in shared memory

__all__ = ["tiled_parents", "nodes_from_parents", "forest_from_parents", "node_stability", "select_local_min",
           "select_vlfeat", "region_pixels", "tile_sizes", "DEFAULT_TILE_CPU", "DEFAULT_TILE_CUDA"]


def on_cuda(x) -> bool:
    return isinstance(x, torch.Tensor) and _dispatch.on_cuda(x)


MAX_THREADS = 1024  # num_threads above this are clamped (see check_threads)


def check_threads(num_threads) -> int:
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f"num_threads: expected a positive int or None, got {num_threads!r}")
    # results never depend on the thread count; libgomp crashed (SIGSEGV) when asked for 100000
    # threads, and a count beyond a C int did not reach the kernels at all
    return int(min(int(num_threads), MAX_THREADS))


def tile_sizes(tile, ndim: int, cuda: bool) -> Tuple[int, ...]:
    """Tile sizes per spatial axis: an int (all axes), one int per axis, or None (the default)."""
    if tile is None:
        return (DEFAULT_TILE_CUDA if cuda else DEFAULT_TILE_CPU)[ndim]
    if isinstance(tile, (int, np.integer)) and not isinstance(tile, bool):
        sizes = (int(tile),) * ndim
    elif isinstance(tile, (tuple, list)) and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                                                 for t in tile):
        if len(tile) != ndim:
            raise ValueError(f"tile: expected {ndim} sizes for a {ndim}-D image, got {len(tile)}")
        sizes = tuple(int(t) for t in tile)
    else:
        raise TypeError(f"tile: expected an int or a tuple of {ndim} ints, got {tile!r}")
    if any(t < 1 or t > 2**31 - 1 for t in sizes):
        raise ValueError(f"tile: sizes must be >= 1, got {sizes}")
    return sizes


def nodes_from_parents(par: torch.Tensor, area: torch.Tensor, values: torch.Tensor, maxval: int, bright: bool):
    """Node form of one image from its canonical parent form (flat (N,) tensors; ``values`` the grey
    levels as integers): (pixel_node, parent, level, area, key) as int32, nodes numbered by
    (key, canonical pixel index) as build_tree does. Only torch ops: runs on the tensors' device."""
    return forest_from_parents(par.reshape(1, -1), area.reshape(1, -1), values.reshape(1, -1), maxval, bright)[:5]


def forest_from_parents(par: torch.Tensor, area: torch.Tensor, values: torch.Tensor, maxval: int, bright: bool):
    """Node form of B images at once, as one forest, from their canonical parent forms ((B, N) tensors):
    (pixel_node (B*N,), parent, level, area, key as int32, node_image int64). Nodes are numbered image
    by image, and inside an image by (key, canonical pixel index), so image b's nodes are a contiguous
    range in the order of its own tree and every per-node rule gives what it gives one tree at a time.
    Only torch ops: runs on the tensors' device."""
    dev = par.device
    B, N = par.shape
    v = values.reshape(-1).to(torch.int64)
    key = maxval - v if bright else v
    idx = torch.arange(B * N, device=dev, dtype=torch.int64)
    p = par.reshape(-1).to(torch.int64)
    inside = p >= 0
    if B > 1:  # per-image pixel indices -> indices into the (B*N,) arrays
        p = torch.where(inside, p + (idx // N) * N, p)
    safe = p.clamp(min=0)
    canon = area.reshape(-1) > 0  # every node has area >= 1 at its canonical pixel, 0 elsewhere
    cpix = torch.nonzero(canon).squeeze(1)
    cimg = cpix // N
    npix = cpix[torch.argsort((cimg * (maxval + 1) + key[cpix]) * N + (cpix - cimg * N))]  # node id -> pixel
    M = npix.numel()
    nid = torch.full((B * N,), -1, dtype=torch.int64, device=dev)
    nid[npix] = torch.arange(M, device=dev, dtype=torch.int64)
    pixel_node = torch.where(inside, nid[torch.where(canon, idx, safe)], torch.full_like(idx, -1))
    pp = p[npix]
    parent = torch.where(pp == npix, torch.full_like(pp, -1), nid[pp])
    i32 = torch.int32
    return (pixel_node.to(i32), parent.to(i32), v[npix].to(i32), area.reshape(-1)[npix].to(i32),
            key[npix].to(i32), npix // N)


def node_stability(parent: torch.Tensor, key: torch.Tensor, area: torch.Tensor, delta: int, variation: str,
                   normalize: bool) -> torch.Tensor:
    """MSER stability of every node of a children-first tree, float64 (M,), by torch ops on the tensors'
    device: the same numbers as the sequential sweep of csrc/mser/mser.cpp (``node_numerators``).

    up(n), the highest ancestor-or-self with key <= key(n) + delta, and down(n), the first node with
    key <= key(n) - delta on the chain of largest children (ties: the lower id) from n, are found by
    binary lifting (keys rise strictly towards the root and fall strictly down the chain), so the work
    is O(M log D) gathers for D distinct keys instead of a walk per node."""
    dev = parent.device
    M = parent.numel()
    if M == 0:
        return torch.zeros(0, dtype=torch.float64, device=dev)
    par = parent.reshape(-1).to(torch.int64)
    k = key.reshape(-1).to(torch.int64)
    a = area.reshape(-1).to(torch.int64)
    ids = torch.arange(M, device=dev, dtype=torch.int64)
    steps = max(1, int(k.max() - k.min()).bit_length())  # chains are at most (key range + 1) long

    def lift(first: torch.Tensor):
        table = [first]
        for _ in range(steps - 1):
            table.append(table[-1][table[-1]])
        return table

    num_up = num_down = None
    if variation in ("two_sided", "ancestor"):
        anc = lift(torch.where(par >= 0, par, ids))  # roots point at themselves
        u, limit = ids, k + delta
        for jump in reversed(anc):
            cand = jump[u]
            u = torch.where(k[cand] <= limit, cand, u)
        num_up = a[u]
    if variation in ("two_sided", "descendant"):
        # largest child of every node (node M: "none", a sentinel below every key with area 0)
        child = ids[par >= 0]
        score = torch.full((M,), -1, dtype=torch.int64, device=dev)
        score.scatter_reduce_(0, par[child], a[child] * (M + 1) + (M - child), reduce="amax", include_self=True)
        big = torch.where(score >= 0, M - score % (M + 1), torch.full_like(score, M))
        big = torch.cat([big, big.new_tensor([M])])
        k_ext = torch.cat([k, k.new_tensor([k.min() - delta - 1])])
        a_ext = torch.cat([a, a.new_tensor([0])])
        chain = lift(big)
        limit = k - delta
        u = ids
        for jump in reversed(chain):  # u: the last chain node still above the limit
            cand = jump[u]
            u = torch.where(k_ext[cand] > limit, cand, u)
        d = torch.where(k <= limit, ids, big[u])
        num_down = a_ext[d]
    if variation == "two_sided":
        num = num_up - num_down
    elif variation == "ancestor":
        num = num_up - a
    elif variation == "descendant":
        num = a - num_down
    else:
        raise ValueError(f"variation: expected 'two_sided', 'ancestor' or 'descendant', got {variation!r}")
    num = num.to(torch.float64)
    return num / a.to(torch.float64) if normalize else num


def _path_sums(parent: torch.Tensor, val: torch.Tensor, steps: int) -> torch.Tensor:
    """Per node the sum of ``val`` over itself and all its ancestors (pointer jumping, ``steps`` >=
    log2 of the depth rounds)."""
    acc, ptr = val.clone(), parent.clone()
    for _ in range(steps):
        up = ptr >= 0
        safe = ptr.clamp(min=0)
        acc = torch.where(up, acc + acc[safe], acc)
        ptr = torch.where(up, ptr[safe], ptr)
    return acc


def select_local_min(parent, area, stab, min_area: int, max_area: int, max_variation: float) -> torch.Tensor:
    """Bool (M,): nodes kept by the strict local-minimum rule (mser.cpp ``select_regions``, Rule::LocalMin):
    area in [min_area, max_area], stability <= max_variation and below its parent's and every child's."""
    par = parent.to(torch.int64)
    M = par.numel()
    child_min = torch.full((M,), math.inf, dtype=torch.float64, device=par.device)
    has = par >= 0
    child_min.scatter_reduce_(0, par[has], stab[has], reduce="amin", include_self=True)
    above = torch.where(has, stab < stab[par.clamp(min=0)], torch.ones_like(has))
    return (area >= min_area) & (area <= max_area) & (stab <= max_variation) & above & (stab < child_min)


def _depth_steps(key: torch.Tensor) -> int:
    """Pointer-jumping rounds that cover any ancestor chain: keys rise strictly towards the root, so a
    chain has at most (key range + 1) nodes."""
    k = key.to(torch.int64)
    return max(1, int(k.max() - k.min() + 1).bit_length()) if k.numel() else 1


def _nearest_marked_ancestor(parent: torch.Tensor, mark: torch.Tensor, steps: int) -> torch.Tensor:
    """Per node its nearest strict ancestor with ``mark`` set, or -1 (pointer jumping: every node
    strictly between a node and its pointer stays unmarked, and the distance doubles each round)."""
    f = parent.clone()
    for _ in range(steps):
        fs = f.clamp(min=0)
        open_ = (f >= 0) & ~mark[fs]
        f = torch.where(open_, f[fs], f)
    return f


def select_vlfeat(parent, key, area, num, normalize: bool, min_area: int, max_area: int, max_variation: float,
                  min_diversity: float):
    """VLFeat's selection (mser.cpp ``select_regions``, Rule::VLFeat) by torch ops: (keep bool (M,), the
    reported variation float64 (M,), VLFeat's float32 value). ``num`` is the integer area difference
    of each node (``node_stability(normalize=False)``).

    Stable: a node loses to its parent when key(parent) == key + 1 and its variation is not smaller (the
    parent loses otherwise); roots always lose. Then, parents first, a stable node within the area and
    variation bounds is kept unless (A(a) - A)/A(a) < min_diversity (float32) for a = its nearest kept
    ancestor, or its root when none is. That top-down dependency is resolved level by level over the
    forest of candidate nodes: on CUDA by one kernel launch (a block walks the levels), elsewhere by one
    vectorised round of torch ops per level."""
    dev = parent.device
    par = parent.reshape(-1).to(torch.int64)
    k = key.reshape(-1).to(torch.int64)
    a = area.reshape(-1).to(torch.int64)
    M = par.numel()
    v = num.to(torch.float32)
    if normalize:
        v = v / a.to(torch.float32)
    has = par >= 0
    pc = par.clamp(min=0)
    adjacent = has & (k[pc] == k + 1)
    child_wins = adjacent & (v < v[pc])
    stable = has & ~(adjacent & ~child_wins)
    parent_lost = torch.zeros(M, dtype=torch.bool, device=dev)
    parent_lost[par[child_wins]] = True
    stable &= ~parent_lost
    max_var = math.inf if max_variation > 1e30 else float(np.float32(max_variation))
    cand = stable & (v < max_var) & (a <= max_area) & (a >= min_area)
    md = np.float32(min_diversity)
    if md >= 1.0 or not bool(cand.any()):
        return cand, v.to(torch.float64)
    steps = _depth_steps(k)
    ids = torch.arange(M, device=dev, dtype=torch.int64)
    up = torch.where(cand, _nearest_marked_ancestor(par, cand, steps), torch.full_like(par, -1))
    root = torch.where(has, _nearest_marked_ancestor(par, ~has, steps), ids)
    depth = _path_sums(up, cand.to(torch.int64), steps)  # levels of the candidate forest, 1 at the top
    order = torch.nonzero(cand).squeeze(1)
    order = order[torch.argsort(depth[order], stable=True)].contiguous()
    sizes = torch.bincount(depth[order])[1:]
    keep = torch.zeros(M, dtype=torch.bool, device=dev)
    anchor = torch.full((M,), -1, dtype=torch.int64, device=dev)  # nearest kept candidate ancestor
    if on_cuda(parent):  # one launch walks all levels (csrc/mser/vlfeat_select_cuda.cu)
        level_start = torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)])
        with _dispatch.cuda_stream(dev) as stream:
            extension().mser_vlfeat_diversity_cuda(order.data_ptr(), level_start.data_ptr(), sizes.numel(),
                                                   up.data_ptr(), root.data_ptr(), a.data_ptr(), float(md),
                                                   keep.data_ptr(), anchor.data_ptr(), stream)
        return keep, v.to(torch.float64)
    # the same walk by torch ops, one round per level (CPU tensors: the reference of the kernel)
    af = a.to(torch.float32)
    lo = 0
    for n in sizes.tolist():
        q = order[lo:lo + n]
        lo += n
        p = up[q]
        ps = p.clamp(min=0)
        anc = torch.where(p >= 0, torch.where(keep[ps], ps, anchor[ps]), torch.full_like(p, -1))
        anchor[q] = anc
        ref = torch.where(anc >= 0, anc, root[q])
        div = (a[ref] - a[q]).to(torch.float32) / af[ref]
        keep[q] = div >= float(md)
    return keep, v.to(torch.float64)


def region_pixels(pixel_node, parent, key, area, keep):
    """Pixel lists of the kept nodes, in the order the CPU kernels give (node ids ascending; inside a
    node its own pixels by index, then each child's block, children by id): (values, counts), by torch
    ops on the device. A node's block starts at the sum, over the path to its root, of its offset
    inside its parent (the parent's own pixels, then its earlier siblings)."""
    dev = parent.device
    par = parent.to(torch.int64)
    a = area.to(torch.int64)
    M = par.numel()
    ids = torch.arange(M, device=dev, dtype=torch.int64)
    has = par >= 0
    kids = ids[has]
    own = a.clone()
    own.scatter_add_(0, par[kids], -a[kids])
    kids = kids[torch.argsort(par[kids] * M + kids)]  # grouped by parent, then by id
    excl = torch.cumsum(a[kids], 0) - a[kids]
    first = torch.full((M,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=dev)
    first.scatter_reduce_(0, par[kids], excl, reduce="amin", include_self=True)
    local = torch.zeros(M, dtype=torch.int64, device=dev)
    local[kids] = own[par[kids]] + excl - first[par[kids]]
    roots = torch.flip(ids[~has], [0])  # the CPU lays roots out from the highest id down
    local[roots] = torch.cumsum(a[roots], 0) - a[roots]
    start = _path_sums(par, local, _depth_steps(key))
    pn = pixel_node.reshape(-1).to(torch.int64)
    N = pn.numel()
    px = torch.nonzero(pn >= 0).squeeze(1)
    px = px[torch.argsort(pn[px] * N + px)]  # own pixels grouped by node, ascending
    node_first = torch.full((M,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=dev)
    pos_in_list = torch.arange(px.numel(), device=dev, dtype=torch.int64)
    node_first.scatter_reduce_(0, pn[px], pos_in_list, reduce="amin", include_self=True)
    layout = torch.empty(px.numel(), dtype=torch.int64, device=dev)
    layout[start[pn[px]] + pos_in_list - node_first[pn[px]]] = px
    sel = ids[keep]
    counts = a[sel]
    return _gather_segments(layout, start[sel], counts, int(counts.sum())), counts


def _gather_segments(values: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor, total: int) -> torch.Tensor:
    """``values[starts[r]:starts[r] + counts[r]]`` for every r, concatenated (``total`` = counts.sum())."""
    dev = values.device
    seg = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts, output_size=total)
    within = torch.arange(total, device=dev, dtype=torch.int64) - (torch.cumsum(counts, 0) - counts)[seg]
    return values[starts[seg] + within]


# mser_cuda works on chunks of images of at most this many pixels (its int64 temporaries are ~10x that)
CUDA_CHUNK_PIXELS = 2**25


def mser_cuda(flat, spatial, maxval: int, is16: bool, mask, conn: int, polarities, delta: int, min_area: int,
              max_area: int, max_variation: float, variation: str, normalize: bool, tile, rule: str = "local_min",
              min_diversity: float = 0.0):
    """MSER on the GPU with the strict local-minimum rule or VLFeat's (``rule="vlfeat"``): trees by the
    CUDA tiled driver for all B images at once, then node form, stability, selection and pixel lists by
    torch ops on the device, for a chunk of images at a time as one forest (so the number of launches
    does not grow with B). Returns the MSERResult arrays (values, offsets, image_index, level, area,
    variation, polarity) on the device, in the CPU kernels' order and with their dtypes."""
    B, N = flat.shape
    dev = flat.device
    step = max(1, CUDA_CHUNK_PIXELS // N)
    parts = []  # per (chunk, polarity): values, counts, image, level, variation, polarity rank
    for b0 in range(0, B, step):
        chunk = slice(b0, min(B, b0 + step))
        for rank, pol in enumerate(("dark", "bright")):
            if pol not in polarities:
                continue
            bright = pol == "bright"
            cm = None if mask is None else mask[chunk]
            par, area = _parents_cuda(flat[chunk], spatial, maxval, is16, pol, conn, cm, tile, batch=True)
            pn, parent, level, ar, key, nimg = forest_from_parents(par, area, _values(flat[chunk], is16), maxval,
                                                                   bright)
            if rule == "vlfeat":
                num = node_stability(parent, key, ar, delta, variation, normalize=False)
                keep, stab = select_vlfeat(parent, key, ar, num, normalize, min_area, max_area, max_variation,
                                           min_diversity)
            else:
                stab = node_stability(parent, key, ar, delta, variation, normalize)
                keep = select_local_min(parent, ar, stab, min_area, max_area, max_variation)
            values, counts = region_pixels(pn, parent, key, ar, keep)
            img = nimg[keep]
            values = values - torch.repeat_interleave(img * N, counts, output_size=values.numel())  # local indices
            parts.append((values, counts, img + b0, level[keep], stab[keep], torch.full_like(img, rank)))
    values, counts, image, level, var, rank = (torch.cat(x) for x in zip(*parts))
    if len(polarities) > 1:  # by image, then dark before bright; node order kept inside (stable sort)
        order = torch.argsort(image * 2 + rank, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        counts, image, level, var, rank = counts[order], image[order], level[order], var[order], rank[order]
        values = _gather_segments(values, starts[order], counts, values.numel())
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), torch.cumsum(counts, 0)])
    polarity = torch.where(rank == 1, 1, -1).to(torch.int8)
    return (values.to(torch.int64), offsets, image.to(torch.int64), level.to(torch.int32), counts.to(torch.int64),
            var.to(torch.float64), polarity)


def _prepare_cuda(image: torch.Tensor, batch: bool):
    """(B, N) contiguous uint8, or int16 holding the uint16 bit patterns; spatial shape; maxval; is16."""
    x = image.detach()
    if not batch:
        x = x[None]
    if x.dim() not in (3, 4):
        raise ValueError(f"image: expected {'(B, H, W) or (B, D, H, W)' if batch else '(H, W) or (D, H, W)'}, "
                         f"got shape {tuple(image.shape)}")
    if x.numel() == 0:
        raise ValueError(f"image: empty array of shape {tuple(image.shape)}")
    if x[0].numel() > 2**31 - 2:  # int32 pixel and node ids; before any copy of a (broadcast) view
        raise ValueError(f"image: at most 2^31 - 2 pixels per image, got shape {tuple(image.shape)}")
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    if x.is_floating_point() or x.is_complex():
        raise TypeError("image: expected an integer image (uint8/uint16 or integers in [0, 65535]); quantise "
                        f"floating-point data first, got {x.dtype}")
    if x.dtype == torch.uint8:
        maxval, is16 = 255, False
    elif x.dtype == getattr(torch, "uint16", None):
        x, maxval, is16 = x.view(torch.int16), 65535, True
    else:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"image: integer values must lie in [0, 65535] (got [{lo}, {hi}]); rescale first")
        if hi <= 255:
            x, maxval, is16 = x.to(torch.uint8), 255, False
        else:  # int16 container with the uint16 bit pattern (values >= 2^15 wrap explicitly)
            w = x.to(torch.int32)
            x, maxval, is16 = torch.where(w >= 32768, w - 65536, w).to(torch.int16), 65535, True
    spatial = tuple(int(s) for s in x.shape[1:])
    return x.reshape(x.shape[0], -1).contiguous(), spatial, maxval, is16


def _values(flat: torch.Tensor, is16: bool) -> torch.Tensor:
    v = flat.to(torch.int64)
    return v & 0xFFFF if is16 else v


def tiled_parents(images, *, polarity: str = "bright", connectivity: Optional[int] = None, mask=None, tile=None,
                  batch: bool = False, num_threads: Optional[int] = None):
    """Canonical parent form (par, area), each (B, *shape) int32 (no B without ``batch``), of the
    max-tree (``"bright"``) or min-tree (``"dark"``) by the tiled builder; CUDA tensors run the CUDA
    driver and return tensors on their device, anything else runs on the CPU threads."""
    from .core import _connectivity, _prepare_image, _prepare_mask  # core imports this module

    if polarity not in ("bright", "dark"):
        raise ValueError(f"polarity: expected 'bright' or 'dark', got {polarity!r}")
    threads = check_threads(num_threads)
    if on_cuda(images):
        flat, spatial, maxval, _is16 = _prepare_cuda(images, batch)
        par, area = _parents_cuda(flat, spatial, maxval, _is16, polarity, connectivity, mask, tile, batch)
    else:
        flat, spatial, maxval = _prepare_image(images, batch)
        conn = _connectivity(connectivity, len(spatial), default_full=False)
        m = _prepare_mask(mask, flat.shape[0], spatial, batch)
        p, a = extension().mser_tiled_parents_cpu(flat, m, list(spatial), conn, polarity == "bright", maxval,
                                                  list(tile_sizes(tile, len(spatial), cuda=False)), threads)
        par, area = torch.from_numpy(p), torch.from_numpy(a)
    shape = (par.shape[0],) + spatial if batch else spatial
    return par.reshape(shape), area.reshape(shape)


def _cuda_mask(mask, B: int, spatial, batch: bool, device) -> Optional[torch.Tensor]:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        mask = np.asarray(mask)
        if mask.dtype.kind not in "biuf":  # as _prepare_mask: nonzero = inside needs numbers
            raise TypeError(f"mask: expected a bool or numeric array, got dtype {mask.dtype}")
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
    if m.is_complex():
        raise TypeError(f"mask: expected a bool or numeric array, got dtype {m.dtype}")
    if m.is_floating_point() and bool(torch.isnan(m).any()):
        raise ValueError("mask: contains NaN")
    m = m.to(device)
    if not batch or tuple(m.shape) == tuple(spatial):
        if tuple(m.shape) != tuple(spatial):
            raise ValueError(f"mask: expected shape {tuple(spatial)}, got {tuple(m.shape)}")
        m = m.expand((B,) + tuple(spatial))
    elif tuple(m.shape) != (B,) + tuple(spatial):
        raise ValueError(f"mask: expected shape {tuple(spatial)} or {(B,) + tuple(spatial)}, got {tuple(m.shape)}")
    if m.dtype != torch.uint8:  # the kernels read any nonzero byte as inside: uint8 masks pass as they are
        m = (m != 0).to(torch.uint8)
    return m.reshape(B, -1).contiguous()


def _parents_cuda(flat, spatial, maxval, is16, polarity, connectivity, mask, tile, batch):
    from .core import _connectivity

    C = extension()
    if not hasattr(C, "mser_tiled_parents_cuda") or not cuda_kernels_usable():
        raise RuntimeError("image: is a CUDA tensor but the CUDA kernels of medseg_ext are not usable here (rebuild "
                           "with MEDSEG_EXT_CUDA=on on a machine with a GPU driver), or pass a CPU tensor")
    conn = _connectivity(connectivity, len(spatial), default_full=False)
    ts = tile_sizes(tile, len(spatial), cuda=True)
    padded = int(np.prod([min(t, s) + 2 for t, s in zip(ts, spatial)]))
    if padded > CUDA_MAX_LOCAL_PIXELS:
        raise ValueError(f"tile: the CUDA path keeps a tile and a 1-pixel border in shared memory, at most "
                         f"{CUDA_MAX_LOCAL_PIXELS} pixels; tile {ts} needs {padded} (use e.g. 32 x 32)")
    B, N = flat.shape
    dev = flat.device
    m = _cuda_mask(mask, B, spatial, batch, dev)
    work = torch.empty(4 * B * N, dtype=torch.int32, device=dev)
    par = torch.empty((B, N), dtype=torch.int32, device=dev)
    area = torch.empty((B, N), dtype=torch.int32, device=dev)
    with _dispatch.cuda_stream(dev) as stream:
        C.mser_tiled_parents_cuda(flat.data_ptr(), is16, 0 if m is None else m.data_ptr(), B, list(spatial), conn,
                                  polarity == "bright", maxval, list(ts), work.data_ptr(), par.data_ptr(),
                                  area.data_ptr(), stream)
    return par, area


def component_tree_cuda(image: torch.Tensor, *, polarity: str, connectivity, mask, delta, variation, normalize,
                        tile):
    """component_tree(algorithm="tiled") of a CUDA tensor: the tree on the GPU, its node form and the
    stability (binary lifting, node_stability) by torch ops on the GPU."""
    from .core import _SIDES, ComponentTree, _check_delta

    _check_delta(delta)
    if variation not in _SIDES:
        raise ValueError(f"variation: expected one of {_SIDES}, got {variation!r}")
    flat, spatial, maxval, is16 = _prepare_cuda(image, batch=False)
    par, area = _parents_cuda(flat, spatial, maxval, is16, polarity, connectivity, mask, tile, batch=False)
    pn, parent, level, ar, key = nodes_from_parents(par[0], area[0], _values(flat[0], is16), maxval,
                                                    polarity == "bright")
    stab = node_stability(parent, key, ar, int(delta), variation, bool(normalize))
    return ComponentTree(pn.reshape(spatial), parent, level, ar, stab, spatial, polarity)
