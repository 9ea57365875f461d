"""Class-conditional pieces: counts, sampling plan, label routing, guidance and latent training batches."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from monai.inferers import DiffusionInferer

from monai_dclcstp.generative import (
    ClassConditionalDiffusionUNet,
    LatentDiffusionPrepareBatch,
    build_scheduler,
    class_conditioned,
    class_counts,
    class_sampling_plan,
    latent_shape,
    sample_images,
)


@pytest.mark.parametrize(
    "total,num_classes,weights,expected",
    [
        (10, 3, None, [4, 3, 3]),
        (9, 3, None, [3, 3, 3]),
        (0, 2, None, [0, 0]),
        (100, None, [0.74, 0.26], [74, 26]),
        (7, None, [1, 0, 1], [4, 0, 3]),
        (5, None, [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]),
    ],
)
def test_class_counts_exact(total, num_classes, weights, expected):
    counts = class_counts(total, num_classes=num_classes, weights=weights)
    assert counts == expected
    assert sum(counts) == total


def test_class_counts_errors():
    with pytest.raises(ValueError, match="num_classes"):
        class_counts(10)
    with pytest.raises(ValueError, match="weights"):
        class_counts(10, weights=[0, 0])
    with pytest.raises(ValueError, match="weights"):
        class_counts(10, weights=[1, -1])
    with pytest.raises(ValueError, match="num_samples"):
        class_counts(-1, 2)


@pytest.mark.parametrize("counts", [[5, 0, 7], {0: 3, 4: 2}, [1], [0, 0]])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 100])
@pytest.mark.parametrize("shuffle", [False, True])
def test_sampling_plan_respects_counts(counts, batch_size, shuffle):
    plan = class_sampling_plan(counts, batch_size, shuffle=shuffle, seed=3)
    got = Counter(label for batch in plan for label in batch)
    want = dict(counts) if isinstance(counts, dict) else dict(enumerate(counts))
    assert {c: got.get(c, 0) for c in want} == want
    assert set(got) <= set(want)
    assert all(len(b) == batch_size for b in plan[:-1]) and all(0 < len(b) <= batch_size for b in plan)


def test_sampling_plan_shuffle_is_seeded_and_mixes():
    a = class_sampling_plan([20, 20], 8, shuffle=True, seed=1)
    assert a == class_sampling_plan([20, 20], 8, shuffle=True, seed=1)
    assert a != class_sampling_plan([20, 20], 8, shuffle=False)
    with pytest.raises(ValueError, match="batch_size"):
        class_sampling_plan([1], 0)
    with pytest.raises(ValueError, match="non-negative"):
        class_sampling_plan({0: -1}, 2)


def test_class_conditional_unet_routes_context(tiny_unet):
    net = tiny_unet(2, num_class_embeds=3, cls=ClassConditionalDiffusionUNet)
    plain = tiny_unet(2, num_class_embeds=3)  # same seed -> same weights
    plain.load_state_dict(net.state_dict())
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        expected = plain(x, t, class_labels=labels)
        torch.testing.assert_close(net(x, t, context=labels), expected)
        torch.testing.assert_close(net(x, t, context=labels[:, None].float()), expected)
        torch.testing.assert_close(net(x, t, class_labels=labels), expected)
        assert not torch.allclose(net(x, t, context=torch.tensor([1, 1])), expected)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        net(x, t, context=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="2 class labels"):
        net(x, t, context=torch.tensor([0]))
    with pytest.raises(ValueError, match="integers"):
        net(x, t, context=torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="num_class_embeds"):
        tiny_unet(2, cls=ClassConditionalDiffusionUNet)


def test_inferer_sampling_with_class_labels_and_guidance(tiny_unet):
    net = tiny_unet(2, num_class_embeds=3)  # 2 classes + null label 2
    noise = torch.randn(2, 1, 16, 16)
    labels = torch.tensor([0, 1])
    scheduler = build_scheduler("ddim")
    a = sample_images(net, scheduler, noise, num_inference_steps=4, class_labels=labels)
    b = sample_images(net, scheduler, noise, num_inference_steps=4, class_labels=labels.flip(0))
    assert a.shape == noise.shape and not torch.allclose(a, b)
    # guidance scale 1 is plain conditional sampling; another scale changes the result
    g1 = sample_images(
        net, scheduler, noise, num_inference_steps=4, class_labels=labels, guidance_scale=1.0, null_class_label=2
    )
    torch.testing.assert_close(g1, a)
    g3 = sample_images(
        net, scheduler, noise, num_inference_steps=4, class_labels=labels, guidance_scale=3.0, null_class_label=2
    )
    assert not torch.allclose(g3, a)
    # guidance formula on one call
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([100.0])
    with torch.no_grad():
        f = class_conditioned(net, labels, guidance_scale=3.0, null_class_label=2)
        cond, uncond = net(x, t, class_labels=labels), net(x, t, class_labels=torch.tensor([2, 2]))
        torch.testing.assert_close(f(x, t), uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="null_class_label"):
        class_conditioned(net, labels, guidance_scale=2.0)
    with pytest.raises(ValueError, match="class_labels"):
        sample_images(net, scheduler, noise, num_inference_steps=2)


def test_latent_prepare_batch_trains_with_supervised_trainer(tiny_unet, tiny_autoencoder):
    from monai.engines import SupervisedTrainer

    ae = tiny_autoencoder(2)
    unet = tiny_unet(2, in_channels=3, num_class_embeds=3, cls=ClassConditionalDiffusionUNet).train()
    scheduler = build_scheduler("ddpm")
    prepare = LatentDiffusionPrepareBatch(
        ae, num_train_timesteps=1000, scale_factor=0.5, condition_name="label", label_dropout=0.5, null_label=2
    )
    batch = {"image": torch.rand(4, 1, 16, 16), "label": torch.tensor([0, 1, 0, 1])}
    torch.manual_seed(0)
    latents, target, args, kwargs = prepare(batch, device="cpu")
    assert latents.shape == (4, *latent_shape(ae, (16, 16))) and target.shape == latents.shape
    assert torch.equal(target, kwargs["noise"]) and args == ()
    assert kwargs["timesteps"].shape == (4,) and set(kwargs["condition"].tolist()) <= {0, 1, 2}

    loader = [batch, batch]
    optimizer = torch.optim.Adam(unet.parameters(), 1e-3)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=unet,
        optimizer=optimizer,
        loss_function=torch.nn.MSELoss(),
        inferer=DiffusionInferer(scheduler),
        prepare_batch=prepare,
    )
    before = [p.detach().clone() for p in unet.parameters()]
    trainer.run()
    assert torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))
    assert any(not torch.equal(p, q) for p, q in zip(before, unet.parameters()))


def test_latent_prepare_batch_dropout_and_targets(tiny_autoencoder):
    ae = tiny_autoencoder(2)
    batch = {"image": torch.rand(64, 1, 8, 8), "label": torch.zeros(64, dtype=torch.long)}
    torch.manual_seed(0)
    _, _, _, kw = LatentDiffusionPrepareBatch(ae, 1000, condition_name="label", label_dropout=0.5, null_label=5)(batch)
    dropped = (kw["condition"] == 5).float().mean().item()
    assert 0.25 < dropped < 0.75 and set(kw["condition"].tolist()) == {0, 5}
    scheduler = build_scheduler("ddpm")
    latents, target, _, kw = LatentDiffusionPrepareBatch(ae, 1000, prediction_type="v_prediction", scheduler=scheduler)(
        batch
    )
    torch.testing.assert_close(target, scheduler.get_velocity(latents, kw["noise"], kw["timesteps"]))
    latents, target, _, _ = LatentDiffusionPrepareBatch(ae, 1000, prediction_type="sample", sample_posterior=False)(
        batch
    )
    torch.testing.assert_close(target, latents)
    with pytest.raises(ValueError, match="null_label"):
        LatentDiffusionPrepareBatch(ae, 1000, condition_name="label", label_dropout=0.1)
    with pytest.raises(ValueError, match="scheduler"):
        LatentDiffusionPrepareBatch(ae, 1000, prediction_type="v_prediction")
    with pytest.raises(KeyError, match="class"):
        LatentDiffusionPrepareBatch(ae, 1000, condition_name="class")(batch)
