"""Topology family: Vietoris–Rips persistent homology (H0..H_maxdim) of single and batched point
clouds, exact diagram distances (Wasserstein, bottleneck, all-pairs matrices) and the
sliding-window embedding. Spec: shared/reference/seeds-part1.md §3, anchors.md §3.

C++ with OpenMP over clouds and diagram pairs. ``vietoris_rips_batch`` has a GPU path (CUDA inputs
or ``device="cuda"``): distance matrices, H0 (Prim's MST) and, at maxdim 2, the apparent pairs of
triangles in Triton (:mod:`medseg_ext.triton.topology_batch`), dimensions >= 1 reduced by the same
C++ code on the host; so far it has run only under the Triton interpreter (no GPU here). The batch ops run on a Dask
cluster with ``client=`` (see :mod:`medseg_ext.topology.scaleout`, extra ``[dist]``).
"""
from .distances import bottleneck, diagram_distance_matrix, diagram_distance_pairs, wasserstein
from .embedding import sliding_window
from .rips import RaggedDiagrams, rips_memory_estimate, vietoris_rips, vietoris_rips_batch

__all__ = ["vietoris_rips", "vietoris_rips_batch", "RaggedDiagrams", "rips_memory_estimate", "wasserstein",
           "bottleneck", "diagram_distance_matrix", "diagram_distance_pairs", "sliding_window"]
