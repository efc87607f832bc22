"""A static orderer that uses only the public API: coordinates in, priorities out."""

import torch

from seqify.ordering import StaticOrderer


class CenterOut(StaticOrderer):
    """Slots ordered by squared distance of their coordinates from the grid's centre
    (ties broken by slot index). Works on any tokenizer with coordinates."""

    name = "center-out"

    def priority(self, batch, rng):
        coords = batch.coords.float()  # [B, L, C]
        real = (~batch.pad).float()[..., None]
        centre = (coords * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp_min(1)
        dist = ((coords - centre) ** 2).sum(-1)  # [B, L]
        index = torch.arange(batch.length, device=dist.device) / (10 * batch.length)
        return dist + index
