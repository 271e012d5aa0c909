"""The pipeline's stages, in order: data -> teacher -> distill -> export -> verify."""
