"""What a run reports: metrics (metrics.py, NumPy float64, weighted), the physicists' figures of merit
(figures_of_merit.py), plots (plots.py), report.md/report.html (document.py), the Python API's result types
(results.py) and experiment trackers (tracking.py). No PyTorch."""
