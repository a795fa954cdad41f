"""Batched image augmentation on the device: one call per batch, no per-image Python.

Images arrive as a float tensor ``(B, 1, H, W)`` in [0, 1] (the cached uint8 pixels
divided by 255). One scalar, ``strength`` (0 = off, 1 = the defaults below), scales
every transform, so a search space needs a single hyperparameter::

    g = torch.Generator(device=x.device).manual_seed(0)
    x = augment_batch(x, strength=1.0, generator=g)

At ``strength=1`` each image gets, independently: a horizontal flip with probability
0.5 (left and right femurs are a nuisance, not a signal), a rotation of up to
+/-10 degrees, a scale change of up to +/-10 %, a shift of up to 5 % of the side, a
gamma change of up to exp(+/-0.3), contrast of up to +/-20 % and brightness of up to
+/-0.1, and Gaussian noise with a standard deviation up to 0.03. All draws come from
``generator``, so a seed gives the same augmentation on the same device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROTATION_DEG = 10.0
MAX_SCALE = 0.10
MAX_SHIFT = 0.05
MAX_LOG_GAMMA = 0.30
MAX_CONTRAST = 0.20
MAX_BRIGHTNESS = 0.10
MAX_NOISE = 0.03


def _uniform(n: int, low: float, high: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def augment_batch(x: torch.Tensor, strength: float, generator: torch.Generator, *, hflip: bool = True) -> torch.Tensor:
    """Return an augmented copy of ``x`` (``(B, C, H, W)`` float in [0, 1]).

    ``strength`` <= 0 returns ``x`` unchanged. The output is clamped to [0, 1] before
    noise is added, so it stays close to the input's range.
    """
    if strength <= 0:
        return x
    b, dev = x.shape[0], x.device
    g = generator
    s = float(strength)

    if hflip:
        flip = (torch.rand(b, generator=g, device=dev) < 0.5).view(b, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)

    # One affine warp for the whole batch: rotation, isotropic scale, shift.
    angle = _uniform(b, -1.0, 1.0, g, dev) * math.radians(MAX_ROTATION_DEG * s)
    scale = 1.0 + _uniform(b, -1.0, 1.0, g, dev) * MAX_SCALE * s
    shift = _uniform(2 * b, -1.0, 1.0, g, dev).view(b, 2) * (2.0 * MAX_SHIFT * s)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # Intensity: gamma, then contrast about the image mean, then brightness.
    gamma = torch.exp(_uniform(b, -1.0, 1.0, g, dev) * MAX_LOG_GAMMA * s).view(b, 1, 1, 1)
    x = x.clamp(0.0, 1.0).pow(gamma)
    contrast = (1.0 + _uniform(b, -1.0, 1.0, g, dev) * MAX_CONTRAST * s).view(b, 1, 1, 1)
    bright = (_uniform(b, -1.0, 1.0, g, dev) * MAX_BRIGHTNESS * s).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + bright).clamp(0.0, 1.0)

    sigma = (torch.rand(b, generator=g, device=dev) * MAX_NOISE * s).view(b, 1, 1, 1)
    noise = torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype)
    return x + noise * sigma
