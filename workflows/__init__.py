"""End-to-end workflows that drive several stages at once (``swallow-trt quickstart``): above the stages
(builders, triton_repo) in the layering, so the stages need not import each other."""
