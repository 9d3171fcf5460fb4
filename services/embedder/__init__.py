"""Embedder service: frames in, aligned faces, quality codes and embeddings out."""
