"""Registration status of a section, from the evidence of every round.

``ok``
    the estimate passed every check: inside the capture range, better than the
    stage metadata, a unique optimum, and (after a prediction-driven round)
    the multimodal and prediction-driven estimates agree.
``low_confidence``
    the estimate may be right but the evidence is weak: a rival optimum nearly
    as good (ambiguous landscape), or two methods that disagree.
``failed``
    the estimate is not a result: its optimum lies on or beyond the capture
    range, or it is no better than the stage metadata. Its transform is
    replaced by the stage metadata.

What happens to a failed section is the config's ``register.on_failure``:
``exclude`` (default: kept out of training and validation, flagged in the
metrics and report), ``metadata`` (the stage metadata is trusted, the section
is used as any other, with a warning) or ``stop`` (the run stops with the
evidence). Only ``ok`` sections train and validate the network by default;
``low_confidence`` ones are predicted and evaluated, flagged, and left out of
the report's summary.
"""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("ok", "low_confidence", "failed")
POLICIES = ("exclude", "metadata", "stop")


class RegistrationFailed(RuntimeError):
    """A section's registration failed and ``register.on_failure`` is ``stop``."""


@dataclass(frozen=True)
class StatusParams:
    """Thresholds and policy of the registration checks (config ``register``).

    Attributes:
        max_second_peak_ratio: a landscape whose best rival minimum reaches this
            fraction of the best one's depth is ambiguous (0 … 1).
        refine_min_ncc: least NCC with the prediction for a prediction-driven estimate
            to count as evidence.
        agreement_tolerance_fm_px: largest RMS difference (FM px, over the EM field)
            between the multimodal and prediction-driven estimates that counts as agreement.
        on_failure: ``exclude``, ``metadata`` or ``stop``.
    """

    max_second_peak_ratio: float = 0.9
    refine_min_ncc: float = 0.2
    agreement_tolerance_fm_px: float = 1.0
    on_failure: str = "exclude"

    def __post_init__(self) -> None:
        if self.on_failure not in POLICIES:
            raise ValueError(f"register.on_failure must be one of {POLICIES}, "
                             f"not {self.on_failure!r}")


def multimodal_status(violations: list[str], warnings: list[str], second_peak_ratio: float,
                      params: StatusParams) -> tuple[str, list[str]]:
    """Status and reasons of a multimodal (round 0) estimate."""
    if violations or warnings:
        return "failed", [*violations, *warnings]
    if second_peak_ratio > params.max_second_peak_ratio:
        return "low_confidence", [
            f"ambiguous metric landscape: a rival optimum reaches {second_peak_ratio:.2f} of "
            f"the best one's depth (threshold {params.max_second_peak_ratio:g})"]
    return "ok", []


def refine_status(previous_status: str, multimodal_status_: str, ncc: float,
                  second_peak_ratio: float, violations: list[str],
                  agreement_fm_px: float | None, params: StatusParams,
                  previous_confirmed: bool = False, accepted: bool = True
                  ) -> tuple[str, bool, list[str]]:
    """Status after a prediction-driven round, whether its estimate is evidence, reasons.

    A multimodal ``ok`` needs the confirmation of the prediction-driven round: on the
    simulator, mutual information on a sparse, noisy stain can settle 1–2 FM px off with
    a clean landscape, which only a second, independent estimate reveals. So an
    inconclusive first round turns ``ok`` into ``low_confidence``; a later inconclusive
    round keeps a status that an earlier round confirmed.

    Args:
        previous_status: status after the previous round.
        multimodal_status_: status of the multimodal (round 0) estimate.
        ncc: NCC of the measured FM with the prediction at this round's estimate.
        second_peak_ratio: of the NCC landscape.
        violations: capture-range violations of this round's estimate.
        agreement_fm_px: RMS difference from the multimodal estimate (None if that failed).
        params: thresholds.
        previous_confirmed: the previous status came from a prediction-driven round.
        accepted: the round's estimate raised the NCC above the previous estimate's.
    """
    reasons = []
    if violations:
        reasons += violations
    if not ncc >= params.refine_min_ncc:
        reasons.append(f"the prediction correlates weakly with the measured FM (NCC {ncc:.2f} "
                       f"< {params.refine_min_ncc:g})")
    if second_peak_ratio > params.max_second_peak_ratio:
        reasons.append(f"ambiguous NCC landscape (rival optimum at {second_peak_ratio:.2f})")
    if reasons:  # inconclusive: an unconfirmed ok is no longer ok
        status = previous_status
        if status == "ok" and not previous_confirmed:
            status = "low_confidence"
        return status, False, ["prediction-driven check inconclusive, so the multimodal "
                               "estimate is not confirmed: " + "; ".join(reasons)]
    if multimodal_status_ == "failed" or agreement_fm_px is None:
        if not accepted:
            return previous_status, False, [
                "the prediction-driven estimate is no better than the previous one (NCC "
                f"{ncc:.2f}); the multimodal registration failed"]
        return "low_confidence", True, [
            "the multimodal registration failed; the prediction-driven estimate (NCC "
            f"{ncc:.2f}) is not confirmed by a second method"]
    if agreement_fm_px <= params.agreement_tolerance_fm_px:
        return "ok", True, []
    return "low_confidence", True, [
        f"the multimodal and prediction-driven estimates disagree by {agreement_fm_px:.2f} FM px "
        f"(tolerance {params.agreement_tolerance_fm_px:g}); kept the prediction-driven one"]


def use_for_training(status: str, params: StatusParams) -> bool:
    """Whether a section of this status may train or validate the network."""
    return status == "ok" or (status == "failed" and params.on_failure == "metadata")
