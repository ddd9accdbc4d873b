"""The model registry: name -> model class, config dataclass, the data it eats, size presets.

Every model takes a batch dict (see :mod:`lcgen.masking`) in ``forward_batch`` and returns at
least ``reconstructed`` (B, L) and ``encoded``; ``latents(batch)`` returns its latent levels by
name, each ``(h (B, L', D), valid (B, L') bool)`` (what ``lcgen embed`` pools). Each keeps its
resolved config as ``.config``, and ``cls(config_cls(**dict_of_config))`` rebuilds it.

    >>> model = create_model("unet", "tiny", input_length=256)
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from torch import nn

from lcgen.errors import LcgenError
from lcgen.models.mlp import MLPAutoencoder, MLPConfig
from lcgen.models.multimodal import MultimodalConfig, MultimodalModel
from lcgen.models.transformer import TimeSeriesTransformer, TransformerConfig
from lcgen.models.unet import UNetAutoencoder, UNetConfig

__all__ = [
    "MODELS", "ModelSpec", "create_model", "list_models",
    "TimeSeriesTransformer", "TransformerConfig",
    "UNetAutoencoder", "UNetConfig",
    "MLPAutoencoder", "MLPConfig",
    "MultimodalModel", "MultimodalConfig",
]


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry."""

    cls: type[nn.Module]
    config_cls: type
    data: str  # "timeseries" (lcgen convert), "spectra" (lcgen preprocess, one channel) or "paired" (lcgen convert --spectra)
    presets: dict[str, dict[str, Any]]  # preset name -> config overrides; "default" is the original size
    summary: str  # one line for --help listings
    latent: str = "bottleneck"  # the level of ``model.latents(batch)`` that lcgen embed pools by default
    huge_pages: bool = False  # train with tensors of >= 2 MB in huge pages (lcgen.workers.choose_huge_pages)

    @property
    def data_words(self) -> str:
        """What the model trains on, in words for messages."""
        return {"timeseries": "time series", "spectra": "spectra",
                "paired": "paired windows (time series with their spectra)"}[self.data]


MODELS: dict[str, ModelSpec] = {
    "transformer": ModelSpec(
        cls=TimeSeriesTransformer,
        config_cls=TransformerConfig,
        data="timeseries",
        presets={
            "tiny": dict(encoder_dims=[16, 32], nhead=2, num_transformer_blocks=1, dropout=0.0),
            # head width 16-64: wide enough heads for fast attention kernels on CPU
            "small": dict(encoder_dims=[32, 64, 96, 128], nhead=2, num_transformer_blocks=1,
                          ff_mult=2, dropout=0.0),
            "default": {},
        },
        summary="hierarchical U-Net transformer on time series",
    ),
    "unet": ModelSpec(
        cls=UNetAutoencoder,
        config_cls=UNetConfig,
        data="spectra",
        presets={
            "tiny": dict(encoder_dims=[8, 16]),
            "small": dict(encoder_dims=[16, 32, 64, 128]),
            "default": {},
        },
        summary="1-D UNet on one spectral channel",
        huge_pages=True,
    ),
    "mlp": ModelSpec(
        cls=MLPAutoencoder,
        config_cls=MLPConfig,
        data="spectra",
        presets={
            "tiny": dict(encoder_hidden_dims=[32, 16], latent_dim=8),
            "small": dict(encoder_hidden_dims=[256, 128, 64], latent_dim=32),
            "default": {},
        },
        summary="MLP on one spectral channel",
        latent="latent",
    ),
    "multimodal": ModelSpec(
        cls=MultimodalModel,
        config_cls=MultimodalConfig,
        data="paired",
        presets={
            "tiny": dict(series_dims=[16, 32], series_blocks=1, spectral_dims=[8, 16], latent_tokens=4,
                         latent_dim=32, fusion_blocks=1, nhead=2, dropout=0.0, span_readout=True),
            # the series part is the transformer's small preset
            "small": dict(series_dims=[32, 64, 96, 128], series_blocks=1, spectral_dims=[8, 16, 32, 64],
                          latent_tokens=8, latent_dim=128, fusion_blocks=2, nhead=2, ff_mult=2, dropout=0.0,
                          span_readout=True),
            "default": dict(span_readout=True),
        },
        summary="shared latent of time series, PSD, ACF and F-statistic (paired data)",
        latent="latent",
    ),
}


def list_models() -> list[str]:
    """Registered model names."""
    return list(MODELS)


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def get_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; an unknown name fails listing the registered models."""
    if name not in MODELS:
        raise LcgenError(f"unknown model '{name}'{_did_you_mean(name, MODELS)}; "
                         f"registered models: {', '.join(MODELS)}")
    return MODELS[name]


def create_model(name: str, preset: str = "default", **overrides: Any) -> nn.Module:
    """Build registered model ``name`` at ``preset`` size with config ``overrides`` on top.

    Overrides left ``None`` are dropped (so unset CLI options keep the model's defaults); a full
    config dict as overrides rebuilds a saved model whatever the preset.
    """
    spec = get_spec(name)
    if preset not in spec.presets:
        raise LcgenError(f"model '{name}' has no preset '{preset}'{_did_you_mean(preset, spec.presets)}; "
                         f"choose one of {', '.join(spec.presets)}")
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    for key in overrides:
        if key not in fields:
            raise LcgenError(f"model '{name}' has no setting '{key}'{_did_you_mean(key, fields)}; "
                             f"its settings: {', '.join(sorted(fields))}")
    settings = {**spec.presets[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return spec.cls(spec.config_cls(**settings))
