"""What an iteration measured: B-STaR metrics, the calibration grid, pass@k, costs and the data gate."""
