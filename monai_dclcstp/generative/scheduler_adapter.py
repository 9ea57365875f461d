"""The one place where diffusers is used: a diffusers noise scheduler behind MONAI's scheduler interface.

MONAI's samplers (``DiffusionInferer.sample``, ``LatentDiffusionInferer.sample``) call
``scheduler.step(model_output, t, image)`` for every ``t`` in ``scheduler.timesteps`` and unpack two values. diffusers
has fast multistep solvers that MONAI lacks (DPM-Solver++, https://arxiv.org/abs/2211.01095; UniPC,
https://arxiv.org/abs/2302.04867), so :class:`DiffusersSchedulerAdapter` wraps one of them and exposes MONAI's
interface: ``num_train_timesteps``, ``timesteps``, ``set_timesteps(num_inference_steps, device)``,
``step(model_output, timestep, sample) -> (prev_sample, pred_original_sample)``, ``add_noise`` and ``get_velocity``.

The noise schedule is computed by MONAI (``monai.networks.schedulers.NoiseSchedules``: ``linear_beta``,
``scaled_linear_beta``, ``sigmoid_beta``, ``cosine`` or any registered one) and handed to diffusers as ``trained_betas``,
so the wrapped solver sees exactly the betas the network was trained with (diffusers has no ``sigmoid_beta``, and its
``linear``/``scaled_linear``/``squaredcos_cap_v2`` would only match MONAI's up to float rounding).

No other module of ``monai_dclcstp`` imports diffusers; this one imports it lazily, on first construction.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from monai.networks.schedulers import NoiseSchedules, Scheduler
from monai.utils import unsqueeze_right

__all__ = ["DiffusersSchedulerAdapter", "SUPPORTED_DIFFUSERS_SCHEDULERS", "PREDICTION_TYPES"]

#: diffusers schedulers whose ``scale_model_input`` is the identity and whose ``init_noise_sigma`` is 1 (variance
#: preserving, discrete time), i.e. those that can run inside MONAI's sampling loop, which calls neither.
SUPPORTED_DIFFUSERS_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
)

#: prediction types shared by MONAI (``DDPMPredictionType``) and diffusers.
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

# set by the adapter itself; passing them in kwargs is an error
_RESERVED = ("num_train_timesteps", "trained_betas", "beta_start", "beta_end", "beta_schedule", "prediction_type")


def _diffusers_class(name: str) -> type:
    if name not in SUPPORTED_DIFFUSERS_SCHEDULERS:
        raise ValueError(
            f"diffusers scheduler {name!r} is not supported by DiffusersSchedulerAdapter; "
            f"choose one of {', '.join(SUPPORTED_DIFFUSERS_SCHEDULERS)}."
        )
    diffusers = importlib.import_module("diffusers")
    return getattr(diffusers, name)


class DiffusersSchedulerAdapter(Scheduler):
    """A diffusers scheduler with MONAI's ``Scheduler`` interface, usable by MONAI's inferers.

    Example::

        scheduler = DiffusersSchedulerAdapter("DPMSolverMultistepScheduler", schedule="scaled_linear_beta",
                                              beta_start=0.0015, beta_end=0.0195)
        scheduler.set_timesteps(20)
        images = LatentDiffusionInferer(scheduler, scale_factor=sf).sample(noise, autoencoder, unet, verbose=False)

    Args:
        scheduler: class name of the diffusers scheduler, one of :data:`SUPPORTED_DIFFUSERS_SCHEDULERS`.
        num_train_timesteps: number of diffusion steps the network was trained with.
        schedule: name of a MONAI noise schedule (``NoiseSchedules``), e.g. ``"linear_beta"``,
            ``"scaled_linear_beta"``, ``"sigmoid_beta"``, ``"cosine"``.
        prediction_type: what the network predicts: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        clip_sample: clip the predicted original sample to ``[clip_sample_min, clip_sample_max]`` (only for diffusers
            schedulers that have this option: DDPM, DDIM; the range must be symmetric).
        clip_sample_min: lower clipping bound, must equal ``-clip_sample_max``.
        clip_sample_max: upper clipping bound.
        kwargs: keyword arguments of the noise schedule function (e.g. ``beta_start``, ``beta_end``, ``sig_range``,
            ``s``) go to MONAI's schedule; every other keyword goes to the diffusers scheduler's constructor (e.g.
            ``solver_order``, ``algorithm_type``, ``timestep_spacing``, ``steps_offset``, ``set_alpha_to_one``,
            ``use_karras_sigmas``).

    Raises:
        ValueError: unknown scheduler, schedule, prediction type or keyword; clipping requested where the diffusers
            scheduler cannot clip.
    """

    def __init__(
        self,
        scheduler: str = "DPMSolverMultistepScheduler",
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
        clip_sample_min: float = -1.0,
        clip_sample_max: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if schedule not in NoiseSchedules.names:
            raise ValueError(f"unknown noise schedule {schedule!r}; MONAI's NoiseSchedules has {NoiseSchedules.names}.")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        schedule_params = inspect.signature(NoiseSchedules[schedule]).parameters
        schedule_args = {k: kwargs.pop(k) for k in list(kwargs) if k in schedule_params and k != "num_train_timesteps"}
        super().__init__(num_train_timesteps=num_train_timesteps, schedule=schedule, **schedule_args)

        cls = _diffusers_class(scheduler)
        accepted = inspect.signature(cls.__init__).parameters
        for key in kwargs:
            if key in _RESERVED or key not in accepted:
                raise ValueError(
                    f"{key!r} is neither an argument of the noise schedule {schedule!r} ({sorted(schedule_params)}) "
                    f"nor a settable option of diffusers' {scheduler}."
                )
        config: dict[str, Any] = dict(kwargs)
        config.update(
            num_train_timesteps=num_train_timesteps,
            trained_betas=self.betas.double().numpy(),
            prediction_type=prediction_type,
        )
        if "clip_sample" in accepted:
            config["clip_sample"] = bool(clip_sample)
            if clip_sample:
                if clip_sample_min != -clip_sample_max:
                    raise ValueError(
                        f"diffusers clips symmetrically; got clip_sample_min={clip_sample_min}, "
                        f"clip_sample_max={clip_sample_max}."
                    )
                config["clip_sample_range"] = float(clip_sample_max)
        elif clip_sample:
            raise ValueError(
                f"diffusers' {scheduler} cannot clip the predicted sample (clip_sample=True); "
                "use clip_sample=False, or thresholding=True for dynamic thresholding."
            )

        self.diffusers_scheduler = cls(**config)
        self.diffusers_name = scheduler
        self._step_takes_generator = "generator" in inspect.signature(cls.step).parameters
        self.prediction_type = prediction_type
        self.clip_sample = bool(clip_sample)
        self.clip_sample_values = [clip_sample_min, clip_sample_max]
        self.init_noise_sigma = 1.0
        self.set_timesteps(num_train_timesteps)

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Set the discrete timesteps of the sampling chain and reset the solver's history.

        Args:
            num_inference_steps: number of network evaluations (for PNDM with PRK steps diffusers adds some).
            device: device of ``timesteps``; leave ``None`` for MONAI's inferers, which concatenate it with a CPU
                tensor.
        """
        if not 0 < num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {self.num_train_timesteps}] (num_train_timesteps), "
                f"got {num_inference_steps}."
            )
        self.diffusers_scheduler.set_timesteps(num_inference_steps, device=device)
        sigma = float(getattr(self.diffusers_scheduler, "init_noise_sigma", 1.0))
        if abs(sigma - 1.0) > 1e-6:
            raise ValueError(f"{self.diffusers_name} expects initial noise scaled by {sigma}; MONAI's loop cannot.")
        self.num_inference_steps = num_inference_steps
        self.timesteps = self.diffusers_scheduler.timesteps.long()

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One solver step ``x_t -> x_{t_prev}``; must be called for the timesteps in order, after ``set_timesteps``.

        Args:
            model_output: network output at ``timestep``, shape ``(B, C, *spatial)``.
            timestep: current timestep, an element of ``self.timesteps``.
            sample: current sample ``x_t``, shape ``(B, C, *spatial)``.
            generator: random generator for stochastic schedulers (DDPM, DDIM with ``eta > 0``).
            kwargs: further keyword arguments of the diffusers ``step`` (e.g. ``eta`` for DDIM).

        Returns:
            ``(prev_sample, pred_original_sample)``, both shaped like ``sample``. When the diffusers scheduler does not
            report the predicted original sample it is computed from ``model_output`` (not clipped).
        """
        if generator is not None and self._step_takes_generator:
            kwargs["generator"] = generator
        out = self.diffusers_scheduler.step(model_output, timestep, sample, return_dict=True, **kwargs)
        pred_original = getattr(out, "pred_original_sample", None)
        if pred_original is None:
            pred_original = self._predict_original(model_output, timestep, sample)
        return out.prev_sample, pred_original

    def _predict_original(
        self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor
    ) -> torch.Tensor:
        t = int(timestep)
        alpha_prod = unsqueeze_right(self.alphas_cumprod[t : t + 1], sample.ndim).to(sample.device, sample.dtype)
        beta_prod = 1 - alpha_prod
        if self.prediction_type == "epsilon":
            return (sample - beta_prod**0.5 * model_output) / alpha_prod**0.5
        if self.prediction_type == "v_prediction":
            return alpha_prod**0.5 * sample - beta_prod**0.5 * model_output
        return model_output

    def extra_repr(self) -> str:
        return f"{self.diffusers_name}, num_train_timesteps={self.num_train_timesteps}, " + (
            f"prediction_type={self.prediction_type!r}, num_inference_steps={self.num_inference_steps}"
        )
