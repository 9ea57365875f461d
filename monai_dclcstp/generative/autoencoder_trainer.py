"""VAE-GAN training of a MONAI ``AutoencoderKL`` with MONAI's ``AdversarialTrainer`` (``_iteration`` overridden).

MONAI's ``AdversarialTrainer`` loop (generator step, then discriminator step, AMP through ``g_scaler``/``d_scaler``,
``AdversarialIterationEvents``) fits the first stage of latent diffusion except in three places, which is all this
subclass changes: ``AutoencoderKL`` returns ``(reconstruction, z_mu, z_sigma)`` (the KL term needs the posterior), the
reconstruction objective has several parts to log, and the adversarial terms are switched on only after a warm-up
(MONAI's generative tutorials: ``autoencoder_warm_up_n_epochs``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.engines import AdversarialTrainer
from monai.utils import AdversarialIterationEvents, AdversarialKeys, CommonKeys

__all__ = ["AutoencoderKLTrainer"]


def _autocast(engine: AdversarialTrainer):
    if engine.amp and engine.state.g_scaler is not None:
        return torch.autocast("cuda", **engine.amp_kwargs)
    return torch.autocast("cpu", enabled=False)


class AutoencoderKLTrainer(AdversarialTrainer):
    """Trains ``AutoencoderKL`` (generator) with L1 + KL (+ perceptual) and a patch discriminator.

    Arguments are those of ``monai.engines.AdversarialTrainer`` with these meanings:

    - ``g_network``: the ``AutoencoderKL``; ``recon_loss_function``: an
      :class:`~monai_dclcstp.generative.autoencoder_loss.AutoencoderKLLoss` ``(reconstruction, images, z_mu, z_sigma)
      -> {"loss", "loss_l1", "loss_kl", "loss_perceptual"}``.
    - ``d_network``: a ``PatchDiscriminator``, or ``None`` (with ``d_optimizer=None``, ``d_loss_function=None``) to
      train without the adversarial terms;
      ``g_loss_function``: :class:`~monai_dclcstp.generative.adversarial.PatchGeneratorLoss` ``(D(fake)) -> scalar``;
      ``d_loss_function``: :class:`~monai_dclcstp.generative.adversarial.PatchDiscriminatorLoss`
      ``(D(real), D(fake)) -> scalar``.

    Args:
        adversarial_warmup_epochs: epochs trained on the reconstruction objective only before the discriminator and
            the generator's adversarial term start (0: from the first iteration).

    ``engine.state.output`` holds ``image``, ``label`` (= image), ``pred`` (reconstruction), ``loss`` (generator
    objective), ``loss_l1``, ``loss_kl``, ``loss_perceptual``, ``loss_g_adv``, ``loss_d`` and MONAI's
    ``AdversarialKeys`` (``reconstruction_loss``, ``generator_loss``, ``discriminator_loss``, ``reals``, ``fakes``).
    """

    def __init__(self, *args: Any, adversarial_warmup_epochs: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if adversarial_warmup_epochs < 0:
            raise ValueError(f"adversarial_warmup_epochs must be >= 0, got {adversarial_warmup_epochs}.")
        if self.state.d_network is not None and self.state.d_optimizer is None:
            raise ValueError("d_network is set but d_optimizer is None.")
        self.adversarial_warmup_epochs = int(adversarial_warmup_epochs)

    def _complete_state_dict_user_keys(self) -> None:
        """Keep the engine's ``state_dict`` to epoch and iteration counters.

        ``AdversarialTrainer`` adds its networks, optimizers, scalers and losses to the engine's state dict as whole
        Python objects: a checkpoint holding the engine could then only be read with ``torch.load(weights_only=False)``
        and resuming would replace the live networks. The bundle saves those objects' own ``state_dict`` in the
        checkpoint's ``save_dict`` instead.
        """

    def adversarial_active(self, engine: AdversarialTrainer) -> bool:
        """Whether the adversarial terms are trained in the current epoch (1-based)."""
        return engine.state.d_network is not None and engine.state.epoch > self.adversarial_warmup_epochs

    def _iteration(self, engine: AdversarialTrainer, batchdata: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        images = batch[0]
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        adversarial = self.adversarial_active(engine)
        g_net, d_net = engine.state.g_network, engine.state.d_network
        out: dict[str, Any] = {CommonKeys.IMAGE: images, CommonKeys.LABEL: images, AdversarialKeys.REALS: images}
        engine.state.output = out

        # generator (autoencoder) step
        g_net.train()
        engine.state.g_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with _autocast(engine):
            reconstruction, z_mu, z_sigma = engine.g_inferer(images, g_net)
            out[AdversarialKeys.FAKES] = out[CommonKeys.PRED] = reconstruction
            engine.fire_event(AdversarialIterationEvents.GENERATOR_FORWARD_COMPLETED)
            parts = engine.state.recon_loss_function(reconstruction, images, z_mu, z_sigma)
            engine.fire_event(AdversarialIterationEvents.RECONSTRUCTION_LOSS_COMPLETED)
            g_adv = torch.zeros((), device=images.device)
            if adversarial:
                fake_logits = engine.d_inferer(reconstruction.float().contiguous(), d_net)
                engine.fire_event(AdversarialIterationEvents.GENERATOR_DISCRIMINATOR_FORWARD_COMPLETED)
                g_adv = engine.state.g_loss_function(fake_logits)
                engine.fire_event(AdversarialIterationEvents.GENERATOR_LOSS_COMPLETED)
            g_loss = parts["loss"] + g_adv
        self._backward_step(engine, g_loss, engine.state.g_optimizer, engine.state.g_scaler)
        engine.fire_event(AdversarialIterationEvents.GENERATOR_BACKWARD_COMPLETED)
        engine.fire_event(AdversarialIterationEvents.GENERATOR_MODEL_COMPLETED)

        # discriminator step
        d_loss = torch.zeros((), device=images.device)
        if adversarial:
            d_net.train()
            engine.state.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            with _autocast(engine):
                real_logits = engine.d_inferer(images.contiguous().detach(), d_net)
                engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_REALS_FORWARD_COMPLETED)
                fake_logits = engine.d_inferer(reconstruction.float().contiguous().detach(), d_net)
                engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_FAKES_FORWARD_COMPLETED)
                d_loss = engine.state.d_loss_function(real_logits, fake_logits)
                engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED)
            self._backward_step(engine, d_loss, engine.state.d_optimizer, engine.state.d_scaler)
            engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_BACKWARD_COMPLETED)

        out[CommonKeys.LOSS] = g_loss.detach()
        out[AdversarialKeys.RECONSTRUCTION_LOSS] = parts["loss"].detach()
        out[AdversarialKeys.GENERATOR_LOSS] = g_adv.detach()
        out[AdversarialKeys.DISCRIMINATOR_LOSS] = d_loss.detach()
        out["loss_l1"] = parts["loss_l1"].detach()
        out["loss_kl"] = parts["loss_kl"].detach()
        out["loss_perceptual"] = parts["loss_perceptual"].detach()
        out["loss_g_adv"] = g_adv.detach()
        out["loss_d"] = d_loss.detach()
        out[CommonKeys.PRED] = reconstruction.detach()
        out[AdversarialKeys.FAKES] = out[CommonKeys.PRED]
        return out

    @staticmethod
    def _backward_step(
        engine: AdversarialTrainer,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        scaler: Callable | None,
    ) -> None:
        if engine.amp and scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
