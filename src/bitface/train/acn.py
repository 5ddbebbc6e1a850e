"""ACN's asynchronous back-propagation (Algorithm 1 of the ACN paper) as an optimizer.

One step, for every ACN layer with kernels X and amplitude matrix A (Â = mean(A) everywhere):

1. X (and every other parameter) takes an Adam step with rate eta1 on
   dL_S/dX + dL_Â/dX, where dL_Â/dX = theta * (X - Â ⊙ D), D = sign(X)            (Eq. 11-13)
2. then, with the *updated* X (the asynchronous part), A takes an Adam step with rate eta2 on
   dL_S/dA + dL_Â/dA, where dL_Â/dA = -theta * sum_i (X_i - Â ⊙ D_i) ⊙ D_i          (Eq. 14-16)
3. A <- |A|, so amplitudes stay non-negative                                         (Eq. 15)

dL_S/dA comes from autograd with dÂ/dA taken as 1, as the paper does. The paper prints
dL_Â/dA as +theta (X - ÂD) · D; the minus sign above is the true gradient of its stated loss
L_Â = theta/2 sum ||X - Â ⊙ D||^2 (with the paper's sign, A would move away from the kernels it
approximates). theta = 5e-4 and eta1 = eta2 = 1e-4 by default, Adam betas (0.9, 0.999).

`amplitude_update` says where the amplitude-loss gradients go. "joint": added to the task gradients
that Adam normalizes. Adam then turns the small but always-consistent pull towards ±Â into steps of
nearly the full rate. The kernels cluster at ±Â (none is near 0) and rarely change sign. In our
Table 2 runs this made ACN worse than XNOR-Net (8-conv: 4.34% against 3.47%). "decoupled": they are
applied as plain gradient steps X -= eta1 * theta * (X - ÂD), outside Adam, as AdamW does with
weight decay. This keeps the magnitude of the paper's gradient-descent equations (Eq. 11-16).

A consequence of dÂ/dA := 1 worth knowing: only the mean of A has a restoring force (towards the
least-squares amplitude mean |X| under L_Â alone); the individual elements of A drift apart with
their column sums of |X|, and |.| reflects any that cross zero. Forward passes only use Â, so this
is harmless at the paper's small rates, but A itself is not a meaningful per-position amplitude.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.layers import QuantMixin
from ..nn.quantizers import AmplitudeKernel


def amplitude_layers(model: nn.Module) -> list[tuple[nn.Parameter, AmplitudeKernel]]:
    """(kernel X, its ACN quantizer) of every ACN layer of the model."""
    return [
        (m.weight, m.kernel_quantizer)
        for m in model.modules()
        if isinstance(m, QuantMixin) and isinstance(m.kernel_quantizer, AmplitudeKernel)
    ]


def amplitude_loss(model: nn.Module, theta: float) -> torch.Tensor:
    """L_Â = theta/2 * sum over layers and kernels of ||X_i - Â ⊙ D_i||^2 (for logging and tests)."""
    terms = [q.amplitude_loss(w) for w, q in amplitude_layers(model)]
    return theta * torch.stack(terms).sum() if terms else torch.zeros(())


class AsyncAmplitudeOptimizer:
    """Adam on everything, with ACN amplitudes updated after the kernels. Use like a torch optimizer:
    zero_grad(), loss.backward() on the task loss only, step()."""

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-4,
        amplitude_lr: float = 1e-4,
        theta: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        amplitude_update: str = "joint",
    ):
        if amplitude_update not in ("joint", "decoupled"):
            raise ValueError(f"amplitude_update must be 'joint' or 'decoupled', not {amplitude_update!r}")
        self.amplitude_update = amplitude_update
        if lr <= 0 or amplitude_lr <= 0 or theta < 0:
            raise ValueError(f"need lr > 0, amplitude_lr > 0, theta >= 0; got {lr}, {amplitude_lr}, {theta}")
        self.layers = amplitude_layers(model)
        amplitude_ids = {id(q.amplitude) for _, q in self.layers}
        others = [p for p in model.parameters() if id(p) not in amplitude_ids and p.requires_grad]
        self.theta = theta
        if optimizer == "adam":
            make = lambda params, rate, decay: torch.optim.Adam(params, lr=rate, betas=betas, weight_decay=decay)  # noqa: E731
        elif optimizer == "sgd":  # plain gradient steps, as the paper's equations are written
            make = lambda params, rate, decay: torch.optim.SGD(params, lr=rate, weight_decay=decay)  # noqa: E731
        elif optimizer == "rmsprop":  # Bulat & Tzimiropoulos train their binary hourglasses with it
            make = lambda params, rate, decay: torch.optim.RMSprop(params, lr=rate, weight_decay=decay)  # noqa: E731
        else:
            raise ValueError(f"optimizer must be 'adam', 'sgd' or 'rmsprop', not {optimizer!r}")
        self.kernels = make(others, lr, weight_decay)
        amplitudes = [q.amplitude for _, q in self.layers]
        self.amplitudes = make(amplitudes, amplitude_lr, 0.0) if amplitudes else None

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.kernels, self.amplitudes) if o is not None]

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def _amplitude_residual(self, x: torch.Tensor, quantizer: AmplitudeKernel) -> tuple[torch.Tensor, torch.Tensor]:
        d = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
        return x - quantizer.amplitude.mean() * d, d

    @torch.no_grad()
    def step(self) -> None:
        decoupled = self.amplitude_update == "decoupled"
        # 1. kernels: task gradient + theta * (X - ÂD)
        for x, q in self.layers:
            residual, _ = self._amplitude_residual(x, q)
            if decoupled:
                x.sub_(self.kernels.param_groups[0]["lr"] * self.theta * residual)
            else:
                x.grad = self.theta * residual if x.grad is None else x.grad + self.theta * residual
        self.kernels.step()
        if self.amplitudes is None:
            return
        # 2. amplitudes, from the kernels just updated: task gradient - theta * sum_i (X_i - ÂD_i) ⊙ D_i
        for x, q in self.layers:
            residual, d = self._amplitude_residual(x, q)
            amp_grad = -self.theta * (residual * d).sum(0)
            a = q.amplitude
            if decoupled:
                a.sub_(self.amplitudes.param_groups[0]["lr"] * amp_grad)
            else:
                a.grad = amp_grad if a.grad is None else a.grad + amp_grad
        self.amplitudes.step()
        # 3. keep amplitudes non-negative: A <- |A - eta2 * step|
        for _, q in self.layers:
            q.amplitude.abs_()

    def state_dict(self) -> dict:
        return {"kernels": self.kernels.state_dict(), "amplitudes": self.amplitudes and self.amplitudes.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.kernels.load_state_dict(state["kernels"])
        if self.amplitudes is not None:
            self.amplitudes.load_state_dict(state["amplitudes"])
