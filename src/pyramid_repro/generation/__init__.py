"""Generation with a trained DiT, below both training and evaluation: text conditions and the sampling loops
(generate), and captured Euler steps (capture)."""
