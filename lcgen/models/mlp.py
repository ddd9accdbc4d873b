"""MLP autoencoder for one spectral channel (PSD, ACF or F-statistic).

Input (B, 2 L) = [spectrum where visible else 0 (L values), visibility flags (L values)].
Default shape (L = 1024): 2048 -> 512 -> 256 -> 128 -> 64 (``encoded``) -> 128 -> 256 -> 512 -> 1024
(``reconstructed``); each hidden layer is Linear -> LayerNorm -> GELU (-> dropout), the latent and
output layers are plain Linear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lcgen.errors import LcgenError
from lcgen.masking import model_input
from lcgen.models.layers import bounded_log_var, check_dims, make_activation


@dataclass
class MLPConfig:
    """MLP autoencoder; field names follow the original README.

    ``input_dim`` is 2 x ``input_length`` (spectrum + visibility flags); give either, or both
    consistently. With neither, the spectrum is 1024 bins long.
    """

    input_dim: int | None = None  # (int) input size, 2 x spectrum length; None = from input_length
    input_length: int | None = None  # (int) spectrum length L = output size; None = input_dim / 2
    encoder_hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])  # (list[int]) hidden widths
    latent_dim: int = 64  # (int) size of the latent vector
    decoder_hidden_dims: list[int] | None = None  # (list[int]) None = encoder widths reversed
    activation: str = "gelu"  # (str) gelu, relu, silu, tanh or leakyrelu
    dropout: float = 0.0  # (float) dropout after each hidden layer
    variance_head: bool = False  # (bool) also predict a log-variance per bin (output log_var)

    def __post_init__(self) -> None:
        if self.input_dim is None and self.input_length is None:
            self.input_length = 1024
        if self.input_length is None:
            if self.input_dim < 2 or self.input_dim % 2:
                raise LcgenError(f"mlp: input_dim={self.input_dim} must be 2 x the spectrum length "
                                 "(spectrum + visibility flags), an even number")
            self.input_length = self.input_dim // 2
        if self.input_dim is None:
            self.input_dim = 2 * self.input_length
        if self.input_length < 1 or self.input_dim != 2 * self.input_length:
            raise LcgenError(f"mlp: input_dim={self.input_dim} must equal 2 x input_length="
                             f"{self.input_length}; set only one of them")
        check_dims("encoder_hidden_dims", self.encoder_hidden_dims)
        if self.decoder_hidden_dims is not None:
            check_dims("decoder_hidden_dims", self.decoder_hidden_dims)
        if self.latent_dim < 1:
            raise LcgenError(f"mlp: latent_dim={self.latent_dim} must be >= 1")
        make_activation(self.activation)
        if not 0.0 <= self.dropout < 1.0:
            raise LcgenError(f"mlp: dropout={self.dropout} must be in [0, 1)")


def _stack(sizes: list[int], cfg: MLPConfig) -> nn.Sequential:
    """Linear -> LayerNorm -> activation (-> dropout) between sizes, plain Linear at the end."""
    layers: list[nn.Module] = []
    for d_in, d_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(d_in, d_out), nn.LayerNorm(d_out), make_activation(cfg.activation)]
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class MLPAutoencoder(nn.Module):
    """Fully connected autoencoder; see the module docstring."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        enc = list(config.encoder_hidden_dims)
        dec = list(config.decoder_hidden_dims) if config.decoder_hidden_dims is not None else enc[::-1]
        self.encoder = _stack([config.input_dim, *enc, config.latent_dim], config)
        n_out = config.input_length * (2 if config.variance_head else 1)
        self.decoder = _stack([config.latent_dim, *dec, n_out], config)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, input_dim), or (B, 2, L) flattened -> reconstructed (B, L), encoded (B, latent)."""
        x = x.flatten(1)
        if x.shape[1] != self.config.input_dim:
            raise LcgenError(f"mlp expects {self.config.input_dim} inputs per sample (2 x length "
                             f"{self.config.input_length}), got {x.shape[1]}; build it with "
                             f"input_length={x.shape[1] // 2}")
        z = self.encoder(x)
        out = self.decoder(z)
        L = self.config.input_length
        result = {"reconstructed": out[:, :L], "encoded": z}
        if self.config.variance_head:
            result["log_var"] = bounded_log_var(out[:, L:])
        return result

    def forward_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch dict (values, valid, hidden) -> reconstructed (B, L), encoded (B, latent)."""
        x = model_input(batch["values"], batch["valid"], batch["hidden"])  # (B, L, 2)
        return self(x.transpose(1, 2))  # [values..., flags...] once flattened

    def latents(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The latent vector of a batch dict (values, valid; ``hidden`` optional, default nothing
        hidden) as one position: ``{"latent": (z (B, 1, latent_dim), valid (B, 1) all True)}``."""
        hidden = batch.get("hidden", torch.zeros_like(batch["valid"]))
        z = self(model_input(batch["values"], batch["valid"], hidden).transpose(1, 2))["encoded"]
        return {"latent": (z[:, None, :], torch.ones(z.shape[0], 1, dtype=torch.bool, device=z.device))}
