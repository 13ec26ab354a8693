"""SVR baseline (UHAN paper, Tables 2-3): support vector regression on pooled visual
vectors, text vectors or token statistics, and user features (see `pipeline/head/tabular.py`).

`--ablate visual` / `--ablate text` give Table 3's "SVR (w/o V)" / "SVR (w/o T)";
`--ablate user` drops the user block. After standardizing, each block is weighted by
1/sqrt(its width) (`balance_blocks`): otherwise 512 pooled visual columns dominate the
rbf distance and the few user columns, the strongest signal, are drowned. Kernel SVR is
quadratic in the rows, so it fits on at most `max_train_rows` training posts drawn with
`seed`.

Saved without pickle: the fitted support vectors, dual coefficients, intercept, gamma and
the standardization parameters go to `svr.npz` (loaded with allow_pickle=False), the
feature statistics and config to JSON; prediction evaluates the kernel expansion from
those arrays, so a loaded model predicts exactly what the fitted one did.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics.pairwise import linear_kernel, rbf_kernel
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from heads import register
from pipeline.head.tabular import CHUNK, TabularHead
from pipeline.head.base import HeadData, Progress


@register
class SVRHead(TabularHead):
    name = "svr"
    onehot_categories = True

    search_space = {"C": ("log", 1e-2, 1e2), "epsilon": ("float", 0.01, 0.5)}  # `pipe tune`

    @dataclass
    class Config:
        kernel: str = "rbf"  # rbf | linear
        C: float = 1.0  # inverse regularization strength
        epsilon: float = 0.1  # width of the no-penalty tube, in standardized-target units
        gamma: float | None = None  # rbf width; None = scikit-learn's "scale", 1 / (n_features * X.var())
        max_train_rows: int = 5000  # fit on at most this many training posts (kernel SVR is O(n^2))
        text_buckets: int = 64  # hashed bag-of-ids width when the text store holds tokens
        balance_blocks: bool = True  # weight the visual, text and user blocks equally in the kernel distance
        seed: int = 0  # draws the training subsample
        ablate: tuple[str, ...] = ()  # any of visual, text, user: leave that feature block out
        categories: bool = False  # the category levels as one-hot columns (the SMP winners')
        user_history: int = 0  # k > 0: mean and count of the user's last k earlier training scores (leak-free)
        context: tuple[str, ...] = ()  # posts columns added linearly: user_followers,days = the hybrid-CNN paper's SVRs

        def __post_init__(self) -> None:
            if self.kernel not in ("rbf", "linear"):
                raise ValueError(f"kernel must be rbf or linear, not {self.kernel!r}")

    def __init__(self, config: "SVRHead.Config | None" = None) -> None:
        super().__init__(config or self.Config())
        self.arrays: dict[str, np.ndarray] = {}

    @property
    def is_fitted(self) -> bool:
        return bool(self.arrays)

    def fit(self, train: HeadData, valid: HeadData, progress: Progress | None = None) -> "SVRHead":
        c = self.config
        self.features.fit(train)  # user statistics from every training post
        rng = np.random.default_rng(c.seed)
        if len(train) > c.max_train_rows:
            train = train.subset(np.sort(rng.choice(len(train), c.max_train_rows, replace=False)))
        x = self.features.transform(train, leave_one_out=True)
        scaler = StandardScaler().fit(x)
        scale = scaler.scale_.astype(np.float64)
        if c.balance_blocks:
            scale = scale / self.features.block_weights()  # folded into the saved scale
        xs = (x.astype(np.float64) - scaler.mean_) / scale
        y = train.y.astype(np.float64)
        y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
        gamma = c.gamma if c.gamma is not None else 1.0 / (xs.shape[1] * (xs.var() or 1.0))
        model = SVR(kernel=c.kernel, C=c.C, epsilon=c.epsilon, gamma=gamma).fit(xs, (y - y_mean) / y_std)
        self.arrays = {
            "support_vectors": model.support_vectors_.astype(np.float64),  # (n_sv, F)
            "dual_coef": model.dual_coef_.ravel().astype(np.float64),  # (n_sv,)
            "intercept": np.asarray(model.intercept_, np.float64).reshape(1),
            "gamma": np.array([gamma], np.float64),
            "x_mean": scaler.mean_.astype(np.float64),
            "x_scale": scale,
            "y_mean": np.array([y_mean]),
            "y_std": np.array([y_std]),
        }
        self.history = [{"step": 0, "train_rows": len(train), "support_vectors": int(len(model.support_))}]
        return self

    def predict(self, data: HeadData) -> np.ndarray:
        if not self.arrays:
            raise self.not_fitted()
        a = self.arrays
        xs = (self.features.transform(data).astype(np.float64) - a["x_mean"]) / a["x_scale"]
        out = np.empty(len(xs), np.float64)
        for i in range(0, len(xs), CHUNK):  # bounded kernel matrix: (CHUNK, n_sv)
            block = xs[i : i + CHUNK]
            if self.config.kernel == "rbf":
                k = rbf_kernel(block, a["support_vectors"], gamma=float(a["gamma"][0]))
            else:
                k = linear_kernel(block, a["support_vectors"])
            out[i : i + CHUNK] = k @ a["dual_coef"] + a["intercept"][0]
        return (out * a["y_std"][0] + a["y_mean"][0]).astype(np.float32)

    def unseen_users(self, data: HeadData) -> np.ndarray:
        """True for users without a training post: their user_mean is the global training mean."""
        return self.features.unseen(data)

    def save(self, directory: Path) -> None:
        if not self.arrays:
            raise self.not_fitted()
        np.savez(self.save_state(directory) / "svr.npz", **self.arrays)

    @classmethod
    def load(cls, directory: Path) -> "SVRHead":
        head, _ = cls.load_state(directory)
        with np.load(Path(directory) / "svr.npz", allow_pickle=False) as z:
            head.arrays = {k: z[k] for k in z.files}
        return head
