"""Uses of a trained run's representation: ``embed`` (pooled latents per window and per light
curve, the ``embeddings`` file), ``features`` (the hand-crafted baseline features) and ``probe``
(what simple classifiers and regressors can read from any of them)."""

from lcgen.embed.extract import (EMBEDDINGS_FILE, EmbedConfig, Embeddings, curve_means, embed, pool,
                               pooled_latent, read_embeddings, write_embeddings)

__all__ = ["EMBEDDINGS_FILE", "EmbedConfig", "Embeddings", "curve_means", "embed", "pool",
           "pooled_latent", "read_embeddings", "write_embeddings"]
