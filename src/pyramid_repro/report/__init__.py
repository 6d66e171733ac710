"""Reports: the paper's numbers (paper), tables and plots (render), the GPU-hour audit (audit), checkpoint
comparison (compare)."""
