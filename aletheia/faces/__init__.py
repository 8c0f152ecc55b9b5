"""Stage 1: face detection and cropping. Knows nothing of classifiers."""
