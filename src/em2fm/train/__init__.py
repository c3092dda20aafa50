"""Train: fit the asymmetric U-Net on the tiles of the training sections.

Each step draws a batch of random windows (``tile_size`` target px, fully
inside the FM/EM overlap) from the training sections, with ``margin`` target
px of EM context around each, and a random flip/rotation (optionally half of
them where the rare signal is). The loss is the mean squared error (optionally
the best over small shifts) on FM normalised per channel with the training
statistics, globally or after a per-section background and percentile scaling;
the statistics are saved with the weights, so predictions come back in FM
camera units. Every ``val_every`` steps the validation sections are predicted
whole and their PCC logged; the checkpoint with the best mean validation PCC is
kept. Without a validation section it is chosen on the training sections, with
a warning (log, checkpoint, model card, report) or an error, by config.

Resumable: the model, optimiser, scheduler, random states, step, TSV rows and
best checkpoint are saved every ``checkpoint_every`` steps and on SIGTERM to
``checkpoint/state.pt`` beside ``model.pt`` (not a declared output of the rule);
rerunning continues from there, bitwise identical to an uninterrupted run on
the same device and thread count.

Outputs: ``model.pt`` (best), ``last.pt`` (final step), both loadable with
``torch.load(..., weights_only=True)``, a TSV with one row per step written as
training goes, and the model card ``model.json``.

Modules: :mod:`.data` (sections, normalisation, window sampler), :mod:`.resume`
(resume state), :mod:`.card` (model card), :mod:`.fit` (the training loop and
the rule's entry point :func:`run`).
"""

from .card import model_card, software_versions
from .data import (
    FM_PERCENTILES,
    SIGNAL_PERCENTILE,
    Normalisation,
    SectionData,
    WindowSampler,
    load_sections,
    normalisation,
    section_scaling,
    target_statistics,
    trustworthy,
)
from .fit import (
    NO_VALIDATION,
    WARMUP_FRACTION,
    TrainParams,
    cosine_decay,
    make_optimiser,
    run,
    train,
    window_loss,
)
from .resume import checkpoint_dir_for, run_fingerprint

__all__ = [
    "FM_PERCENTILES", "NO_VALIDATION", "SIGNAL_PERCENTILE", "WARMUP_FRACTION", "Normalisation",
    "SectionData", "TrainParams", "WindowSampler", "checkpoint_dir_for", "cosine_decay",
    "load_sections", "make_optimiser",
    "model_card", "normalisation", "run", "run_fingerprint", "section_scaling",
    "software_versions", "target_statistics", "train", "trustworthy", "window_loss",
]
