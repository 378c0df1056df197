"""Training-event plugins: EMA, sample grids, mid-run evaluation, TensorBoard, the HTML report."""
