"""The measured bench: models, data, steps and measuring. Imports torch, never pytest."""
