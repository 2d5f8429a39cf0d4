"""The torch-free runtime: ``load(bundle) -> Forecaster``, then ``plan(...)``, then ``forecast(x)``.

    import alignts.runtime as rt
    f = rt.load("bundle/")          # manifest read, every file's sha256 checked
    f.plan(batch_size=8)            # variant, device, shapes fixed; backend opened
    fc = f.forecast(x, quantiles=(0.1, 0.5, 0.9))  # raw units in and out -> Forecast (mean, median, quantiles)
    fc.mean                         # [B, C, H]; fc.quantiles [B, C, H, Q]; f.forecast_df(df) for DataFrames
"""

from __future__ import annotations

import os

from alignts.runtime.forecaster import Forecaster, Plan, paradigm_class, register_paradigm
from alignts.runtime.manifest import read_manifest
from alignts.runtime.result import Forecast

__all__ = ["load", "Forecast", "Forecaster", "Plan", "register_paradigm"]


def load(bundle_dir: str | os.PathLike, verify: bool = True) -> Forecaster:
    """Open a bundle folder and return the forecaster of its paradigm (dispatch on ``manifest.paradigm``).

    verify: check the size and sha256 of every file the manifest lists (ArtifactError on a missing or
    tampered file). Raises ManifestError for a folder that is not a bundle.
    """
    m = read_manifest(bundle_dir, verify=verify)
    return paradigm_class(m.paradigm)(bundle_dir, m)
