"""opd_lib: the OPD Book's library of post-training methods (on-policy distillation and relatives).

One module per concept; notebooks explain and call, this package computes.
"""

__version__ = "0.1.0"
