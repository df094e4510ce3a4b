"""The model: RRNet, ensembles and fusion, bundles, inference, fit quality and its calibrations, templates."""
