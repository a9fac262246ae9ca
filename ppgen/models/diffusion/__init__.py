"""Denoising diffusion models: the DDPM family, its schedules, samplers and bound."""

from .ddpm import DDPM

__all__ = ["DDPM"]
