from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from torch import nn

from monai_dclcstp.handlers import KNN_HISTORY_ATTR, KNNMonitor, balanced_accuracy, embed_images, weighted_knn_predict
from monai_dclcstp.networks import DCLCsTPNet, DualStreamEncoder


def _brute_force_knn(query, bank, labels, num_classes, k, t):
    preds = []
    for q in query:
        sims = bank @ q
        order = sorted(range(len(bank)), key=lambda i: -float(sims[i]))[:k]
        scores = [0.0] * num_classes
        for i in order:
            scores[int(labels[i])] += math.exp(float(sims[i]) / t)
        preds.append(max(range(num_classes), key=lambda c: scores[c]))
    return torch.tensor(preds)


def test_weighted_knn_matches_hand_written_vote():
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(40, 8, generator=g), dim=1)
    labels = torch.randint(0, 3, (40,), generator=g)
    query = F.normalize(torch.randn(17, 8, generator=g), dim=1)
    got = weighted_knn_predict(query, bank, labels, 3, k=5, temperature=0.1, chunk_size=4)
    assert torch.equal(got, _brute_force_knn(query, bank, labels, 3, 5, 0.1))


def test_weighted_knn_k_larger_than_bank_and_empty_bank():
    bank = F.normalize(torch.eye(3), dim=1)
    pred = weighted_knn_predict(bank, bank, torch.tensor([0, 1, 1]), 2, k=50)
    assert pred.tolist() == [0, 1, 1]  # k clipped to 3; the item itself (similarity 1) outweighs the others (0)
    with pytest.raises(ValueError, match="empty"):
        weighted_knn_predict(bank, bank[:0], torch.zeros(0, dtype=torch.long), 2)


def test_balanced_accuracy():
    target = torch.tensor([0, 0, 0, 0, 1])
    pred = torch.tensor([0, 0, 0, 0, 0])
    assert balanced_accuracy(pred, target) == pytest.approx(0.5)
    assert float((pred == target).float().mean()) == pytest.approx(0.8)


@pytest.mark.parametrize("features, dim", [("backbone", 128), ("global", 16)])
def test_embed_images_shapes_and_norm(features, dim):
    torch.manual_seed(0)
    net = DCLCsTPNet(DualStreamEncoder(2, 1, "resnet10", embed_dim=32, head_hidden_dim=32, out_dim=16)).eval()
    emb = embed_images(net, torch.rand(3, 1, 32, 32), features)
    assert emb.shape[1] == (net.backbone.feature_channels[-1] if features == "backbone" else dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="features"):
        embed_images(net, torch.rand(1, 1, 32, 32), "pixels")


class _Pool(nn.Module):
    """A "backbone" whose embedding is the mean intensity of each half of the image (separates the two classes)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        left, right = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return [torch.stack([left.mean((1, 2, 3)), right.mean((1, 2, 3))], dim=1)[..., None, None] * self.scale]


def _loader(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.1
    images[labels == 0, ..., :4] += 1.0
    images[labels == 1, ..., 4:] += 1.0
    return [{"image": images[i : i + 4], "label": labels[i : i + 4]} for i in range(0, n, 4)]


class _ListLoader(list):
    dataset = property(lambda self: [None] * sum(len(b["label"]) for b in self))


def test_monitor_records_metrics_history_and_tensorboard():
    net = _Pool()
    writes = []

    class Writer:
        def add_scalar(self, tag, value, step):
            writes.append((tag, value, step))

        def flush(self):
            pass

    monitor = KNNMonitor(net, _ListLoader(_loader(12, 0)), _ListLoader(_loader(8, 1)), k=3, summary_writer=Writer())
    engine = Engine(lambda e, b: None)
    monitor.attach(engine)
    seen = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    engine.run([0, 1], max_epochs=3)
    history = getattr(engine.state, KNN_HISTORY_ATTR)
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]  # start, every epoch
    assert all(h["accuracy"] == 1.0 and h["balanced_accuracy"] == 1.0 for h in history)
    assert history[0]["num_bank"] == 12 and history[0]["num_val"] == 8
    assert seen[0]["knn_accuracy"] == 1.0
    assert ("knn_accuracy", 1.0, 0) in writes and ("knn_balanced_accuracy", 1.0, 3) in writes
    assert net.training  # train mode restored


def test_monitor_interval_and_final_evaluation():
    monitor = KNNMonitor(
        _Pool(), _ListLoader(_loader(8, 0)), _ListLoader(_loader(4, 1)), interval=2, eval_at_start=False
    )
    engine = Engine(lambda e, b: None)
    monitor.attach(engine)
    metrics_per_epoch = []
    engine.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: metrics_per_epoch.append("knn_accuracy" in e.state.metrics)
    )
    engine.run([0], max_epochs=3)
    assert [h["epoch"] for h in monitor.history] == [2, 3]  # every 2nd epoch + the last one at COMPLETED
    assert metrics_per_epoch == [False, True, False]  # cleared at EPOCH_STARTED of epochs that are not evaluated


def test_monitor_without_labels_is_off(caplog):
    monitor = KNNMonitor(_Pool(), _ListLoader([]), _ListLoader(_loader(4, 1)))
    engine = Engine(lambda e, b: None)
    with caplog.at_level("INFO"):
        monitor.attach(engine)
    engine.run([0], max_epochs=1)
    assert monitor.history == [] and "kNN monitor off" in caplog.text


def test_monitor_with_backbone_and_global_features():
    torch.manual_seed(0)
    net = DCLCsTPNet(DualStreamEncoder(2, 1, "resnet10", embed_dim=32, head_hidden_dim=32, out_dim=16))
    loaders = [[{"image": torch.rand(4, 1, 32, 32), "label": torch.tensor([0, 1, 0, 1])}] for _ in range(2)]
    monitor = KNNMonitor(net, loaders[0], loaders[1], k=2, features=("backbone", "global"))
    engine = Engine(lambda e, b: None)
    monitor.attach(engine)
    engine.run([0], max_epochs=1)
    assert set(engine.state.metrics) == {
        "knn_accuracy",
        "knn_balanced_accuracy",
        "knn_global_accuracy",
        "knn_global_balanced_accuracy",
    }
    assert monitor.history[0]["features"] == "backbone" and 0.0 <= monitor.history[0]["global_accuracy"] <= 1.0
    with pytest.raises(ValueError, match="distinct"):
        KNNMonitor(net, loaders[0], loaders[1], features=("global", "global"))
