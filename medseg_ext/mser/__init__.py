"""MSER family: component trees, MSER (OpenCV-exact, VLFeat, standard) and the specular paper's
MMSER on 2-D images and 3-D volumes, 8- and 16-bit, batched; the specular mask pieces (Eqs. 1, 5–8).
Spec: shared/reference/seeds-part2.md §5, anchors.md §5. CPU kernels; the tiled component tree
(tiled.py) also has a CUDA driver, tested on the CPU emulator (not yet run on a GPU)."""
from .core import PRESETS, ComponentTree, MSERResult, component_tree, mser
from .specular import grey, grey_u8, is_enhanced, is_mask, saturation, specular_mask

__all__ = ["component_tree", "mser", "ComponentTree", "MSERResult", "PRESETS", "grey", "grey_u8", "saturation",
           "is_mask", "is_enhanced", "specular_mask"]
