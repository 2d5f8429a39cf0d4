"""Evaluation: metrics, the cheap baselines, the scoring protocol of DESIGN.md and the split-conformal
calibration of point forecasters. Uses ``alignts.runtime`` and ``alignts.data``; the runtime never imports it."""
