"""Running loss sums and non-finite detection that stay on the device between read-outs.

Reading a CUDA scalar (``loss.item()``, ``if not torch.isfinite(x)``) waits for the
GPU to finish every queued kernel, so a step that reads its loss cannot overlap the
next one's launch. :class:`StepTally` keeps the sums and the first non-finite batch
as device tensors and the training loop reads them once every ``log_interval``
batches and at the end of the epoch; a non-finite value found there raises, naming
the batch where it first appeared. The weights updated after that batch are never
checkpointed: the run stops before the epoch's checkpoint, so the last good one stays.

The sums are float64 and add ``term * n`` batch by batch in order, the same values and
order as summing ``term.item() * n`` on the host, so the epoch means are unchanged.
"""

from __future__ import annotations

import torch

TERMS = ("loss", "msm", "stft")
_LOSS, _GRAD = 1.0, 2.0  # what was non-finite first (codes in the flag tensor)


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/inf; the message names the epoch and batch."""


class StepTally:
    """Sums of ``term * n`` and ``n`` over the steps of one epoch, and the first non-finite step."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(len(TERMS) + 1, dtype=torch.float64, device=device)
        # [batch index (-1 = none yet), what (_LOSS or _GRAD), the loss at that batch]
        self.bad = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64, device=device)

    def add(self, batch: int, terms: dict, n: int, gnorm: torch.Tensor | None = None) -> None:
        """Add one step's detached ``terms`` (scalar tensors) for ``n`` samples; ``gnorm`` is checked if given."""
        vals = torch.stack([terms[k].detach().to(torch.float64) for k in TERMS])
        self.sums[:-1] += vals * n
        self.sums[-1] += n
        loss_bad = ~torch.isfinite(vals[0])
        now = loss_bad if gnorm is None else loss_bad | ~torch.isfinite(gnorm.detach())
        first = now & (self.bad[0] < 0)
        # python scalars go in as kernel arguments: no host-to-device copy, no sync
        self.bad = torch.stack([torch.where(first, float(batch), self.bad[0]),
                                torch.where(first, torch.where(loss_bad, _LOSS, _GRAD).to(torch.float64),
                                            self.bad[1]),
                                torch.where(first, vals[0], self.bad[2])])

    def check(self, epoch: int, rank: int = 0) -> None:
        """Raise :class:`NonFiniteLossError` if a step so far was non-finite (one device-to-host read)."""
        batch, what, loss = self.bad.tolist()
        if batch < 0:
            return
        where = f"at epoch {epoch + 1}, batch {int(batch) + 1}"
        if what == _LOSS:
            raise NonFiniteLossError(f"non-finite loss ({loss}) {where}; the last good checkpoint is kept")
        raise NonFiniteLossError(f"non-finite gradient norm {where} (loss {loss:.4g} on rank {rank}); "
                                 f"the last good checkpoint is kept")

    def means(self) -> dict:
        """Mean of each term over the samples so far (one device-to-host read); zeros before any sample."""
        *s, n = self.sums.tolist()
        return {k: v / max(n, 1.0) for k, v in zip(TERMS, s)}
