"""The pipeline's stages: one module per dvc.yaml stage, each a pure function of its inputs, params and seed."""
