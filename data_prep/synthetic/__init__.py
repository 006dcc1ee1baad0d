"""The procedural generator behind `something_synthetic` (pure NumPy/OpenCV, no TF)."""
