"""Scheduler factory: one name picks a MONAI scheduler or a diffusers solver behind the MONAI interface.

Config use::

    "noise_scheduler": {"_target_": "monai_dclcstp.generative.build_scheduler", "name": "ddpm",
                        "schedule": "scaled_linear_beta", "beta_start": 0.0015, "beta_end": 0.0195}
    "sampling_scheduler": "$monai_dclcstp.generative.build_scheduler('sde_dpm_solver++',
                           schedule='scaled_linear_beta', beta_start=0.0015, beta_end=0.0195)"

Stochastic or deterministic: DDPM, ``"sde_dpm_solver++"`` (SDE-DPM-Solver++ 2M) and DDIM with ``eta=1`` add fresh noise
at every step; DDIM (``eta=0``), ``"dpm_solver++"``, UniPC and PNDM integrate the probability-flow ODE. With an exact
noise prediction both reach the data distribution, but the ODE carries every error of the network along to the end,
while the noise of the stochastic samplers washes errors of the early (high-noise) steps out (Song et al. 2021, section
4.3; Karras et al. 2022, section 4). On the bundle's PneumoniaMNIST model (``benchmarks/bench_ldm_sampling.py``) the ODE
solvers' latents had 1.25-1.7x the per-channel spread of the real latents and their KID was 18-20x DDPM 1000's,
whatever the step count (DDIM 50 and DDIM 200 alike), while SDE-DPM-Solver++ 20 and DDIM 50 with ``eta=1`` were close
to DDPM; hence the stochastic default of the bundle.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler, Scheduler

__all__ = ["build_scheduler", "SCHEDULER_NAMES", "EtaDDIMScheduler"]


class EtaDDIMScheduler(DDIMScheduler):
    """MONAI's DDIM with the amount of fresh noise per step, ``eta``, fixed at construction.

    MONAI's inferers call ``scheduler.step(model_output, t, sample)`` and cannot pass ``eta``; this subclass makes it a
    property of the scheduler, so ``build_scheduler("ddim", eta=1.0)`` gives the stochastic DDIM (``eta=1``: the DDPM
    posterior variance on DDIM's coarse timesteps; ``eta=0``: MONAI's deterministic DDIM, step for step).

    Args:
        eta: weight of the noise added at each step, in ``[0, 1]`` (Song et al., DDIM, eq. 16).
        kwargs: ``monai.networks.schedulers.DDIMScheduler`` arguments.
    """

    def __init__(self, eta: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"DDIM eta must be in [0, 1], got {eta}.")
        self.eta = float(eta)

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MONAI's DDIM step with ``eta`` defaulting to the scheduler's (see ``DDIMScheduler.step``)."""
        return super().step(model_output, timestep, sample, eta=self.eta if eta is None else eta, generator=generator)


_MONAI = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "monai_pndm": PNDMScheduler}
# name -> (diffusers class, defaults that make the name mean what it says)
_DIFFUSERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpm_solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    # log-SNR-uniform steps (DPM-Solver's own choice): diffusers' default, uniform in t, makes 20-step samples too
    # narrow (std 0.37 instead of 0.40 in the PneumoniaMNIST model's narrowest latent channel; 20 % too narrow for a
    # Gaussian with an exact denoiser, tests/generative/test_stochastic_sampling.py)
    "sde_dpm_solver++": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_lu_lambdas": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": True}),
    "diffusers_ddim": ("DDIMScheduler", {"timestep_spacing": "linspace"}),
    "diffusers_ddpm": ("DDPMScheduler", {}),
}
_ALIASES = {
    "dpmsolver++": "dpm_solver++",
    "dpm-solver++": "dpm_solver++",
    "dpmpp": "dpm_solver++",
    "sde-dpm-solver++": "sde_dpm_solver++",
    "sde-dpmsolver++": "sde_dpm_solver++",
    "sde_dpmsolver++": "sde_dpm_solver++",
}

#: names accepted by :func:`build_scheduler`.
SCHEDULER_NAMES = tuple(_MONAI) + tuple(_DIFFUSERS)


