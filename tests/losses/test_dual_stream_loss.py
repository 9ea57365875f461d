"""DualStreamLoss: (1 - λ) g + λ l exactly, both terms symmetric, queue updated once per step after both terms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_dclcstp.losses import DenseInfoNCELoss, DualStreamLoss, GlobalInfoNCELoss

B, D, GRID = 3, 8, (2, 3)


def _outputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for view in (1, 2):
        for role in ("q", "k"):
            out[f"global_{role}{view}"] = F.normalize(torch.randn(B, D, generator=g), dim=1)
            out[f"local_{role}{view}"] = F.normalize(torch.randn(B, D, *GRID, generator=g), dim=1)
    return out


GEOM1 = torch.tensor([[[0, 0], [16, 24], [0, 0]]] * B, dtype=torch.float32)
GEOM2 = torch.tensor([[[4, 6], [12, 18], [0, 1]]] * B, dtype=torch.float32)


def _separate_terms(out, temperature=0.2, local_temperature=0.2, negatives="batch"):
    g = GlobalInfoNCELoss(temperature, queue_size=0, embed_dim=D)
    loc = DenseInfoNCELoss(local_temperature, negatives=negatives)
    loss_g = (g(out["global_q1"], out["global_k2"]) + g(out["global_q2"], out["global_k1"])) / 2
    loss_l = (
        loc(out["local_q1"], out["local_k2"], GEOM1, GEOM2) + loc(out["local_q2"], out["local_k1"], GEOM2, GEOM1)
    ) / 2
    return loss_g, loss_l


@pytest.mark.parametrize("lambda_local", [0.0, 0.25, 0.5, 1.0])
def test_combination(lambda_local):
    out = _outputs()
    result = DualStreamLoss(lambda_local=lambda_local, temperature=0.2, embed_dim=D)(out, GEOM1, GEOM2)
    assert set(result) == {"loss", "loss_global", "loss_local"}
    expected_g, expected_l = _separate_terms(out)
    assert expected_g > 0 and expected_l > 0
    if lambda_local < 1.0:
        torch.testing.assert_close(result["loss_global"], expected_g)
    else:
        assert result["loss_global"].item() == 0.0  # skipped term is a zero tensor
    if lambda_local > 0.0:
        torch.testing.assert_close(result["loss_local"], expected_l)
    else:
        assert result["loss_local"].item() == 0.0
    torch.testing.assert_close(result["loss"], (1 - lambda_local) * expected_g + lambda_local * expected_l)
    torch.testing.assert_close(
        result["loss"], (1 - lambda_local) * result["loss_global"] + lambda_local * result["loss_local"]
    )


def test_local_temperature_and_negatives_are_passed_on():
    out = _outputs(1)
    result = DualStreamLoss(0.5, temperature=0.3, local_temperature=0.7, local_negatives="image", embed_dim=D)(
        out, GEOM1, GEOM2
    )
    expected_g, expected_l = _separate_terms(out, 0.3, 0.7, "image")
    torch.testing.assert_close(result["loss_global"], expected_g)
    torch.testing.assert_close(result["loss_local"], expected_l)


def test_loss_is_symmetric_in_the_views():
    out = _outputs(2)
    swapped = {k.replace("1", "#").replace("2", "1").replace("#", "2"): v for k, v in out.items()}
    loss_fn = DualStreamLoss(0.5, embed_dim=D)
    torch.testing.assert_close(loss_fn(out, GEOM1, GEOM2)["loss"], loss_fn(swapped, GEOM2, GEOM1)["loss"])


def test_queue_updated_once_per_step_after_both_terms():
    loss_fn = DualStreamLoss(0.5, temperature=0.2, queue_size=2 * B * 2, embed_dim=D)
    out1, out2 = _outputs(3), _outputs(4)
    first = loss_fn(out1, GEOM1, GEOM2)
    torch.testing.assert_close(first["loss_global"], _separate_terms(out1)[0])  # the queue was empty for both terms
    queue = loss_fn.global_loss.queued_keys()
    assert torch.equal(queue, torch.cat([out1["global_k1"], out1["global_k2"]]))  # both views' keys, once
    second = loss_fn(out2, GEOM1, GEOM2)
    g = GlobalInfoNCELoss(0.2, queue_size=2 * B, embed_dim=D)
    g.enqueue(queue)
    expected = (
        g(out2["global_q1"], out2["global_k2"], update_queue=False)
        + g(out2["global_q2"], out2["global_k1"], update_queue=False)
    ) / 2
    torch.testing.assert_close(second["loss_global"], expected)
    assert int(loss_fn.global_loss.queue_filled) == 4 * B


def test_local_only_does_not_touch_the_queue():
    loss_fn = DualStreamLoss(1.0, queue_size=8, embed_dim=D)
    loss_fn(_outputs(), GEOM1, GEOM2)
    assert int(loss_fn.global_loss.queue_filled) == 0


def test_without_geometry_falls_back_to_feature_matching():
    out = _outputs(5)
    result = DualStreamLoss(1.0, embed_dim=D)(out)
    loc = DenseInfoNCELoss(0.2)
    expected = (loc(out["local_q1"], out["local_k2"]) + loc(out["local_q2"], out["local_k1"])) / 2
    torch.testing.assert_close(result["loss"], expected)


@pytest.mark.parametrize("lambda_local", [-0.1, 1.5])
def test_bad_lambda(lambda_local):
    with pytest.raises(ValueError, match="lambda_local"):
        DualStreamLoss(lambda_local)


@pytest.mark.parametrize("lambda_local", [0.0, 0.5, 1.0])
def test_asymmetric_outputs_give_one_sided_terms_and_queue_only_k2(lambda_local):
    out = {k: v for k, v in _outputs(5).items() if k.endswith(("q1", "k2"))}  # DCLCsTPNet(symmetric=False)
    loss_fn = DualStreamLoss(lambda_local, temperature=0.2, queue_size=4 * B, embed_dim=D)
    result = loss_fn(out, GEOM1, GEOM2)
    expected_g = GlobalInfoNCELoss(0.2, queue_size=0, embed_dim=D)(out["global_q1"], out["global_k2"])
    expected_l = DenseInfoNCELoss(0.2)(out["local_q1"], out["local_k2"], GEOM1, GEOM2)
    torch.testing.assert_close(result["loss"], (1 - lambda_local) * expected_g + lambda_local * expected_l)
    if lambda_local < 1.0:
        assert torch.equal(loss_fn.global_loss.queued_keys(), out["global_k2"])  # B keys, not 2B
    else:
        assert int(loss_fn.global_loss.queue_filled) == 0
