"""The MCI paper's dual-path CNN on PR matrices (seeds-part1.md §3.7, Fig. 3).

Input: one subject's n×n PR matrix (a batch (B, 1, n, n) or (B, n, n)), standardised (per matrix
as the authors' notebook, :func:`standardize`, or with one mean/std of the training set). Two paths:

* 2-D: conv 16 → conv 32 → conv 64 (3×3, padding 1, ReLU) → max-pool 2 → conv 128 → conv 256
  (3×3, padding 1, ReLU) → global average pool → 256 features;
* 1-D: the flattened matrix (n²) → Linear → 256 (ReLU);

concatenated (512) → head → class logits (softmax in the loss). ``head="paper"``: FC 128 → FC 64
→ FC 32, each ReLU + dropout 0.2, then a linear layer to the classes (the paper's Fig. 3);
``head="notebook"``: Linear(512, 128) → Dropout(0.2) → Linear(128, classes) as
``Classification.ipynb``. ``width`` scales every channel/feature count (1.0 = the paper's; the
pipeline defaults to a smaller model so that it trains in seconds on a CPU).
"""
from __future__ import annotations

import torch
from torch import nn


def standardize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(x − mean)/std of each matrix over its last two axes (std 0 → only centred)."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / torch.where(std > eps, std, torch.ones_like(std))


class PRNet(nn.Module):
    """Dual-path classifier of n×n PR matrices; ``forward`` returns (B, num_classes) logits."""

    def __init__(self, n: int, num_classes: int = 2, width: float = 1.0, head: str = "paper",
                 dropout: float = 0.2):
        super().__init__()
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n: expected a matrix size >= 2, got {n!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
        if not width > 0:
            raise ValueError(f"width: expected a positive number, got {width!r}")
        if head not in ("paper", "notebook"):
            raise ValueError(f"head: expected 'paper' or 'notebook', got {head!r}")
        self.n = n

        def w(c: int) -> int:
            return max(1, int(round(c * width)))

        chans = [1, w(16), w(32), w(64), w(128), w(256)]
        layers = []
        for i in range(5):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), nn.ReLU(inplace=True)]
            if i == 2:
                layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.conv_path = nn.Sequential(*layers)
        self.flat_path = nn.Sequential(nn.Flatten(), nn.Linear(n * n, w(256)), nn.ReLU(inplace=True))
        feat = chans[-1] + w(256)
        if head == "paper":
            sizes = [feat, w(128), w(64), w(32)]
            hl = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                hl += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            hl.append(nn.Linear(sizes[-1], num_classes))
        else:
            hl = [nn.Linear(feat, w(128)), nn.Dropout(dropout), nn.Linear(w(128), num_classes)]
        self.head = nn.Sequential(*hl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[-2:] != (self.n, self.n):
            raise ValueError(f"x: expected (B, 1, {self.n}, {self.n}) or (B, {self.n}, {self.n}), "
                             f"got {tuple(x.shape)}")
        return self.head(torch.cat([self.conv_path(x), self.flat_path(x)], dim=1))


def stratified_split(labels, test_fraction: float = 0.2, seed: int = 0) -> tuple:
    """Fixed train/test index split with about ``test_fraction`` of each class (at least one per class
    in each part when a class has two or more members)."""
    import numpy as np
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        k = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        test += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.sort(train), np.sort(test)


def train_classifier(matrices, labels, epochs: int = 30, width: float = 0.25, head: str = "paper",
                     lr: float = 1e-3, batch_size: int = 8, test_fraction: float = 0.2, seed: int = 0,
                     normalize: str = "dataset") -> dict:
    """Train :class:`PRNet` on (S, n, n) matrices with Adam + cross-entropy on a fixed stratified
    split and report the test accuracy after the last epoch (no model selection on the test part).
    ``normalize="dataset"`` (default): one mean/std from the training matrices for all;
    ``"matrix"``: each matrix standardised on its own, as the authors' notebook (this removes group
    differences that are only a change of scale). Deterministic for a seed (torch runs single-threaded
    here: faster for such small models).
    Returns dict(train_acc, test_acc, n_train, n_test, loss)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(matrices, labels, epochs, width, head, lr, batch_size, test_fraction, seed, normalize)
    finally:
        torch.set_num_threads(threads)


def _train(matrices, labels, epochs, width, head, lr, batch_size, test_fraction, seed, normalize) -> dict:
    import numpy as np
    if normalize not in ("matrix", "dataset"):
        raise ValueError(f"normalize: expected 'matrix' or 'dataset', got {normalize!r}")
    X = torch.as_tensor(np.asarray(matrices), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if X.dim() != 3 or X.shape[0] != y.shape[0]:
        raise ValueError(f"matrices: expected (S, n, n) with S = len(labels), got {tuple(X.shape)} and "
                         f"{tuple(y.shape)} labels")
    tr, te = stratified_split(y.numpy(), test_fraction, seed)
    if normalize == "matrix":
        X = standardize(X)
    else:
        mean, std = X[tr].mean(), X[tr].std(unbiased=False)
        X = (X - mean) / (std if std > 1e-12 else 1.0)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # weights and dropout from `seed`, global RNG untouched
        torch.manual_seed(seed)
        model = PRNet(int(X.shape[-1]), max(2, int(y.max()) + 1 if len(y) else 2), width=width, head=head)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        Xtr, ytr = X[tr], y[tr]
        loss = float("nan")
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(tr), generator=g)
            for s in range(0, len(tr), batch_size):
                b = perm[s:s + batch_size]
                opt.zero_grad()
                out = loss_fn(model(Xtr[b]), ytr[b])
                out.backward()
                opt.step()
                loss = out.item()
    model.eval()
    with torch.no_grad():
        def acc(idx):
            return float((model(X[idx]).argmax(1) == y[idx]).float().mean()) if len(idx) else float("nan")
        return {"train_acc": acc(tr), "test_acc": acc(te), "n_train": int(len(tr)), "n_test": int(len(te)),
                "loss": loss}