def build_scheduler(
    name: str = "ddpm",
    num_train_timesteps: int = 1000,
    schedule: str = "linear_beta",
    prediction_type: str = "epsilon",
    clip_sample: bool = False,
    **kwargs: Any,
) -> Scheduler:
    """Create a noise scheduler by name.

    ``"ddpm"``, ``"ddim"`` and ``"monai_pndm"`` give MONAI's own schedulers (``"ddim"`` with ``eta`` > 0: the
    stochastic :class:`EtaDDIMScheduler`); ``"dpm_solver++"`` (DPM-Solver++ 2M, ODE), ``"sde_dpm_solver++"``
    (SDE-DPM-Solver++ 2M, stochastic), ``"unipc"``, ``"pndm"`` (PLMS, diffusers' PNDM without Runge-Kutta warm-up),
    ``"diffusers_ddim"`` and ``"diffusers_ddpm"`` give a diffusers solver wrapped by
    :class:`~monai_dclcstp.generative.scheduler_adapter.DiffusersSchedulerAdapter` (diffusers is imported only then).

    MONAI's ``"ddpm"`` samples correctly only with all ``num_train_timesteps`` steps (its ``step`` assumes consecutive
    timesteps; :func:`~monai_dclcstp.generative.sampling.sample_images` refuses fewer); for fewer stochastic steps use
    ``"sde_dpm_solver++"``, ``"ddim"`` with ``eta=1`` or ``"diffusers_ddpm"``.

    ``"pndm"`` is diffusers' implementation because MONAI 1.6's ``PNDMScheduler`` does not recover the clean sample
    from an exact noise prediction at low step counts (error 1.3 with Runge-Kutta warm-up and 10 steps, 0.12 without,
    where diffusers' is exact to 1e-6, with the exact denoiser of ``test_schedulers_recover_point_mass`` in
    ``tests/generative/test_scheduler_adapter.py``); ``"monai_pndm"`` keeps MONAI's. diffusers' PNDM mixes raw ``v``
    outputs across steps, so ``"pndm"`` accepts only ``"epsilon"``.

    All of them work with ``monai.inferers.DiffusionInferer``/``LatentDiffusionInferer`` and share the betas of the
    MONAI ``schedule``, so a network trained with ``build_scheduler("ddpm", ...)`` can be sampled with any of them
    given the same ``num_train_timesteps``, ``schedule``, schedule arguments and ``prediction_type``.

    Args:
        name: scheduler name, one of :data:`SCHEDULER_NAMES` (also ``"dpmsolver++"``, ``"dpm-solver++"``).
        num_train_timesteps: number of diffusion steps used in training.
        schedule: MONAI noise schedule: ``"linear_beta"``, ``"scaled_linear_beta"``, ``"sigmoid_beta"``, ``"cosine"``.
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        clip_sample: clip the predicted ``x_0`` to ``[-1, 1]``. Off by default, unlike MONAI's DDPM/DDIM defaults,
            because latents scaled to unit variance are not confined to ``[-1, 1]``; only for the DDPM/DDIM names.
        kwargs: schedule arguments (``beta_start``, ``beta_end``, ``sig_range``, ``s``) and scheduler options
            (MONAI: e.g. ``variance_type``, ``set_alpha_to_one``, ``steps_offset``, ``skip_prk_steps``, ``eta`` for
            ``"ddim"``; diffusers: e.g. ``solver_order``, ``timestep_spacing``, ``use_karras_sigmas``).

    Returns:
        a ``monai.networks.schedulers.Scheduler`` with ``set_timesteps``, ``timesteps``, ``step``, ``add_noise``.

    Raises:
        ValueError: unknown name, or an option the chosen scheduler does not have.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key in _MONAI:
        cls = _MONAI[key]
        if key == "ddim" and "eta" in kwargs:
            cls = EtaDDIMScheduler
        if cls is PNDMScheduler:
            if clip_sample:
                raise ValueError("PNDM cannot clip the predicted sample; use clip_sample=False.")
        else:
            kwargs["clip_sample"] = clip_sample
        try:
            return cls(
                num_train_timesteps=num_train_timesteps, schedule=schedule, prediction_type=prediction_type, **kwargs
            )
        except TypeError as e:
            raise ValueError(f"invalid option for MONAI {cls.__name__} ({name!r}): {e}") from e
    if key in _DIFFUSERS:
        from .scheduler_adapter import DiffusersSchedulerAdapter

        if key == "pndm" and prediction_type != "epsilon":
            raise ValueError(f"'pndm' supports prediction_type='epsilon' only, got {prediction_type!r}.")

        diffusers_name, defaults = _DIFFUSERS[key]
        return DiffusersSchedulerAdapter(
            diffusers_name,
            num_train_timesteps=num_train_timesteps,
            schedule=schedule,
            prediction_type=prediction_type,
            clip_sample=clip_sample,
            **{**defaults, **kwargs},
        )
    raise ValueError(f"unknown scheduler name {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}.")
