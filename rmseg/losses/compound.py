"""``SegmentationLoss``: CE + Dice base plus weighted auxiliary terms (RM or a rival loss).

    total = w_base * (lambda_ce * CE + lambda_dice * Dice) + w_aux * alpha * sum_k term_k(input, target)

with ``(w_base, w_aux) = (1, 1)`` or ``schedule(epoch)``. CE + Dice equals MONAI's ``DiceCELoss``
(softmax over channels, label targets). This is the paper's training objective (Wang et al., 2021,
Eq. 5: CE + Dice + alpha * RM) and carries the rival losses' epoch-wise re-weighting.

Ma et al.'s base objective (SegWithDistMap ``train_LA*.py``, the LA protocol Wang et al. say they
follow): ``0.5 * (CE + Dice_fg)`` with ``Dice_fg = 1 - (2 sum(p g) + s) / (sum(p^2) + sum(g^2) + s)`` on the
foreground channel, pooled over the batch, ``s = 1e-5``. It is :data:`MA2020_BASE`:
``SegmentationLoss(**MA2020_BASE, terms=...)``; Table 2's experiments use it (configs/experiment/table2/).

By default the activation is computed once per call and shared: ``log P = log_softmax(input)``,
``P = exp(log P)``, CE = NLL of ``log P``, Dice = MONAI ``DiceLoss`` of ``P`` against the one-hot labels,
and terms with a softmax and a ``from_probabilities`` method (``ResidualMomentLoss``) take ``P`` and that
same one-hot tensor. ``DiceCELoss`` and every term
applying its own activation to the logits compute the softmax (and, for CE, the log-softmax) again,
forward and backward (measured: ``benchmarks/rm_loss.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from monai.networks.utils import one_hot
from torch import nn

from rmseg.losses._utils import check_input_and_target

#: Ma et al. (2020)'s base objective 0.5 * (CE + foreground Dice with squared denominators, pooled over the batch).
MA2020_BASE = {"lambda_ce": 0.5, "lambda_dice": 0.5, "include_background_dice": False, "dice_squared": True, "dice_batch": True}


def _accepted_context(module: nn.Module) -> set[str] | None:
    """Keyword arguments ``module.forward`` accepts beyond ``(input, target)``; None if it takes ``**kwargs``."""
    params = list(inspect.signature(module.forward).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_label_target(input: torch.Tensor, target: torch.Tensor) -> None:
    """ValueError for ``(B, *S)`` labels without the channel axis and for float labels ``(B, 1, *S)`` with
    fractional values (the latter one pass over a float target; integer targets cost nothing)."""
    if torch.is_tensor(target) and torch.is_tensor(input) and input.ndim >= 3:
        if target.ndim == input.ndim - 1 and target.shape == (input.shape[0], *input.shape[2:]):
            raise ValueError(f"target shape {tuple(target.shape)} lacks the channel axis: pass labels of shape "
                             f"{(input.shape[0], 1, *input.shape[2:])} (target.unsqueeze(1))")
        if target.ndim == input.ndim and target.shape[1] == 1 and target.is_floating_point() \
                and not torch.equal(target, target.round()):
            raise ValueError("target labels (B, 1, *S) hold fractional values: pass integer class indices "
                             "(or a one-hot / soft target with one channel per class)")


class SegmentationLoss(nn.Module):
    """Compound loss ``w_base * (lambda_ce * CE + lambda_dice * Dice) + w_aux * alpha * sum(terms)``.

    Args:
        terms: auxiliary losses, each ``forward(input, target, **context) -> scalar``; each receives
            only the context keywords its ``forward`` declares (e.g. ``offset``/``full_shape``).
        alpha: weight of the sum of terms (the paper's alpha for RM), >= 0.
        lambda_ce, lambda_dice: weights of MONAI ``DiceCELoss``'s parts, >= 0. When both are 0 the base
            is not computed at all (terms such as the SDF loss carry their own full objective).
        schedule: ``epoch -> (w_base, w_aux)``, applied after ``set_epoch``; None means ``(1, 1)``.
        include_background_dice: Dice over all channels (default True, MONAI's default; the paper does
            not say). Cross-entropy always covers all channels.
        dice_squared: squared terms in the Dice denominator, ``sum(p^2) + sum(g^2)`` (MONAI ``squared_pred``).
        dice_batch: Dice pooled over the batch before the ratio (MONAI ``batch``), not averaged per sample.
        share_activation: compute the softmax once and hand it to CE, Dice and the terms that take
            probabilities (default True; equal to the unshared loss to float tolerance, faster). False:
            MONAI ``DiceCELoss`` on the logits and each term's ``forward`` on the logits. Output with a
            single channel always takes the unshared path.

    Shapes: ``input`` ``(B, C, *S)`` logits; ``target`` labels ``(B, 1, *S)`` (one-hot ``(B, C, *S)`` is
    converted by argmax for the base; terms receive the target unchanged). Returns a scalar.
    """

    def __init__(
        self,
        terms: Sequence[nn.Module] = (),
        alpha: float = 1.0,
        lambda_ce: float = 1.0,
        lambda_dice: float = 1.0,
        schedule: Callable[[int], tuple[float, float]] | None = None,
        include_background_dice: bool = True,
        dice_squared: bool = False,
        dice_batch: bool = False,
        share_activation: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("alpha", alpha), ("lambda_ce", lambda_ce), ("lambda_dice", lambda_dice)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name}={value!r} must be a non-negative number")
        for term in terms:
            if not isinstance(term, nn.Module):
                raise ValueError(f"terms must be nn.Module losses, got {type(term).__name__}")
        for name, value in (("share_activation", share_activation), ("dice_squared", dice_squared),
                            ("dice_batch", dice_batch), ("include_background_dice", include_background_dice)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}={value!r} must be True or False")
        if schedule is not None and not callable(schedule):
            raise ValueError(f"schedule={schedule!r} must be a callable epoch -> (w_base, w_aux) or None")
        self.use_base = lambda_ce > 0 or lambda_dice > 0
        if not self.use_base and len(terms) == 0:
            raise ValueError("lambda_ce = lambda_dice = 0 and no terms: the loss would be empty")
        self.terms = nn.ModuleList(terms)
        self.alpha = float(alpha)
        self.lambda_ce = float(lambda_ce)
        self.lambda_dice = float(lambda_dice)
        self.schedule = schedule
        self.base = (
            DiceCELoss(
                to_onehot_y=True,
                softmax=True,
                include_background=include_background_dice,
                squared_pred=dice_squared,
                batch=dice_batch,
                lambda_ce=lambda_ce,
                lambda_dice=lambda_dice,
            )
            if self.use_base
            else None
        )
        self.share_activation = share_activation
        self.dice = (
            DiceLoss(to_onehot_y=False, softmax=False, include_background=include_background_dice,
                     squared_pred=dice_squared, batch=dice_batch)
            if self.use_base
            else None
        )
        self._takes_softmax = [
            getattr(t, "activation", None) == "softmax" and callable(getattr(t, "from_probabilities", None))
            for t in self.terms
        ]
        self._context_names = [_accepted_context(t) for t in self.terms]
        self._term_names = self._unique_names()
        self.weights = (1.0, 1.0)
        self._components: dict[str, torch.Tensor] = {}
        self.set_epoch(0)

    def _unique_names(self) -> list[str]:
        names = [type(t).__name__ for t in self.terms]
        return [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; with a schedule, ``(w_base, w_aux) = schedule(epoch)``."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch={epoch!r} must be a non-negative int")
        self.epoch = epoch
        if self.schedule is not None:
            weights = tuple(float(w) for w in self.schedule(epoch))
            if len(weights) != 2 or min(weights) < 0:
                raise ValueError(f"schedule({epoch}) returned {weights!r}; expected two non-negative weights")
            self.weights = weights

    def forward(self, input: torch.Tensor, target: torch.Tensor, **context: object) -> torch.Tensor:
        parts = self._parts(input, target, **context)
        total = input.new_zeros(())
        for value, weight in parts.values():
            total = total + weight * value
        self._components = {**{name: value.detach() for name, (value, _) in parts.items()}, "total": total.detach()}
        return total

    def gradient_norms(self, input: torch.Tensor, target: torch.Tensor, **context: object) -> dict[str, float]:
        """L2 norm of the gradient of each weighted part (``ce_dice``, each term) with respect to the logits
        ``input``, at the current weights: how hard each part pulls on the prediction. Computed on a detached
        copy of ``input`` (the network's graph is not touched); a part whose weight is 0 has norm 0."""
        x = input.detach().requires_grad_(True)
        with torch.enable_grad():
            parts = self._parts(x, target, **context)
            norms = {}
            for name, (value, weight) in parts.items():
                if weight == 0 or not value.requires_grad:
                    norms[name] = 0.0
                    continue
                (grad,) = torch.autograd.grad(weight * value, x, retain_graph=True)
                norms[name] = float(grad.double().norm())
        return norms

    def _parts(self, input: torch.Tensor, target: torch.Tensor, **context: object) -> dict[str, tuple[torch.Tensor, float]]:
        """``{name: (unweighted value, weight)}``: ``ce_dice`` with ``w_base``, each term with ``w_aux * alpha``."""
        w_base, w_aux = self.weights
        parts: dict[str, tuple[torch.Tensor, float]] = {}
        check_label_target(input, target)
        labels = target
        if target.ndim == input.ndim and target.shape[1] != 1 and target.shape[1] == input.shape[1]:
            labels = target.argmax(dim=1, keepdim=True)
        shared = self._shared_activation(input, labels)
        if self.base is not None:
            base = self.base(input, labels) if shared is None else self._shared_base(shared, labels)
            parts["ce_dice"] = (base, w_base)
        for name, term, accepted, takes in zip(self._term_names, self.terms, self._context_names, self._takes_softmax):
            kwargs = context if accepted is None else {k: v for k, v in context.items() if k in accepted}
            if shared is not None and takes:
                labelled = labels is target and getattr(term, "to_onehot_y", False)
                one_hot = shared["one_hot"] if labelled else None
                value = term.from_probabilities(shared["probs"], target, check_range=False, one_hot=one_hot, **kwargs)
            else:
                value = term(input, target, **kwargs)
            parts[name] = (value, w_aux * self.alpha)
        return parts

    def _shared_activation(self, input: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """``log_probs`` (when CE + Dice is computed), ``probs`` and ``one_hot`` (of ``labels``) for every
        consumer, or None on the unshared path (``share_activation=False``, a single channel, or nothing
        to share). Bad labels raise the ValueError every rmseg loss gives."""
        sharing_terms = any(self._takes_softmax)
        if not self.share_activation or input.ndim < 3 or input.shape[1] < 2:
            return None
        if self.base is None and not sharing_terms:
            return None
        if sharing_terms and labels.is_floating_point():
            check_input_and_target(input, labels, "softmax", True)  # non-integer labels
        shared: dict[str, torch.Tensor] = {}
        if self.base is not None:
            shared["log_probs"] = torch.log_softmax(input, dim=1)
            shared["probs"] = shared["log_probs"].exp()
        else:
            shared["probs"] = torch.softmax(input, dim=1)
        if sharing_terms or self.lambda_dice > 0:
            try:  # scatter checks the label range in its own pass
                shared["one_hot"] = one_hot(labels.long(), num_classes=input.shape[1], dim=1, dtype=input.dtype)
            except RuntimeError:
                check_input_and_target(input, labels, "softmax", True)  # raises ValueError naming the labels
                raise
        return shared

    def _shared_base(self, shared: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """``lambda_ce * CE + lambda_dice * Dice`` from the shared activation; a part whose weight is 0 is
        skipped (``DiceCELoss`` computes it and multiplies by 0: the same value)."""
        log_probs = shared["log_probs"]
        if labels.ndim != log_probs.ndim or labels.shape[1] != 1 or labels.shape[2:] != log_probs.shape[2:]:
            raise ValueError(
                f"target shape {tuple(labels.shape)} does not match input shape {tuple(log_probs.shape)}: "
                f"expected labels ({log_probs.shape[0]}, 1, ...) or one-hot ({log_probs.shape[0]}, {log_probs.shape[1]}, ...)"
            )
        base = log_probs.new_zeros(())
        if self.lambda_ce > 0:
            base = base + self.lambda_ce * F.nll_loss(log_probs, labels[:, 0].long())
        if self.lambda_dice > 0:
            base = base + self.lambda_dice * self.dice(shared["probs"], shared["one_hot"])
        return base

    @property
    def last_components(self) -> dict[str, float]:
        """Unweighted parts of the last forward (``ce_dice``, each term by class name) and ``total``."""
        return {k: float(v) for k, v in self._components.items()}
