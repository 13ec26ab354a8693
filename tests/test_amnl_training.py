"""AMNL trained as its paper trains it (issue 19): the L2 penalty once per pass over the
training groups and over trainable parameters only, the hinge and the penalty logged
apart, and the final score's fusion (the paper's product, or a sum)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from heads.amnl import AMNL, AMNLConfig, AMNLModel, amnl_loss
from pipeline.core.errors import PipeError
from pipeline.train.loop import Source, TrainConfig, Trainer

PRED = torch.tensor([[1.0, 0.8, 2.0], [0.0, -1.0, 0.0]])  # (B=2 groups, positive + 2 negatives)
BATCH = {"mask": torch.ones(2, 3, dtype=torch.bool)}
HINGE = (0.3 + 1.5 + 0.0 + 0.5) / 4  # mean of max(0, 0.5 - F+ + F-) over the 4 pairs


class Tiny(nn.Module):
    """Psi: a trainable weight with ||w||^2 = 5, and a frozen embedding (||.||^2 = 9) that is no part of it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.frozen = nn.Embedding.from_pretrained(torch.tensor([[3.0]]), freeze=True)


@pytest.mark.parametrize("penalty, share", [("pass", 2 / 10), ("batch", 1.0)])
def test_penalty_scaling_and_frozen_parameters_excluded(penalty, share):
    c = AMNLConfig(margin=0.5, beta=0.1, penalty=penalty)
    out = amnl_loss(Tiny(), c, groups=10)(PRED, BATCH)  # |T| = 10 training groups, B = 2 in this batch
    assert set(out) == {"hinge", "penalty"}
    assert out["hinge"].item() == pytest.approx(HINGE)
    assert out["penalty"].item() == pytest.approx(0.1 * 5.0 * share)  # 14 (with the frozen 9) would be wrong


def test_penalty_over_one_pass_sums_to_beta_norm():
    """Batches of 4 + 4 + 2 groups out of |T| = 10: the pass adds beta ||Psi||^2 exactly once."""
    loss = amnl_loss(Tiny(), AMNLConfig(beta=0.1), groups=10)
    total = sum(loss(torch.zeros(b, 3), {"mask": torch.ones(b, 3, dtype=torch.bool)})["penalty"].item() for b in (4, 4, 2))
    assert total == pytest.approx(0.1 * 5.0)


def test_no_penalty_term_when_beta_is_zero():
    assert set(amnl_loss(Tiny(), AMNLConfig(beta=0.0), groups=10)(PRED, BATCH)) == {"hinge"}


def test_trainer_logs_each_named_term():
    """A loss of named terms trains on their sum; the history logs train_loss and train_<term>."""
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = nn.Parameter(torch.tensor(2.0))

        def forward(self, batch):
            return batch["y"] * 0 + self.b

    def loss(pred, batch):
        return {"fit": ((pred - batch["y"]) ** 2).mean(), "penalty": 0.5 * pred[0] ** 2}

    y = np.zeros(8, np.float32)
    src = Source.from_arrays({"y": y}, y)
    r = Trainer(TrainConfig(lr=0.0, batch_size=4, eval_every=2, max_steps=2), loss_fn=loss).fit(Model(), src, src)
    h = r.history[-1]  # lr 0: b stays 2, so fit = 4 and penalty = 2 at every step
    assert (h["train_fit"], h["train_penalty"], h["train_loss"]) == pytest.approx((4.0, 2.0, 6.0))


@pytest.mark.parametrize("fusion", ["product", "sum"])
def test_fusion_product_is_the_paper_sum_is_f_plus_h(fusion):
    torch.manual_seed(0)
    m = AMNLModel(n_users=4, dim=3, visual_dim=2, text=None, text_dim=1, followees=[[], [2], [], []], fusion=fusion)
    b = {"user": torch.tensor([1, 2]), "visual": torch.randn(2, 2, 2), "visual_present": torch.ones(2, 2, dtype=torch.bool)}
    with torch.no_grad():
        z, u, out = m.tweets(b), m.U.weight, m(b)
        f1, h1 = z[0] @ u[1], z[0] @ u[2]  # user 1 has one followee (alpha = 1): h = u_2^T z
        torch.testing.assert_close(out[0], f1 * h1 if fusion == "product" else f1 + h1)
        torch.testing.assert_close(out[1], z[1] @ u[2])  # no followees: F = f either way (h = 1 or h = 0)


def test_unknown_penalty_or_fusion_is_a_clear_error():
    for bad in ({"penalty": "epoch"}, {"fusion": "max"}):
        with pytest.raises(PipeError, match="amnl"):
            AMNL(AMNLConfig(**bad))


def test_regime_paper_selects_the_papers_settings_exactly():
    """Issue 19: `--set regime=paper` gives the paper's product score, AdaGrad at .01 and the
    penalty once per pass; an explicit --set wins; auto at the paper's scale keeps the defaults."""
    from pipeline.train.regime import SMALL_DATA, resolve_regime

    c = AMNLConfig()
    assert (c.fusion, c.optimizer) == ("sum", "adam")  # the measured defaults differ from the paper
    paper, info = resolve_regime(AMNL, AMNLConfig(regime="paper"), 100)
    assert (paper.fusion, paper.optimizer, paper.lr, paper.penalty, paper.regime) == ("product", "adagrad", 0.01, "pass", "paper")
    assert (paper.author_bias, paper.dim, paper.beta) == (False, 400, 1e-3)  # no bias, the paper's sizes
    assert info["applied"] == AMNL.paper_settings
    mine, info = resolve_regime(AMNL, AMNLConfig(regime="paper", optimizer="sgd"), 100, {"optimizer"})
    assert (mine.fusion, mine.optimizer) == ("product", "sgd") and "optimizer" not in info["applied"]
    big, info = resolve_regime(AMNL, AMNLConfig(), SMALL_DATA)
    assert (big.regime, big.fusion, big.optimizer, info["applied"]) == ("paper", "sum", "adam", {})


def test_small_data_regime_sets_the_measured_sizes():
    from pipeline.train.regime import resolve_regime

    small, _ = resolve_regime(AMNL, AMNLConfig(), 300)
    assert (small.regime, small.dim, small.text_dim, small.lr, small.beta, small.author_bias) == ("small", 64, 64, 0.003, 0.3, True)


def test_author_bias_adds_b_a_and_unseen_authors_score_zero():
    """F + b_a: row 0 (an author unseen in training) adds nothing; without the bias the paper's F."""
    torch.manual_seed(0)
    kw = dict(n_users=3, dim=3, visual_dim=2, text=None, text_dim=1, followees=None, fusion="sum")
    m, plain = AMNLModel(**kw, n_authors=3), AMNLModel(**kw)
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("b_author")})
    with torch.no_grad():
        m.b_author.weight[:, 0] = torch.tensor([0.0, 2.0, -1.0])
    b = {"user": torch.tensor([1, 2]), "visual": torch.randn(2, 3, 2), "visual_present": torch.ones(2, 3, dtype=torch.bool),
         "author": torch.tensor([[1, 2, 0], [0, 0, 2]])}
    with torch.no_grad():
        torch.testing.assert_close(m(b) - plain(b), torch.tensor([[2.0, -1.0, 0.0], [0.0, 0.0, -1.0]]))
