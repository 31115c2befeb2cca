"""Side-by-side benchmarks: albert-onnx vs eager PyTorch, Optimum and sentence-transformers' ONNX backend."""
