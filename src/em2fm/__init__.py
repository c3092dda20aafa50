"""em2fm: predict fluorescence from electron microscopy (integrated CLEM).

The package holds all logic of the Snakemake workflow: reading Odemis exports,
simulating them, registration, tiling, the asymmetric U-Net, prediction,
evaluation and the HTML report. Each module is unit-tested without Snakemake.
"""

__version__ = "0.1.0"
