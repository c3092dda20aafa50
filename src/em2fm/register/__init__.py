"""Register: FM → EM alignment that is right, or says it is not.

- :mod:`.multimodal`: stage metadata refined by a bounded, exhaustive-then-local
  search of a multimodal metric (round 0);
- :mod:`.refine`: prediction-driven refinement, the measured FM registered to the
  network's prediction from the EM (monomodal NCC, rounds 1…N);
- :mod:`.landscape`: capture range, corrections, the evidence of a metric landscape;
- :mod:`.status`: the status of each section (``ok``, ``low_confidence``,
  ``failed``) and the policy for failed sections;
- :mod:`.steps`: the rules' entry points; :mod:`.qc`: the QC overlay.
"""

from .landscape import CaptureRange
from .multimodal import RegistrationParams, RegistrationResult, register_images
from .status import STATUSES, RegistrationFailed, StatusParams
from .steps import params_from_config, run_final, run_multimodal, run_refine

__all__ = ["STATUSES", "CaptureRange", "RegistrationFailed", "RegistrationParams",
           "RegistrationResult", "StatusParams", "params_from_config", "register_images",
           "run_final", "run_multimodal", "run_refine"]
